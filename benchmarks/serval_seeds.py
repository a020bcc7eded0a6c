"""The README's results table over seeds: the SERVAL loop with its defaults on the six reported tasks.

    .venv/bin/python benchmarks/serval_seeds.py                  # seeds 0 1 2 (about 45 min on 2 cores)
    .venv/bin/python benchmarks/serval_seeds.py --finished-only  # tabulate what is finished

Each task and seed (the seed fixes the split and every initialization) is one run of
`labkit.serval.run` with `ServalConfig(seed=seed)`, exactly what `labkit serval --seed <seed>` runs,
kept in runs/seeds/seed<seed>/<task>/ (an interrupted benchmark resumes; benchmarks/serval_guard.py
reads the same runs). Each run's line of the results table goes to docs/results/serval_seeds.csv;
the README's results block (between its `serval_seeds` markers) is rendered from that file by
`labkit.serval.seeds_markdown`, and tests/test_serval.py checks that the two agree,
so no figure of it is typed by hand.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from labkit import serval
from labkit.docblocks import write_block

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results" / "serval_seeds.csv"
README = ROOT / "README.md"
BLOCK = "serval_seeds"
RUNS = Path("runs/seeds")


def result_file(task: str, seed: int, out: Path) -> Path:
    return out / f"seed{seed}" / task / "result.json"  # written last: the run is complete


def one_row(task: str, seed: int, out: Path) -> dict[str, object]:
    path = result_file(task, seed, out)
    if not path.is_file():
        serval.run(task, None, serval.ServalConfig(seed=seed, progress=False), out / f"seed{seed}", log=print)
    return {"seed": seed, **json.loads(path.read_text(encoding="utf-8"))["row"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=RUNS, help="run folders (resumed)")
    parser.add_argument("--finished-only", action="store_true", help="tabulate the finished runs, start none")
    parser.add_argument("--no-doc", action="store_true", help="print only; write neither file")
    args = parser.parse_args(argv)
    pairs = [(t, s) for s in args.seeds for t in serval.TASKS]
    missing = [(t, s) for t, s in pairs if args.finished_only and not result_file(t, s, args.out).is_file()]
    rows = pd.DataFrame([one_row(t, s, args.out) for t, s in pairs if (t, s) not in missing])
    header = (f"Measured {time.strftime('%d %b %Y')} by `python benchmarks/serval_seeds.py` (2 cores, the "
              f"defaults: 2 iterations, no gold label; seeds {args.seeds}; test AUC)")
    if missing:
        header += "; not run: " + ", ".join(f"{t} seed {s}" for t, s in missing)
    header += "."
    print(serval.seeds_markdown(rows, header))
    if not args.no_doc:
        serval.write_seed_rows(RESULTS, rows, header)
        write_block(README, BLOCK, serval.seeds_markdown(*serval.read_seed_rows(RESULTS)))
        print(f"\nwrote {RESULTS.relative_to(ROOT)} and the README's results block")
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
