"""Exercises of lesson 06 (the model loader and quantization).

The references call labkit.quantization in float64, the precision a student's numpy code has. They
import it (and torch) when they run: every check() loads the whole bank, and the other lessons
should not wait for torch.
"""

from __future__ import annotations

import math

import numpy as np

from labkit.grading.exercise import Case, Exercise, case, close

FORMATS = ("fp32", "bf16", "int8", "nf4", "nf4-dq")
BLOCKSIZE, CONSTANT_BLOCKSIZE = 64, 256  # labkit.quantization's: tests/test_quantization.py checks
# small code tables for the visible examples (the hidden cases use NF4 and bitsandbytes' dynamic code)
FIVE_LEVELS = [-1.0, -0.5, 0.0, 0.5, 1.0]
SEVEN_LEVELS = [-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0]


def weight_bytes(rows: int, cols: int, fmt: str) -> int:
    """Reference: bytes of a rows x cols weight stored as bitsandbytes stores it (code tables aside).

    fp32 4 bytes and bf16 2 per weight; int8 1 per weight plus an fp32 absmax per row; nf4 half a
    byte per weight (rounded up) plus an fp32 absmax per block of 64 weights, blocks running over
    the flattened weight; nf4-dq the same with 1-byte absmax codes plus an fp32 scale per 256 blocks
    and one fp32 offset.
    """
    n = rows * cols
    blocks = math.ceil(n / BLOCKSIZE)
    sizes = {
        "fp32": 4 * n,
        "bf16": 2 * n,
        "int8": n + 4 * rows,
        "nf4": math.ceil(n / 2) + 4 * blocks,
        "nf4-dq": math.ceil(n / 2) + blocks + 4 * math.ceil(blocks / CONSTANT_BLOCKSIZE) + 4,
    }
    return sizes[fmt]


def int8_rowwise(weight: list[list[float]]) -> dict[str, list]:
    """Reference: {"q": round(127 * w / absmax) per row (halves to even), "absmax": max |w| per row}."""
    import torch

    from labkit import quantization as Q

    q, absmax = Q.quantize_int8_rows(torch.tensor(weight, dtype=torch.float64))
    return {"q": q.tolist(), "absmax": absmax.tolist()}


def blockwise_quantize(values: list[float], code: list[float], blocksize: int) -> dict[str, list]:
    """Reference: per block of `blocksize` consecutive values (the last may be shorter), absmax =
    max |value| and each value's index of the nearest code value to value / absmax (ties: the lower
    index; a block of zeros has absmax 0 and its values scale to 0)."""
    import torch

    from labkit import quantization as Q

    codes, absmax = Q.quantize_blockwise(torch.tensor(values, dtype=torch.float64),
                                         torch.tensor(code, dtype=torch.float64), blocksize)
    return {"codes": codes.tolist(), "absmax": absmax.tolist()}


def double_quantize(absmax: list[float], code: list[float], blocksize: int = 256) -> dict:
    """Reference: offset = mean(absmax); the centred constants absmax - offset quantized blockwise
    with `code` ({"offset", "codes", "scales"}: scales are the blocks' absmax)."""
    import torch

    from labkit import quantization as Q

    values = torch.tensor(absmax, dtype=torch.float64)
    offset = values.mean()
    codes, scales = Q.quantize_blockwise(values - offset, torch.tensor(code, dtype=torch.float64), blocksize)
    return {"offset": float(offset), "codes": codes.tolist(), "scales": scales.tolist()}


def _hidden_bytes(rng: np.random.Generator) -> list[Case]:
    shapes = [(1, 1), (3, 7), (1, 100), (5, 63), (130, 130), (1000, 33), (257, 257), (4096, 4097)]
    shapes += [(int(rng.integers(1, 3000)), int(rng.integers(1, 3000))) for _ in range(6)]
    return [case(r, c, fmt) for r, c in shapes for fmt in FORMATS]


def _hidden_int8(rng: np.random.Generator) -> list[Case]:
    cases = []
    for _ in range(6):
        rows, cols = int(rng.integers(1, 9)), int(rng.integers(2, 12))
        weight = rng.normal(0, float(rng.choice([0.02, 1.0, 30.0])), (rows, cols))
        weight[int(rng.integers(rows)), :] *= -1  # a row whose largest magnitude is negative
        cases.append(case(weight.round(5).tolist()))
    # exact halves: with absmax 254, 127 * w / absmax = w / 2, and odd w lands on .5
    odd = [float(v) for v in rng.choice(np.arange(-253, 254, 2), size=9)]
    last = [float(rng.choice([-254, 254])), odd[8], 1.0, -1.0, 0.0]
    cases.append(case([[254.0, *odd[:4]], [-254.0, *odd[4:8]], last]))
    return cases


