"""Exercises of lesson 07 (efficient fine-tuning): the memory ledger, LoRA from scratch, a method
for a memory budget."""

from __future__ import annotations

import math
import typing

import numpy as np

from labkit.grading.exercise import Case, Exercise, case, close

METHODS = (("full", None), ("lora", None), ("qlora-8bit", 8), ("qlora-4bit", 4))


def training_memory(n_params: int, n_trainable: int, precision: str = "fp32",
                    quantization_bit: int | None = None) -> dict[str, float]:
    """Reference: the bytes AdamW training holds for the parameters, activations apart, by the
    bytes per number of labkit.memory's precisions.

    Frozen weights (n_params - n_trainable) cost their storage only: the precision's frozen bytes,
    or quantization_bit / 8 when the base is quantized (constants left out). A trained weight costs
    its own bytes (the fp32 master under "amp") and autocast's 16-bit copy, a gradient and Adam's
    two moments.
    """
    from labkit.memory import get_precision  # torch and peft: loaded when graded, not with the bank

    prec = get_precision(precision)
    frozen = n_params - n_trainable
    frozen_bytes = frozen * (quantization_bit / 8 if quantization_bit else prec.frozen)
    weights = frozen_bytes + n_trainable * (prec.trainable + prec.cast_copy)
    gradients, optimizer = n_trainable * prec.gradient, n_trainable * 2 * prec.optimizer_state
    return {"weights": weights, "gradients": gradients, "optimizer": optimizer,
            "total": weights + gradients + optimizer}


def lora_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, A: np.ndarray,
                 B: np.ndarray, alpha: int, *, use_rslora: bool = False) -> np.ndarray:
    """Reference: the output of PEFT's own LoRA linear layer (peft.tuners.lora.layer.Linear) holding
    these weights, computed in float64 (so that the answer is PEFT's, not a re-derivation).
    The rank r is A's number of rows."""
    import torch
    from peft import LoraConfig
    from peft.tuners.lora.layer import Linear as PeftLoraLinear

    out_features, in_features = weight.shape
    r = A.shape[0]
    base = torch.nn.Linear(in_features, out_features, bias=bias is not None, dtype=torch.float64)
    config = LoraConfig(r=r, lora_alpha=alpha, use_rslora=use_rslora, lora_dropout=0.0)
    with torch.no_grad():
        base.weight.copy_(torch.as_tensor(weight, dtype=torch.float64))
        if bias is not None:
            base.bias.copy_(torch.as_tensor(bias, dtype=torch.float64))
        layer = PeftLoraLinear(base, "default", config=config, r=r, lora_alpha=alpha,
                               use_rslora=use_rslora)
        for adapter, value in ((layer.lora_A, A), (layer.lora_B, B)):
            typing.cast(torch.nn.Linear, adapter["default"]).weight.copy_(
                torch.as_tensor(value, dtype=torch.float64))
        layer.eval()
        return layer(torch.as_tensor(x, dtype=torch.float64)).numpy()


def choose_method(budget_bytes: float, n_params: int, n_lora: int, precision: str = "amp",
                  activation_bytes: float = 0) -> dict[str, object]:
    """Reference: the first of full, LoRA, 8-bit QLoRA, 4-bit QLoRA whose ledger plus activations
    fits the budget, with the bytes it needs; None and the 4-bit need when nothing fits."""
    needs = _needs(n_params, n_lora, precision, activation_bytes)
    for method, need in needs.items():
        if need <= budget_bytes:
            return {"method": method, "bytes": need}
    return {"method": None, "bytes": needs["qlora-4bit"]}


def _needs(n_params: int, n_lora: int, precision: str, activation_bytes: float) -> dict[str, float]:
    """The bytes each method needs, in the order of preference: its ledger plus the activations.
    LoRA's n_lora parameters come on top of the n_params frozen ones."""
    needs = {}
    for method, bits in METHODS:
        total, trainable = (n_params, n_params) if method == "full" else (n_params + n_lora, n_lora)
        needs[method] = training_memory(total, trainable, precision, bits)["total"] + activation_bytes
    return needs


def _hidden_ledger(rng: np.random.Generator) -> list[Case]:
    cases = []
    for precision in ("fp32", "amp", "pure_bf16", "amp", "pure_bf16", "fp32"):
        for bits in (None, 8, 4):
            n_params = int(rng.integers(10**5, 10**11))
            share = rng.choice([1.0, float(rng.uniform(0.001, 0.05)), float(rng.uniform(0.1, 0.5))])
            cases.append(case(n_params, int(n_params * share), precision, quantization_bit=bits))
    cases.append(case(int(rng.integers(10**6, 10**9)), 0, "pure_bf16"))  # nothing trains: storage only
    return cases


