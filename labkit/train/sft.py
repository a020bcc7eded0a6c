"""Supervised fine-tuning on (prompt, answer) pairs: a small PyTorch loop, loss on the answer only.

    from labkit.train import SFTConfig, train_sft
    result = train_sft(model, tokenizer, [("Is 2 even?", "Yes"), ...],
                       SFTConfig(output_dir="runs/sft", max_steps=64, save_steps=16))
    result.model            # the model with its trained LoRA adapter (a peft model)
    print(result.summary()) # steps, final loss, tokens/s, peak memory
    train_sft(..., resume=True)   # after an interruption: continues from the newest checkpoint

Why not TRL's SFTTrainer or the transformers Trainer: on this kit's CPU, TRL 1.16 runs LoRA SFT at
about half of LlamaFactory's speed, and this loop needs a third of TRL's CPU time per token and a
little less than the transformers Trainer's (docs/fine_tuning.md has the measured table), while it
stays short enough to read and resumes exactly. It
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
import warnings
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from peft import PeftModel
from torch import nn
from tqdm.auto import tqdm
from transformers import get_scheduler

from labkit import hardware
from labkit.adapters import AdapterSummary, Method, attach_adapter, summarize_trainable
from labkit.train import checkpoint
from labkit.train.data import IGNORE, EncodedSet, collate, encode, length_grouped_batches, pad_token_id

# Settings that do not change the trained weights: a run may resume with other values for these.
_BOOKKEEPING = {"output_dir", "save_steps", "save_total_limit", "log_steps", "progress"}


@dataclass
class SFTConfig:
    """Everything that decides an SFT run (LlamaFactory's finetuning arguments, reduced)."""

    output_dir: str | Path | None = None  # checkpoints go here; None: no checkpoints, no resume
    method: Method | None = "lora"  # None: the model comes prepared; train what requires grad
    lora_r: int = 8
    lora_alpha: float = 16
    lora_dropout: float = 0.0
    target_modules: str | list[str] = "all-linear"
    learning_rate: float = 1e-4
    epochs: float = 1.0
    max_steps: int | None = None  # when set, overrides epochs
    batch_size: int = 8
    grad_accumulation: int = 1
    cutoff: int = 256  # longest example in tokens (prompt + answer)
    warmup_ratio: float = 0.0
    scheduler: str = "linear"  # any name transformers.get_scheduler knows: linear, cosine, constant, ...
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0  # 0 turns clipping off
    seed: int = 42
    group_by_length: bool = True
    fast_loss: bool = True  # False: the model's plain forward (full logits, attention mask), for comparison
    system: str | None = None  # a system message before every prompt (the annotator's, if it has one)
    save_steps: int = 0  # a checkpoint every n steps (and always at the end); 0: at the end only
    save_total_limit: int = 2
    log_steps: int = 10
    progress: bool = True

    def check(self) -> None:
        """Reject values that cannot work, naming the field and what to use instead."""
        positive = ("batch_size", "grad_accumulation", "cutoff", "log_steps", "lora_r")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"SFTConfig.{name}={getattr(self, name)}: it must be at least 1.")
        if self.max_steps is None and self.epochs <= 0:
            raise ValueError(f"SFTConfig.epochs={self.epochs}: set epochs > 0 or max_steps.")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"SFTConfig.max_steps={self.max_steps}: it must be at least 1 (or None).")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"SFTConfig.warmup_ratio={self.warmup_ratio}: use a fraction in [0, 1).")
        if self.save_steps < 0:
            raise ValueError(f"SFTConfig.save_steps={self.save_steps}: use 0 (at the end only) or more.")

    def trajectory(self) -> dict[str, Any]:
        """The settings that decide the trained weights (a resumed run must match them)."""
        values = asdict(self)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in values.items() if k not in _BOOKKEEPING}


@dataclass(frozen=True)
class StepInfo:
    """What a callback sees after each optimizer step."""

    step: int
    total_steps: int
    loss: float
    learning_rate: float


