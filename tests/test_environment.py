"""environment.yml repeats pyproject.toml's pins exactly: one truth, one copy checked against it."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_matches_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = set(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        pins |= set(extra)
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(x["pip"] for x in env["dependencies"] if isinstance(x, dict))
    listed = {line for line in pip_section if "==" in line}
    assert listed == pins, f"only in environment.yml: {listed - pins}; only in pyproject: {pins - listed}"
    assert "python=3.11" in env["dependencies"]


def test_every_runtime_dependency_is_pinned() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert all("==" in dep for dep in project["dependencies"])
    assert "torch==2.13.0" in project["dependencies"]
