"""Make a model trainable: LoRA and its family, freeze tuning or full fine-tuning (LlamaFactory's
init_adapter, small).

    model, summary = attach_adapter(model, "lora", r=8, alpha=16)   # all linear layers but the head
    print(summary)   # lora: 156,160 trainable of 7,514,880 parameters (2.08%), targets: down_proj, ...
    find_all_linear_modules(model)   # ['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', ...]
    model, summary = init_adapter(model, SFTConfig(finetuning_type="lora", use_dora=True))

The choice is LlamaFactory's `finetuning_type` (labkit.train.SFTConfig uses the same names):
- "lora": a low-rank update B @ A next to each target layer (peft); the base weights stay frozen.
  Its variants are switches (LoraArguments): use_rslora (scale alpha / sqrt(r) instead of alpha / r),
  use_dora (a learned magnitude per output feature), pissa_init (A and B start from the weight's top
  singular vectors, the base keeps the rest), loraplus_lr_ratio (B learns faster: the optimizer's job).
- "freeze": the last `freeze_trainable_layers` decoder layers train (FreezeArguments), the rest is frozen.
- "full": every parameter trains.

A model loaded in 8 or 4 bits (bitsandbytes) takes "lora" only, without PiSSA: that is QLoRA.
"""

from __future__ import annotations

import contextlib
import typing
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
from peft import LoraConfig, PeftConfig, PeftModel, get_peft_model
from torch import nn

from labkit import hardware
from labkit.config import option, require
from labkit.parameters import count_parameters

FinetuningType = Literal["lora", "freeze", "full"]
FINETUNING_TYPES: tuple[str, ...] = typing.get_args(FinetuningType)


def _names(text: str | None) -> list[str]:
    """'q_proj, v_proj' -> ['q_proj', 'v_proj'] (LlamaFactory's comma-separated module lists)."""
    return [name.strip() for name in (text or "").split(",") if name.strip()]


@dataclass
class LoraArguments:
    """LoRA and its variants, under LlamaFactory's names (hparams/finetuning_args.py)."""

    lora_rank: int = option(8, "rank r of the LoRA update B @ A")
    lora_alpha: int = option(16, "the LoRA update is scaled by lora_alpha / lora_rank")
    lora_dropout: float = option(0.0, "dropout on the input of the LoRA branch")
    lora_target: str = option(
        "all", "layers that get LoRA: 'all' (every linear layer but the head) or names separated "
        "by commas, e.g. 'q_proj,v_proj' (a list of names is taken too)")
    use_rslora: bool = option(False, "rank-stabilized LoRA: scale by lora_alpha / sqrt(lora_rank)")
    use_dora: bool = option(False, "DoRA: a learned magnitude per output feature next to the LoRA direction")
    pissa_init: bool = option(
        False, "PiSSA: initialize A and B from the weight's top lora_rank singular vectors (the base "
        "keeps the residual); not on a quantized model")
    pissa_iter: int = option(16, "PiSSA's fast SVD iterations; -1: the exact SVD")
    loraplus_lr_ratio: float | None = option(
        None, "LoRA+: B's learning rate is learning_rate times this (16 in the paper); None: off")

    def __post_init__(self) -> None:
        if isinstance(self.lora_target, list | tuple):
            self.lora_target = ",".join(self.lora_target)  # as a YAML list writes it
        require(self.lora_rank >= 1, self, "lora_rank", "it must be at least 1")
        require(0 <= self.lora_dropout < 1, self, "lora_dropout", "use a probability in [0, 1)")
        require(isinstance(self.lora_target, str) and bool(_names(self.lora_target)), self,
                "lora_target", "name the layers, or 'all' for every linear layer")
        require(self.pissa_iter >= -1, self, "pissa_iter", "use -1 (exact SVD) or a number of iterations")
        require(self.loraplus_lr_ratio is None or self.loraplus_lr_ratio > 0, self, "loraplus_lr_ratio",
                "use a positive ratio (16 in the LoRA+ paper), or None")

    @property
    def target_modules(self) -> str | list[str]:
        """lora_target as peft takes it: "all-linear" or a list of layer names."""
        return "all-linear" if self.lora_target in ("all", "all-linear") else _names(self.lora_target)

    @property
    def init_lora_weights(self) -> bool | str:
        """peft's init_lora_weights: True (A random, B zero), or PiSSA's SVD initialization."""
        if not self.pissa_init:
            return True
        return "pissa" if self.pissa_iter == -1 else f"pissa_niter_{self.pissa_iter}"


