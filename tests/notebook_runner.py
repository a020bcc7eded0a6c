"""Execute a notebook with papermill in fast mode, the way CI and the graders do."""

from __future__ import annotations

from pathlib import Path

import papermill

ROOT = Path(__file__).resolve().parents[1]
FAST_PARAMETERS = {"FAST": True, "SEED": 0}


def notebooks() -> list[Path]:
    """Every lesson notebook, student and solution versions."""
    return sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "solutions").glob("*.ipynb"))


def execute(path: Path, out_dir: Path, timeout: int = 600) -> Path:
    out = out_dir / f"{path.parent.name}__{path.name}"
    papermill.execute_notebook(
        str(path), str(out), parameters=FAST_PARAMETERS, cwd=str(path.parent),
        kernel_name="python3", progress_bar=False, execution_timeout=timeout,
    )
    return out
