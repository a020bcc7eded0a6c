"""Load a causal LM and its tokenizer: the model loader of LlamaFactory, reduced to what a lesson needs.

    model = load_model()                          # the embedded pocket LLM, offline, fp32 on CPU
    model = load_model("Qwen/Qwen2.5-0.5B-Instruct", quantization=4)   # a hub model (online), QLoRA's NF4
    model = load_model(quantization=4, quantization_type="fp4", double_quantization=False)
    tok = load_tokenizer()
    print(summarize(model))                       # parameters, trainable, dtype, bytes in memory

It reads as LlamaFactory's model/loader.py and model/patcher.py do, one step per function:

    resolve(name)            where the weights are: the pocket LLM, a local folder, a hub id
    load_config(source)      config.json, through AutoConfig
    patch_config(...)        from_pretrained's options: choose_dtype (per hardware),
                             choose_attention (attention implementation), quantization_config
    from_pretrained(...)     AutoModelForCausalLM: the pocket model and a real one load alike
    patch_model(...)         the device, tie_embeddings, enable_gradient_checkpointing
    load_tokenizer           AutoTokenizer, then patch_tokenizer (the pad token)

The dtype comes from `labkit.hardware.compute_dtype()` (fp32 on CPU, bf16 or fp16 on a GPU), and so
does the compute dtype of bitsandbytes' 4-bit layers. Lesson 06 walks through every step.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    PretrainedConfig,
    PreTrainedModel,
)

from labkit import hardware
from labkit.parameters import count_parameters, logical_numel
from labkit.paths import POCKET_LLM  # the embedded default, pre-trained by `labkit pretrain`

# Names a lesson's MODEL parameter may use for it (besides None and the path itself).
POCKET_NAMES = ("pocket", "pocket-llm")

# 8 or 4 (LlamaFactory's quantization_bit), or the kit's older "8bit" / "4bit"; an int, so that a
# config's quantization_bit passes as it is (quantization_bits checks the value).
Quantization = int | str
QuantizationType = Literal["nf4", "fp4"]
QUANTIZATION_TYPES: tuple[str, ...] = ("nf4", "fp4")
ATTENTION_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2", "flex_attention")
logger = logging.getLogger(__name__)


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


def quantization_bits(quantization: Quantization | None) -> int | None:
    """4, 8 or None from any spelling the kit accepts: 4 or "4bit" (LlamaFactory's quantization_bit: 4)."""
    if quantization is None:
        return None
    bits = {4: 4, 8: 8, "4bit": 4, "8bit": 8}.get(quantization)
    if bits is None:
        raise ValueError(f"quantization={quantization!r}: use None, 8 or 4 (or '8bit', '4bit').")
    return bits


def quantization_config(
    quantization: Quantization | None,
    dev: torch.device | None = None,
    *,
    quantization_type: QuantizationType = "nf4",
    double_quantization: bool = True,
) -> BitsAndBytesConfig | None:
    """bitsandbytes settings from LlamaFactory's knobs (its model_utils/quantization.py).

    quantization: 8 (LLM.int8: one int8 per weight, one absmax per row) or 4 (blocks of 64
    weights, each a 4-bit code and one absmax per block). quantization_type: the 4-bit code,
    "nf4" (quantiles of a normal distribution, QLoRA) or "fp4" (a 4-bit float).
    double_quantization: quantize the absmax constants too (QLoRA; 8 bits instead of 32 per block).
    The 4-bit layers compute in the kit's dtype: fp32 on CPU, bf16/fp16 on a GPU.
    """
    bits = quantization_bits(quantization)
    if quantization_type not in QUANTIZATION_TYPES:
        raise ValueError(f"quantization_type={quantization_type!r}: choose one of {QUANTIZATION_TYPES} "
                         "(bitsandbytes' bnb_4bit_quant_type).")
    if bits is None:
        return None
    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quantization_type,
        bnb_4bit_use_double_quant=double_quantization,
        bnb_4bit_compute_dtype=hardware.compute_dtype(dev),
    )


