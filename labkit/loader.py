"""Load a causal LM and its tokenizer: the model loader of LlamaFactory, reduced to what a lesson needs.

    model = load_model()                          # the embedded pocket LLM, offline, fp32 on CPU
    model = load_model("Qwen/Qwen2.5-0.5B-Instruct", quantization="4bit")   # a hub model (online)
    tok = load_tokenizer()
    print(summarize(model))                       # parameters, trainable, dtype, bytes in memory

Everything goes through the transformers Auto classes, so the pocket model and a real model are
loaded the same way. The dtype comes from `labkit.hardware.compute_dtype()` (fp32 on CPU, bf16 or
fp16 on a GPU), and so does the compute dtype of bitsandbytes' 4-bit layers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, PreTrainedModel

from labkit import hardware
from labkit.parameters import count_parameters, logical_numel
from labkit.paths import POCKET_LLM  # the embedded default, pre-trained by `labkit pretrain`

# Names a lesson's MODEL parameter may use for it (besides None and the path itself).
POCKET_NAMES = ("pocket", "pocket-llm")

Quantization = Literal["8bit", "4bit"]
ATTENTION_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2", "flex_attention")


class OfflineModelError(OSError):
    """A hub model was asked for on a machine that cannot reach the hub (and has no cached copy)."""


def resolve(name_or_path: str | os.PathLike[str] | None = None) -> tuple[str, bool]:
    """Where to load from: (a local folder or a hub id, whether to use local files only).

    None or "pocket" is the embedded pocket LLM. A folder that exists wins. A hub id is used
    offline only when the hub cache already holds it; otherwise we fail here, at once, rather
    than deep inside huggingface_hub after a timeout.
    """
    if name_or_path is None or name_or_path in POCKET_NAMES:
        name_or_path = POCKET_LLM
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{path} is a folder but holds no config.json: point at a folder written by "
                "save_pretrained() (config.json, *.safetensors, tokenizer files)."
            )
        return str(path), True
    name = str(name_or_path)
    if _looks_like_path(name):
        hint = " (run `labkit pretrain` to rebuild it)" if path == POCKET_LLM else ""
        raise FileNotFoundError(f"model folder {path} does not exist{hint}.")
    if _is_cached(name):
        return name, hardware.is_offline()
    if hardware.is_offline():
        raise OfflineModelError(
            f"{name!r} is a Hugging Face hub id, but this machine is offline (or HF_HUB_OFFLINE=1) "
            "and has no cached copy.\n"
            f"  - use the embedded pocket LLM: load_model() or load_model({str(POCKET_LLM)!r})\n"
            "  - or point at a local folder that holds the model: load_model('/path/to/model'), "
            "a folder with config.json, *.safetensors and the tokenizer files "
            "(e.g. one written by `huggingface-cli download NAME --local-dir DIR` on a machine "
            "with internet)."
        )
    return name, False


def _looks_like_path(name: str) -> bool:
    """Hub ids are "name" or "org/name"; anything else (absolute, ./, ~, deeper) is a path."""
    return (
        name.startswith((".", "/", "~"))
        or name.count("/") > 1
        or "\\" in name
        or Path(name).suffix in (".safetensors", ".bin", ".json")
    )


def _is_cached(repo_id: str) -> bool:
    """True when the hub cache on this machine already holds the model's config."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # an id the hub library rejects is simply not cached
        return False
    return isinstance(found, str)


def quantization_config(
    quantization: Quantization | None, dev: torch.device | None = None
) -> BitsAndBytesConfig | None:
    """bitsandbytes settings: 8-bit LLM.int8, or 4-bit NF4 with double quantization (QLoRA).

    The 4-bit layers compute in the kit's dtype: fp32 on CPU, bf16/fp16 on a GPU.
    """
    if quantization is None:
        return None
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    if quantization == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=hardware.compute_dtype(dev),
        )
    raise ValueError(f"quantization={quantization!r}: use None, '8bit' or '4bit'.")


