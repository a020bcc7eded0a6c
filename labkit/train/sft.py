"""Supervised fine-tuning on (prompt, answer) pairs: a small PyTorch loop, loss on the answer only.

    from labkit.train import SFTConfig, train_sft
    result = train_sft(model, tokenizer, [("Is 2 even?", "Yes"), ...],
                       SFTConfig(output_dir=Path("runs/sft"), max_steps=64, save_steps=16))
    result.model            # the model with its trained LoRA adapter (a peft model)
    print(result.summary()) # steps, final loss, tokens/s, peak memory
    train_sft(..., resume=True)   # after an interruption: continues from the newest checkpoint

Why not TRL's SFTTrainer or the transformers Trainer: on a CPU this loop needs less time per token
than either (benchmarks/sft_speed.py; docs/fine_tuning.md has the measured table and its date),
while it stays short enough to read and resumes exactly. It
- groups examples of similar length into a batch and pads each batch only to its longest example;
- runs the output head (hidden x vocabulary, the largest matrix of a small model) on the answer
  tokens only, since only they carry loss;
- passes no attention mask: with right padding a causal model never lets a real token attend to a
  padding token, so the mask changes nothing that carries loss and need not be built.
The last two are checked once per run against the model's own forward (on a batch that holds
padding); a model they do not fit (e.g. one that caps or scales its logits) gets the plain forward.
"""

from __future__ import annotations

import math
import sys
import time
import typing
import warnings
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from peft import PeftModel
from torch import nn
from tqdm.auto import tqdm
from transformers import get_scheduler

from labkit import hardware, runs
from labkit.adapters import (
    FINETUNING_TYPES,
    AdapterSummary,
    FinetuningType,
    FreezeArguments,
    LoraArguments,
    find_all_linear_modules,
    init_adapter,
    is_quantized,
    keep_quantized_layers_trainable,
)
from labkit.chat import IGNORE, check_template, pad_token_id
from labkit.config import option, require, require_choice, settings
from labkit.loader import QuantizationType, enable_gradient_checkpointing, load_model, load_tokenizer
from labkit.train import checkpoint
from labkit.train.data import (
    Conversation,
    EncodedSet,
    as_conversation,
    collate,
    collate_packed,
    encode,
    length_grouped_batches,
    pack_rows,
)
from labkit.train.galore import GaLoreAdamW, GaloreArguments

# The schedules transformers.get_scheduler builds from warm-up and total steps alone (the others
# need a metric or extra arguments).
LrScheduler = Literal["linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
                      "constant_with_warmup", "inverse_sqrt"]