def load_model(
    name_or_path: str | os.PathLike[str] | None = None,
    quantization: Quantization | None = None,
    attn_implementation: str | None = None,
    dtype: torch.dtype | str = "auto",
    gradient_checkpointing: bool = False,
    device: torch.device | str | None = None,
    *,
    quantization_type: QuantizationType = "nf4",
    double_quantization: bool = True,
    **kwargs: Any,
) -> torch.nn.Module:
    """Load a causal LM through AutoModelForCausalLM, in the steps of LlamaFactory's loader.

    name_or_path: a local folder or a hub id; None (or "pocket") loads the embedded pocket LLM.
    quantization: None, 8 or 4 (also "8bit", "4bit"): bitsandbytes, which works on CPU too;
    quantization_type ("nf4" or "fp4") and double_quantization apply to 4 bits (quantization_config).
    attn_implementation: "eager", "sdpa", ... (None: the transformers default, sdpa).
    dtype: "auto" takes the kit's rule (labkit.hardware.compute_dtype); or a torch dtype.
    gradient_checkpointing: recompute activations in the backward pass (less memory, more compute).
    device: where to put the model; None takes labkit.hardware.device().
    Further keyword arguments go to from_pretrained.
    """
    source, local_only = resolve(name_or_path)
    dev = torch.device(device) if device is not None else hardware.device()
    config = load_config(source, local_only)
    bnb = quantization_config(quantization, dev, quantization_type=quantization_type,
                              double_quantization=double_quantization)
    options = patch_config(config, dev, dtype=dtype, attn_implementation=attn_implementation,
                           quantization=bnb)
    options.update(local_files_only=local_only, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(source, config=config, **options)
    patch_model(model, dev, placed="device_map" in options,
                gradient_checkpointing=gradient_checkpointing)
    return model


def load_config(source: str, local_only: bool) -> PretrainedConfig:
    """The model's config.json, read before the weights so the patches can look at it."""
    return AutoConfig.from_pretrained(source, local_files_only=local_only)


def patch_config(
    config: PretrainedConfig,
    dev: torch.device,
    *,
    dtype: torch.dtype | str = "auto",
    attn_implementation: str | None = None,
    quantization: BitsAndBytesConfig | None = None,
) -> dict[str, Any]:
    """What from_pretrained needs besides the weights: dtype per hardware, attention, quantization.

    Returns the keyword arguments for from_pretrained (LlamaFactory's `init_kwargs`).
    """
    options: dict[str, Any] = {"dtype": choose_dtype(dev, dtype)}
    attention = choose_attention(attn_implementation)
    if attention is not None:
        options["attn_implementation"] = attention
    if quantization is not None:
        # bitsandbytes quantizes the weights while they are placed: it needs a device map, not .to().
        options["quantization_config"] = quantization
        options["device_map"] = {"": str(dev)}
    return options


def choose_dtype(dev: torch.device, dtype: torch.dtype | str = "auto") -> torch.dtype:
    """The dtype per hardware ("auto": labkit.hardware.compute_dtype, fp32 on CPU, bf16/fp16 on a
    GPU), or the one asked for."""
    if dtype == "auto":
        return hardware.compute_dtype(dev)
    if isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, str(dtype), None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"dtype={dtype!r}: use 'auto', or a torch dtype such as 'float32'.")
    return value


def choose_attention(attn_implementation: str | None) -> str | None:
    """The attention implementation: None leaves transformers' default (sdpa, PyTorch's fused
    scaled_dot_product_attention); "eager" is the plain matmul-softmax-matmul, which can return
    the attention weights; flash_attention_2 needs a GPU and the flash-attn package."""
    if attn_implementation is not None and attn_implementation not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(
            f"attn_implementation={attn_implementation!r}: choose one of {ATTENTION_IMPLEMENTATIONS}."
        )
    return attn_implementation


def patch_model(
    model: torch.nn.Module, dev: torch.device, *, placed: bool, gradient_checkpointing: bool = False
) -> None:
    """After from_pretrained: the device (unless a device map placed it), tied embeddings,
    gradient checkpointing."""
    if not placed:
        model.to(dev)  # type: ignore[arg-type]  # in place; transformers' wrapper of .to confuses mypy
    tie_embeddings(model)
    if gradient_checkpointing:
        enable_gradient_checkpointing(model)  # type: ignore[arg-type]  # a PreTrainedModel


def tie_embeddings(model: torch.nn.Module) -> bool:
    """Make sure a model whose config ties the output head to the input embeddings holds one matrix.

    A tied model (the pocket LLM, Qwen2.5-0.5B, Llama-3.2-1B) reads and writes tokens with the same
    vocab x hidden matrix: counted once, stored once, left unquantized by bitsandbytes (transformers
    skips the output embeddings), and never given an adapter (labkit.adapters.find_all_linear_modules).
    A checkpoint that stores both copies, or a device map that splits them, unties them; tie_weights()
    restores the tie. Returns whether the model is tied.
    """
    tied = getattr(getattr(model, "config", None), "tie_word_embeddings", False)
    if not tied or not isinstance(model, PreTrainedModel) or model.get_output_embeddings() is None:
        return False
    if model.get_output_embeddings().weight is not model.get_input_embeddings().weight:
        logger.info("%s: tying the output head to the input embeddings, as its config says",
                    type(model).__name__)
        model.tie_weights()
    return model.get_output_embeddings().weight is model.get_input_embeddings().weight


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
    """Load the tokenizer through AutoTokenizer, then patch_tokenizer.

    padding_side="left" suits generation and scoring of a batch (the answer follows the prompt
    at the end of each row).
    """
    source, local_only = resolve(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(
        source, local_files_only=local_only, padding_side=padding_side, **kwargs
    )
    return patch_tokenizer(tokenizer)


def patch_tokenizer(tokenizer: Any) -> Any:
    """The pad token: a tokenizer without one (Llama's) pads with its end-of-sequence token.

    Batches need a pad id; padding carries no loss and is masked out of attention, so reusing the
    end token is safe as long as labels mask the padding (labkit.chat.IGNORE).
    """
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
