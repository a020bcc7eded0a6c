"""The SERVAL guard measured: what a few gold validation labels and the label-free warnings do.

    .venv/bin/python benchmarks/serval_guard.py                       # 6 shipped tasks + weakened, 3 seeds
    .venv/bin/python benchmarks/serval_guard.py --tasks pima ilpd_shuffled --seeds 0 --no-doc

Each task and seed (the seed fixes the split and every initialization) is one SERVAL run with the
defaults (`labkit.serval.ServalConfig`, 2 iterations, no gold label), kept in runs/seeds/
(an interrupted benchmark resumes; benchmarks/serval_seeds.py makes the same runs). Its guarded
version is read from the same run: the guard (`labkit.serval.gold_report`, --gold validation rows)
decides what to keep from the LLM's and the vertical models' saved answers on those rows; a
guarded run makes exactly these states until it stops, so the verdict is the one
`ServalConfig(val_labels=...)` would reach online (a test in tests/test_serval.py checks it).

Tasks: the six of the README table, and weakened annotators: `<table>_shuffled` is the pocket LLM
reading each numeric value under another feature's name (labkit.experiments.with_shuffled_names),
an annotator that knows little about the task; `breast_cytology` is a table it was never taught
(docs/examples/breast_cytology, added as a teacher adds one: docs/teaching.md).

Printed, and written to docs/serval_guard.md between its markers (unless --no-doc):
1. per task, over the seeds (mean and standard deviation): the LLM zero-shot, after the loop, and
   after the guarded loop; the vertical model unguarded and guarded; how often the guard rolled
   the LLM back, how often the run ended below the zero-shot LLM (test split, gold labels:
   evaluation only), and how often the gold report found the kept vertical model worse than the
   kept LLM on the gold rows;
2. every run's label-free signs (labkit.guard.signs) beside its LLM change and the warnings printed.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from labkit import guard, serval
from labkit.data import Dataset, load
from labkit.docblocks import write_block
from labkit.experiments import with_shuffled_names

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "serval_guard.md"
# A table the pocket LLM was never taught, described by files as a teacher would add it.
UNTAUGHT = {"breast_cytology": ROOT / "docs" / "examples" / "breast_cytology"}
# Development tables: shipped, but not in the README's table; the guard's adoption level and the
# warning's threshold are set on them and on the weakened annotator, then read on the six reported tasks.
DEVELOPMENT = serval.DEVELOPMENT_TASKS
WEAKENED = ("ilpd_shuffled", *UNTAUGHT)
TASKS = serval.TASKS + DEVELOPMENT + WEAKENED


def dataset(task: str, seed: int) -> Dataset:
    if task.endswith("_shuffled"):
        return with_shuffled_names(load(task.removesuffix("_shuffled"), seed=seed))
    return load(UNTAUGHT.get(task, task), seed=seed)


def _folder(task: str, seed: int, out: Path) -> Path:
    return out / f"seed{seed}" / dataset(task, seed).schema.name


def finished(task: str, seed: int, out: Path) -> bool:
    return (_folder(task, seed, out) / "result.json").is_file()  # written last: the run is complete


def one_run(task: str, seed: int, gold: int, out: Path) -> dict[str, object]:
    """One seed's run of a task, unguarded and guarded, with its signs (a line of the tables)."""
    ds = dataset(task, seed)
    config = serval.ServalConfig(seed=seed, progress=False)
    folder = _folder(task, seed, out)
    if finished(task, seed, out):
        saved = json.loads((folder / "result.json").read_text())
        records = [serval.IterationRecord(**r) for r in saved["iterations"]]
        llm_final = saved["llm_final_auc"]
    else:
        result = serval.run(ds, None, config, out / f"seed{seed}", log=print)
        records, llm_final = result.iterations, result.llm_final_auc
    tunings = serval.tunings(records)
    llm_states = [r.llm_auc for r in records[:tunings]] + [llm_final]  # test AUC after k back-tunings
    guarded = replace(config, val_labels=min(gold, len(ds.labels("val"))))
    final_val = np.load(folder / serval.FINAL_PREDICTIONS)["llm_val"]
    report = serval.gold_report(ds, guarded, folder, records, final_val)
    states_val = [np.load(folder / f"iteration_{r.iteration}" / serval.PREDICTIONS)["llm_val"]
                  for r in records[:tunings]] + [final_val]
    sweep = adopt_sweep(ds.labels("val"), states_val, llm_states, guarded.val_labels)
    fired = guard.fired(records)
    return {
        "task": task, "seed": seed, "gold rows": report.rows,
        "LLM zero-shot": records[0].llm_auc, "LLM after SERVAL": llm_final,
        "LLM guarded": llm_states[report.kept_llm],
        "vertical": records[serval.last_accepted(records) - 1].vertical_auc,
        "vertical guarded": records[report.kept_vertical - 1].vertical_auc,
        "rolled back": report.kept_llm < tunings, "stopped": report.stopped_after is not None,
        "vertical below LLM": report.vertical_below_llm,
        **guard.signs(records), "warnings": len(fired), "warning": ", ".join(fired),
        **sweep,
    }