@dataclass
class SFTResult:
    """The trained model and what the run measured."""

    model: nn.Module
    trainable: AdapterSummary
    steps: int
    final_loss: float  # mean answer-token loss of the last step
    history: list[dict[str, float]]  # every log_steps: step, loss (mean over the interval), lr
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

    def summary(self) -> str:
        return (f"{self.steps} steps, loss {self.final_loss:.4f}, {self.tokens_per_second:,.0f} tokens/s, "
                f"{self.seconds:.1f} s, {self.memory_kind} {self.peak_memory_mib:,.0f} MiB, "
                f"{self.examples} examples ({self.truncated} truncated); {self.trainable}")


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
    from config.method through labkit.adapters. `resume=True` continues from the newest checkpoint
    in config.output_dir (or starts fresh when there is none); a path names one checkpoint.
    Callbacks run after each optimizer step; an exception in one stops the run (checkpoints stay).
    """
    config = config or SFTConfig()
    config.check()
    data = encode(tokenizer, examples, config.cutoff, config.system)
    model, trainable = _prepare(model, config)
    device = next(model.parameters()).device
    pad = pad_token_id(tokenizer)
    loss_fn = AnswerLoss(model, collate(_padded_probe(data), pad, device), device, config.fast_loss)

    micro_per_epoch = math.ceil(len(data.examples) / config.batch_size)
    total = config.max_steps or math.ceil(config.epochs * micro_per_epoch / config.grad_accumulation)
    optimizer, scheduler, scaler = _optimizer(model, config, total, device)
    # "pending": losses of steps not yet logged, so that a resumed run logs the same history.
    state = {"step": 0, "loss": math.nan, "history": [], "pending": [], "data": data.fingerprint(),
             "config": config.trajectory()}

    output_dir = Path(config.output_dir) if config.output_dir is not None else None
    start = _resume_point(resume, output_dir)
    if start is not None:
        state = _restore(start, model, optimizer, scheduler, scaler, state)
    else:
        torch.manual_seed(config.seed)  # dropout draws from here; the data order has its own generator

    batches = _MicroBatches(data, config, pad, device, micro_per_epoch)
    meter = _Meter(device)
    resumed_from, losses = state["step"], state["pending"]
    bar = tqdm(total=total, initial=resumed_from, desc="SFT", unit="step", disable=not config.progress)
    saved = start
    model.train()
    for step in range(resumed_from + 1, total + 1):
        loss = _optimizer_step(loss_fn, batches, step, config, optimizer, scheduler, scaler, meter)
        losses.append(loss)
        state.update(step=step, loss=loss)
        if step % config.log_steps == 0 or step == total:
            lr = scheduler.get_last_lr()[0]
            state["history"].append({"step": step, "loss": sum(losses) / len(losses), "lr": lr})
            bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{meter.tokens_per_second():,.0f}")
            losses.clear()
        bar.update(1)
        due = step == total or (config.save_steps > 0 and step % config.save_steps == 0)
        if output_dir is not None and due:
            saved = checkpoint.save(output_dir, step, model, _snapshot(state, optimizer, scheduler, scaler),
                                    keep=config.save_total_limit)
        for callback in callbacks:
            callback(StepInfo(step, total, loss, scheduler.get_last_lr()[0]))
    bar.close()
    model.eval()
    return SFTResult(
        model=model, trainable=trainable, steps=state["step"], final_loss=state["loss"],
        history=state["history"], seconds=meter.seconds, tokens=meter.tokens,
        tokens_per_second=meter.tokens_per_second(), peak_memory_mib=meter.peak_memory_mib(),
        memory_kind=meter.memory_kind, examples=len(data.examples), truncated=data.truncated,
        resumed_from=resumed_from, loss_path=loss_fn.path, checkpoint=saved,
    )


def _optimizer(model: nn.Module, config: SFTConfig, total: int,
               device: torch.device) -> tuple[torch.optim.Optimizer, Any, torch.amp.GradScaler]:
    """AdamW over the trainable parameters, its learning-rate schedule, and a gradient scaler that
    only fp16 (older GPUs) needs: bf16 and fp32 have fp32's range."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = get_scheduler(config.scheduler, optimizer, num_warmup_steps=int(config.warmup_ratio * total),
                              num_training_steps=total)
    scaler = torch.amp.GradScaler("cuda", enabled=hardware.compute_dtype(device) == torch.float16)
    return optimizer, scheduler, scaler


