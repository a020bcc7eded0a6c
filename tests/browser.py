"""JupyterLab in Chromium, for tests that look at a notebook the way a student does: a JupyterLab
server on loopback, Debian's Chromium driven by Playwright, and helpers to open a notebook, run
its cells, find ipywidgets on the page and keep a screenshot under runs/browser/.

    with notebook_in_browser(tmp_path / "board.ipynb") as page:
        run_all_cells(page)
        button(page, "Go").click()
        expect(widget_text(page, "done")).to_be_visible()
        screenshot(page, "board")

Playwright's own browser download is not reachable here: the browser is the system's `chromium`
(the Debian package, which `make test` installs when it is missing). Everything started here is
stopped on the way out, also when the test fails halfway: the server and its kernels by process
tree, the browser by Playwright.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import nbformat
import psutil
import pytest
from playwright.sync_api import Browser, Locator, Page, ViewportSize, expect, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "runs" / "browser"
JUPYTER = Path(sys.executable).parent / "jupyter"  # the venv's, whose python3 kernel is the venv's python
# JupyterLab's first load (a cold server, a 2-core machine, a fresh browser profile) takes seconds;
# a kernel start and a cell that imports torch take more.
SERVER_TIMEOUT_S = 90.0
PAGE_TIMEOUT_S = 90.0
CELL_TIMEOUT_S = 120.0
# A root needs --no-sandbox; the rest keeps a headless browser quiet and offline.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-extensions", "--mute-audio"]
VIEWPORT: ViewportSize = {"width": 1400, "height": 1000}
LOG_TAIL = 4000  # characters of the server's log in a failure's message
# expect(...) waits 5 s by default: a click's round trip through a busy kernel can take longer
EXPECT_TIMEOUT_S = 30.0
expect.set_options(timeout=EXPECT_TIMEOUT_S * 1000)


@dataclass(frozen=True)
class Lab:
    """A running JupyterLab: its address, its token, the folder it serves and its log."""

    url: str
    token: str
    root: Path
    log: Path

    def notebook_url(self, name: str) -> str:
        """The page that opens `name` (a path under `root`, with /) in JupyterLab."""
        return f"{self.url}/lab/tree/{urllib.parse.quote(name)}?token={self.token}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else "(no log)"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _isolated_env(home: Path) -> dict[str, str]:
    """The server's environment: the user's Jupyter config, settings, workspaces, kernels and
    IPython profile stay out (a fresh folder for each), the venv's python3 kernel comes first,
    and a notebook's plots go inline as a student sees them (the test suite's MPLBACKEND=Agg
    would hide them)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MPLBACKEND", "JUPYTER_PATH",
                                                           "JUPYTER_CONFIG_PATH")}
    env.update({
        "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"), "IPYTHONDIR": str(home / "ipython"),
        "JUPYTER_PREFER_ENV_PATH": "1", "JUPYTER_PLATFORM_DIRS": "0",
        "PATH": f"{JUPYTER.parent}{os.pathsep}{env.get('PATH', '')}",
    })
    return env


# JupyterLab settings for the tests' fresh settings folder: no "get Jupyter news?" toast over the
# page, and every cell in the DOM (the default windowing leaves cells out of view unattached, out
# of a locator's reach).
_SETTINGS = {
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
}


def _write_settings(folder: Path) -> None:
    for plugin, values in _SETTINGS.items():
        path = folder / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


def _lab_command(root: Path, home: Path, port: int, token: str) -> list[str]:
    return [
        str(JUPYTER), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
        "--ServerApp.port_retries=0", f"--ServerApp.root_dir={root}", "--allow-root",  # CI is root
        f"--IdentityProvider.token={token}",
        f"--LabApp.user_settings_dir={home / 'settings'}",
        f"--LabApp.workspaces_dir={home / 'workspaces'}",
        # nothing from the network: no update check, no extension index (news: _SETTINGS)
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
        "--LabApp.expose_app_in_browser=True",  # window.jupyterapp, to run commands by their id
    ]


def _terminate_with_parent() -> None:
    """In the server's process, before exec: SIGTERM when the test process dies without cleaning
    up (killed, or timed out from outside); the server then shuts its kernels down."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG (Linux)


def _wait_until_up(process: subprocess.Popen[bytes], lab: Lab, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"jupyter lab exited ({process.returncode}) before it answered; "
                               f"its log:\n{lab.log_text()}")
        try:
            with urllib.request.urlopen(f"{lab.url}/api/status?token={lab.token}", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    raise TimeoutError(f"jupyter lab did not answer on {lab.url} within {timeout:.0f} s; "
                       f"its log:\n{lab.log_text()}")


def _stop(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM to the server's process group (it shuts its kernels down), then SIGKILL to whatever
    of its process tree is left: kernels run in sessions of their own, out of the group's reach."""
    try:
        tree = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    _, alive = psutil.wait_procs(tree, timeout=max(1.0, grace / 2))
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


