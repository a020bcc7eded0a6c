"""Make a model trainable: LoRA, DoRA, freeze tuning or full fine-tuning (LlamaFactory's init_adapter, small).

    model, summary = attach_adapter(model, "lora", r=8, alpha=16)   # all linear layers but the head
    print(summary)   # lora: 156,160 trainable of 7,514,880 parameters (2.08%), targets: down_proj, ...
    find_all_linear_modules(model)   # ['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', ...]

The choice is LlamaFactory's `finetuning_type` (labkit.train.SFTConfig uses the same name):
- "lora": a low-rank update B @ A next to each target layer (peft); the base weights stay frozen.
- "dora": LoRA plus a learned magnitude per output feature (peft's use_dora).
- "freeze": the base weights of the last `freeze_trainable_layers` decoder layers train, the rest is frozen.
- "full": every parameter trains.

A model loaded in 8 or 4 bits (bitsandbytes) takes "lora" or "dora" only: that is QLoRA.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from labkit import hardware
from labkit.parameters import count_parameters

FinetuningType = Literal["lora", "dora", "freeze", "full"]
FINETUNING_TYPES: tuple[str, ...] = typing.get_args(FinetuningType)


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
    freeze_trainable_layers: int = 2,
    seed: int | None = None,
) -> tuple[nn.Module, AdapterSummary]:
    """Make `model` trainable by `finetuning_type`; returns the (possibly wrapped) model and a summary.

    r, alpha, dropout, target_modules, init_lora_weights ("pissa", "gaussian", ...) and use_rslora
    apply to "lora" and "dora"; target_modules="all-linear" means find_all_linear_modules(model).
    freeze_trainable_layers applies to "freeze": the last n decoder layers train (the first n if
    negative). seed, when given, fixes the adapter's random initialization without touching the
    global random state.
    """
    if finetuning_type not in FINETUNING_TYPES:
        raise ValueError(f"finetuning_type={finetuning_type!r} is not one of {FINETUNING_TYPES}.")
    quantized = any(getattr(model, f"is_loaded_in_{b}bit", False) for b in (4, 8))
    if quantized and finetuning_type not in ("lora", "dora"):
        raise ValueError(f"finetuning_type={finetuning_type!r} cannot train a model loaded in 8 or 4 "
                         "bits: use 'lora' or 'dora' (QLoRA), or load the model without quantization.")
    with hardware.seeded(seed):
        if finetuning_type in ("lora", "dora"):
            model, targets = _attach_lora(model, dora=finetuning_type == "dora", r=r, alpha=alpha,
                                          dropout=dropout, target_modules=target_modules,
                                          init_lora_weights=init_lora_weights, use_rslora=use_rslora)
        elif finetuning_type == "freeze":
            targets = _freeze_all_but_last_layers(model, freeze_trainable_layers)
        else:
            model.requires_grad_(True)
            targets = ()
    if finetuning_type in ("freeze", "full"):
        _upcast_trainable(model)
    return model, summarize_trainable(model, finetuning_type, targets)


def _attach_lora(
    model: nn.Module, *, dora: bool, r: int, alpha: int, dropout: float,
    target_modules: str | Sequence[str], init_lora_weights: bool | str, use_rslora: bool,
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
        exclude_modules=_colliding_head_names(model, targets), use_dora=dora,
        init_lora_weights=init_lora_weights,  # type: ignore[arg-type]  # peft checks the name
        use_rslora=use_rslora, task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config), tuple(targets)


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


def _freeze_all_but_last_layers(model: nn.Module, n: int) -> tuple[str, ...]:
    """Freeze everything, then unfreeze the last n decoder layers (the first -n when n < 0)."""
    layers = decoder_layers(model)
    if n == 0 or abs(n) > len(layers):
        raise ValueError(f"freeze_trainable_layers={n}: choose 1..{len(layers)} (last layers) or "
                         f"-1..-{len(layers)} (first layers).")
    chosen = range(len(layers) - n, len(layers)) if n > 0 else range(-n)
    model.requires_grad_(False)
    for i in chosen:
        layers[i].requires_grad_(True)
    return tuple(f"layer {i}" for i in chosen)


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