def _prepare(model: nn.Module, config: SFTConfig) -> tuple[nn.Module, AdapterSummary]:
    """Attach the adapter config.method asks for (seeded), or take a prepared model as it is."""
    if config.method is None:
        summary = summarize_trainable(model, "prepared")
    elif isinstance(model, PeftModel):
        raise ValueError(f"the model already carries a peft adapter, and SFTConfig.method={config.method!r} "
                         "would add another: set method=None to train the adapter it has, or merge it "
                         "first (model.merge_and_unload()).")
    else:
        model, summary = attach_adapter(
            model, config.method, r=config.lora_r, alpha=config.lora_alpha, dropout=config.lora_dropout,
            target_modules=config.target_modules, seed=config.seed)
    if summary.trainable == 0:
        raise ValueError("the model has no trainable parameter: choose SFTConfig.method "
                         "('lora', 'dora', 'freeze', 'full') or unfreeze some parameters.")
    return model, summary


def _padded_probe(data: EncodedSet) -> list[Any]:
    """The shortest and the longest example: a batch that surely holds padding, to check the fast loss on."""
    by_length = sorted(data.examples, key=lambda e: len(e.ids))
    return [by_length[0], by_length[-1]]


def _autocast(device: torch.device) -> AbstractContextManager[Any]:
    """fp32 on CPU (no autocast); the hardware's half type on a GPU (labkit.hardware decides)."""
    if device.type != "cuda":
        return nullcontext()
    return torch.autocast("cuda", dtype=hardware.compute_dtype(device))


class AnswerLoss:
    """Summed cross-entropy over the answer tokens of a batch, by the fastest path that is exact."""

    def __init__(self, model: nn.Module, probe: dict[str, torch.Tensor], device: torch.device,
                 fast: bool = True) -> None:
        self.model = model
        self.device = device
        self.parts = _decoder_and_head(model) if fast else None
        if self.parts is not None and not self._fast_path_agrees(probe):
            warnings.warn(f"{type(model).__name__}: the answer-only head does not reproduce the model's own "
                          "forward, so SFT uses the full forward (correct, but slower).", stacklevel=3)
            self.parts = None
        self.path = "answer-only head" if self.parts is not None else "full forward"

    def __call__(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with _autocast(self.device):
            return self._fast(batch) if self.parts is not None else self._full(batch)

    def _fast(self, batch: dict[str, torch.Tensor], reduction: str = "sum") -> torch.Tensor:
        assert self.parts is not None
        decoder, head = self.parts
        targets = batch["labels"][:, 1:]
        keep = targets != IGNORE
        hidden = decoder(input_ids=batch["input_ids"], use_cache=False).last_hidden_state
        logits = head(hidden[:, :-1][keep])
        return _weighted(F.cross_entropy(logits.float(), targets[keep], reduction="none"), batch, reduction)

    def _full(self, batch: dict[str, torch.Tensor], reduction: str = "sum") -> torch.Tensor:
        targets = batch["labels"][:, 1:]
        keep = targets != IGNORE
        logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            use_cache=False).logits
        per_token = F.cross_entropy(logits[:, :-1][keep].float(), targets[keep], reduction="none")
        return _weighted(per_token, batch, reduction)

    @torch.no_grad()
    def _fast_path_agrees(self, probe: dict[str, torch.Tensor]) -> bool:
        was_training = self.model.training
        self.model.eval()  # no dropout: both paths must see the same weights
        try:
            with _autocast(self.device):
                fast, full = self._fast(probe, "none"), self._full(probe, "none")
        except (TypeError, AttributeError):  # a decoder with another signature or output
            return False
        finally:
            self.model.train(was_training)
        tolerance = 1e-4 if hardware.compute_dtype(self.device) == torch.float32 else 5e-2
        return bool(torch.allclose(fast, full, rtol=tolerance, atol=tolerance))


