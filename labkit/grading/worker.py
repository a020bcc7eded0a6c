"""The student's side of hidden testing: a process of its own that loads the student's definitions,
calls one function on the inputs the grader sends, and writes the outputs back as JSON.

    python -m labkit.grading.worker JOB.pickle RESULT.json

The grader trusts nothing this process writes: it reads the result with `json.loads` (plain data
only, no objects that could compare equal to anything), computes the reference outputs itself, and
compares in its own process. This process cannot import `labkit.grading` (where the references
live) once it starts running the student's code.

Kept free of labkit imports so that running it loads as little of the kit as possible.
"""

from __future__ import annotations

import importlib.abc
import json
import pickle
import sys
import traceback
import types
from typing import Any

GRADING_PACKAGE = "labkit.grading"
PLAIN_TYPES = (bool, int, float, str)


class _BlockGrading(importlib.abc.MetaPathFinder):
    """Refuses imports of labkit.grading: the reference solutions are not the student's to call."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> None:
        if fullname == GRADING_PACKAGE or fullname.startswith(GRADING_PACKAGE + "."):
            raise ImportError(f"{fullname} is not available to graded code")
        return None


def block_grading() -> None:
    """Forget every loaded labkit.grading module and refuse to import them again."""
    for name in [n for n in sys.modules if n == GRADING_PACKAGE or n.startswith(GRADING_PACKAGE + ".")]:
        del sys.modules[name]
    labkit = sys.modules.get("labkit")
    if labkit is not None and hasattr(labkit, "grading"):
        delattr(labkit, "grading")
    sys.meta_path.insert(0, _BlockGrading())


def to_plain(value: Any) -> Any:
    """Numbers, strings, booleans, None, lists and str-keyed dicts, converted from numpy scalars and
    arrays, tuples, and pandas Series (-> dict) / DataFrame (-> dict of column lists).

    Raises TypeError for anything else, so that only data (not behaviour) is ever compared.
    """
    if value is None or type(value) in PLAIN_TYPES:
        return value
    np = sys.modules.get("numpy")
    if np is not None and isinstance(value, np.generic):
        return to_plain(value.item())
    if np is not None and isinstance(value, np.ndarray):
        return to_plain(value.tolist())
    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(value, pd.Series):
        return {str(to_plain(k)): to_plain(v) for k, v in value.items()}
    if pd is not None and isinstance(value, pd.DataFrame):
        return {str(to_plain(c)): to_plain(value[c].tolist()) for c in value.columns}
    if type(value) in (list, tuple):
        return [to_plain(v) for v in value]
    if type(value) is dict:
        return {str(to_plain(k)): to_plain(v) for k, v in value.items()}
    raise TypeError(f"returned an object of type {type(value).__name__}; return numbers, strings, "
                    "lists, dicts, numpy arrays or pandas Series/DataFrames")


def describe_error(err: BaseException) -> str:
    """`ValueError: message (line 3 of your definitions)` for the report."""
    where = ""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename == "<submission>"]
    if frames:
        where = f" (line {frames[-1].lineno} of `{frames[-1].name}`)"
    message = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {message}{where}" if message else f"{type(err).__name__}{where}"


def load_definitions(chunks: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Run each extracted statement in a fresh module; a failing one is reported, the rest still run."""
    module = types.ModuleType("submission")
    sys.modules["submission"] = module  # so that classes and pickling see a real module
    errors = []
    for chunk in chunks:
        try:
            exec(compile(chunk, "<submission>", "exec"), module.__dict__)
        except BaseException as err:  # noqa: BLE001 - a student's SystemExit is still their error
            errors.append(f"`{chunk.splitlines()[0][:60]}` failed: {describe_error(err)}")
    return module.__dict__, errors


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Call the student's function on every case; stop at the first case that raises."""
    namespace, load_errors = load_definitions(job["chunks"])
    result: dict[str, Any] = {"load_errors": load_errors}
    function = namespace.get(job["function"])
    if not callable(function):
        return result | {"status": "missing"}
    outputs = []
    for index, (args, kwargs) in enumerate(job["cases"]):
        try:
            outputs.append(to_plain(function(*args, **kwargs)))
        except NotImplementedError:
            return result | {"status": "not_attempted"}
        except BaseException as err:  # noqa: BLE001
            return result | {"status": "error", "case": index, "error": describe_error(err)}
    return result | {"status": "ok", "outputs": outputs}


def main(argv: list[str]) -> int:
    job_path, result_path = argv
    with open(job_path, "rb") as handle:
        job = pickle.load(handle)  # written by the grader: trusted
    block_grading()
    result = run_job(job)
    with open(result_path, "w", encoding="utf-8") as handle:
        json.dump(result, handle)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