@dataclass
class FreezeArguments:
    """Freeze tuning, under LlamaFactory's names."""

    freeze_trainable_layers: int = option(
        2, "freeze tuning: the last n decoder layers train (the first -n when negative)")
    freeze_trainable_modules: str = option(
        "all", "freeze tuning: which parts of those layers train, 'all' or names separated by commas "
        "(e.g. 'mlp' or 'self_attn,mlp')")
    freeze_extra_modules: str | None = option(
        None, "freeze tuning: modules outside the decoder layers that train too, e.g. 'embed_tokens,norm'")

    def __post_init__(self) -> None:
        require(self.freeze_trainable_layers != 0, self, "freeze_trainable_layers",
                "use n > 0 (the last n layers) or n < 0 (the first -n layers)")
        require(bool(_names(self.freeze_trainable_modules)), self, "freeze_trainable_modules",
                "use 'all' or name the parts of a layer, e.g. 'mlp'")


class AdapterSettings(Protocol):
    """What init_adapter reads: a config with LoraArguments, FreezeArguments and these two fields."""

    finetuning_type: FinetuningType | None
    seed: int

    @property
    def target_modules(self) -> str | list[str]: ...

    @property
    def init_lora_weights(self) -> bool | str: ...

    lora_rank: int
    lora_alpha: int
    lora_dropout: float
    use_rslora: bool
    use_dora: bool
    freeze_trainable_layers: int
    freeze_trainable_modules: str
    freeze_extra_modules: str | None


@dataclass(frozen=True)
class AdapterSummary:
    """What attach_adapter made trainable."""

    finetuning_type: str
    trainable: int
    total: int
    targets: tuple[str, ...]

    @property
    def percent(self) -> float:
        """Trainable parameters as a percentage of all parameters."""
        return 100.0 * self.trainable / max(self.total, 1)

    def __str__(self) -> str:
        targets = f", targets: {', '.join(self.targets)}" if self.targets else ""
        return (f"{self.finetuning_type}: {self.trainable:,} trainable of {self.total:,} parameters "
                f"({self.percent:.2f}%){targets}")


def _excluded_linear_modules(model: nn.Module) -> set[nn.Module]:
    """The linear layers no adapter should touch: the output head and any layer tied to the embeddings.

    The head maps to the vocabulary: adapting it costs vocab x r parameters and, when its weight is
    the input embedding (tied), would change the embeddings too.
    """
    excluded: set[nn.Module] = set()
    get_output = getattr(model, "get_output_embeddings", None)
    head = get_output() if callable(get_output) else None
    if head is not None:
        excluded.add(head)
    get_input = getattr(model, "get_input_embeddings", None)
    embedding = get_input() if callable(get_input) else None
    embedding_weight = getattr(embedding, "weight", None)
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        # Models without get_output_embeddings() still call their head "lm_head" by convention.
        if name.split(".")[-1] == "lm_head" or (
            embedding_weight is not None and module.weight is embedding_weight
        ):
            excluded.add(module)
    return excluded


def find_all_linear_modules(model: nn.Module) -> list[str]:
    """Short names (e.g. "q_proj") of every linear layer except the head and tied embeddings, sorted.

    bitsandbytes' Linear8bitLt and Linear4bit subclass nn.Linear, so a quantized model gives the
    same names as its full-precision original. Layers that are already adapters (peft's lora_A,
    lora_B) are left out: LoRA is not stacked on LoRA.
    """
    excluded = _excluded_linear_modules(model)
    names = set()
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and module not in excluded and not _inside_adapter(name):
            names.add(name.split(".")[-1])
    if not names:
        raise ValueError(f"{type(model).__name__} has no linear layer besides its head and those that "
                         "already carry an adapter: nothing to adapt.")
    return sorted(names)


def _inside_adapter(name: str) -> bool:
    """True for peft's own layers (lora_A, lora_B, ...), which carry these names in their path."""
    return any(part.startswith(("lora_", "base_layer")) for part in name.split("."))


def is_quantized(model: nn.Module) -> int | None:
    """8 or 4 when the model was loaded in that many bits (bitsandbytes), else None."""
    for bits in (4, 8):
        if getattr(model, f"is_loaded_in_{bits}bit", False):
            return bits
    return None


def keep_quantized_layers_trainable(model: nn.Module) -> None:
    """Keep bitsandbytes' 4-bit layers in the format that passes gradients to their input.

    bitsandbytes 0.50 on a CPU with AVX512-BF16 repacks a 4-bit layer for a bf16 inference kernel the
    first time it runs in eval mode on an input that needs no gradient (train_sft's check of its
    answer-only loss is such a forward), and a repacked layer passes no gradient to its input: the
    layers below it would learn from a wrong gradient. A layer that was repacked already is refused.
    """
    for name, module in model.named_modules():
        if not hasattr(module, "support_avx512bf16_for_cpu"):
            continue
        module.support_avx512bf16_for_cpu = False
        state = getattr(getattr(module, "weight", None), "quant_state", None)
        if getattr(state, "packing_format_for_cpu", False):
            raise ValueError(f"{name}: bitsandbytes repacked this 4-bit layer for CPU inference (the model "
                             "ran in eval mode before), and a repacked layer cannot train; load the model "
                             "again and train it before any evaluation.")