def _weighted(per_token: torch.Tensor, batch: dict[str, torch.Tensor], reduction: str) -> torch.Tensor:
    """Each answer token's loss times its example's weight; summed unless reduction is "none"."""
    keep = batch["labels"][:, 1:] != IGNORE
    per_token = per_token * batch["weights"][:, None].expand_as(keep)[keep]
    return per_token if reduction == "none" else per_token.sum()


def _answer_weight(batch: dict[str, torch.Tensor]) -> float:
    """The batch's answer tokens, each counted with its example's weight: what the loss is divided by."""
    tokens = (batch["labels"][:, 1:] != IGNORE).sum(dim=1)
    return float((tokens * batch["weights"]).sum())


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
    """Micro-batch m of the run: epoch m // per_epoch, position m % per_epoch (the data position)."""

    def __init__(self, data: EncodedSet, config: SFTConfig, pad: int, device: torch.device,
                 per_epoch: int) -> None:
        self.data, self.config, self.pad, self.device, self.per_epoch = data, config, pad, device, per_epoch
        self.lengths = [len(e.ids) for e in data.examples]
        self.epoch, self.order = -1, []

    def __getitem__(self, m: int) -> dict[str, torch.Tensor]:
        epoch, position = divmod(m, self.per_epoch)
        if epoch != self.epoch:
            self.epoch = epoch
            self.order = length_grouped_batches(self.lengths, self.config.batch_size, self.config.seed,
                                                epoch, self.config.group_by_length)
        return collate([self.data.examples[i] for i in self.order[position]], self.pad, self.device)


def _optimizer_step(loss_fn: AnswerLoss, batches: _MicroBatches, step: int,
                    config: SFTConfig, optimizer: torch.optim.Optimizer, scheduler: Any,
                    scaler: torch.amp.GradScaler, meter: _Meter) -> float:
    """One optimizer step over grad_accumulation micro-batches; returns its mean answer-token loss.

    Each micro-batch's summed loss is divided by the (weighted) answer tokens of the whole step, so
    that accumulating k batches of b equals one batch of k * b.
    """
    meter.start()
    first = (step - 1) * config.grad_accumulation
    micro = [batches[m] for m in range(first, first + config.grad_accumulation)]
    answer_tokens = sum(_answer_weight(b) for b in micro)
    total = 0.0
    for batch in micro:
        loss = loss_fn(batch) / (answer_tokens if answer_tokens > 0 else 1.0)
        scaler.scale(loss).backward()
        total += loss.item()
    if config.max_grad_norm > 0:
        scaler.unscale_(optimizer)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        nn.utils.clip_grad_norm_(params, config.max_grad_norm)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    meter.stop(sum(int(b["attention_mask"].sum()) for b in micro))
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


def _snapshot(state: dict[str, Any], optimizer: torch.optim.Optimizer, scheduler: Any,
              scaler: torch.amp.GradScaler) -> dict[str, Any]:
    return {**state, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "rng": checkpoint.rng_state()}


def _restore(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
             scaler: torch.amp.GradScaler, fresh: dict[str, Any]) -> dict[str, Any]:
    """Load a checkpoint after checking it was written by this data and these settings."""
    saved = checkpoint.load(path, model)
    if saved["data"] != fresh["data"]:
        raise ValueError(f"{path} was trained on other examples (or another tokenizer/cutoff): resume "
                         "with the same data, or start over in a new output_dir.")
    before = saved["config"]
    changed = {k: (before.get(k), v) for k, v in fresh["config"].items() if before.get(k) != v}
    if changed:
        detail = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
        raise ValueError(f"{path} was written with other settings ({detail}): resume with the same "
                         "SFTConfig, or start over in a new output_dir.")
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    scaler.load_state_dict(saved["scaler"])
    checkpoint.set_rng_state(saved["rng"])
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
