"""What this machine is, and what the kit will do on it (`labkit doctor`, lesson 00).

    print(render(report()))

Paste its output into any question or bug report.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata

PACKAGES = ("labkit", "torch", "transformers", "trl", "peft", "datasets", "accelerate",
            "bitsandbytes", "scikit-learn", "pandas", "numpy", "papermill")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "MISSING"


def report(check_network: bool = True) -> dict[str, str]:
    """Versions, hardware, the dtype the kit will use, and whether the machine is offline."""
    import torch

    from labkit import hardware
    from labkit.paths import CACHE_DIR, DATA_DIR, POCKET_LLM

    dev = hardware.device()
    gpu = torch.cuda.get_device_name(0) if dev.type == "cuda" else "none"
    rows = {"python": platform.python_version(), "platform": platform.platform()}
    rows.update({p: _version(p) for p in PACKAGES})
    rows.update({
        "cpu cores": str(os.cpu_count()),
        "torch threads": str(torch.get_num_threads()),
        "gpu": gpu,
        "device": str(dev),
        "compute dtype": str(hardware.compute_dtype(dev)).removeprefix("torch."),
        "trainer precision": ", ".join(f"{k}={v}" for k, v in hardware.trainer_precision(dev).items()),
        "data": str(DATA_DIR),
        "pocket LLM": str(POCKET_LLM) if (POCKET_LLM / "config.json").is_file() else "not built yet",
        "cache": str(CACHE_DIR),
    })
    if check_network:
        rows["offline"] = "yes" if hardware.is_offline() else "no (the hub is reachable)"
    return rows


def missing_packages(rows: dict[str, str]) -> list[str]:
    return [k for k, v in rows.items() if v == "MISSING"]


def render(rows: dict[str, str]) -> str:
    """The report as aligned `key  value` lines, with a verdict at the end."""
    width = max(map(len, rows))
    lines = [f"{key:<{width}}  {value}" for key, value in rows.items()]
    missing = missing_packages(rows)
    verdict = (f"FAIL: missing packages {missing}; run `make test` or `pip install -e .`" if missing
               else "OK: the kit can run here.")
    return "\n".join(lines) + "\n\n" + verdict