@contextmanager
def jupyter_lab(root: Path, timeout: float = SERVER_TIMEOUT_S) -> Iterator[Lab]:
    """A JupyterLab server on 127.0.0.1 (a free port, a random token, no browser) serving `root`,
    with fresh Jupyter config, settings and workspace folders; stopped, kernels and all, on exit."""
    with tempfile.TemporaryDirectory(prefix="labkit-jupyter-") as tmp:
        home = Path(tmp)
        port, token = _free_port(), secrets.token_hex(16)
        lab = Lab(url=f"http://127.0.0.1:{port}", token=token, root=Path(root), log=home / "server.log")
        _write_settings(home / "settings")
        with open(lab.log, "wb") as log:
            process = subprocess.Popen(
                _lab_command(Path(root), home, port, token), cwd=root, env=_isolated_env(home),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=_terminate_with_parent)
        try:
            _wait_until_up(process, lab, timeout)
            yield lab
        finally:
            _stop(process)


def chromium_path() -> str:
    """The system's Chromium (Debian's `chromium` package); a clear failure when it is missing."""
    path = shutil.which("chromium")
    if path is None:
        raise RuntimeError("no `chromium` on PATH: the browser tests drive Debian's Chromium "
                           "(Playwright's own download is not reachable). `make test` installs it; "
                           "by hand: `apt-get install -y chromium` (as root).")
    return path