def _lora_case(rng: np.random.Generator, use_rslora: bool, with_bias: bool) -> Case:
    """Shapes that are never square (A and B swapped cannot pass by accident), alpha != r and
    alpha / r != 1, and a B that is not zero (a trained adapter)."""
    in_features, out_features = (int(v) for v in rng.choice(np.arange(3, 14), size=2, replace=False))
    r = int(rng.choice([2, 4, 8]))
    alpha = int(rng.choice([a for a in (1, 3, 16, 32) if a != r]))
    lead = tuple(int(n) for n in rng.integers(1, 4, size=int(rng.integers(1, 3))))  # (batch,) or (batch, seq)
    x = rng.standard_normal((*lead, in_features))
    weight = rng.standard_normal((out_features, in_features)) / math.sqrt(in_features)
    bias = rng.standard_normal(out_features) if with_bias else None
    A = rng.standard_normal((r, in_features)) / math.sqrt(in_features)
    B = rng.standard_normal((out_features, r))
    return case(x, weight, bias, A, B, alpha, use_rslora=use_rslora)


def _hidden_lora(rng: np.random.Generator) -> list[Case]:
    return [_lora_case(rng, use_rslora, with_bias)
            for use_rslora in (False, True) for with_bias in (True, False, True)]


def _hidden_budget(rng: np.random.Generator) -> list[Case]:
    """For each method, a budget exactly at its need (it fits), one byte under (the next method
    is chosen) and a random one above; plus a budget that nothing fits."""
    cases = []
    for precision in ("amp", "pure_bf16", "fp32"):
        n_params = int(rng.integers(10**8, 10**11))
        n_lora = int(n_params * rng.uniform(0.001, 0.02))
        activations = float(rng.integers(0, 10**10))
        needs = _needs(n_params, n_lora, precision, activations)
        budgets = [b for need in needs.values() for b in (need, need - 1.0, need * rng.uniform(1.0, 1.5))]
        budgets.append(needs["qlora-4bit"] * rng.uniform(0.0, 0.99))
        cases += [case(b, n_params, n_lora, precision, activation_bytes=activations) for b in budgets]
    return cases


EXERCISES = [
    Exercise(
        id="07.ledger", function="training_memory", tier="warm-up", points=1,
        task="training_memory(n_params, n_trainable, precision, quantization_bit=None) -> {'weights', "
             "'gradients', 'optimizer', 'total'} in bytes for AdamW training, activations apart: "
             "frozen weights cost their storage (quantization_bit / 8 when quantized), a trained "
             "weight its weight bytes (+ a 4-byte master copy under 'amp'), a gradient and two Adam "
             "moments; precision 'fp32' (4, 4, 4+4), 'amp' (2+4, 4, 4+4), 'pure_bf16' (2, 2, 2+2).",
        reference=training_memory,
        examples=(case(1_000_000, 1_000_000, "amp"),
                  case(7_000_000, 40_000, "pure_bf16", quantization_bit=4)),
        hidden=_hidden_ledger,
        compare=close(rtol=1e-9, atol=1e-6),
    ),
    Exercise(
        id="07.lora", function="lora_forward", tier="core", points=2,
        task="lora_forward(x, weight, bias, A, B, alpha, use_rslora=False): the output of a LoRA "
             "linear layer in PEFT's shapes (weight (out, in), bias (out,) or None, A (r, in), "
             "B (out, r)): x W^T + b + s (x A^T) B^T with s = alpha / r, or alpha / sqrt(r) for "
             "rsLoRA (r: A's rows); checked against PEFT's own LoRA layer.",
        reference=lora_forward,
        examples=(
            case(np.array([[1.0, 2.0, 3.0]]), np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
                 np.array([0.5, -0.5]), np.array([[1.0, 1.0, 1.0]]), np.array([[1.0], [2.0]]),
                 2),
            case(np.array([[1.0, 0.0, -1.0], [2.0, 1.0, 0.0]]), np.array([[1.0, 2.0, 0.0], [0.0, 1.0, 1.0]]),
                 None, np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]), np.array([[1.0, 0.0], [0.0, 1.0]]),
                 8, use_rslora=True),
        ),
        hidden=_hidden_lora,
        compare=close(rtol=1e-4, atol=1e-5),  # float32 answers pass; a wrong scale is off by far more
    ),
    Exercise(
        id="07.budget", function="choose_method", tier="stretch", points=3,
        task="choose_method(budget_bytes, n_params, n_lora, precision='amp', activation_bytes=0) -> "
             "{'method', 'bytes'}: the first of 'full', 'lora', 'qlora-8bit', 'qlora-4bit' whose "
             "training_memory total plus activation_bytes is at most the budget, with that need; "
             "{'method': None, 'bytes': the 4-bit need} when none fits. LoRA adds n_lora trainable "
             "parameters to the n_params frozen ones.",
        reference=choose_method,
        examples=(case(24e9, 7_000_000_000, 20_000_000, "amp", activation_bytes=2e9),
                  case(4e9, 7_000_000_000, 20_000_000, "amp", activation_bytes=2e9)),
        hidden=_hidden_budget,
        compare=close(rtol=1e-9, atol=1e-3),
    ),
]
