"""The memory ledger of fine-tuning: bytes per parameter by formula, and the peak that training reaches.

    ledger = predict(model, batch_size=4, seq_len=128, answer_tokens=96)   # after the adapter is on
    print(ledger)                      # weights, gradients, optimizer states, activations; the peak
    ledger.bytes_per_parameter         # (weights + gradients + optimizer states) / parameters
    print(paper_table())               # 18 -> 8 -> 2 -> 1 -> ~0.6 bytes per parameter, term by term
    result, peak = measure_peak(lambda: train_sft(model, tok, pairs, config), held=model)
    peak.peak_bytes                    # what the allocator held at the worst moment (CPU or GPU)

Training holds four kinds of memory (Zheng et al. 2024, "LlamaFactory", arXiv 2403.13372, sec. 3.1
and its hardware table):
- weights: every parameter, at its storage size. A bitsandbytes 4-bit weight is NF4 (two codes per
  byte) with one absmax per block of 64 weights, and with double quantization those absmax are
  themselves 8-bit numbers with one fp32 scale per 256 of them (Dettmers et al. 2023, "QLoRA",
  arXiv 2305.14314): 4 + 8/64 + 32/(64*256) = 4.127 bits per weight. An 8-bit weight (LLM.int8) is
  one byte plus one fp32 absmax per row.
- gradients: one per trainable parameter, in the parameter's dtype.
- optimizer states: AdamW keeps two moments per trainable parameter (GaLore keeps them for a rank-r
  projection of each gradient instead, plus the projection).
- activations: what the forward pass saves for the backward pass. They grow with the tokens of a
  batch, not with the parameters, and are where LoRA and full tuning differ least.

The paper's bytes per parameter count the first three only (paper_table). The peak adds the
activations and the temporaries of the worst moment: the end of the forward pass (all layers'
activations, one layer's temporaries: DoRA's weight norm), a point of the backward pass
(activations not yet freed, gradients made so far, optimizer states from the step before) or the
optimizer step (all gradients alive, plus the step's temporaries). `predict` models the three and
keeps the largest.

The activations are counted for the kit's SFT loop (labkit.train.sft): a transformers Llama with SDPA
attention, no attention mask, and the output head run on the answer tokens only. Which tensors
autograd saves depends on what trains: a frozen linear layer keeps no input (its weight needs no
gradient), a LoRA layer keeps its input and its r-dim intermediate, a layer below everything that
trains saves nothing at all. tests/test_memory.py checks each count against the tensors autograd
really saves, and the whole prediction against the measured peak. docs/memory.md has the measured
table; lesson 07 recomputes the ledger by hand.
"""

from __future__ import annotations

import math
import sys
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import torch
from torch import nn

from labkit.adapters import decoder_layers, find_all_linear_modules
from labkit.parameters import count_parameters, logical_numel

T = TypeVar("T")
PrecisionName = Literal["fp32", "amp", "pure_bf16"]
PRECISION_NAMES: tuple[str, ...] = typing.get_args(PrecisionName)

# bitsandbytes' 4-bit format (QLoRA): weights per absmax, and absmax per second-level scale.
NF4_BLOCK = 64
NF4_CONSTANT_BLOCK = 256
NF4_TABLE = 16  # the code table kept with each 4-bit layer (fp32 values)
DOUBLE_QUANT_TABLE = 256  # the 8-bit code table of the absmax constants (fp32 values)


# --- precisions ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Precision:
    """Bytes per number in each role under one training precision."""

    name: str
    frozen: int  # a weight that does not train
    trainable: int  # a weight that trains (the fp32 "master" copy under AMP)
    cast_copy: int  # AMP: the 16-bit copy autocast keeps of each trained weight during a step
    gradient: int
    optimizer_state: int  # each of AdamW's two moments
    activation: int  # most saved activations (some stay fp32: ACTIVATIONS_FP32, _element_bytes)
    explanation: str


# Only fp32 is measured here (a CPU); the 16-bit rows follow the paper's accounting and, for the
# activations, transformers' code (docs/memory.md).
PRECISIONS: dict[str, Precision] = {
    "fp32": Precision("fp32", 4, 4, 0, 4, 4, 4,
                      "everything fp32 (the kit on a CPU)"),
    "amp": Precision("amp", 2, 4, 2, 4, 4, 2,
                     "mixed precision: fp32 master weights and gradients, 16-bit copies to compute with "
                     "(the kit on a GPU: frozen weights load in bf16, trained ones are upcast)"),
    "pure_bf16": Precision("pure_bf16", 2, 2, 0, 2, 2, 2,
                           "pure bf16: weights, gradients and AdamW moments all 16-bit"),
}


def get_precision(name: str) -> Precision:
    """The Precision called `name` ("fp32", "amp" or "pure_bf16")."""
    if name not in PRECISIONS:
        raise ValueError(f"precision={name!r}: choose one of {PRECISION_NAMES}.")
    return PRECISIONS[name]


# --- weights ------------------------------------------------------------------------------------

