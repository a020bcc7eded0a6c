"""The `labkit` command. Each subcommand lives in the module it belongs to, as `main(argv) -> int`.

    labkit doctor                 versions, CPU/GPU, the dtype the kit will use, offline or not
    labkit course build|run       build student notebooks from solutions/ | run every notebook
    labkit grade NB.ipynb [...]   grade submissions (a notebook, several, or a folder)
    labkit pretrain               rebuild the pocket LLM from scratch
    labkit serve                  an OpenAI-compatible server over a local model
    labkit serval                 the SERVAL loop on the embedded default
"""

from __future__ import annotations

import importlib
import sys

# subcommand -> module whose main(argv) runs it; imported lazily so `labkit doctor` stays fast.
COMMANDS: dict[str, str] = {
    "doctor": "labkit.doctor",
    "course": "labkit.course",
    "grade": "labkit.grading.grader",
    "pretrain": "labkit.pocket.pretrain",
    "serve": "labkit.serve",
    "serval": "labkit.serval",
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
    try:
        module = importlib.import_module(COMMANDS[name])
    except ModuleNotFoundError as err:
        if err.name == COMMANDS[name]:
            print(f"labkit: `labkit {name}` is not built yet in this version", file=sys.stderr)
            return 2
        raise
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
