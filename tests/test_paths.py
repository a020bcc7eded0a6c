"""labkit.paths: the kit finds its files from anywhere, installed or not, and two variables move them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from labkit import paths

ROOT = Path(__file__).resolve().parents[1]
SHOW = ("import labkit.paths as p; "
        "print(p.DATA_DIR); print(p.CACHE_DIR); print(p.POCKET_LLM); print(p.__file__)")


def _show(cwd: Path, env: dict[str, str]) -> list[str]:
    done = subprocess.run([sys.executable, "-c", SHOW], cwd=cwd, env=env, capture_output=True, text=True,
                          check=True)
    return done.stdout.splitlines()


def test_the_shipped_files_are_where_the_kit_says() -> None:
    assert (paths.DATASETS_DIR / "SHA256SUMS").is_file()
    assert (paths.KNOWLEDGE_DIR / "citations.yaml").is_file()
    assert (paths.POCKET_LLM / "config.json").is_file()
    assert paths.shipped_name(paths.POCKET_LLM) == "data/models/pocket-llm"
    assert paths.shipped_name("/elsewhere/model") == "/elsewhere/model"


def test_environment_variables_move_the_data_and_the_cache(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABKIT_", "XDG_CACHE"))}
    data, cache, home = _show(tmp_path, env)[:3]
    assert Path(data) == paths.PACKAGE_PARENT / "data"
    assert Path(cache) == Path.home() / ".cache" / "labkit"  # never inside the source tree
    env |= {"LABKIT_DATA_DIR": str(tmp_path / "my-data"), "LABKIT_CACHE_DIR": str(tmp_path / "c")}
    data, cache, model = _show(tmp_path, env)[:3]
    assert (Path(data), Path(cache)) == (tmp_path / "my-data", tmp_path / "c")
    assert Path(model) == tmp_path / "my-data" / "models" / "pocket-llm"
    env.pop("LABKIT_CACHE_DIR")
    xdg = _show(tmp_path, env | {"XDG_CACHE_HOME": str(tmp_path / "xdg")})[1]
    assert Path(xdg) == tmp_path / "xdg" / "labkit"
