"""8-bit and 4-bit weights, written out small and exact, and what quantizing a model costs.

The formats are bitsandbytes' (the library behind `load_model(quantization=8 or 4)`), in plain torch:

    quantize_int8_rows(w)           LLM.int8 without outliers: q = round(127 * w / max|w_row|), one
                                    absmax per row (arXiv 2208.07339)
    quantize_4bit(w, "nf4")         QLoRA's blockwise 4-bit: blocks of 64 weights, each weight the
                                    index of the nearest of 16 code values, one absmax per block;
                                    NF4's codes are quantiles of N(0, 1) (arXiv 2305.14314)
    double_quantize(absmax)         the absmax constants quantized too: 8 bits each, blocks of 256,
                                    after subtracting their mean (QLoRA's double quantization)

tests/test_quantization.py checks each against bitsandbytes' own functions. What quantizing costs
is measured on a loaded model:

    storage_bytes(model)            bytes per layer, measured from the tensors bitsandbytes holds
    layer_errors(quantized, fp32)   relative Frobenius error of each dequantized linear weight
    heldout_loss(model, tok, texts) mean next-token loss on texts the model did not train on

Lesson 06 teaches all of it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from torch import nn

from labkit.chat import IGNORE, pad_token_id, token_ids
from labkit.parameters import logical_numel

# bitsandbytes' NF4 code: 16 values in [-1, 1], quantiles of N(0, 1) with an exact zero
# (bitsandbytes/functional.py get_4bit_type("nf4"); normal_float_code() derives them).
NF4_CODE = (
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
)
# bitsandbytes' FP4 code: 1 sign bit, 2 exponent bits, 1 mantissa bit, listed in the order of the
# 4-bit patterns (index 8 and up: the sign bit set) and divided by the largest value, 12.
FP4_CODE = tuple(v / 12 for v in (0, 0.0625, 8, 12, 4, 6, 2, 3, -0.0, -0.0625, -8, -12, -4, -6, -2, -3))
CODES = {"nf4": NF4_CODE, "fp4": FP4_CODE}
BLOCKSIZE = 64  # weights per absmax in bitsandbytes' 4-bit layers
CONSTANT_BLOCKSIZE = 256  # absmax constants per second-level scale under double quantization
# QLoRA's offset: halfway between the quantile levels of a 15- and a 16-level symmetric code.
NF4_OFFSET = (1 - 1 / (2 * 15) + 1 - 1 / (2 * 16)) / 2


def code_table(quant_type: str) -> torch.Tensor:
    """The 16 code values of "nf4" or "fp4", as float32, in the order of their 4-bit indices."""
    if quant_type not in CODES:
        raise ValueError(f"quant_type={quant_type!r}: choose one of {sorted(CODES)}.")
    return torch.tensor(CODES[quant_type], dtype=torch.float32)


def normal_float_code(offset: float = NF4_OFFSET) -> torch.Tensor:
    """NF4 derived: 8 positive and 7 negative quantiles of N(0, 1), a zero, scaled into [-1, 1].

    The quantiles sit at equal steps of probability from 0.5 to `offset` (not to 1, where the
    normal quantile is infinite); an exact zero keeps zeros (padding, pruned weights) exact.
    """
    normal = torch.distributions.Normal(0.0, 1.0)
    positive = normal.icdf(torch.linspace(offset, 0.5, 9, dtype=torch.float64)[:-1])
    negative = -normal.icdf(torch.linspace(offset, 0.5, 8, dtype=torch.float64)[:-1])
    values = torch.cat([positive, torch.zeros(1, dtype=torch.float64), negative]).sort().values
    return (values / values.max()).float()


def dynamic_code() -> torch.Tensor:
    """bitsandbytes' signed 8-bit dynamic code (create_dynamic_map): 256 sorted values in [-1, 1],
    dense near zero. Double quantization stores each absmax constant as an index into it."""
    values: list[float] = []
    for exponent in range(7):
        edges = torch.linspace(0.1, 1, 2**exponent + 1, dtype=torch.float32)
        means = ((edges[:-1] + edges[1:]) / 2 * 10.0 ** (exponent - 6)).tolist()
        values += means + [-m for m in means]
    return torch.tensor(sorted([*values, 0.0, 1.0]), dtype=torch.float32)


def nearest_code(scaled: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
    """The index into `code` of the value nearest to each element (ties: the smaller value), uint8.

    As bitsandbytes does it: sort the code, find each element's interval between midpoints.
    """
    order = torch.argsort(code, stable=True)
    ordered = code[order].to(scaled.dtype)
    midpoints = (ordered[:-1] + ordered[1:]) / 2
    return order[torch.bucketize(scaled, midpoints)].to(torch.uint8)


# --- 8 bits: absmax per row (LLM.int8 without its outlier columns) -----------------------------

def quantize_int8_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(q, absmax): q = round(127 * w / absmax) per row, int8 in [-127, 127]; absmax = max |w| per row.

    torch.round rounds halves to even, as bitsandbytes does. The arithmetic runs in the weight's
    dtype; bitsandbytes casts the weight to fp16 first and computes in fp32, so quantize
    `weight.half().float()` to get its numbers exactly.
    """
    absmax = weight.abs().amax(dim=-1)  # (rows,)
    q = torch.round(weight * (127.0 / absmax.unsqueeze(-1)))
    return q.to(torch.int8), absmax


