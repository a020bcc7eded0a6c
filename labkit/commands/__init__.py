"""The `labkit` command: one module per subcommand, each with `main(argv) -> int`.

    labkit doctor                 versions, CPU/GPU, the dtype the kit will use, offline or not
    labkit export llamafactory    a fine-tuning run as a LlamaFactory job (YAML, dataset_info, data)
    labkit course build|run       build student notebooks from solutions/ | run every notebook
    labkit data check PATH        validate a dataset (schema file or folder, or a shipped name)
    labkit grade NB.ipynb [...]   grade submissions (a notebook, several, or a folder)
    labkit pretrain               rebuild the pocket LLM from scratch
    labkit serve                  an OpenAI-compatible server over a local model
    labkit serval                 the SERVAL loop on the embedded default
    labkit train                  supervised fine-tuning on (prompt, answer) pairs (the LabBoard's run)

`labkit COMMAND --help` lists a command's options; `labkit pretrain` and `labkit serval` take every
field of their config as a flag, and `--config FILE.yaml` for a file of them. Argument parsing and
printing live here; the library (everything outside labkit/commands) reports through `logging`,
which these commands print.
"""

from __future__ import annotations

import importlib
import logging
import sys

# subcommand -> module whose main(argv) runs it; imported lazily so `labkit doctor` stays fast.
COMMANDS: dict[str, str] = {
    "doctor": "labkit.commands.doctor",
    "export": "labkit.commands.export",
    "course": "labkit.commands.course",
    "data": "labkit.commands.data",
    "grade": "labkit.commands.grade",
    "pretrain": "labkit.commands.pretrain",
    "serve": "labkit.commands.serve",
    "serval": "labkit.commands.serval",
    "train": "labkit.commands.train",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"labkit: unknown command {name!r}; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    show_library_log()
    module = importlib.import_module(COMMANDS[name])
    return int(module.main(rest) or 0)


class _Stdout(logging.Handler):
    """Prints a record to the sys.stdout of the moment (a handler that kept the stream it was made
    with would write into a closed one once a notebook or a test replaced it)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), flush=True)


def show_library_log(level: int = logging.INFO) -> None:
    """Print the library's log lines (progress, resumes, warnings) as a command's output."""
    log = logging.getLogger("labkit")
    if not any(isinstance(h, _Stdout) for h in log.handlers):
        log.addHandler(_Stdout())
    log.setLevel(level)