@dataclass
class SFTConfig(LoraArguments, FreezeArguments, GaloreArguments):
    """Everything that decides an SFT run, named as in LlamaFactory's arguments and transformers'
    TrainingArguments (a LlamaFactory YAML file uses the same keys; labkit.llamafactory writes one).

    The method is finetuning_type plus switches: LoRA's variants (LoraArguments: use_rslora, use_dora,
    pissa_init, loraplus_lr_ratio), freeze tuning's choices (FreezeArguments), GaLore
    (GaloreArguments), QLoRA (quantization_bit with finetuning_type "lora").
    """

    output_dir: Path | None = option(
        None, "checkpoints go here; None: no checkpoints, no resume", bookkeeping=True)
    finetuning_type: FinetuningType | None = option(
        "lora", "lora, freeze or full (labkit.adapters); None: the model comes prepared, "
        "and what requires grad trains")
    quantization_bit: int | None = option(
        None, "QLoRA: the base model is loaded in 8 or 4 bits (labkit.loader.load_model(..., "
        "quantization='4bit')); train_sft checks that the model it gets was; None: not quantized")
    quantization_type: QuantizationType = option("nf4", "4-bit number format: nf4 or fp4")
    double_quantization: bool = option(True, "4-bit: quantize the quantization constants too")
    learning_rate: float = option(1e-4, "peak learning rate of AdamW")
    num_train_epochs: float = option(1.0, "passes over the examples (max_steps overrides it)")
    max_steps: int | None = option(None, "optimizer steps; when set, overrides num_train_epochs")
    per_device_train_batch_size: int = option(8, "examples per micro-batch")
    gradient_accumulation_steps: int = option(1, "micro-batches per optimizer step")
    cutoff_len: int = option(
        256, "longest example in tokens (prompt and answer); longer ones are cut, never dropped")
    warmup_ratio: float = option(0.0, "share of the steps over which the learning rate warms up from 0")
    lr_scheduler_type: LrScheduler = option("linear", "learning-rate schedule (transformers.get_scheduler)")
    weight_decay: float = option(0.0, "AdamW weight decay")
    max_grad_norm: float = option(1.0, "gradient clipping norm; 0 turns clipping off")
    bf16: bool | None = option(
        None, "compute in bf16 under autocast (a GPU that has it); False: fp32; None: the kit's rule "
        "(labkit.hardware.compute_dtype: fp32 on CPU, bf16 or fp16 on a GPU)")
    gradient_checkpointing: bool = option(
        False, "recompute each layer's activations in the backward pass: less memory, about a third "
        "more compute")
    seed: int = option(42, "seeds the adapter's initialization, dropout and the order of batches")
    group_by_length: bool = option(
        True, "batch examples of similar length together (less padding); packing needs no grouping")
    packing: bool = option(
        False, "pack several examples into each row of cutoff_len tokens, each seeing only itself "
        "(LlamaFactory's neat_packing; its plain packing lets examples attend to each other)")
    train_on_prompt: bool = option(False, "put the loss on the prompt tokens too, not only on the answers")
    mask_history: bool = option(
        False, "multi-turn examples: put the loss on the last answer only (default: on every answer)")
    fast_loss: bool = option(
        True, "run the output head on answer tokens only (checked against the model's own forward); "
        "False: the plain forward with full logits, for comparison")
    system: str | None = option(
        None, "a system message before every prompt (the annotator's, if it has one)")
    save_steps: int = option(
        0, "a checkpoint every n steps (and always at the end); 0: at the end only", bookkeeping=True)
    save_total_limit: int = option(2, "checkpoints kept, the newest; 0: all", bookkeeping=True)
    logging_steps: int = option(10, "optimizer steps per entry of the loss history", bookkeeping=True)
    progress: bool = option(True, "show a progress bar", bookkeeping=True)

    def __post_init__(self) -> None:
        LoraArguments.__post_init__(self)
        FreezeArguments.__post_init__(self)
        GaloreArguments.__post_init__(self)
        if self.output_dir is not None:
            self.output_dir = Path(self.output_dir)
        if self.finetuning_type is not None:
            require_choice(self, "finetuning_type", FINETUNING_TYPES)
        for name in ("per_device_train_batch_size", "gradient_accumulation_steps", "logging_steps"):
            require(getattr(self, name) >= 1, self, name, "it must be at least 1")
        require(self.cutoff_len >= 2, self, "cutoff_len", "leave room for a prompt and an answer token")
        require(self.save_total_limit >= 0, self, "save_total_limit", "use 0 (keep all) or more")
        require(self.max_steps is not None or self.num_train_epochs > 0, self, "num_train_epochs",
                "set num_train_epochs > 0 or max_steps")
        require(self.max_steps is None or self.max_steps >= 1, self, "max_steps",
                "it must be at least 1 (or None)")
        require(0 <= self.warmup_ratio < 1, self, "warmup_ratio", "use a fraction in [0, 1)")
        require(self.save_steps >= 0, self, "save_steps", "use 0 (at the end only) or more")
        require(self.learning_rate > 0, self, "learning_rate", "it must be positive")
        require_choice(self, "lr_scheduler_type", typing.get_args(LrScheduler))
        require_choice(self, "quantization_type", typing.get_args(QuantizationType))
        self._check_method()

    def micro_batches_per_epoch(self, examples: int) -> int:
        """Micro-batches in one pass over `examples` (the last one may be short)."""
        return math.ceil(examples / self.per_device_train_batch_size)

    def total_steps(self, examples: int) -> int:
        """Optimizer steps of a run on `examples` examples: max_steps, or the epochs' worth."""
        return self.max_steps or math.ceil(
            self.num_train_epochs * self.micro_batches_per_epoch(examples) / self.gradient_accumulation_steps)

    def _check_method(self) -> None:
        """LlamaFactory's rules on which switches go together (FinetuningArguments.__post_init__)."""
        lora_only = [name for name in ("use_rslora", "use_dora", "pissa_init") if getattr(self, name)]
        lora_only += ["loraplus_lr_ratio"] if self.loraplus_lr_ratio is not None else []
        if self.quantization_bit is not None:
            lora_only.append("quantization_bit")
            require(self.quantization_bit in (4, 8), self, "quantization_bit", "use 4, 8 or None")
            require(not self.pissa_init, self, "pissa_init",
                    "PiSSA rewrites the base weights, which a quantized model cannot take")
        for name in lora_only:
            require(self.finetuning_type == "lora", self, name,
                    f"it applies to finetuning_type 'lora' only, not {self.finetuning_type!r}")
        require(not self.use_galore or self.finetuning_type in ("full", "freeze"), self, "use_galore",
                "GaLore trains full weights: use it with finetuning_type 'full' or 'freeze', not LoRA")