def _hidden_blockwise(rng: np.random.Generator) -> list[Case]:
    from labkit.quantization import NF4_CODE

    nf4 = [float(v) for v in NF4_CODE]
    skewed = sorted(float(v) for v in np.concatenate([[-1.0, 1.0], rng.uniform(-1, 1, 10)]))
    cases = []
    for blocksize in (4, 16, 64):
        n = int(rng.integers(blocksize + 1, 4 * blocksize)) | 1  # odd: the last block is shorter
        cases.append(case([float(v) for v in rng.normal(0, 0.05, n).round(6)], nf4, blocksize))
    zeros = [0.0] * 8 + [float(v) for v in rng.normal(0, 1, 13).round(4)]
    cases.append(case(zeros, nf4, 8))  # a block of zeros
    cases.append(case([float(v) for v in rng.laplace(0, 1, 70).round(5)], skewed, 32))
    return cases


def _hidden_double(rng: np.random.Generator) -> list[Case]:
    from labkit.quantization import dynamic_code

    dynamic = [float(v) for v in dynamic_code()]
    cases = []
    for n, blocksize in ((600, 256), (256, 256), (50, 256), (300, 128)):
        absmax = rng.gamma(9.0, 0.01, n).round(7) + 1e-4  # positive, like the absmax of blocks of weights
        cases.append(case([float(v) for v in absmax], dynamic, blocksize))
    return cases


_EXACT = close(rtol=0, atol=0)
# The worker imports what the notebook imports (torch, transformers, peft, bitsandbytes) before the
# first hidden case: on a busy 2-core machine that alone can take half a minute.
TIME_LIMIT_S = 90.0


EXERCISES = [
    Exercise(
        id="06.bytes", function="weight_bytes", tier="warm-up", points=1,
        task="weight_bytes(rows, cols, fmt) -> bytes of a rows x cols weight in 'fp32', 'bf16', 'int8' "
             "(+ an fp32 absmax per row), 'nf4' (half a byte per weight rounded up, + an fp32 absmax per "
             "block of 64 over the flattened weight) or 'nf4-dq' (1-byte absmax codes, + an fp32 scale "
             "per 256 blocks and one fp32 offset).",
        reference=weight_bytes,
        examples=(case(192, 192, "nf4"), case(512, 192, "int8"), case(64, 64, "nf4-dq")),
        hidden=_hidden_bytes, compare=_EXACT, time_limit_s=TIME_LIMIT_S,
    ),
    Exercise(
        id="06.int8", function="int8_rowwise", tier="core", points=2,
        task="int8_rowwise(weight) -> {'q': round(127 * w / absmax) per row as ints, computed in that "
             "order, halves to even (np.round), 'absmax': max |w| of each row} for a list of rows of floats.",
        reference=int8_rowwise,
        examples=(case([[0.5, -1.0, 0.25], [2.0, 1.0, -0.1]]),),
        hidden=_hidden_int8, time_limit_s=TIME_LIMIT_S,
    ),
    Exercise(
        id="06.blockwise", function="blockwise_quantize", tier="core", points=2,
        task="blockwise_quantize(values, code, blocksize) -> {'codes': per value the index of the code "
             "value nearest to value / absmax of its block (ties: the lower index), 'absmax': max |value| "
             "per block of `blocksize` consecutive values (the last block may be shorter; a block of zeros "
             "has absmax 0 and its values scale to 0)}.",
        reference=blockwise_quantize,
        examples=(case([0.1, -0.4, 0.2, 0.05, 1.5, -3.0], FIVE_LEVELS, 4),),
        hidden=_hidden_blockwise, time_limit_s=TIME_LIMIT_S,
    ),
    Exercise(
        id="06.double", function="double_quantize", tier="stretch", points=3,
        task="double_quantize(absmax, code, blocksize=256) -> {'offset': the mean of the constants, "
             "'codes' and 'scales': the centred constants (absmax - offset) quantized blockwise with "
             "`code` (scales: each block's max |centred constant|)}.",
        reference=double_quantize,
        examples=(case([0.31, 0.12, 0.25, 0.4, 0.18], SEVEN_LEVELS, 4),),
        hidden=_hidden_double, time_limit_s=TIME_LIMIT_S,
    ),
]