def load_model(
    name_or_path: str | os.PathLike[str] | None = None,
    quantization: Quantization | None = None,
    attn_implementation: str | None = None,
    dtype: torch.dtype | str = "auto",
    gradient_checkpointing: bool = False,
    device: torch.device | str | None = None,
    **kwargs: Any,
) -> torch.nn.Module:
    """Load a causal LM through AutoModelForCausalLM.

    name_or_path: a local folder or a hub id; None (or "pocket") loads the embedded pocket LLM.
    quantization: None, "8bit" or "4bit" (bitsandbytes; works on CPU too).
    attn_implementation: "eager", "sdpa", ... (None: the transformers default, sdpa).
    dtype: "auto" takes the kit's rule (labkit.hardware.compute_dtype); or a torch dtype.
    gradient_checkpointing: recompute activations in the backward pass (less memory, more compute).
    device: where to put the model; None takes labkit.hardware.device().
    Further keyword arguments go to from_pretrained.
    """
    source, local_only = resolve(name_or_path)
    dev = torch.device(device) if device is not None else hardware.device()
    if attn_implementation is not None and attn_implementation not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(
            f"attn_implementation={attn_implementation!r}: choose one of {ATTENTION_IMPLEMENTATIONS}."
        )
    torch_dtype = hardware.compute_dtype(dev) if dtype == "auto" else _as_dtype(dtype)
    options: dict[str, Any] = {"dtype": torch_dtype, "local_files_only": local_only, **kwargs}
    if attn_implementation is not None:
        options["attn_implementation"] = attn_implementation
    bnb = quantization_config(quantization, dev)
    if bnb is not None:
        # bitsandbytes places the quantized weights itself: it needs a device map, not .to().
        options["quantization_config"] = bnb
        options.setdefault("device_map", {"": str(dev)})
    model = AutoModelForCausalLM.from_pretrained(source, **options)
    if bnb is None and "device_map" not in options:
        model.to(dev)  # type: ignore[arg-type]  # in place; transformers' wrapper of .to confuses mypy
    if gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return model


def _as_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, str(dtype), None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"dtype={dtype!r}: use 'auto', or a torch dtype such as 'float32'.")
    return value


def enable_gradient_checkpointing(model: PreTrainedModel) -> None:
    """Recompute activations in the backward pass; the KV cache is useless while training."""
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    # Adapters (LoRA) freeze the embeddings; checkpointed layers then need an input that asks for
    # gradients, or no gradient reaches the adapters.
    model.enable_input_require_grads()


def load_tokenizer(
    name_or_path: str | os.PathLike[str] | None = None, padding_side: str = "left", **kwargs: Any
) -> Any:
    """Load the tokenizer through AutoTokenizer.

    padding_side="left" suits generation and scoring of a batch (the answer follows the prompt
    at the end of each row). A tokenizer without a pad token gets its end-of-sequence token as pad.
    """
    source, local_only = resolve(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(
        source, local_files_only=local_only, padding_side=padding_side, **kwargs
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


@dataclass(frozen=True)
class ModelSummary:
    """What was loaded: sizes and number format."""

    name: str
    parameters: int
    trainable: int
    dtype: str
    bytes: int
    device: str
    quantization: str | None
    attn_implementation: str | None

    @property
    def trainable_fraction(self) -> float:
        return self.trainable / self.parameters if self.parameters else 0.0

    def __str__(self) -> str:
        quant = self.quantization or "none"
        return (
            f"{self.name}\n"
            f"  parameters   {self.parameters:>14,}\n"
            f"  trainable    {self.trainable:>14,}  ({100 * self.trainable_fraction:.2f}%)\n"
            f"  dtype        {self.dtype:>14}  (quantization: {quant})\n"
            f"  in memory    {_human_bytes(self.bytes):>14}\n"
            f"  device       {self.device:>14}  (attention: {self.attn_implementation})"
        )


def summarize(model: torch.nn.Module) -> ModelSummary:
    """Count parameters (labkit.parameters: a 4-bit weight counts as the weight it stands for) and
    the bytes actually held in memory."""
    size = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    dtypes: dict[str, int] = {}
    for param in model.parameters():
        name = str(param.dtype).removeprefix("torch.")
        dtypes[name] = dtypes.get(name, 0) + logical_numel(param)
    config = getattr(model, "config", None)
    quant = getattr(config, "quantization_config", None)
    quant_name = None
    if quant is not None:
        get = quant.get if isinstance(quant, dict) else lambda key: getattr(quant, key, None)
        quant_name = "4bit" if get("load_in_4bit") else "8bit" if get("load_in_8bit") else "other"
    first = next(model.parameters(), None)
    count = count_parameters(model)
    return ModelSummary(
        name=str(getattr(config, "name_or_path", "") or type(model).__name__),
        parameters=count.total,
        trainable=count.trainable,
        dtype=", ".join(sorted(dtypes, key=lambda k: -dtypes[k])) or "none",
        bytes=size,
        device=str(first.device) if first is not None else "none",
        quantization=quant_name,
        attn_implementation=getattr(config, "_attn_implementation", None),
    )


def _human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024
    return f"{value:.1f} GB"