def nf4_bytes(numel: int, double_quantization: bool = True, blocksize: int = NF4_BLOCK) -> int:
    """Bytes bitsandbytes holds for one 4-bit weight of `numel` numbers, by formula.

    Two 4-bit codes per byte; one absmax per block of `blocksize` weights, fp32 (4 bytes), or under
    double quantization 8-bit (1 byte) with one fp32 scale per 256 absmax, one fp32 offset and the
    8-bit code table (256 fp32); and the 16 fp32 values of the NF4 table itself.
    """
    blocks = math.ceil(numel / blocksize)
    codes = math.ceil(numel / 2)
    if not double_quantization:
        return codes + 4 * blocks + 4 * NF4_TABLE
    scales = math.ceil(blocks / NF4_CONSTANT_BLOCK)
    return codes + blocks + 4 * scales + 4 + 4 * DOUBLE_QUANT_TABLE + 4 * NF4_TABLE


def int8_bytes(rows: int, columns: int) -> int:
    """Bytes of an LLM.int8 weight: one int8 per number and one fp32 absmax per row (output feature)."""
    return rows * columns + 4 * rows


def _bnb_bits(param: torch.Tensor) -> int | None:
    """4 or 8 for a bitsandbytes weight (Params4bit, Int8Params holding int8), else None."""
    if getattr(param, "quant_state", None) is not None:
        return 4
    if type(param).__name__ == "Int8Params" and param.dtype == torch.int8:
        return 8
    return None


def weight_bytes(param: torch.Tensor, prec: Precision) -> int:
    """Bytes of one parameter under a precision; quantized weights at their bitsandbytes size."""
    bits = _bnb_bits(param)
    if bits == 4:
        state: Any = param.quant_state  # type: ignore[attr-defined]
        return nf4_bytes(logical_numel(param), double_quantization=bool(state.nested),
                         blocksize=int(state.blocksize))
    if bits == 8:
        return int8_bytes(param.shape[0], param.shape[1])
    per = (prec.trainable + prec.cast_copy) if param.requires_grad else prec.frozen
    return param.numel() * per


# --- what autograd saves in one decoder layer ---------------------------------------------------

