"""Take from a notebook only what hidden tests need: imports, functions, classes, simple constants.

Top-level code that *does* things (training, plotting, printing, patching a library, calling
`check`) is left out, so the grader's tests see the student's definitions and nothing else.
An exercise function must therefore be self-contained: it may use its arguments, imports, other
functions and constants such as `N_BINS = 10`, but not a variable computed by a call
(`FRAME = load(...)`): pass such things in as arguments.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

from IPython.core.inputtransformer2 import TransformerManager

GRADING_MODULE = "labkit.grading"
LESSON_IN_NAME = re.compile(r"(?:^|[^0-9A-Za-z])(\d{2}|A\d)_")
CHECK_CALL = re.compile(r"""check\(\s*["'](\d{2}|A\d)\.""")


def read_notebook(path: Path) -> dict[str, Any]:
    """A notebook's JSON, checked for the shape the grader relies on (a submission may be anything).

    Raises ValueError naming what is wrong."""
    try:
        notebook = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"not a readable notebook: {err}") from None
    cells = notebook.get("cells") if isinstance(notebook, dict) else None
    if not isinstance(cells, list) or not all(isinstance(c, dict) for c in cells):
        raise ValueError("not a notebook: no list of cells")
    for index, cell in enumerate(cells):
        source = cell.get("source", "")
        if not isinstance(source, str) and not (
                isinstance(source, list) and all(isinstance(line, str) for line in source)):
            raise ValueError(f"not a notebook: cell {index} has no text source")
    return notebook


def cell_source(cell: dict[str, Any]) -> str:
    """A cell's source as one string (notebooks store it as a string or a list of lines)."""
    source = cell.get("source", "")
    return source if isinstance(source, str) else "".join(source)


def _imports_grading(node: ast.stmt) -> bool:
    """`from labkit.grading import check` and friends: not needed by (and not allowed in) tests."""
    if isinstance(node, ast.Import):
        return any(a.name == GRADING_MODULE or a.name.startswith(GRADING_MODULE + ".")
                   for a in node.names)
    if isinstance(node, ast.ImportFrom):
        module = node.module or ""
        if module == GRADING_MODULE or module.startswith(GRADING_MODULE + "."):
            return True
        return module == "labkit" and any(a.name == "grading" for a in node.names)
    return False


def _runs_code(node: ast.AST) -> bool:
    """True when evaluating `node` calls something (a lambda's body only runs when called)."""
    if isinstance(node, ast.Lambda):
        return any(_runs_code(d) for d in node.args.defaults + node.args.kw_defaults if d)
    if isinstance(node, ast.Call | ast.Await | ast.Yield | ast.YieldFrom | ast.NamedExpr):
        return True
    return any(_runs_code(child) for child in ast.iter_child_nodes(node))


def _is_definition(node: ast.stmt) -> bool:
    """Imports, defs, classes, and `NAME = <expression without calls>`."""
    if isinstance(node, ast.Import | ast.ImportFrom):
        return not _imports_grading(node)
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return True
    if isinstance(node, ast.Assign):
        targets_are_names = all(
            isinstance(t, ast.Name)
            or (isinstance(t, ast.Tuple) and all(isinstance(e, ast.Name) for e in t.elts))
            for t in node.targets)
        return targets_are_names and not _runs_code(node.value)
    if isinstance(node, ast.AnnAssign):
        return (isinstance(node.target, ast.Name) and node.value is not None
                and not _runs_code(node.value))
    return False


def definitions(notebook: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The definition statements of every code cell, in order, as source chunks; and notes on
    cells that could not be read (syntax errors)."""
    transformer = TransformerManager()  # turns %magics and !shell lines into plain Python
    chunks: list[str] = []
    notes: list[str] = []
    for index, cell in enumerate(notebook.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        try:
            tree = ast.parse(transformer.transform_cell(cell_source(cell)))
        except SyntaxError as err:
            notes.append(f"cell {index} was skipped: SyntaxError: {err.msg} (line {err.lineno})")
            continue
        chunks.extend(ast.unparse(node) for node in tree.body if _is_definition(node))
    return chunks, notes


def lesson_of(path: Path, notebook: dict[str, Any]) -> str | None:
    """The lesson a submission belongs to: from its file name ("00_welcome.ipynb",
    "alice_00_welcome.ipynb"), else from the `check("NN.x")` calls in it, else None."""
    if match := LESSON_IN_NAME.search(path.name):
        return match.group(1)
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") == "code" and (match := CHECK_CALL.search(cell_source(cell))):
            return match.group(1)
    return None