@dataclass(frozen=True)
class StepInfo:
    """What a callback sees after each optimizer step."""

    step: int
    total_steps: int
    loss: float
    learning_rate: float
    tokens_per_second: float = math.nan  # over this call's steps so far
    peak_memory_mib: float = math.nan  # SFTResult.memory_kind says which memory


class StopTraining(Exception):  # named for what the callback asks, as transformers' should_training_stop
    """Raised by a callback to end the run after this step: train_sft writes a checkpoint there (when it
    has an output_dir) and returns normally, with SFTResult.stopped set; resume=True continues it."""


@dataclass
class SFTResult:
    """The trained model and what the run measured."""

    model: nn.Module
    trainable: AdapterSummary
    steps: int
    final_loss: float  # mean answer-token loss of the last step
    history: list[dict[str, float]]  # every logging_steps: step, loss (mean over the interval), lr
    seconds: float  # wall time of the training loop in this call
    tokens: int  # non-padding tokens trained on in this call
    tokens_per_second: float
    peak_memory_mib: float
    memory_kind: str  # "peak RSS" (CPU: the whole process) or "CUDA max allocated"
    examples: int
    truncated: int  # examples cut to the cutoff length
    resumed_from: int  # the checkpoint step this call started from (0: a fresh run)
    loss_path: str  # "answer-only head" or "full forward" (see the module docstring)
    checkpoint: Path | None = None
    stopped: bool = False  # a callback raised StopTraining before the last step

    def summary(self) -> str:
        return (f"{self.steps} steps, loss {self.final_loss:.4f}, {self.tokens_per_second:,.0f} tokens/s, "
                f"{self.seconds:.1f} s, {self.memory_kind} {self.peak_memory_mib:,.0f} MiB, "
                f"{self.examples} examples ({self.truncated} truncated); {self.trainable}")


def load_for_sft(model_name_or_path: str | Path | None, config: SFTConfig) -> tuple[nn.Module, Any]:
    """The model and tokenizer a run of `config` trains: quantized as config.quantization_bit says
    (QLoRA), else at the kit's dtype. The LabBoard and `labkit train` both load through here."""
    model = load_model(model_name_or_path, quantization=config.quantization_bit,
                       quantization_type=config.quantization_type,
                       double_quantization=config.double_quantization)
    return model, load_tokenizer(model_name_or_path)