ADOPT_LEVELS = (0.5, 0.7, 0.8, 0.9, 0.975)
DRAWS = 30


def adopt_sweep(labels: np.ndarray, states_val: list[np.ndarray], states_test: list[float],
                n: int) -> dict[str, float]:
    """Per adoption level of the guard (labkit.guard.judge's `adopt`): the mean test AUC of the LLM
    state it keeps, over DRAWS draws of n gold validation rows (a draw is one user's luck)."""
    out = {}
    for level in ADOPT_LEVELS:
        kept = []
        for draw in range(DRAWS):
            rows = guard.gold_rows(labels, n, seed=draw)
            verdict = guard.judge(labels[rows], [p[rows] for p in states_val], [], seed=draw, adopt=level)
            kept.append(states_test[verdict.kept_llm])
        out[f"adopt {level}"] = float(np.mean(kept))
    return out


def chosen_level(runs: pd.DataFrame) -> float:
    """The adoption level the development runs choose: the guard is there so that a run does not
    end below the zero-shot LLM, so the fewest development runs whose kept LLM ends below it on
    average, then the highest mean change. Reported tasks are not read."""
    development = runs[~runs["task"].isin(serval.TASKS)]
    def key(level: float) -> tuple[int, float]:
        change = development[f"adopt {level}"] - development["LLM zero-shot"]
        return int((change < -1e-9).sum()), -float(change.mean())
    return min(ADOPT_LEVELS, key=key)


def sweep_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean change of the kept LLM against the zero-shot LLM (test AUC) per adoption level, and
    the runs whose mean kept LLM ends below it; development runs and reported runs apart."""
    runs = runs.assign(group=np.where(runs["task"].isin(serval.TASKS), "reported (6 tasks)",
                                      "development (5 tables + weakened)"))
    rows = []
    for group, part in runs.groupby("group"):
        row: dict[str, object] = {"tasks": group, "runs": len(part)}
        for name in ["LLM after SERVAL", *(f"adopt {level}" for level in ADOPT_LEVELS)]:
            change = part[name] - part["LLM zero-shot"]
            row["unguarded" if name == "LLM after SERVAL" else name] = (
                f"{change.mean():+.4f} ({int((change < -1e-9).sum())} below)")
        rows.append(row)
    return pd.DataFrame(rows).set_index("tasks")


def per_task(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds, as 'mean ± sd' cells, and the counts."""
    figures = ["LLM zero-shot", "LLM after SERVAL", "LLM guarded", "vertical", "vertical guarded"]
    rows = []
    for task, group in runs.groupby("task", sort=False):
        row: dict[str, object] = {"task": task, "seeds": len(group)}
        for name in figures:
            row[name] = f"{group[name].mean():.3f} ± {group[name].std(ddof=1):.3f}" if len(group) > 1 \
                else f"{group[name].mean():.3f}"
        row["LLM: guarded - unguarded"] = f"{(group['LLM guarded'] - group['LLM after SERVAL']).mean():+.3f}"
        row["rolled back"] = int(group["rolled back"].sum())
        row["ended below zero-shot (unguarded / guarded)"] = (
            f"{int((group['LLM after SERVAL'] < group['LLM zero-shot']).sum())} / "
            f"{int((group['LLM guarded'] < group['LLM zero-shot']).sum())}")
        row["runs warned"] = int((group["warnings"] > 0).sum())
        row["vertical below LLM (gold rows)"] = int(group["vertical below LLM"].sum())
        rows.append(row)
    return pd.DataFrame(rows).set_index("task")


