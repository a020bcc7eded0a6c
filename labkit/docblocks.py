"""Figures in the README and docs/ are written by the code that measured them, between markers

    <!-- BEGIN <name> -->
    ...
    <!-- END <name> -->

so a command can rewrite them and a test can check them: `read_block(path, name)` gives what is
between them, `write_block(path, name, text)` replaces it.
"""

from __future__ import annotations

import re
from pathlib import Path


def markers(name: str) -> tuple[str, str]:
    return f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"


def _pattern(path: Path, name: str, doc: str) -> re.Pattern[str]:
    begin, end = markers(name)
    if begin not in doc or end not in doc:
        raise ValueError(f"{path}: no {begin} ... {end} markers; add them where the block goes")
    return re.compile(re.escape(begin) + r"\n?(.*?)\n?" + re.escape(end), re.S)


def read_block(path: Path, name: str) -> str:
    """The text between the markers of `name` in `path`."""
    doc = path.read_text(encoding="utf-8")
    match = _pattern(path, name, doc).search(doc)
    assert match is not None  # _pattern checked both markers
    return match.group(1)


def write_block(path: Path, name: str, text: str) -> None:
    """Replace the text between the markers of `name` in `path` with `text`."""
    doc = path.read_text(encoding="utf-8")
    begin, end = markers(name)
    block = f"{begin}\n{text.strip()}\n{end}"
    path.write_text(_pattern(path, name, doc).sub(lambda _: block, doc, count=1), encoding="utf-8")
