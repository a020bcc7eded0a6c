"""Which device and which floating-point type the kit uses: decided here, and only here.

On a CPU everything runs in fp32: bf16/fp16 matrix products are hundreds of times slower there.
On a GPU we use bf16 where the card supports it (Ampere and newer), else fp16.
`seeded` fixes torch's random state (and thread count) for one block on every device.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


def device() -> torch.device:
    """The device the kit computes on: the first CUDA GPU if there is one, else the CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def compute_dtype(dev: torch.device | str | None = None, bf16: bool | None = None) -> torch.dtype:
    """fp32 on CPU; bf16 on a GPU that supports it; fp16 on older GPUs.

    The same rule gives the compute dtype of bitsandbytes' 4-bit layers. `bf16` overrides it the
    way a training config's switch does: False is fp32 anywhere; True is bf16 on a GPU that has it,
    and an error elsewhere: on a CPU the kit computes in fp32 (bf16 there is fast only on CPUs with
    AVX512-BF16 or AMX, hundreds of times slower on others, and the kit's figures are fp32 ones).
    """
    dev = torch.device(dev) if dev is not None else device()
    has_bf16 = dev.type == "cuda" and torch.cuda.is_bf16_supported()
    if bf16 is False:
        return torch.float32
    if bf16 is True:
        if not has_bf16:
            raise ValueError(f"bf16=True, but {dev} is a CPU or a GPU older than Ampere, where the kit "
                             "computes in fp32 or fp16: set bf16 to None (the kit's rule) or False (fp32).")
        return torch.bfloat16
    if dev.type != "cuda":
        return torch.float32
    return torch.bfloat16 if has_bf16 else torch.float16


def trainer_precision(dev: torch.device | str | None = None) -> dict[str, Any]:
    """Keyword arguments for transformers' TrainingArguments / TRL configs.

    TRL's configs default to bf16, which fails or crawls on a CPU; this sets the precision
    explicitly for the hardware at hand.
    """
    dev = torch.device(dev) if dev is not None else device()
    if dev.type != "cuda":
        return {"use_cpu": True, "bf16": False, "fp16": False}
    bf16 = compute_dtype(dev) == torch.bfloat16
    return {"use_cpu": False, "bf16": bf16, "fp16": not bf16}


def is_offline(timeout: float = 1.0) -> bool:
    """True when the Hugging Face hub cannot be used: HF_HUB_OFFLINE is set or it is unreachable."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False"):
        return True
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
    except OSError:
        return True
    return False


@contextmanager
def seeded(seed: int | None, threads: int | None = None) -> Iterator[None]:
    """Run a block with torch's random state seeded (None: left as it is) and, optionally, a
    number of CPU threads; the caller's random state and thread count are restored after it.

    Weight initialization, dropout and sampling draw from the global generators; forking them makes
    the block reproducible without changing the random stream of the code around it.
    """
    before = torch.get_num_threads()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        if seed is not None:
            torch.manual_seed(seed)
        if threads is not None:
            torch.set_num_threads(threads)
        try:
            yield
        finally:
            if threads is not None:
                torch.set_num_threads(before)