def _warn_of_template_problems(model: nn.Module, tokenizer: Any, conversation: Conversation) -> None:
    """labkit.chat.check_template on the first example: a model whose generation does not stop at
    the end-of-turn token the template teaches trains well and then never stops at inference."""
    answer = conversation.turns[-1][1]
    for problem in check_template(tokenizer, conversation.messages(), answer, model=model).problems:
        warnings.warn(f"SFT: {problem}", stacklevel=3)


def train_sft(
    model: nn.Module,
    tokenizer: Any,
    examples: Sequence[Any],
    config: SFTConfig | None = None,
    *,
    resume: bool | str | Path = False,
    callbacks: Sequence[Callable[[StepInfo], None]] = (),
) -> SFTResult:
    """Fine-tune `model` on (prompt, answer) pairs; loss on the answer tokens only.

    `examples`: (prompt, answer) tuples or mappings with 'prompt' and 'answer'. The adapter comes
    from config.finetuning_type through labkit.adapters. `resume=True` continues from the newest checkpoint
    in config.output_dir (or starts fresh when there is none); a path names one checkpoint.
    Callbacks run after each optimizer step; one that raises StopTraining ends the run there with a
    checkpoint (the LabBoard's stop button); any other exception stops it too (checkpoints so far stay).
    """
    config = config or SFTConfig()
    data = encode(tokenizer, examples, config.cutoff_len, config.system,
                  train_on_prompt=config.train_on_prompt, mask_history=config.mask_history)
    _warn_of_template_problems(model, tokenizer, as_conversation(examples[0], 0, config.system))
    model, trainable = _prepare(model, config)
    device = next(model.parameters()).device
    pad = pad_token_id(tokenizer)
    dtype = hardware.compute_dtype(device, config.bf16)
    loss_fn = AnswerLoss(model, _probe(data, config, pad, device), dtype, config.fast_loss)

    batches = _MicroBatches(data, config, pad, device)
    total = config.total_steps(batches.units)
    optimizer = _Optimizer.create(model, config, total, dtype)
    # "pending": losses of steps not yet logged, so that a resumed run logs the same history.
    state: dict[str, Any] = {"step": 0, "loss": math.nan, "history": [], "pending": [],
                             "settings": {"examples": data.fingerprint(), **settings(config)}}

    output_dir = config.output_dir
    start = _resume_point(resume, output_dir)
    if start is not None:
        state = _restore(start, model, optimizer, state)
    else:
        torch.manual_seed(config.seed)  # dropout draws from here; the data order has its own generator

    meter = _Meter(device)
    resumed_from, losses = state["step"], state["pending"]
    bar = tqdm(total=total, initial=resumed_from, desc="SFT", unit="step", disable=not config.progress)
    saved, stopped = start, False
    model.train()
    for step in range(resumed_from + 1, total + 1):
        loss = _optimizer_step(loss_fn, batches, step, optimizer, meter=meter, config=config)
        losses.append(loss)
        state.update(step=step, loss=loss)
        if step % config.logging_steps == 0 or step == total:
            state["history"].append({"step": step, "loss": sum(losses) / len(losses),
                                     "lr": optimizer.learning_rate})
            bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{meter.tokens_per_second():,.0f}")
            losses.clear()
        bar.update(1)
        due = step == total or (config.save_steps > 0 and step % config.save_steps == 0)
        if output_dir is not None and due:  # before the callbacks: one that fails finds it written
            saved = checkpoint.save(output_dir, step, model, {**state, **optimizer.state_dict()},
                                    keep=config.save_total_limit)
        stopped = _run_callbacks(callbacks, StepInfo(step, total, loss, optimizer.learning_rate,
                                                     meter.tokens_per_second(), meter.peak_memory_mib()))
        if stopped:
            if output_dir is not None and not due:
                saved = checkpoint.save(output_dir, step, model, {**state, **optimizer.state_dict()},
                                        keep=config.save_total_limit)
            break
    bar.close()
    model.eval()
    return SFTResult(
        model=model, trainable=trainable, steps=state["step"], final_loss=state["loss"],
        history=state["history"], seconds=meter.seconds, tokens=meter.tokens,
        tokens_per_second=meter.tokens_per_second(), peak_memory_mib=meter.peak_memory_mib(),
        memory_kind=meter.memory_kind, examples=len(data.examples), truncated=data.truncated,
        resumed_from=resumed_from, loss_path=loss_fn.path, checkpoint=saved, stopped=stopped and step < total,
    )


