"""`labkit doctor`: what this machine is, and what the kit will do on it.

Paste its output into any question or bug report.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
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
    from labkit.loader import POCKET_LLM

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
        "pocket LLM": str(POCKET_LLM) if (POCKET_LLM / "config.json").is_file() else "not built yet",
    })
    if check_network:
        rows["offline"] = "yes" if hardware.is_offline() else "no (the hub is reachable)"
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="labkit doctor", description=__doc__)
    parser.add_argument("--no-network", action="store_true", help="skip the offline check")
    args = parser.parse_args(argv)
    rows = report(check_network=not args.no_network)
    width = max(map(len, rows))
    missing = [k for k, v in rows.items() if v == "MISSING"]
    for key, value in rows.items():
        print(f"{key:<{width}}  {value}")
    if missing:
        print(f"\nFAIL: missing packages {missing}; run `make test` or `pip install -e .`",
              file=sys.stderr)
        return 1
    print("\nOK: the kit can run here.")
    return 0
