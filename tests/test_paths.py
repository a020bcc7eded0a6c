"""labkit.paths: the kit finds its files from anywhere, installed or not, and two variables move them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

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


@pytest.mark.slow
def test_an_installed_kit_carries_its_data_and_finds_it_from_anywhere(tmp_path: Path) -> None:
    """`pip install .` (here: the wheel it builds from the files git ships, unpacked with pip
    --target, offline)."""
    source = tmp_path / "clone"
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                            cwd=ROOT, capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "-q", "-w", str(tmp_path / "wheel"), str(source)],
                           capture_output=True, text=True, cwd=tmp_path)
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next((tmp_path / "wheel").glob("labkit-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for shipped in ("datasets/pima_diabetes.csv", "datasets/text/medical_tc_labels.csv",
                    "knowledge/pima.yaml", "models/pocket-llm/model.safetensors",
                    "models/pocket-llm/tokenizer.json"):
        assert f"labkit/shipped/{shipped}" in names, shipped
    assert "labkit/commands/serval.py" in names and not any(n.startswith("tests/") for n in names)
    target = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                              str(target), str(wheel)], capture_output=True, text=True, cwd=tmp_path)
    assert install.returncode == 0, install.stderr[-2000:]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABKIT_")}
    env["PYTHONPATH"] = str(target)  # before the editable install of this checkout
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    data, _, model, module = _show(elsewhere, env)
    assert Path(module).is_relative_to(target) and Path(data) == target / "labkit" / "shipped"
    load = subprocess.run([sys.executable, "-c", "import labkit.data as d; print(d.load('pima').schema)"],
                          cwd=elsewhere, env=env, capture_output=True, text=True)
    assert load.returncode == 0, load.stderr[-2000:]
    assert "Pima Indians diabetes" in load.stdout and "768 rows" in load.stdout