@dataclass(frozen=True)
class Dimensions:
    """The sizes of a decoder-only transformer that activations depend on (from model.config)."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int

    @classmethod
    def of(cls, model: nn.Module) -> Dimensions:
        config = getattr(model, "config", None)
        if config is None or not hasattr(config, "hidden_size"):
            raise ValueError(f"{type(model).__name__} has no transformers config (hidden_size, ...): "
                             "predict() reads the shape of a Llama-like causal LM from model.config.")
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        return cls(config.hidden_size, config.intermediate_size, config.num_hidden_layers, heads,
                   getattr(config, "num_key_value_heads", None) or heads, head_dim, config.vocab_size)


@dataclass(frozen=True)
class Linear:
    """What one linear layer of a decoder layer does in training."""

    trains: bool = False  # its own weight takes gradients (full, freeze)
    lora_rank: int = 0  # rank of a LoRA adapter on it (0: none)
    dora_features: int = 0  # DoRA: the layer's output features (0: no DoRA)
    in_features: int = 0
    keeps_input_frozen: bool = False  # bitsandbytes 8-bit in training mode keeps its input anyway

    def keeps_input(self, input_grad: bool) -> bool:
        """Its input is saved for the backward pass: for its weight's gradient or LoRA's A (or by
        bitsandbytes' 8-bit CPU path, whenever a gradient passes through)."""
        return self.trains or self.lora_rank > 0 or (self.keeps_input_frozen and input_grad)

    @property
    def grad_out(self) -> bool:
        """Its output carries a gradient even when its input does not."""
        return self.trains or self.lora_rank > 0

    @property
    def dora_forward_temporaries(self) -> int:
        """Numbers DoRA's forward holds at once to get ||W + BA|| (peft makes BA as B(A(I)): an
        identity of in x in, A(I), then BA, scale x BA and W + scale x BA, each in x out)."""
        if not self.dora_features:
            return 0
        size, out = self.in_features, self.dora_features
        return size * size + size * self.lora_rank + 3 * size * out


@dataclass(frozen=True)
class LayerPlan:
    """What trains in one decoder layer, and whether a gradient reaches it from below."""

    grad_in: bool  # the residual stream entering the layer carries a gradient
    attention_norm: bool = False  # the RMSNorm weights train
    mlp_norm: bool = False
    linears: dict[str, Linear] = field(default_factory=dict)  # q_proj, ..., down_proj

    def linear(self, name: str) -> Linear:
        return self.linears.get(name, Linear())

    @property
    def attention_grad(self) -> bool:
        """q, k and v carry a gradient: SDPA (and RoPE) save their inputs."""
        return self.grad_in or self.attention_norm or any(
            self.linear(n).grad_out for n in ("q_proj", "k_proj", "v_proj"))

    @property
    def grad_out(self) -> bool:
        """The layer's output carries a gradient (its input did, or something in it trains)."""
        return self.grad_in or self.attention_norm or self.mlp_norm or any(
            lin.grad_out for lin in self.linears.values())


# Saved tensors that stay fp32 whatever the compute dtype: transformers' RMSNorm upcasts its input
# to fp32 and keeps that copy and 1/rms; SDPA's logsumexp is fp32.
ACTIVATIONS_FP32 = ("norm inputs", "norm statistics", "attention logsumexp")
NORMALIZED = "normalized (for the norm weight)"  # computed at the norm weight's dtype


def _element_bytes(name: str, prec: Precision) -> int:
    """Bytes per saved number of a kind of activation under a precision (16-bit ones derived from
    transformers' code, measured on a CPU in fp32 only)."""
    if name in ACTIVATIONS_FP32:
        return 4
    return prec.trainable if name == NORMALIZED else prec.activation


def _norm(grad_in: bool, trains: bool, hidden: int) -> dict[str, int]:
    """RMSNorm y = w * (x * rsqrt(mean(x^2) + eps)): x and 1/rms are saved when x carries a gradient
    (x is the residual stream, shared with the addition), x/rms when w trains."""
    return {"norm inputs": hidden if grad_in else 0, "norm statistics": 1 if grad_in else 0,
            NORMALIZED: hidden if trains else 0}


def _lora(plan: LayerPlan, names: tuple[str, ...]) -> int:
    """LoRA's B keeps A's output: r numbers per token per adapted layer. DoRA's output
    (m / ||W + BA|| - 1) * Wx + (m / ||W + BA||) * BAx keeps both Wx and BAx for m's gradient:
    twice the layer's output features more."""
    return sum(plan.linear(n).lora_rank + 2 * plan.linear(n).dora_features for n in names)


def attention_activations(shape: Dimensions, plan: LayerPlan) -> dict[str, int]:
    """Numbers saved per token by the attention half of a Llama layer (norm, q/k/v, SDPA, o_proj)."""
    q_dim, kv_dim = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    qkv = ("q_proj", "k_proj", "v_proj")
    saved = _norm(plan.grad_in, plan.attention_norm, shape.hidden)
    norm_grad = plan.grad_in or plan.attention_norm
    # q, k and v read one tensor, the norm's output: saved once, if any of them needs it
    saved["linear inputs"] = shape.hidden if any(plan.linear(n).keeps_input(norm_grad) for n in qkv) else 0
    attention_saves = plan.attention_grad
    # CPU/GPU SDPA (flash) keeps q, k, v (after RoPE), its output and a logsumexp per head; the
    # output is o_proj's input as well (same storage)
    saved["attention q, k, v, output"] = (2 * q_dim + 2 * kv_dim) if attention_saves else 0
    saved["attention logsumexp"] = shape.heads if attention_saves else 0
    if not attention_saves and plan.linear("o_proj").keeps_input(False):
        saved["linear inputs"] += q_dim
    saved["LoRA intermediates"] = _lora(plan, (*qkv, "o_proj"))
    return saved


def mlp_activations(shape: Dimensions, plan: LayerPlan, grad_in: bool) -> dict[str, int]:
    """Numbers saved per token by the MLP half: norm, down(silu(gate(x)) * up(x))."""
    size = shape.intermediate
    gate, up, down = plan.linear("gate_proj"), plan.linear("up_proj"), plan.linear("down_proj")
    saved = _norm(grad_in, plan.mlp_norm, shape.hidden)
    norm_grad = grad_in or plan.mlp_norm
    saved["linear inputs"] = shape.hidden if gate.keeps_input(norm_grad) or up.keeps_input(norm_grad) else 0
    gate_grad, up_grad = norm_grad or gate.grad_out, norm_grad or up.grad_out
    # silu keeps its input g; silu(g) * u keeps silu(g) for u's gradient and u for silu(g)'s
    silu_input, silu_output, up_output = gate_grad, up_grad, gate_grad
    saved["MLP gate, silu, up"] = size * (silu_input + silu_output + up_output)
    saved["linear inputs"] += size if down.keeps_input(gate_grad or up_grad) else 0
    saved["LoRA intermediates"] = _lora(plan, ("gate_proj", "up_proj", "down_proj"))
    return saved


def layer_activations(shape: Dimensions, plan: LayerPlan) -> dict[str, int]:
    """Numbers saved per token by one decoder layer, by kind (see attention_ and mlp_activations)."""
    attention = attention_activations(shape, plan)
    mid_grad = plan.grad_in or plan.attention_grad or plan.linear("o_proj").grad_out
    total = dict(attention)
    for name, count in mlp_activations(shape, plan, mid_grad).items():
        total[name] = total.get(name, 0) + count
    return total


def _activation_bytes(counts: dict[str, int], prec: Precision) -> int:
    return sum(n * _element_bytes(name, prec) for name, n in counts.items())


# --- reading a model ----------------------------------------------------------------------------

LAYER_LINEARS = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn",
                 "o_proj": "self_attn", "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}


def _trains(module: nn.Module | None) -> bool:
    return module is not None and any(p.requires_grad for p in module.parameters(recurse=False))


def _linear(module: nn.Module) -> Linear:
    """A linear layer as trained: a peft LoRA wrapper (base_layer, lora_A, r) or a plain one."""
    base = getattr(module, "base_layer", module)
    ranks = getattr(module, "r", {})
    adapters = getattr(module, "lora_A", {})
    rank = sum(ranks[name] for name in adapters if name in ranks)
    dora = any(getattr(module, "use_dora", {}).get(name, False) for name in adapters)
    eight_bit = type(base).__name__ == "Linear8bitLt"
    return Linear(trains=_trains(base), lora_rank=rank, keeps_input_frozen=eight_bit,
                  dora_features=int(getattr(base, "out_features", 0)) if dora else 0,
                  in_features=int(getattr(base, "in_features", 0)))


def layer_plans(model: nn.Module, grad_in: bool) -> list[LayerPlan]:
    """Read what trains in every decoder layer; grad_in: whether the embeddings' output carries a
    gradient (the embeddings train, or gradient checkpointing asks for it)."""
    plans = []
    for layer in decoder_layers(model):
        linears = {}
        for name, parent in LAYER_LINEARS.items():
            module = getattr(getattr(layer, parent, None), name, None)
            if module is not None:
                linears[name] = _linear(module)
        plan = LayerPlan(grad_in, _trains(getattr(layer, "input_layernorm", None)),
                         _trains(getattr(layer, "post_attention_layernorm", None)), linears)
        plans.append(plan)
        grad_in = plan.grad_out
    return plans


def _base(model: nn.Module) -> nn.Module:
    """The transformers model under a peft wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _embeddings(base: nn.Module) -> nn.Module | None:
    get = getattr(base, "get_input_embeddings", None)
    return get() if callable(get) else None


def _head(base: nn.Module) -> nn.Module | None:
    get = getattr(base, "get_output_embeddings", None)
    return get() if callable(get) else None


@dataclass(frozen=True)
class Batch:
    """One micro-batch: `size` rows of `seq_len` tokens, the loss on `answers` of its tokens."""

    size: int
    seq_len: int
    answers: int

    @property
    def tokens(self) -> int:
        return self.size * self.seq_len


# --- the ledger ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Ledger:
    """Predicted memory of a training run, in bytes.

    weights + gradients + optimizer are the paper's static terms (bytes_per_parameter). `moments`
    lists what is alive at the candidates for the worst moment (forward, backward, optimizer step);
    the peak is the largest sum.
    """

    precision: str
    parameters: int  # all parameters, each at its logical size (labkit.parameters)
    trainable: int
    weights: int
    gradients: int
    optimizer: int
    activations: int  # saved at the end of the forward pass (checkpointing: each layer's input only)
    activation_terms: dict[str, int]  # the same by kind of tensor
    moments: dict[str, dict[str, int]]  # "forward", "backward", "optimizer step" -> term -> bytes

    @property
    def static(self) -> int:
        return self.weights + self.gradients + self.optimizer

    @property
    def bytes_per_parameter(self) -> float:
        """(weights + gradients + optimizer states) / parameters: the paper's 18, 8, 2, ~0.6."""
        return self.static / max(self.parameters, 1)

    @property
    def peak_moment(self) -> str:
        return max(self.moments, key=lambda m: sum(self.moments[m].values()))

    @property
    def peak(self) -> int:
        return sum(self.moments[self.peak_moment].values())

    def __str__(self) -> str:
        mib = 2.0**20
        lines = [f"memory ledger ({self.precision}; {self.parameters:,} parameters, "
                 f"{self.trainable:,} trainable)",
                 f"  {'term':34s} {'MiB':>10s} {'B/param':>8s}"]
        for name, value in (("weights", self.weights), ("gradients", self.gradients),
                            ("optimizer states", self.optimizer)):
            lines.append(f"  {name:34s} {value / mib:10.1f} {value / max(self.parameters, 1):8.3f}")
        lines.append(f"  {'= static (the paper)':34s} {self.static / mib:10.1f} "
                     f"{self.bytes_per_parameter:8.3f}")
        lines.append(f"  {'activations':34s} {self.activations / mib:10.1f}")
        for moment, terms in self.moments.items():
            mark = "  <- peak" if moment == self.peak_moment else ""
            lines.append(f"  at the {moment}: {sum(terms.values()) / mib:,.1f} MiB{mark}")
            lines += [f"    {name:32s} {value / mib:10.1f}" for name, value in terms.items() if value]
        return "\n".join(lines)


@dataclass(frozen=True)
class _Parts:
    """The static terms, split as the moments need them."""

    weights: int
    gradients: int
    optimizer: int
    step_workspace: int
    layer_gradients: list[int]  # gradient bytes of each decoder layer
    top_gradients: int  # final norm and head: computed first in the backward pass
    largest_dequantized: int  # the largest quantized weight, dequantized (a bitsandbytes temporary)


def predict(
    model: nn.Module,
    *,
    batch_size: int,
    seq_len: int,
    answer_tokens: int | None = None,
    precision: PrecisionName = "fp32",
    galore_rank: int | None = None,
    gradient_checkpointing: bool = False,
) -> Ledger:
    """The memory ledger of training `model` (with its adapter attached) on batches of
    batch_size x seq_len tokens, the loss on `answer_tokens` of them (None: every token, as a plain
    forward computes logits everywhere).

    What trains is read from requires_grad; quantized weights from their bitsandbytes type; sizes
    from model.config. precision: "fp32" (the kit on a CPU), "amp" (fp32 master weights, 16-bit
    compute), "pure_bf16". galore_rank: GaLore's AdamW on every linear weight but the head.
    gradient_checkpointing: only each layer's input is kept, one layer is recomputed at a time.
    """
    prec = get_precision(precision)
    shape = Dimensions.of(model)
    batch = Batch(batch_size, seq_len, batch_size * seq_len if answer_tokens is None else answer_tokens)
    if batch_size < 1 or seq_len < 2 or not 0 < batch.answers <= batch.tokens:
        raise ValueError(f"predict(batch_size={batch_size}, seq_len={seq_len}, "
                         f"answer_tokens={answer_tokens}): use batch_size >= 1, seq_len >= 2 and "
                         "0 < answer_tokens <= batch_size x seq_len.")
    parts = _static_parts(model, prec, galore_rank)
    saved = _activations(model, shape, prec, batch, gradient_checkpointing)
    layer_bytes, loss, terms = saved.layers, saved.loss, saved.terms
    kept = batch.tokens * shape.hidden * prec.activation * len(layer_bytes)  # checkpointing: layer inputs
    moments = {
        # the end of the forward pass: the layers' activations, and the largest temporary of a layer
        "forward": {"weights": parts.weights, "optimizer states": parts.optimizer,
                    "activations": kept if gradient_checkpointing else sum(layer_bytes),
                    "forward temporaries": saved.forward_temporaries + parts.largest_dequantized},
        "backward": _backward_moment(parts, (layer_bytes, loss), batch, shape, prec, gradient_checkpointing),
        "optimizer step": {"weights": parts.weights, "optimizer states": parts.optimizer,
                           "gradients": parts.gradients, "step temporaries": parts.step_workspace},
    }
    if gradient_checkpointing:  # each layer keeps its input; its activations come back in the backward
        terms = {"layer inputs (checkpointed)": kept, **{k: v for k, v in loss.items() if v}}
    count = count_parameters(model)
    return Ledger(precision, count.total, count.trainable, parts.weights, parts.gradients, parts.optimizer,
                  sum(terms.values()), terms, moments)


def _tensors(model: nn.Module) -> Iterator[tuple[str, torch.Tensor, bool]]:
    """(name, tensor, is_parameter) of every parameter and buffer, each storage once (tied weights)."""
    seen: set[int] = set()
    named: list[tuple[str, torch.Tensor, bool]] = [
        (n, p, True) for n, p in model.named_parameters(remove_duplicate=False)]
    named += [(n, b, False) for n, b in model.named_buffers(remove_duplicate=False)]
    for name, tensor, is_param in named:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            yield name, tensor, is_param


def _optimizer_bytes(param: torch.Tensor, prec: Precision, galore_rank: int | None) -> int:
    """AdamW: two moments of the parameter's size and a step counter (a 0-dim fp32 tensor each);
    GaLore: the moments of the rank-r projection (max(m, n) x r each) and the projection (min x r)."""
    if galore_rank is not None and param.ndim == 2:
        rank = min(galore_rank, *param.shape)
        return 2 * max(param.shape) * rank * prec.optimizer_state + min(param.shape) * rank * 4
    return 2 * param.numel() * prec.optimizer_state + 4


def _galore_targets(model: nn.Module, galore_rank: int | None) -> set[int]:
    """ids of the weights GaLore projects: every linear layer's weight but the head's."""
    if galore_rank is None:
        return set()
    names = set(find_all_linear_modules(model))
    return {id(m.weight) for full, m in model.named_modules()
            if isinstance(m, nn.Linear) and full.split(".")[-1] in names and m.weight.requires_grad}


def _static_parts(model: nn.Module, prec: Precision, galore_rank: int | None) -> _Parts:
    weights = gradients = optimizer = largest_dequantized = 0
    sizes = []  # numbers of each trainable tensor, in the optimizer's order
    galore = _galore_targets(model, galore_rank)
    layer_of = _layer_index(model)
    layer_gradients = [0] * (max(layer_of.values(), default=-1) + 1)
    last = _embeddings_only(model)
    top = 0
    for name, tensor, is_param in _tensors(model):
        weights += weight_bytes(tensor, prec) if is_param else tensor.numel() * tensor.element_size()
        if _bnb_bits(tensor) is not None:
            largest_dequantized = max(largest_dequantized, logical_numel(tensor) * prec.activation)
        if not (is_param and tensor.requires_grad):
            continue
        grad = tensor.numel() * prec.gradient
        gradients += grad
        optimizer += _optimizer_bytes(tensor, prec, galore_rank if id(tensor) in galore else None)
        sizes.append(tensor.numel())
        index = layer_of.get(name)
        if index is not None:
            layer_gradients[index] += grad
        elif id(tensor) not in last:
            top += grad  # head and final norm (a tied head too): their gradients come first
    return _Parts(weights, gradients, optimizer, _step_workspace(model, prec, sizes, galore),
                  layer_gradients, top, largest_dequantized)


def _step_workspace(model: nn.Module, prec: Precision, sizes: list[int], galore: set[int]) -> int:
    """Temporaries of one optimizer step.

    On a CPU torch's AdamW updates one tensor at a time: `denom = (sqrt(v) / c).add_(eps)` allocates
    two tensors of that parameter's size while the loop variable still holds the previous
    parameter's denom, so the worst is max(previous + 2 x current) over the parameters in order. On
    a GPU its foreach version takes sqrt(v) of all parameters at once: one buffer of the whole
    trainable size. GaLore (one tensor at a time) projects the update back to the weight's full
    size and scales it: two weight-size temporaries.
    """
    on_gpu = any(p.device.type == "cuda" for p in model.parameters())
    if on_gpu and not galore:
        return sum(sizes) * prec.optimizer_state
    adamw = max((prev + 2 * cur for prev, cur in zip([0, *sizes[:-1]], sizes, strict=True)), default=0)
    largest_projected = max((p.numel() for p in model.parameters() if id(p) in galore), default=0)
    return max(adamw * prec.optimizer_state, 2 * largest_projected * prec.gradient)


def _embeddings_only(model: nn.Module) -> set[int]:
    """ids of the input embeddings' parameters, unless the head shares them: their gradient is
    made last in the backward pass."""
    base = _base(model)
    embeddings, head = _embeddings(base), _head(base)
    if embeddings is None:
        return set()
    shared = {id(p) for p in head.parameters()} if head is not None else set()
    return {id(p) for p in embeddings.parameters() if id(p) not in shared}


def _layer_index(model: nn.Module) -> dict[str, int]:
    """Parameter name -> the index of the decoder layer that holds it."""
    index = {}
    layers = decoder_layers(model)
    owner = {id(p): i for i, layer in enumerate(layers) for p in layer.parameters()}
    for name, param in model.named_parameters():
        if id(param) in owner:
            index[name] = owner[id(param)]
    return index


# --- activations of a whole forward pass --------------------------------------------------------

@dataclass(frozen=True)
class _Saved:
    """Activations in bytes: per decoder layer, outside the layers by kind, all by kind; and the
    largest temporary of the forward pass that is not saved (DoRA's weight norm)."""

    layers: list[int]
    loss: dict[str, int]
    terms: dict[str, int]
    forward_temporaries: int


def _activations(model: nn.Module, shape: Dimensions, prec: Precision, batch: Batch,
                 checkpointing: bool) -> _Saved:
    """What the forward pass saves, layer by layer and by kind."""
    base = _base(model)
    tokens = batch.tokens
    embeddings_train = _trains(_embeddings(base))
    # gradient checkpointing makes the embeddings' output ask for gradients (labkit.loader)
    plans = layer_plans(model, grad_in=embeddings_train or checkpointing)
    terms: dict[str, int] = {}
    layer_bytes = []
    for plan in plans:
        counts = layer_activations(shape, plan)
        layer_bytes.append(tokens * _activation_bytes(counts, prec))
        for name, n in counts.items():
            terms[name] = terms.get(name, 0) + tokens * n * _element_bytes(name, prec)
    loss = _loss_activations(base, shape, prec, plans, batch)
    terms.update(loss)
    dora = max((lin.dora_forward_temporaries for plan in plans for lin in plan.linears.values()), default=0)
    return _Saved(layer_bytes, loss, {k: v for k, v in terms.items() if v}, dora * prec.activation)


def _loss_activations(base: nn.Module, shape: Dimensions, prec: Precision, plans: list[LayerPlan],
                      batch: Batch) -> dict[str, int]:
    """Bytes saved outside the decoder layers: token ids, RoPE tables, final norm, head, loss."""
    tokens, seq_len, answers = batch.tokens, batch.seq_len, batch.answers
    top_grad = plans[-1].grad_out if plans else False
    norm = getattr(getattr(base, "model", base), "norm", None)
    head = _head(base)
    any_attention = any(p.attention_grad for p in plans)
    dora = sum(lin.dora_features for p in plans for lin in p.linears.values())
    final = _norm(top_grad, _trains(norm), shape.hidden)
    return {
        "token ids (embedding)": tokens * 8 if _trains(_embeddings(base)) else 0,
        "RoPE cos, sin": 2 * seq_len * shape.head_dim * prec.activation if any_attention else 0,
        # DoRA: per layer ||W + BA|| and m / ||W + BA|| (twice: as it is and minus 1)
        "DoRA weight norms": 3 * dora * prec.activation,
        "final norm": tokens * _activation_bytes(final, prec),
        "answer mask": batch.size * (seq_len - 1),  # bool, kept by hidden[:, :-1][mask]
        "head inputs": answers * shape.hidden * prec.activation if _trains(head) else 0,
        # cross_entropy keeps the log-probabilities (fp32: the kit computes the loss in fp32), the
        # targets (int64), and the kit's per-example weights (fp32)
        "log-probabilities": answers * shape.vocab * 4,
        "targets and weights": answers * (8 + 4) + 4,  # + the loss's total weight (a 0-dim fp32)
    }


def _backward_moment(parts: _Parts, activations: tuple[list[int], dict[str, int]], batch: Batch,
                     shape: Dimensions, prec: Precision, checkpointing: bool) -> dict[str, int]:
    """What is alive at the worst point of the backward pass.

    Autograd walks the graph from the loss down. At the loss, every activation is alive, plus the
    gradients of the log-probabilities and of the logits (answers x vocab each, fp32). At the head,
    the log-probabilities are freed and the head's (and final norm's) gradients are made. Then layer
    by layer, top to bottom: finishing layer l frees its activations and makes its gradients; while
    it runs, alive are the activations of layers 0..l, the gradients of everything above, and the
    gradients in flight (the one flowing into the layer and the MLP's two intermediate ones:
    tokens x (hidden + 2 x intermediate)), plus one weight dequantized to compute with if the model
    is quantized (bitsandbytes). With gradient checkpointing a layer keeps only its input (hidden
    numbers per token) until its turn, when its activations are recomputed.
    """
    layers, loss = activations
    logits = batch.answers * shape.vocab * 4
    kept = [batch.tokens * shape.hidden * prec.activation] * len(layers) if checkpointing else layers
    outside = sum(loss.values())
    points = [
        {"activations": sum(kept) + outside, "gradients so far": 0, "backward temporaries": 2 * logits},
        {"activations": sum(kept) + outside - loss["log-probabilities"],
         "gradients so far": parts.top_gradients, "backward temporaries": logits},
    ]
    in_flight = batch.tokens * (shape.hidden + 2 * shape.intermediate) * prec.activation
    for top in range(len(layers) - 1, -1, -1):
        alive = sum(kept[:top]) + layers[top]  # layer top: all its activations (recomputed if need be)
        made = parts.top_gradients + sum(parts.layer_gradients[top + 1:])
        flowing = in_flight + parts.largest_dequantized if layers[top] else 0
        points.append({"activations": alive, "gradients so far": made, "backward temporaries": flowing})
    worst = max(points, key=lambda point: sum(point.values()))
    return {"weights": parts.weights, "optimizer states": parts.optimizer, **worst}


# --- paper: bytes per parameter, term by term ---------------------------------------------------

@dataclass(frozen=True)
class PaperRow:
    """One row of the paper's ledger: bytes per parameter of weights, gradients and optimizer states."""

    method: str
    bits: str
    terms: dict[str, float]  # term -> bytes per parameter of the whole model

    @property
    def bytes_per_parameter(self) -> float:
        return sum(self.terms.values())


def paper_ledger(trainable_share: float = 0.0) -> list[PaperRow]:
    """The paper's bytes per parameter (18, 8, 2, 1, ~0.6), each from its terms.

    Full AMP: 2 (16-bit copy) + 4 (fp32 master) + 4 (fp32 gradient) + 8 (AdamW's two fp32 moments).
    Full pure bf16: 2 + 2 + 2 x 2. LoRA / freeze on a 16-bit base: 2 per frozen weight, plus 16-18 per
    trained one (trainable_share of the model; LlamaFactory's table leaves it out). QLoRA: 1 byte
    (LLM.int8) or 4.127 bits (NF4 with double-quantized absmax, nf4_bytes) per base weight; the
    paper's ~0.6 is this 0.516 plus the adapters and the 16-bit embeddings and head of a real model
    (docs/memory.md works it out for Llama-2-7B).
    """
    adapters = {"trained weights (fp32 master + copy + gradient + AdamW)": 18 * trainable_share}
    nf4 = nf4_bytes(2**30) / 2**30
    return [
        PaperRow("full (AMP)", "32/16", {"16-bit weights": 2, "fp32 master weights": 4,
                                         "fp32 gradients": 4, "AdamW moments (fp32)": 8}),
        PaperRow("full (pure bf16)", "16", {"bf16 weights": 2, "bf16 gradients": 2,
                                            "AdamW moments (bf16)": 4}),
        PaperRow("freeze / LoRA", "16", {"bf16 frozen weights": 2, **adapters}),
        PaperRow("QLoRA", "8", {"int8 weights (+ absmax per row, ~0)": 1, **adapters}),
        PaperRow("QLoRA", "4", {"NF4 codes": 0.5, "absmax (8-bit, blocks of 64) and their scales":
                                nf4 - 0.5, **adapters}),
    ]


def paper_table(trainable_share: float = 0.0) -> str:
    """paper_ledger as a markdown table."""
    lines = ["| method | bits | bytes per parameter | terms |", "|---|---|---|---|"]
    for row in paper_ledger(trainable_share):
        terms = " + ".join(f"{v:.3g} ({k})" for k, v in row.terms.items() if v)
        lines.append(f"| {row.method} | {row.bits} | {row.bytes_per_parameter:.3f} | {terms} |")
    return "\n".join(lines)


# --- measuring the peak -------------------------------------------------------------------------

@dataclass(frozen=True)
class MeasuredPeak:
    """The most tensor memory alive while `fn` ran, and how it was measured."""

    peak_bytes: int  # held throughout (`held`) + the allocator's largest rise during fn
    held_bytes: int  # tensors alive before fn (the model): counted from their storages
    device: str
    method: str  # "torch.profiler memory events" (CPU) or "torch.cuda.max_memory_allocated"
    peak_rss_bytes: int | None = None  # the process's peak resident memory during fn (CPU; reference)

    @property
    def peak_mib(self) -> float:
        return self.peak_bytes / 2**20


def storage_bytes(*objects: Any) -> int:
    """Bytes of the distinct storages of every tensor in these modules or tensors (parameters,
    buffers and bitsandbytes' quantization state included), each storage once."""
    return sum(_storages(*objects).values())


def _storages(*objects: Any) -> dict[int, int]:
    """data pointer -> bytes of each distinct storage (see storage_bytes)."""
    seen: dict[int, int] = {}
    for obj in objects:
        for tensor in _all_tensors(obj):
            storage = tensor.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
    return seen


def _all_tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, nn.Module):
        for tensor in [*obj.parameters(), *obj.buffers()]:
            yield tensor
            yield from _bnb_state_tensors(tensor)
        for module in obj.modules():  # bitsandbytes 8-bit after its first forward: on the layer's state
            yield from _tensor_attributes(getattr(module, "state", None), ("CB", "SCB"))