def attach_adapter(
    model: nn.Module,
    finetuning_type: FinetuningType = "lora",
    *,
    r: int = 8,
    alpha: int = 16,
    dropout: float = 0.0,
    target_modules: str | Sequence[str] = "all-linear",
    init_lora_weights: bool | str = True,
    use_rslora: bool = False,
    use_dora: bool = False,
    freeze_trainable_layers: int = 2,
    freeze_trainable_modules: str = "all",
    freeze_extra_modules: str | None = None,
    seed: int | None = None,
) -> tuple[nn.Module, AdapterSummary]:
    """Make `model` trainable by `finetuning_type`; returns the (possibly wrapped) model and a summary.

    r, alpha, dropout, target_modules, init_lora_weights ("pissa", "pissa_niter_16", "gaussian", ...),
    use_rslora and use_dora apply to "lora"; target_modules="all-linear" means
    find_all_linear_modules(model). The freeze_* arguments apply to "freeze" (FreezeArguments says
    what each means). seed, when given, fixes the adapter's random initialization without touching
    the global random state.
    """
    if finetuning_type not in FINETUNING_TYPES:
        raise ValueError(f"finetuning_type={finetuning_type!r} is not one of {FINETUNING_TYPES} "
                         "(DoRA is finetuning_type='lora' with use_dora=True).")
    _refuse_on_quantized(model, finetuning_type, init_lora_weights)
    if finetuning_type == "lora" and any(_inside_adapter(name) for name, _ in model.named_modules()):
        raise ValueError(f"{type(model).__name__} already carries a LoRA adapter, attached in place by an "
                         "earlier attach_adapter or training stage, and LoRA is not stacked on LoRA: pass a "
                         "fresh copy (copy.deepcopy before the first stage) or merge the adapter first "
                         "(model.merge_and_unload()).")
    with hardware.seeded(seed):
        if finetuning_type == "lora":
            model, targets = _attach_lora(model, r=r, alpha=alpha, dropout=dropout,
                                          target_modules=target_modules, init_lora_weights=init_lora_weights,
                                          use_rslora=use_rslora, use_dora=use_dora)
        elif finetuning_type == "freeze":
            parts, extra = _names(freeze_trainable_modules), _names(freeze_extra_modules)
            targets = _freeze_all_but_last_layers(model, freeze_trainable_layers, parts, extra)
        else:
            model.requires_grad_(True)
            targets = ()
    if finetuning_type in ("freeze", "full"):
        _upcast_trainable(model)
    return model, summarize_trainable(model, finetuning_type, targets)


def init_adapter(model: nn.Module, config: AdapterSettings) -> tuple[nn.Module, AdapterSummary]:
    """attach_adapter with the settings of a config (SFTConfig), as LlamaFactory's init_adapter does."""
    if config.finetuning_type is None:
        return model, summarize_trainable(model, "prepared")
    return attach_adapter(
        model, config.finetuning_type, r=config.lora_rank, alpha=config.lora_alpha,
        dropout=config.lora_dropout, target_modules=config.target_modules,
        init_lora_weights=config.init_lora_weights, use_rslora=config.use_rslora,
        use_dora=config.use_dora, freeze_trainable_layers=config.freeze_trainable_layers,
        freeze_trainable_modules=config.freeze_trainable_modules,
        freeze_extra_modules=config.freeze_extra_modules, seed=config.seed)


def _refuse_on_quantized(model: nn.Module, finetuning_type: str, init_lora_weights: bool | str) -> None:
    """A quantized weight cannot take a gradient step, nor be split by an SVD (PiSSA)."""
    if is_quantized(model) is None:
        return
    if finetuning_type != "lora":
        raise ValueError(f"finetuning_type={finetuning_type!r} cannot train a model loaded in 8 or 4 "
                         "bits: use 'lora' (QLoRA), or load the model without quantization.")
    if isinstance(init_lora_weights, str) and init_lora_weights.startswith("pissa"):
        raise ValueError("PiSSA (pissa_init) rewrites the base weights with an SVD, which a model loaded "
                         "in 8 or 4 bits cannot take: set pissa_init=False, or load the model unquantized.")


