"""Run folders: what a long run records about itself, so that resuming it continues the same run.

    claim(folder, settings)            # first call: record them; later: refuse other ones
    check_same(where, saved, settings) # the same check for settings kept inside a checkpoint
    atomic_write_text(path, text)      # a crash never leaves half a file ...
    atomic_write(path, write)          # ... whatever writes it (np.savez, torch.save)
    with atomic_folder(final) as tmp:  # ... or half a folder (a checkpoint)
    save_state(path, state) / load_state(path)   # torch state, loaded with weights_only=True

Resuming with other settings would mix two runs into one result, so it is refused with a
RunMismatch that names the place, every field that differs (saved -> now) and the fix. Settings
are plain JSON values (labkit.config.settings gives them for a config).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

RECORD = "run.json"
START_OVER = "delete it to start over, or choose another output folder"


class RunMismatch(ValueError):
    """A run folder or checkpoint that was made with other settings than the run resuming it."""


def differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """field -> (saved value, current value) for every field whose values differ (None: absent)."""
    keys = sorted(saved.keys() | current.keys())
    return {k: (saved.get(k), current.get(k)) for k in keys if saved.get(k) != current.get(k)}


def check_same(where: str | Path, saved: Mapping[str, Any], current: Mapping[str, Any],
               fix: str = START_OVER) -> None:
    """Raise RunMismatch unless `saved` and `current` settings agree."""
    changed = differences(saved, current)
    if changed:
        detail = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
        raise RunMismatch(f"{where} was made with other settings ({detail}): {fix}.")


def claim(folder: Path, settings: Mapping[str, Any]) -> None:
    """Mark `folder` as the run of these settings, or check that it already is.

    A folder that holds files but no record (written by an older labkit, or by hand) is refused
    too: what it holds cannot be shown to belong to this run.
    """
    folder.mkdir(parents=True, exist_ok=True)
    record = folder / RECORD
    current = json.loads(json.dumps(dict(settings), default=str))  # as it reads back from JSON
    if record.is_file():
        check_same(folder, json.loads(record.read_text(encoding="utf-8")), current)
        return
    if any(folder.iterdir()):
        raise RunMismatch(f"{folder} holds files but no {RECORD}, so its settings are unknown: "
                          f"{START_OVER}.")
    atomic_write_text(record, json.dumps(current, indent=2))


def _partial(path: Path) -> Path:
    """A hidden sibling of `path` with the same suffix (np.savez insists on its .npz)."""
    return path.with_name(f".{path.stem}.partial{path.suffix}")


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call write(tmp) on a sibling file, then rename it to `path` (atomic on one file system)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _partial(path)
    write(tmp)
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


@contextmanager
def atomic_folder(final: Path) -> Iterator[Path]:
    """Yield an empty sibling folder to fill; on success it replaces `final` whole."""
    tmp = final.with_name(f".{final.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    yield tmp
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)


def save_state(path: Path, state: Mapping[str, Any]) -> None:
    """torch.save, atomically. Keep to tensors and plain Python values: load_state reads with
    weights_only=True, which runs no pickled code."""
    atomic_write(path, lambda tmp: torch.save(dict(state), tmp))


def load_state(path: Path) -> dict[str, Any]:
    return torch.load(path, weights_only=True)