def dequantize_int8_rows(q: torch.Tensor, absmax: torch.Tensor) -> torch.Tensor:
    """w ~ q * absmax / 127, per row, in absmax's dtype."""
    return q.to(absmax.dtype) * (absmax.unsqueeze(-1) / 127.0)


# --- 4 bits: blocks of 64, a code index per weight, an absmax per block ------------------------

@dataclass(frozen=True)
class DoubleQuantized:
    """Absmax constants stored in 8 bits: codes into dynamic_code(), one scale per block of 256,
    and the mean that was subtracted first (the constants are all positive; centred, they use both
    halves of the signed code)."""

    codes: torch.Tensor  # uint8, one per constant
    scales: torch.Tensor  # float32, one per block of CONSTANT_BLOCKSIZE constants
    offset: float
    blocksize: int = CONSTANT_BLOCKSIZE


@dataclass(frozen=True)
class Quantized4bit:
    """A 4-bit weight: `codes` (one index 0..15 per weight, unpacked; pack_4bit packs two per byte),
    `absmax` (one per block, or double-quantized), the weight's shape and code."""

    codes: torch.Tensor
    absmax: torch.Tensor | DoubleQuantized
    shape: tuple[int, ...]
    quant_type: str = "nf4"
    blocksize: int = BLOCKSIZE


def blockwise_absmax(values: torch.Tensor, blocksize: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(scaled, absmax): the flattened values divided by the max |value| of their block, clamped to
    [-1, 1]; the last block may be shorter. A block of zeros keeps absmax 0 and scales to 0.
    The arithmetic runs in the values' dtype (float32 for bitsandbytes' numbers)."""
    flat = values.reshape(-1)
    blocks = math.ceil(flat.numel() / blocksize)
    padded = torch.nn.functional.pad(flat, (0, blocks * blocksize - flat.numel()))
    absmax = padded.reshape(blocks, blocksize).abs().amax(dim=1)  # (blocks,)
    scale = (1.0 / absmax.clamp(min=1e-38)).repeat_interleave(blocksize)[: flat.numel()]
    return torch.clamp(flat * scale, -1, 1), absmax


def quantize_blockwise(
    values: torch.Tensor, code: torch.Tensor, blocksize: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes, absmax): each value's nearest code index after dividing by its block's absmax."""
    scaled, absmax = blockwise_absmax(values, blocksize)
    return nearest_code(scaled, code), absmax


def dequantize_blockwise(
    codes: torch.Tensor, absmax: torch.Tensor, code: torch.Tensor, blocksize: int
) -> torch.Tensor:
    """code[index] * absmax of the block, flattened."""
    scale = absmax.repeat_interleave(blocksize)[: codes.numel()]
    return code.to(scale.dtype)[codes.reshape(-1).long()] * scale


def double_quantize(absmax: torch.Tensor, blocksize: int = CONSTANT_BLOCKSIZE) -> DoubleQuantized:
    """Quantize the (positive) absmax constants: subtract their mean, then 8-bit dynamic codes in
    blocks of `blocksize`, each block with its own fp32 scale.

    This takes the nearest code. bitsandbytes' CPU kernel searches its bins approximately and, for
    a few constants in a thousand that sit near the midpoint of two codes, keeps the neighbour.
    """
    offset = absmax.mean()
    codes, scales = quantize_blockwise(absmax - offset, dynamic_code(), blocksize)
    return DoubleQuantized(codes, scales, float(offset), blocksize)


def dequantize_constants(constants: DoubleQuantized) -> torch.Tensor:
    """The absmax constants back in fp32."""
    centred = dequantize_blockwise(constants.codes, constants.scales, dynamic_code(), constants.blocksize)
    return centred + constants.offset