def _run_callbacks(callbacks: Sequence[Callable[[StepInfo], None]], info: StepInfo) -> bool:
    """Every callback sees the step (a stop asked by one does not hide it from the next); True when
    one raised StopTraining. Any other exception ends the run, checkpoints so far kept."""
    stop = False
    for callback in callbacks:
        try:
            callback(info)
        except StopTraining:
            stop = True
    return stop


@dataclass
class _Optimizer:
    """AdamW over the trainable parameters (GaLore's AdamW with use_galore; B at its own learning
    rate with LoRA+), its learning-rate schedule, and a gradient scaler that only fp16 (older GPUs)
    needs: bf16 and fp32 have fp32's range."""

    adamw: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler

    @classmethod
    def create(cls, model: nn.Module, config: SFTConfig, total: int, dtype: torch.dtype) -> _Optimizer:
        groups = parameter_groups(model, config)
        adamw: torch.optim.Optimizer
        if config.use_galore:
            adamw = GaLoreAdamW(groups, lr=config.learning_rate, weight_decay=config.weight_decay)
        else:
            adamw = torch.optim.AdamW(groups, lr=config.learning_rate, weight_decay=config.weight_decay)
        scheduler = get_scheduler(config.lr_scheduler_type, adamw,
                                  num_warmup_steps=int(config.warmup_ratio * total), num_training_steps=total)
        scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
        return cls(adamw, scheduler, scaler)

    @property
    def learning_rate(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def step(self, max_grad_norm: float) -> None:
        """Clip (unless max_grad_norm is 0), update the weights and the learning rate, clear grads."""
        if max_grad_norm > 0:
            self.scaler.unscale_(self.adamw)
            params = [p for group in self.adamw.param_groups for p in group["params"]]
            nn.utils.clip_grad_norm_(params, max_grad_norm)
        self.scaler.step(self.adamw)
        self.scaler.update()
        self.scheduler.step()
        self.adamw.zero_grad(set_to_none=True)

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue where this one is (the random state too)."""
        return {"optimizer": self.adamw.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "rng": checkpoint.rng_state()}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.adamw.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.scaler.load_state_dict(saved["scaler"])
        checkpoint.set_rng_state(saved["rng"])


def parameter_groups(model: nn.Module, config: SFTConfig) -> list[dict[str, Any]]:
    """The optimizer's parameter groups: one, or LoRA+'s B matrices at learning_rate x
    loraplus_lr_ratio (Hayou et al. 2024, arXiv 2402.12354), or GaLore's projected weights with
    their rank, interval and scale (labkit.train.galore)."""
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if config.loraplus_lr_ratio is not None:
        fast = [p for name, p in named if "lora_B" in name]
        rest = [p for name, p in named if "lora_B" not in name]
        return [{"params": rest},
                {"params": fast, "lr": config.learning_rate * config.loraplus_lr_ratio}]
    if config.use_galore:
        targets = set(find_all_linear_modules(model) if config.galore_target in ("all", "all-linear")
                      else [t.strip() for t in config.galore_target.split(",") if t.strip()])
        projected = [p for name, p in named if p.ndim == 2 and name.split(".")[-2] in targets]
        if not projected:
            raise ValueError(f"SFTConfig.galore_target={config.galore_target!r} matches no trainable "
                             "linear weight: name layers the model has (e.g. 'q_proj,v_proj') or 'all'.")
        chosen = {id(p) for p in projected}
        return [{"params": [p for _, p in named if id(p) not in chosen]},
                {"params": projected, "rank": config.galore_rank, "scale": config.galore_scale,
                 "update_interval": config.galore_update_interval}]
    return [{"params": [p for _, p in named]}]


def _prepare(model: nn.Module, config: SFTConfig) -> tuple[nn.Module, AdapterSummary]:
    """Attach the adapter config.finetuning_type asks for (seeded), or take a prepared model as it is;
    switch on gradient checkpointing first (LlamaFactory's order: patch the model, then the adapter)."""
    if config.finetuning_type is not None and isinstance(model, PeftModel):
        raise ValueError(f"the model already carries a peft adapter, and SFTConfig.finetuning_type="
                         f"{config.finetuning_type!r} would add another: set finetuning_type=None to "
                         "train the adapter it has, or merge it first (model.merge_and_unload()).")
    _check_quantization(model, config)
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(model)  # type: ignore[arg-type]  # a transformers model
    model, summary = init_adapter(model, config)
    if summary.trainable == 0:
        raise ValueError(f"the model has no trainable parameter: choose SFTConfig.finetuning_type "
                         f"{FINETUNING_TYPES} or unfreeze some parameters.")
    return model, summary


def _check_quantization(model: nn.Module, config: SFTConfig) -> None:
    """The config's quantization_bit must describe the model it trains (the loader quantizes, not SFT)."""
    bits = is_quantized(model)
    if bits is not None:
        keep_quantized_layers_trainable(model)
    if config.finetuning_type is not None and bits != config.quantization_bit:
        loaded = f"{bits} bits" if bits else "without quantization"
        wanted = (f"load it with labkit.loader.load_model(path, quantization='{config.quantization_bit}bit')"
                  if config.quantization_bit else "set SFTConfig.quantization_bit to match")
        raise ValueError(f"SFTConfig.quantization_bit={config.quantization_bit!r}, but the model was loaded "
                         f"{loaded}: {wanted}.")


def _probe(data: EncodedSet, config: SFTConfig, pad: int, device: torch.device) -> dict[str, torch.Tensor]:
    """A batch to check the fast loss on: the shortest and the longest example, padded (so the
    batch surely holds padding) or, with packing, packed into rows as training packs them."""
    by_length = sorted(data.examples, key=lambda e: len(e.ids))
    probe = [by_length[0], by_length[-1]]
    if not config.packing:
        return collate(probe, pad, device)
    rows = pack_rows([len(e.ids) for e in probe], config.cutoff_len)
    return collate_packed([[probe[i] for i in row] for row in rows], pad, device)


def _autocast(dtype: torch.dtype) -> AbstractContextManager[Any]:
    """No autocast in fp32 (on CPU, or bf16=False); a GPU's half type otherwise (hardware.compute_dtype)."""
    if dtype == torch.float32:
        return nullcontext()
    return torch.autocast("cuda", dtype=dtype)


class AnswerLoss:
    """Summed cross-entropy over the answer tokens of a batch, by the fastest path that is exact."""

    def __init__(self, model: nn.Module, probe: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32,
                 fast: bool = True) -> None:
        self.model = model
        self.dtype = dtype  # the compute dtype (labkit.hardware.compute_dtype)
        self.parts = _decoder_and_head(model) if fast else None
        if self.parts is not None and not self._fast_path_agrees(probe):
            warnings.warn(f"{type(model).__name__}: the answer-only head does not reproduce the model's own "
                          "forward, so SFT uses the full forward (correct, but slower).", stacklevel=3)
            self.parts = None
        self.path = "answer-only head" if self.parts is not None else "full forward"

    def __call__(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with _autocast(self.dtype):
            return self._fast(batch) if self.parts is not None else self._full(batch)

    def _fast(self, batch: dict[str, torch.Tensor], reduction: str = "sum") -> torch.Tensor:
        assert self.parts is not None
        decoder, head = self.parts
        targets = batch["labels"][:, 1:]
        keep = targets != IGNORE
        layout = _layout(batch, full=False)
        hidden = decoder(input_ids=batch["input_ids"], use_cache=False, **layout).last_hidden_state
        logits = head(hidden[:, :-1][keep])
        return _weighted(F.cross_entropy(logits.float(), targets[keep], reduction="none"), batch, reduction)

    def _full(self, batch: dict[str, torch.Tensor], reduction: str = "sum") -> torch.Tensor:
        targets = batch["labels"][:, 1:]
        keep = targets != IGNORE
        logits = self.model(input_ids=batch["input_ids"], use_cache=False, **_layout(batch, full=True)).logits
        per_token = F.cross_entropy(logits[:, :-1][keep].float(), targets[keep], reduction="none")
        return _weighted(per_token, batch, reduction)

    @torch.no_grad()
    def _fast_path_agrees(self, probe: dict[str, torch.Tensor]) -> bool:
        was_training = self.model.training
        self.model.eval()  # no dropout: both paths must see the same weights
        try:
            with _autocast(self.dtype):
                fast, full = self._fast(probe, "none"), self._full(probe, "none")
        except (TypeError, AttributeError):  # a decoder with another signature or output
            return False
        finally:
            self.model.train(was_training)
        tolerance = 1e-4 if self.dtype == torch.float32 else 5e-2
        return bool(torch.allclose(fast, full, rtol=tolerance, atol=tolerance))


def _layout(batch: dict[str, torch.Tensor], full: bool) -> dict[str, torch.Tensor]:
    """How the model tells examples apart: packed rows by their restarting position ids (and no
    attention mask, so that transformers masks block-diagonally); padded rows by the attention mask,
    which the decoder alone can skip, since right padding comes after every token that is scored."""
    if "position_ids" in batch:
        return {"position_ids": batch["position_ids"]}
    return {"attention_mask": batch["attention_mask"]} if full else {}


def _weighted(per_token: torch.Tensor, batch: dict[str, torch.Tensor], reduction: str) -> torch.Tensor:
    """Each trained token's loss times its weight; summed unless reduction is "none"."""
    keep = batch["labels"][:, 1:] != IGNORE
    per_token = per_token * batch["weights"][:, 1:][keep]
    return per_token if reduction == "none" else per_token.sum()


def _answer_weight(batch: dict[str, torch.Tensor]) -> float:
    """The batch's trained tokens, each counted with its weight: what the loss is divided by."""
    return float(batch["weights"][:, 1:].sum())


def _decoder_and_head(model: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    """The decoder stack and the output head of a causal LM (under any peft wrapper), or None."""
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    get_decoder = getattr(base, "get_decoder", None)
    get_head = getattr(base, "get_output_embeddings", None)
    if not callable(get_decoder) or not callable(get_head):
        return None
    decoder, head = get_decoder(), get_head()
    if decoder is None or head is None or decoder is base:
        return None
    return decoder, head


class _MicroBatches:
    """Micro-batch m of the run: epoch m // per_epoch, position m % per_epoch (the data position).

    The units batched are examples, or with packing the rows they are packed into (once, by length
    alone: the same rows every epoch, in an order set by (seed, epoch))."""

    def __init__(self, data: EncodedSet, config: SFTConfig, pad: int, device: torch.device) -> None:
        self.data, self.config, self.pad, self.device = data, config, pad, device
        lengths = [len(e.ids) for e in data.examples]
        single = [[i] for i in range(len(lengths))]
        self.rows = pack_rows(lengths, config.cutoff_len) if config.packing else single
        self.lengths = [sum(lengths[i] for i in row) for row in self.rows]
        self.units = len(self.rows)
        self.per_epoch = config.micro_batches_per_epoch(self.units)
        self.epoch, self.order = -1, list[list[int]]()

    def __getitem__(self, m: int) -> dict[str, torch.Tensor]:
        epoch, position = divmod(m, self.per_epoch)
        if epoch != self.epoch:
            self.epoch = epoch
            grouped = self.config.group_by_length and not self.config.packing
            self.order = length_grouped_batches(self.lengths, self.config.per_device_train_batch_size,
                                                self.config.seed, epoch, grouped)
        rows = [[self.data.examples[i] for i in self.rows[unit]] for unit in self.order[position]]
        if self.config.packing:
            return collate_packed(rows, self.pad, self.device)
        return collate([row[0] for row in rows], self.pad, self.device)


def _optimizer_step(loss_fn: AnswerLoss, batches: _MicroBatches, step: int, optimizer: _Optimizer, *,
                    meter: _Meter, config: SFTConfig) -> float:
    """One optimizer step over gradient_accumulation_steps micro-batches; returns its mean
    answer-token loss.

    Each micro-batch's summed loss is divided by the (weighted) answer tokens of the whole step, so
    that accumulating k batches of b equals one batch of k * b.
    """
    meter.start()
    first = (step - 1) * config.gradient_accumulation_steps
    micro = [batches[m] for m in range(first, first + config.gradient_accumulation_steps)]
    answer_tokens = sum(_answer_weight(b) for b in micro)
    total = 0.0
    for batch in micro:
        loss = loss_fn(batch) / (answer_tokens if answer_tokens > 0 else 1.0)
        optimizer.backward(loss)
        total += loss.item()
    optimizer.step(config.max_grad_norm)
    meter.stop(sum(int(b["tokens"].sum()) for b in micro))
    return total


def _resume_point(resume: bool | str | Path, output_dir: Path | None) -> Path | None:
    """The checkpoint to resume from: None for a fresh run."""
    if resume is False:
        return None
    if resume is True:
        if output_dir is None:
            raise ValueError("resume=True needs SFTConfig.output_dir: that is where checkpoints are.")
        return checkpoint.latest(output_dir)
    path = Path(resume)
    if not (path / checkpoint.STATE).is_file():
        raise FileNotFoundError(f"{path} is not a checkpoint folder (no {checkpoint.STATE} in it).")
    return path


def _restore(path: Path, model: nn.Module, optimizer: _Optimizer, fresh: dict[str, Any]) -> dict[str, Any]:
    """Load a checkpoint after checking it was written for these examples and these settings
    (`examples` is a hash of every token id: another tokenizer or cutoff_len changes it too)."""
    saved = checkpoint.load(path, model)
    runs.check_same(path, saved.get("settings", {}), fresh["settings"],
                    fix="resume with the same SFTConfig and examples, or start over in a new output_dir")
    optimizer.load_state_dict(saved)
    return {k: saved[k] for k in fresh}


class _Meter:
    """Training time, tokens and peak memory (RSS of the process on CPU, max allocated on a GPU)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds, self.tokens, self._t0 = 0.0, 0, 0.0
        self.memory_kind = "CUDA max allocated" if device.type == "cuda" else "peak RSS"
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    def start(self) -> None:
        self._t0 = time.perf_counter()

    def stop(self, tokens: int) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # kernels run asynchronously: wait before reading the clock
        self.seconds += time.perf_counter() - self._t0
        self.tokens += tokens

    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def peak_memory_mib(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return peak_rss_mib()


def peak_rss_mib() -> float:
    """The process's peak resident memory so far, in MiB (its whole life, not only training)."""
    try:
        import resource
    except ImportError:  # Windows: psutil (a dependency of accelerate) reports the peak working set
        import psutil

        return psutil.Process().memory_info().peak_wset / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux
