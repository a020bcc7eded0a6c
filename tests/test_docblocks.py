"""Blocks of the README and docs/ that code writes between markers."""

from __future__ import annotations

from pathlib import Path

import pytest

from labkit.docblocks import read_block, write_block


def test_a_block_is_replaced_and_read_back_leaving_the_rest_of_the_file(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("intro\n<!-- BEGIN table -->\nold\n<!-- END table -->\nafter\n<!-- BEGIN other -->\nx\n"
                   "<!-- END other -->\n")
    write_block(doc, "table", "| a |\n|---|\n| 1 |\n")
    assert read_block(doc, "table") == "| a |\n|---|\n| 1 |"
    assert read_block(doc, "other") == "x"
    assert doc.read_text().startswith("intro\n") and "after\n" in doc.read_text()


def test_a_missing_marker_names_the_file_and_the_marker(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- BEGIN table -->\nno end\n")
    with pytest.raises(ValueError, match=r"doc\.md: no <!-- BEGIN table --> \.\.\. <!-- END table -->"):
        write_block(doc, "table", "x")
