"""The browser harness (tests/browser.py) on a notebook of two widgets: JupyterLab serves it,
Chromium opens it, its cell runs, a click on the Button changes the Label, on the page."""

from __future__ import annotations

from pathlib import Path

import pytest
from browser import button, notebook_in_browser, run_all_cells, screenshot, widget_text, write_notebook
from playwright.sync_api import expect

CELL = """\
import ipywidgets as widgets
from IPython.display import display

label = widgets.Label("not clicked yet")
go = widgets.Button(description="Click me")
go.on_click(lambda _: setattr(label, "value", f"clicked by {type(go).__name__}"))
display(widgets.VBox([go, label]))
"""


@pytest.mark.slow
def test_a_click_in_chromium_reaches_the_kernel_and_comes_back(tmp_path: Path) -> None:
    notebook = write_notebook(tmp_path / "click.ipynb", [CELL])
    with notebook_in_browser(notebook) as page:  # fails, saying how to install it, without chromium
        run_all_cells(page)
        expect(widget_text(page, "not clicked yet")).to_be_visible()
        button(page, "Click me").click()
        # the text is made by the kernel ("Button" from type(go)), not by the page
        expect(widget_text(page, "clicked by Button")).to_be_visible()
        shot = screenshot(page, "click")
    assert shot.stat().st_size > 0