def _bnb_state_tensors(param: torch.Tensor) -> Iterator[torch.Tensor]:
    """What bitsandbytes keeps beside a quantized weight: the 8-bit absmax per row (SCB, before the
    first forward), or the 4-bit quant_state (absmax, code table, offset, and the nested state2)."""
    yield from _tensor_attributes(param, ("SCB",))
    state = getattr(param, "quant_state", None)
    for part in (state, getattr(state, "state2", None)):
        yield from _tensor_attributes(part, ("absmax", "code", "offset"))


def _tensor_attributes(obj: Any, names: tuple[str, ...]) -> Iterator[torch.Tensor]:
    for name in names:
        value = getattr(obj, name, None)
        if isinstance(value, torch.Tensor):
            yield value


def measure_peak(fn: Callable[[], T], *, held: Any = None,
                 device: torch.device | str | None = None) -> tuple[T, MeasuredPeak]:
    """Run fn() and measure the peak of tensor memory while it runs; returns (fn's result, peak).

    CPU: the PyTorch profiler records every allocation and free of the CPU allocator ("[memory]"
    events); their running sum, in time order, peaks at the worst moment. Tensors allocated before
    fn are invisible to it, so pass them as `held` (the model): their storages are counted as
    alive throughout, except those that `held` no longer holds when fn returns (counted as freed
    at the start: PiSSA, say, replaces the base weights when its adapter is attached). The
    process's peak RSS during fn comes along for reference: it also holds Python, the libraries
    and freed memory the allocator keeps.
    GPU (CUDA): torch.cuda.max_memory_allocated after reset_peak_memory_stats; every tensor on the
    GPU counts, so `held` is not needed there.
    """
    dev = torch.device(device) if device is not None else _device_of(held)
    if dev.type == "cuda":
        return _measure_cuda(fn, dev)
    before = _storages(held) if held is not None else {}
    rss = _PeakRss()
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    # a held storage that fn replaced (PiSSA rewrites the base weights when the adapter is attached)
    # was freed at a moment the profiler cannot see: it is counted as freed at the start
    after = _storages(held) if held is not None else {}
    kept = sum(n for ptr, n in before.items() if ptr in after)
    return result, MeasuredPeak(kept + _largest_rise(prof), sum(before.values()), str(dev),
                                "torch.profiler memory events", rss.peak())


