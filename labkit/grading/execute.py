"""Run notebooks (papermill) and helper processes with a wall-clock limit, and clean up after them.

Shared by `labkit course run` and `labkit grade`. Every run is a child process in a session of its
own; on timeout or interrupt its whole process tree (papermill, the kernel, whatever the notebook
started) is killed.

The kernel: papermill is told to use kernel "python3", and a kernelspec of that name pointing at
this interpreter (sys.executable, i.e. the .venv's python) is put first on JUPYTER_PATH, so a
"python3" kernelspec in the user's ~/.local/share/jupyter cannot send notebooks to another Python.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import psutil

from labkit.paths import PACKAGE_PARENT

KERNEL_NAME = "python3"

# papermill's command line. rfc3987_syntax (pulled in by jsonschema for IRI checks that nbformat
# never makes) compiles a grammar at import, seconds of every run, so it is left out.
PAPERMILL = ("import sys; sys.modules['rfc3987_syntax'] = None; "
             "from papermill.cli import papermill; papermill(prog_name='papermill')")

Status = Literal["ok", "error", "timeout"]
# cells papermill adds to the notebook it runs
PAPERMILL_TAGS = {"injected-parameters", "papermill-error-cell-tag"}


@dataclass
class Execution:
    """How a notebook run ended: status, wall seconds, and the first error ("" when ok)."""

    status: Status
    seconds: float
    error: str = ""


def child_env(scratch: Path) -> dict[str, str]:
    """The environment for kernels and workers: this interpreter's kernelspec first on
    JUPYTER_PATH, labkit importable, no debugger chatter."""
    spec_dir = scratch / "jupyter" / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (labkit)", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    env = dict(os.environ)
    env["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(scratch / "jupyter"),
                                                        env.get("JUPYTER_PATH")]))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_PARENT), env.get("PYTHONPATH")]))
    env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
    env.setdefault("MPLBACKEND", "Agg")
    return env


def kill_tree(pid: int) -> None:
    """Kill a running (not yet reaped) process and all its descendants."""
    try:
        parent = psutil.Process(pid)
        victims = [*parent.children(recursive=True), parent]
    except psutil.NoSuchProcess:
        return
    for process in victims:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(victims, timeout=5)


def kill_group(pgid: int) -> None:
    """Kill what is left in a process group (children that outlived their parent)."""
    if hasattr(os, "killpg"):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def run_limited(command: list[str], *, cwd: Path, env: dict[str, str], timeout: float,
                log: Path) -> int | None:
    """Run `command`, output to `log`; its exit code, or None when it ran past `timeout` seconds."""
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        finally:
            if process.poll() is None:  # ran past its time, or we are interrupted
                kill_tree(process.pid)
            process.wait()
            kill_group(process.pid)  # the group id stays reserved while members live


def first_error(notebook_path: Path) -> str:
    """`cell N: Name: message` for the first cell with an error output, or "".

    N counts the notebook's own cells (0-based), not those papermill adds."""
    try:
        notebook = json.loads(notebook_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    own = [c for c in notebook.get("cells", [])
           if not set(c.get("metadata", {}).get("tags", [])) & PAPERMILL_TAGS]
    for index, cell in enumerate(own):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                return f"cell {index}: {output.get('ename')}: {output.get('evalue')}"
    return ""


def log_tail(log: Path, lines: int = 3) -> str:
    """The last lines of a log, for errors that happen before any cell runs."""
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return " | ".join(line for line in text.strip().splitlines()[-lines:] if line.strip())


def execute_notebook(source: Path, output: Path, *, cwd: Path, scratch: Path,
                     parameters: dict[str, Any], timeout: float) -> Execution:
    """Run `source` headless with papermill into `output`, with `parameters` injected.

    scratch: a folder for the kernelspec and the log (not the notebook's working folder).
    """
    source, output = source.resolve(), output.resolve()  # papermill runs in `cwd`
    log = scratch / f"{output.stem}.papermill.log"
    command = [sys.executable, "-c", PAPERMILL, str(source), str(output), "-k", KERNEL_NAME,
               "-y", json.dumps(parameters), "--cwd", str(cwd), "--no-progress-bar",
               "--log-level", "ERROR", "--start-timeout", "120"]
    start = time.perf_counter()
    code = run_limited(command, cwd=cwd, env=child_env(scratch), timeout=timeout, log=log)
    seconds = time.perf_counter() - start
    if code is None:
        return Execution("timeout", seconds, f"did not finish within {timeout:g} s")
    if code != 0:
        error = first_error(output) or log_tail(log) or f"papermill exited with code {code}"
        return Execution("error", seconds, error)
    return Execution("ok", seconds)