def quantize_4bit(
    weight: torch.Tensor,
    quant_type: str = "nf4",
    blocksize: int = BLOCKSIZE,
    double_quantization: bool = False,
) -> Quantized4bit:
    """Blockwise 4-bit quantization of `weight` (flattened row by row), as bitsandbytes stores it."""
    codes, absmax = quantize_blockwise(weight, code_table(quant_type), blocksize)
    constants = double_quantize(absmax) if double_quantization else absmax
    return Quantized4bit(codes, constants, tuple(weight.shape), quant_type, blocksize)


def dequantize_4bit(quantized: Quantized4bit) -> torch.Tensor:
    """The fp32 weight a Quantized4bit stands for."""
    absmax = quantized.absmax
    if isinstance(absmax, DoubleQuantized):
        absmax = dequantize_constants(absmax)
    flat = dequantize_blockwise(quantized.codes, absmax, code_table(quantized.quant_type),
                                quantized.blocksize)
    return flat.reshape(quantized.shape)


def pack_4bit(codes: torch.Tensor, fill: int = 0) -> torch.Tensor:
    """Two 4-bit codes per byte, the first in the high half (bitsandbytes' layout). An odd count
    is completed with `fill`; bitsandbytes fills with the code of 0.0 (NF4: index 7)."""
    flat = codes.reshape(-1).to(torch.uint8)
    if flat.numel() % 2:
        flat = torch.cat([flat, flat.new_full((1,), fill)])
    return (flat[0::2] << 4) | flat[1::2]


def unpack_4bit(packed: torch.Tensor, count: int) -> torch.Tensor:
    """The first `count` 4-bit codes of packed bytes (the inverse of pack_4bit)."""
    flat = packed.reshape(-1).view(torch.uint8)
    return torch.stack([flat >> 4, flat & 0x0F], dim=1).reshape(-1)[:count]


def stored_4bit(weight: Any) -> Quantized4bit:
    """What a bitsandbytes 4-bit weight (Params4bit) stores, read into a Quantized4bit."""
    state = weight.quant_state
    if getattr(state, "packing_format_for_cpu", False):
        raise ValueError(
            "this 4-bit layer was repacked for bitsandbytes' CPU bf16 kernel by an inference "
            "forward pass (eval mode, no gradients), which also rounded its absmax to bf16: "
            "read it from a freshly loaded model, before running it.")
    shape = tuple(state.shape)
    absmax: torch.Tensor | DoubleQuantized = state.absmax
    if state.nested:
        absmax = DoubleQuantized(state.absmax, state.state2.absmax, float(state.offset),
                                 state.state2.blocksize)
    return Quantized4bit(unpack_4bit(weight.data, math.prod(shape)), absmax, shape,
                         state.quant_type, state.blocksize)


# --- measuring a loaded model -----------------------------------------------------------------

def quantized_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every bitsandbytes layer (Linear8bitLt, Linear4bit) of `model`, by its full name."""
    return {name: module for name, module in model.named_modules() if _bits_of(module)}


def _bits_of(module: nn.Module) -> int | None:
    """8 or 4 for a bitsandbytes linear layer (or a subclass, such as LinearNF4), else None.

    Checked by name, so that nothing imports bitsandbytes here; peft's wrappers of these layers
    share their class names but not their module.
    """
    for cls in type(module).__mro__:
        if cls.__module__.startswith("bitsandbytes"):
            bits = {"Linear8bitLt": 8, "Linear4bit": 4}.get(cls.__name__)
            if bits is not None:
                return bits
    return None


def _nbytes(*tensors: torch.Tensor | None) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def _int8_absmax(module: nn.Module) -> torch.Tensor | None:
    """A Linear8bitLt's absmax per row: on its weight until the first forward, then on its state."""
    found = getattr(module.weight, "SCB", None)
    return found if found is not None else getattr(getattr(module, "state", None), "SCB", None)


def layer_storage(module: nn.Module) -> dict[str, int]:
    """Bytes a linear layer holds for its weight, measured from its tensors.

    codes: the weight itself (fp32, int8, or two 4-bit codes per byte); constants: the absmax per
    row or block (and, double-quantized, their scales and offset); tables: the code tables
    bitsandbytes keeps with each 4-bit layer (16 values, 256 more under double quantization).
    The bias, if any, is left out.
    """
    weight: Any = module.weight  # a Parameter, or bitsandbytes' Int8Params / Params4bit
    state = getattr(weight, "quant_state", None)
    if state is None:
        return {"codes": _nbytes(weight), "constants": _nbytes(_int8_absmax(module)), "tables": 0}
    nested = getattr(state, "state2", None) if state.nested else None
    return {
        "codes": _nbytes(weight),
        "constants": _nbytes(state.absmax, getattr(nested, "absmax", None),
                             state.offset if nested is not None else None),
        "tables": _nbytes(state.code, getattr(nested, "code", None)),
    }