def signs_table(runs: pd.DataFrame) -> pd.DataFrame:
    table = runs[["task", "seed", "LLM zero-shot", "LLM after SERVAL", "answer_spread", "vertical_follows",
                  "copy", "moved_away", "refused", "warning"]].copy()
    table.insert(4, "LLM change", table.pop("LLM after SERVAL") - table.pop("LLM zero-shot"))
    return table.round(3)


def markdown(runs: pd.DataFrame, gold: int, source: str) -> str:
    shipped = runs[runs["task"].isin(serval.TASKS)]
    figures = ["LLM zero-shot", "LLM after SERVAL", "LLM guarded", "vertical", "vertical guarded"]
    means = shipped.groupby("seed")[figures].mean()
    return "\n\n".join([
        f"Measured {time.strftime('%d %b %Y')} ({source}; seeds {sorted(runs['seed'].unique().tolist())}, "
        f"the defaults, 2 iterations; the guard reads at most {gold} gold validation rows).",
        per_task(runs).to_markdown(),
        "Means over the reported tasks measured, per seed (the README table's last row):",
        means.round(3).to_markdown(),
        f"The adoption level, chosen on the development runs: the kept LLM's mean change against the "
        f"zero-shot LLM (test AUC), each run averaged over {DRAWS} draws of the gold rows, and how many "
        "runs end below the zero-shot LLM on average (labkit.guard.ADOPT is the level used above):",
        sweep_table(runs).to_markdown(),
        f"Chosen on the development runs: adopt {chosen_level(runs)} (the fewest runs below the zero-shot "
        f"LLM, then the highest mean change); labkit.guard.ADOPT is {guard.ADOPT}.",
        "Every run's label-free signs (labkit.guard.signs) and the warnings its summary prints:",
        signs_table(runs).to_markdown(index=False),
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--gold", type=int, default=50, help="gold validation rows the guard reads")
    parser.add_argument("--out", type=Path, default=Path("runs/seeds"),
                        help="run folders (resumed; benchmarks/serval_seeds.py makes the same runs)")
    parser.add_argument("--no-doc", action="store_true", help="print only")
    parser.add_argument("--finished-only", action="store_true",
                        help="tabulate the finished runs, start none (the doc lists the ones left out)")
    args = parser.parse_args(argv)
    pairs = [(t, s) for s in args.seeds for t in args.tasks]
    missing = [(t, s) for t, s in pairs if not finished(t, s, args.out)] if args.finished_only else []
    runs = pd.DataFrame([one_run(t, s, args.gold, args.out) for t, s in pairs if (t, s) not in missing])
    source = " ".join(["python benchmarks/serval_guard.py", *(argv or [])])
    if missing:
        source += "; not run: " + ", ".join(f"{t} seed {s}" for t, s in missing)
    text = markdown(runs, args.gold, source)
    print(text)
    if not args.no_doc:
        write_block(DOC, "serval_guard benchmark", text)
        print(f"\nwrote {DOC}")
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
