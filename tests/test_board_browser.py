"""Lesson 10's LabBoard in a real browser: JupyterLab serves the student's notebook, Chromium (driven
by Playwright) runs its board cell and clicks through configure -> train -> chat -> evaluate ->
export; the assertions read the page (loss points drawn, a reply, a table, the exported commands)
and the exported file on disk. Screenshots: runs/browser/board-*.png."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from browser import button, field, notebook_in_browser, run_cell, screenshot, tab, widget_text
from playwright.sync_api import expect

ROOT = Path(__file__).resolve().parents[1]
LESSON = ROOT / "notebooks" / "10_evaluation_and_board.ipynb"


def fast_copy(folder: Path) -> tuple[Path, int]:
    """The lesson in fast mode (as papermill would set it) under folder/notebooks/, and the index
    among its code cells of the cell that makes the board."""
    nb = nbformat.read(LESSON, as_version=4)
    parameters = nb.cells[0].source
    assert "FAST = False" in parameters, "the lesson's parameters cell changed: update this test"
    nb.cells[0].source = parameters.replace("FAST = False", "FAST = True")
    code = [c for c in nb.cells if c.cell_type == "code"]
    board = [i for i, c in enumerate(code) if "LabBoard(" in c.source]
    assert len(board) == 1, "the lesson should make one board"
    (folder / "notebooks").mkdir()
    path = folder / "notebooks" / LESSON.name
    nbformat.write(nb, path)
    return path, board[0]


@pytest.mark.slow
def test_lesson_10s_board_configures_trains_chats_evaluates_and_exports_in_chromium(tmp_path: Path) -> None:
    notebook, board_cell = fast_copy(tmp_path)
    with notebook_in_browser(notebook) as page:
        run_cell(page, 0)  # the parameters
        run_cell(page, board_cell)  # self-contained: it imports what it needs
        board = page.locator(".widget-tab").first
        expect(tab(page, "Configure")).to_be_visible()
        field(page, "max_steps").fill("3")
        field(page, "lora_rank").fill("4")
        screenshot(page, "board-1-configure", of=board)

        tab(page, "Train").click()
        button(page, "Train").click()
        expect(widget_text(page, "done: 3 steps")).to_be_visible(timeout=180_000)
        expect(page.locator("circle.loss-point")).to_have_count(3)
        screenshot(page, "board-2-train", of=board)

        tab(page, "Chat").click()
        field(page, "you").fill("Which findings point to diabetes?")
        button(page, "Send").click()
        reply = page.locator(".chat-assistant")
        expect(reply).to_have_count(1, timeout=60_000)
        assert len(reply.inner_text().removeprefix("assistant:").strip()) > 0
        screenshot(page, "board-3-chat", of=board)

        tab(page, "Evaluate").click()
        button(page, "Evaluate").click()
        table = page.locator(".widget-html table")
        expect(table).to_be_visible(timeout=300_000)
        expect(table).to_contain_text("multiple_choice")
        expect(table.locator("th", has_text="trained")).to_have_count(1)  # the board's run, beside the base
        screenshot(page, "board-4-evaluate", of=board)

        tab(page, "Export").click()
        button(page, "Export").click()
        expect(page.locator("pre.export-commands")).to_contain_text("labkit train --config")
        expect(page.locator("pre.export-commands")).to_contain_text("llamafactory-cli train")
        screenshot(page, "board-5-export", of=board)

    exported = tmp_path / "runs" / "lesson10" / "board" / "export"
    assert "lora_rank: 4" in (exported / "llamafactory" / "kit_sft.yaml").read_text()
    assert "max_steps: 3" in (exported / "kit_sft.yaml").read_text()  # what the clicks set, written out