def _device_of(held: Any) -> torch.device:
    tensors = _all_tensors(held) if held is not None else iter(())
    first = next(tensors, None)
    return first.device if first is not None else torch.device("cpu")


def _largest_rise(prof: Any) -> int:
    """The largest running sum of the profiler's CPU allocations (+) and frees (-), in time order.

    Only frees of blocks allocated while it ran count. The profiler's allocator reporter remembers
    the size of every block it saw allocated, across profiling sessions; a block allocated before
    this one (a held weight) whose address once belonged to such a block is reported freed with
    that stale size. measure_peak accounts for held storages itself.
    """
    from torch._C._profiler import _EventType

    allocations = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        fields = node.extra_fields
        if node.tag == _EventType.Allocation and fields.device.type == "cpu":
            allocations.append((node.start_time_ns, fields.ptr, fields.alloc_size))
    seen: dict[int, int] = {}
    alive = peak = 0
    for _, ptr, size in sorted(allocations):
        if size > 0:
            seen[ptr] = size
        elif ptr in seen:
            size = -seen.pop(ptr)
        else:
            continue
        alive += size
        peak = max(peak, alive)
    return peak


def _measure_cuda(fn: Callable[[], T], dev: torch.device) -> tuple[T, MeasuredPeak]:
    """CUDA's caching allocator counts every tensor on the device: its maximum is the peak."""
    torch.cuda.synchronize(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    before = torch.cuda.memory_allocated(dev)
    result = fn()
    torch.cuda.synchronize(dev)
    return result, MeasuredPeak(torch.cuda.max_memory_allocated(dev), before, str(dev),
                                "torch.cuda.max_memory_allocated")


class _PeakRss:
    """The process's peak resident memory from now on (Linux: VmHWM after resetting it; elsewhere the
    lifetime peak, which may predate fn)."""

    def __init__(self) -> None:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM, the peak RSS, to the current RSS
        except OSError:
            pass

    def peak(self) -> int | None:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        try:
            import resource
        except ImportError:
            return None
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024