def storage_bytes(model: nn.Module) -> pd.DataFrame:
    """Per linear layer (quantized or not, the output head included): parameters, bytes of codes,
    constants and tables, and bytes per parameter (codes + constants; tables apart)."""
    rows = []
    seen: set[int] = set()
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or id(module.weight) in seen:
            continue  # a tied head shares the embedding's tensor: count it once
        seen.add(id(module.weight))
        parts = layer_storage(module)
        n = logical_numel(module.weight)
        rows.append({"layer": name, "parameters": n, **parts,
                     "bytes_per_parameter": (parts["codes"] + parts["constants"]) / n})
    return pd.DataFrame(rows).set_index("layer")


def model_bytes(model: nn.Module) -> int:
    """Every byte of a model's weights: parameters, buffers, and bitsandbytes' constants and tables,
    each tensor once (a tied head is the embedding)."""
    total, seen = 0, set()
    for tensor in [*model.parameters(), *model.buffers()]:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            total += _nbytes(tensor)
    for module in quantized_layers(model).values():
        parts = layer_storage(module)
        total += parts["constants"] + parts["tables"]
    return total


def dequantized_weight(module: nn.Module) -> torch.Tensor:
    """The fp32 weight a linear layer stores: int8 codes times their row's absmax / 127, 4-bit codes
    looked up and scaled by their block's absmax (read with stored_4bit, dequantized here), or the
    weight itself for a layer that is not quantized."""
    weight: Any = module.weight
    bits = _bits_of(module)
    if bits == 8:
        absmax = _int8_absmax(module)
        if absmax is None:
            raise ValueError(f"{type(module).__name__} holds no absmax (SCB): is it quantized?")
        return dequantize_int8_rows(weight.data, absmax.float())
    if bits == 4:
        return dequantize_4bit(stored_4bit(weight)).float()
    return weight.detach().float()


def relative_error(weight: torch.Tensor, approximation: torch.Tensor) -> float:
    """||W - W_hat||_F / ||W||_F."""
    weight = weight.float()
    return float(torch.linalg.norm(weight - approximation.float()) / torch.linalg.norm(weight))


def layer_errors(quantized: nn.Module, original: nn.Module) -> pd.DataFrame:
    """Per quantized linear layer: its shape, the relative Frobenius error of its dequantized weight
    against the original's, and the largest absolute error."""
    originals = dict(original.named_modules())
    rows = []
    for name, module in quantized_layers(quantized).items():
        if name not in originals:
            raise KeyError(f"{name} is in the quantized model but not in the original: compare a "
                           "model with the one it was quantized from.")
        weight = originals[name].weight.detach().float()
        approximation = dequantized_weight(module)
        rows.append({"layer": name, "shape": tuple(weight.shape),
                     "relative_error": relative_error(weight, approximation),
                     "max_abs_error": float((weight - approximation).abs().max())})
    return pd.DataFrame(rows).set_index("layer")


@torch.no_grad()
def heldout_loss(
    model: nn.Module, tokenizer: Any, texts: Sequence[str], batch_size: int = 8, max_length: int = 512
) -> float:
    """Mean next-token cross-entropy (nats per token) over `texts`; perplexity is exp(loss).

    Rows are padded on the right, so each token sees the positions it would see alone, and the
    padding carries no loss.
    """
    rows = [ids[:max_length] for ids in token_ids(tokenizer, texts) if len(ids) > 1]
    if not rows:
        raise ValueError("heldout_loss needs at least one text of two or more tokens.")
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for start in range(0, len(rows), batch_size):
        batch = rows[start:start + batch_size]
        width = max(len(r) for r in batch)
        ids = torch.tensor([r + [pad_token_id(tokenizer)] * (width - len(r)) for r in batch], device=device)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in batch], device=device)
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
        labels = ids.masked_fill(mask == 0, IGNORE)[:, 1:]
        total += float(torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), labels.reshape(-1),
            ignore_index=IGNORE, reduction="sum"))
        count += int((labels != IGNORE).sum())
    return total / count