def _attach_lora(
    model: nn.Module, *, r: int, alpha: int, dropout: float, target_modules: str | Sequence[str],
    init_lora_weights: bool | str, use_rslora: bool, use_dora: bool,
) -> tuple[nn.Module, tuple[str, ...]]:
    """Wrap the target layers with peft's LoRA (or DoRA) layers; only those train."""
    if r < 1:
        raise ValueError(f"LoRA rank r={r} must be at least 1.")
    if target_modules == "all-linear":
        targets = find_all_linear_modules(model)
    elif isinstance(target_modules, str):
        targets = [target_modules]
    else:
        targets = list(target_modules)
    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets,
        exclude_modules=_colliding_head_names(model, targets), use_dora=use_dora,
        init_lora_weights=init_lora_weights,  # type: ignore[arg-type]  # peft checks the name
        use_rslora=use_rslora, task_type="CAUSAL_LM",
    )
    return peft_model(model, config), tuple(targets)


@contextlib.contextmanager
def without_checkpointing_deprecation() -> Iterator[None]:
    """No FutureWarning for transformers 5's deprecated `is_gradient_checkpointing`, which peft 0.21
    reads whenever it wraps a model and TRL 1.16 at every DPO step: it is about their code, and there
    is nothing for the user to change."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated",
                                category=FutureWarning)
        yield


def peft_model(model: nn.Module, config: PeftConfig, adapter_name: str = "default") -> PeftModel:
    """peft's get_peft_model, without the deprecation warning above."""
    with without_checkpointing_deprecation():
        return get_peft_model(model, config, adapter_name=adapter_name)  # type: ignore[arg-type]


def _colliding_head_names(model: nn.Module, targets: Sequence[str]) -> list[str] | None:
    """Full names of excluded layers whose short name is also a target (peft matches by suffix).

    None when there are none: peft warns about an exclude list that excludes nothing.
    """
    excluded = _excluded_linear_modules(model)
    names = [name for name, module in model.named_modules()
             if module in excluded and name.split(".")[-1] in targets]
    return names or None


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The stack of decoder layers: the ModuleList with config.num_hidden_layers entries."""
    count = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == count:
            return module
    raise ValueError(f"{type(model).__name__}: found no ModuleList of config.num_hidden_layers={count} "
                     "decoder layers, so freeze tuning cannot pick layers; use finetuning_type='lora' "
                     "or 'full'.")


def _freeze_all_but_last_layers(model: nn.Module, n: int, modules: list[str],
                                extra: list[str]) -> tuple[str, ...]:
    """Freeze everything, then unfreeze the chosen parts of the last n decoder layers (the first -n
    when n < 0) and the extra modules by name."""
    layers = decoder_layers(model)
    if n == 0 or abs(n) > len(layers):
        raise ValueError(f"freeze_trainable_layers={n}: choose 1..{len(layers)} (last layers) or "
                         f"-1..-{len(layers)} (first layers).")
    chosen = range(len(layers) - n, len(layers)) if n > 0 else range(-n)
    model.requires_grad_(False)
    for i in chosen:
        for part in _layer_parts(layers[i], modules, i):
            part.requires_grad_(True)
    named = dict(model.named_modules())
    for name in extra:
        matches = [m for full, m in named.items() if full == name or full.endswith("." + name)]
        if not matches:
            raise ValueError(f"freeze_extra_modules names {name!r}, which {type(model).__name__} does not "
                             "have; choose among its top-level modules, e.g. 'embed_tokens' or 'norm'.")
        for module in matches:
            module.requires_grad_(True)
    return tuple(f"layer {i}" for i in chosen) + tuple(extra)


def _layer_parts(layer: nn.Module, modules: list[str], index: int) -> list[nn.Module]:
    """The parts of one decoder layer that freeze tuning trains: all of it, or its named children."""
    if modules == ["all"]:
        return [layer]
    children = dict(layer.named_children())
    unknown = [m for m in modules if m not in children]
    if unknown:
        raise ValueError(f"freeze_trainable_modules names {unknown}, which decoder layer {index} does not "
                         f"have; choose 'all' or among {sorted(children)}.")
    return [children[m] for m in modules]


def _upcast_trainable(model: nn.Module) -> None:
    """Keep trained weights in fp32: AdamW updates of bf16/fp16 weights round away small steps.

    The forward still runs in the hardware's compute dtype under autocast (labkit.train).
    """
    for param in model.parameters():
        if param.requires_grad and param.dtype in (torch.float16, torch.bfloat16):
            param.data = param.data.float()


def summarize_trainable(model: nn.Module, finetuning_type: str = "",
                        targets: Sequence[str] = ()) -> AdapterSummary:
    """Trainable and all parameters (labkit.parameters: a 4-bit weight counts as its unpacked size)."""
    count = count_parameters(model)
    return AdapterSummary(finetuning_type, count.trainable, count.total, tuple(targets))