@contextmanager
def chromium(headless: bool = True) -> Iterator[Browser]:
    """Debian's Chromium under Playwright, closed on exit."""
    path = chromium_path()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, headless=headless, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def write_notebook(path: Path, cells: Sequence[str]) -> Path:
    """A notebook of code cells at `path`, on the python3 kernel (so that JupyterLab starts it
    without asking)."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))
    return path


def new_page(browser: Browser, timeout: float = PAGE_TIMEOUT_S) -> Page:
    """A page the size of a laptop screen, whose locators wait up to `timeout` seconds."""
    page = browser.new_page(viewport=VIEWPORT)
    page.set_default_timeout(timeout * 1000)
    return page


def open_notebook(page: Page, lab: Lab, name: str, timeout: float = PAGE_TIMEOUT_S) -> Page:
    """Notebook `name` (a path under the lab's root) in JupyterLab on `page`, its kernel idle."""
    page.goto(lab.notebook_url(name))
    wait_for_kernel_idle(page, timeout)
    return page


# The waits ask JupyterLab itself (window.jupyterapp, exposed by the server's
# --LabApp.expose_app_in_browser): the notebook in the main area, its kernel's status, its cells'
# execution counts and outputs. What a test asserts on is the page; what it waits on is the app.
_PANEL_JS = """
  const app = window.jupyterapp;
  const panel = app && app.shell.currentWidget;
  if (!panel || !panel.sessionContext || !panel.context || !panel.context.isReady) return null;
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  const idle = panel.sessionContext.isReady && kernel && kernel.status === 'idle'
    && kernel.connectionStatus === 'connected';
  const cells = panel.content.widgets.filter(c => c.model.type === 'code');
"""
_KERNEL_IDLE_JS = "() => {" + _PANEL_JS + "  return idle ? true : null;\n}"
_COUNTS_JS = "() => {" + _PANEL_JS + "  return cells.map(c => c.model.executionCount);\n}"
# Done when every cell in `which` has run since `before` (a larger execution count: the kernel's
# count only grows) and the kernel is idle; an error output in a cell that ran stops the wait.
_RAN_JS = """([which, before]) => {""" + _PANEL_JS + """
  if (!idle) return null;
  let done = true;
  for (const i of which) {
    const c = cells[i];
    const ran = c.model.executionCount !== null && c.model.executionCount > before;
    if (ran) {
      const err = c.model.outputs.toJSON().find(o => o.output_type === 'error');
      if (err) return {cell: i, error: `${err.ename}: ${err.evalue}`};
    }
    done = done && ran && c.model.executionState !== 'running';
  }
  return done ? {cell: null, error: null} : null;
}"""


def wait_for_kernel_idle(page: Page, timeout: float = CELL_TIMEOUT_S) -> None:
    """Until the notebook in the main area is loaded and its kernel started, connected and idle."""
    page.wait_for_function(_KERNEL_IDLE_JS, timeout=timeout * 1000)


def run_all_cells(page: Page, timeout: float = CELL_TIMEOUT_S) -> None:
    """Run > Run All Cells; returns once every code cell has run and the kernel is idle, and
    fails with the error when a cell raises."""
    _run(page, None, timeout, lambda: _command(page, "notebook:run-all-cells"))


def run_cell(page: Page, index: int, timeout: float = CELL_TIMEOUT_S) -> None:
    """Run code cell `index` (from 0) with Ctrl+Enter, as a student does (Shift+Enter would also
    add a cell after the last one); returns once it has run, fails with its error if it raises."""
    cell = page.locator(".jp-NotebookPanel:visible .jp-CodeCell").nth(index)

    def press() -> None:
        cell.locator(".jp-InputArea-prompt").click()  # selects the cell, in command mode
        page.keyboard.press("Control+Enter")

    _run(page, [index], timeout, press)


def _run(page: Page, which: list[int] | None, timeout: float, start: Callable[[], None]) -> None:
    wait_for_kernel_idle(page, timeout)
    counts = page.evaluate(_COUNTS_JS)
    which = list(range(len(counts))) if which is None else which
    before = max([c for c in counts if c is not None], default=0)
    start()
    handle = page.wait_for_function(_RAN_JS, arg=[which, before], timeout=timeout * 1000)
    result = handle.json_value()
    if result["error"] is not None:
        raise AssertionError(f"code cell {result['cell']} raised {result['error']}")


def _command(page: Page, command: str) -> None:
    """Run a JupyterLab command by its id (what the menus and the palette run), without waiting
    for its promise (page.evaluate has no timeout)."""
    page.evaluate("(c) => { window.jupyterapp.commands.execute(c); }", command)


def widgets(page: Page) -> Locator:
    """Every ipywidget on the page (ipywidgets 8 gives each view the class jupyter-widgets)."""
    return page.locator(".jupyter-widgets")


def button(page: Page, description: str) -> Locator:
    """The ipywidgets Button that reads `description` (an icon, if any, is an <i> before it)."""
    return page.locator(".widget-button").filter(has_text=re.compile(rf"^\s*{re.escape(description)}\s*$"))


def field(page: Page, description: str) -> Locator:
    """The <input>, <select> or <textarea> of the widget whose description is `description`
    (Text, IntText, FloatText, Dropdown, Textarea, Checkbox...: its <label for=...>)."""
    return widgets(page).get_by_label(description, exact=True)


def tab(page: Page, title: str) -> Locator:
    """The title of a Tab widget's page (click it to show that page)."""
    return page.locator(".widget-tab").get_by_role("tab", name=title, exact=True)


def widget_text(page: Page, text: str) -> Locator:
    """Whatever in an ipywidget (Label, HTML, Output...) shows `text`; the notebook's code, which
    may contain the same words, is not looked at."""
    return widgets(page).get_by_text(text)


def screenshot(page: Page, name: str, of: Locator | None = None) -> Path:
    """runs/browser/NAME.png: the page as it shows (JupyterLab scrolls inside the notebook, not
    the page), or only element `of`, scrolled into view."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    if of is None:
        page.screenshot(path=str(path))
    else:
        of.screenshot(path=str(path))
    return path


@contextmanager
def notebook_in_browser(notebook: Path, timeout: float = PAGE_TIMEOUT_S) -> Iterator[Page]:
    """The notebook open in JupyterLab (served from its folder) in Chromium, its kernel idle.

    A failure inside (pytest-timeout's too) keeps the page as runs/browser/failed-NAME.png and,
    unless it is an assertion's, adds the end of the server's log to the error."""
    notebook = Path(notebook)
    chromium_path()  # before the server starts: missing, it is the one thing to say
    with jupyter_lab(notebook.parent) as lab, chromium() as browser:
        page = new_page(browser, timeout)
        try:
            yield open_notebook(page, lab, notebook.name, timeout)
        except (Exception, pytest.fail.Exception) as e:
            log = not isinstance(e, AssertionError)  # an assertion's failure is about the page
            e.add_note(_failure_note(page, lab, f"failed-{notebook.stem}", log))
            raise


def _failure_note(page: Page, lab: Lab, name: str, log: bool) -> str:
    path = SCREENSHOTS / f"{name}.png"
    try:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(path), timeout=10_000)
        note = f"the page when it failed: {path}"
    except Exception as e:  # a crashed or hung page: the error, not this one, is what to report
        note = f"(no screenshot of the page: {type(e).__name__}: {e})"
    if log:
        note += f"\njupyter lab's log (its end):\n{lab.log_text()[-LOG_TAIL:]}"
    return note
