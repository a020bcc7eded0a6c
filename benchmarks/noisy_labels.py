"""Vertical models taught by the LLM alone: every noisy-label method against zero-shot and supervised.

    .venv/bin/python benchmarks/noisy_labels.py                          # 5 tables + abstracts, 5 seeds
    .venv/bin/python benchmarks/noisy_labels.py --tasks pima hcv --seeds 2 --no-doc
    .venv/bin/python benchmarks/noisy_labels.py --llm /path/to/model     # another LLM
    .venv/bin/python benchmarks/noisy_labels.py --annotator rule --tasks heart early_diabetes ilpd hcv pima
    .venv/bin/python benchmarks/noisy_labels.py --annotator rule_flips --tasks heart early_diabetes \
        ilpd hcv pima

Per task and seed (a seed fixes the train/val/test split and the model's initialization), the test
AUC and accuracy of:

- llm_zero_shot: the pocket LLM's P(Yes) / (P(Yes) + P(No)) on the Yes/No prompt (token mode);
- hard_labels: the vertical model's standard training on the LLM's rounded 0/1 answers;
- each labkit.noisy method on the LLM's soft answers (training split), stopping early on its
  confident answers of the validation split;
- supervised: the same vertical model on gold training labels, validated on gold labels.

Gold labels are read for `supervised` and for test scores only. The vertical model is the MLP for
tables and the MiniLM text classifier for abstracts. Answers are cached in the kit's cache
(labkit.paths.CACHE_DIR, answers.sqlite) and finished runs in runs/noisy_labels/results.jsonl: an interrupted
benchmark resumes where it stopped. The table is printed and written to docs/noisy_labels.md
between the BEGIN/END markers (unless --no-doc).

--annotator rule replaces the LLM by the textbook rule it is pre-trained to imitate
(labkit.experiments.rule_answers, from data/knowledge/<task>.yaml): what a perfectly trained pocket LLM
would answer, a stand-in for studying the methods before the LLM exists (tables only). Its table
goes into its own block of the doc. Its noise is systematic: a function of the features, wrong
wherever the textbook is. --annotator rule_flips adds random noise to it: each row's p becomes
1 - p with probability --flip-rate (0.3 by default; labkit.noisy.flip_soft_labels, seed 0, the
same rows for every seed of the benchmark), the kind of noise the methods were built for. The
three annotators side by side measure which methods help with which kind of noise.

Acceptance (issue 6), measured over the five tables: the best method without gold labels (one
method for all tables, the one with the highest mean percentage of the supervised AUC) reaches at
least 95% of the supervised AUC on average, and beats the LLM's zero-shot AUC on at least 4 of 5.
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd

from labkit.annotate import LocalAnnotator
from labkit.data import SERVAL_TASKS, TEXT_TASKS
from labkit.experiments import (
    HARD_LABELS,
    SUPERVISED,
    ZERO_SHOT,
    annotate_rows,
    compare_noisy_methods,
    rule_answers,
    summarize,
    with_percent_of_supervised,
)
from labkit.loader import load_model, load_tokenizer
from labkit.noisy import NOISY_METHODS, flip_soft_labels
from labkit.paths import CACHE_DIR

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "noisy_labels.md"
METHODS: tuple[str, ...] = (ZERO_SHOT, HARD_LABELS, *NOISY_METHODS, SUPERVISED)
NO_GOLD: tuple[str, ...] = (HARD_LABELS, *NOISY_METHODS)  # vertical models without gold labels


def run(tasks: list[str], seeds: list[int], llm: str | None, *, epochs: int, batch: int,
        results: Path, annotator_kind: str = "llm", flip_rate: float = 0.3,
        stop_metric: str | None = None) -> pd.DataFrame:
    """Every method on every task and seed; one row per run. annotator_kind: llm, rule or
    rule_flips; stop_metric: what early stopping on the confident rows minimizes, for every
    noisy-label method (None: fit_noisy's default)."""
    options = {m: {"stop_metric": stop_metric} for m in NOISY_METHODS} if stop_metric else None
    annotator = None if annotator_kind != "llm" else LocalAnnotator(
        load_model(llm), load_tokenizer(llm), mode="token", batch_size=batch,
        cache=CACHE_DIR / "answers.sqlite")
    runs = []
    for task in tasks:
        start = time.perf_counter()
        if annotator is not None:
            answers = annotate_rows(task, annotator)
        else:
            answers = rule_answers(task)
            if annotator_kind == "rule_flips":
                flipped = flip_soft_labels(answers, flip_rate, seed=0)
                print(f"{task}: {np.mean(flipped != answers):.1%} of the rule's answers flipped")
                answers = flipped
        print(f"{task}: {len(answers)} answers in {time.perf_counter() - start:.0f} s", flush=True)
        runs.append(compare_noisy_methods(task, answers, METHODS, seeds,
                                          model_options={"epochs": epochs},
                                          method_options=options, results=results))
    return pd.concat(runs, ignore_index=True)


def table(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and std per (task, method) with the percentage of the supervised AUC."""
    return with_percent_of_supervised(summarize(runs, ["dataset", "method"]))


def acceptance(summary: pd.DataFrame) -> dict[str, object]:
    """The best no-gold method over the five SERVAL tables and what the acceptance asks of it."""
    tables = summary[summary["dataset"].isin(SERVAL_TASKS)]
    pct = tables[tables["method"].isin(NO_GOLD)].pivot(index="dataset", columns="method",
                                                       values="pct_of_supervised")
    auc = tables.pivot(index="dataset", columns="method", values="auc_mean")
    # A method that failed on a table (NaN) has no mean over the five: it cannot be the best.
    means = pct.mean(skipna=False)
    best = str(means.idxmax())
    wins = int((auc[best] > auc[ZERO_SHOT]).sum())
    return {"tables": len(pct), "best_method": best, "mean_pct": float(pct[best].mean()),
            "beats_zero_shot": wins,
            "passed": bool(len(pct) == 5 and pct[best].mean() >= 95 and wins >= 4),
            "mean_pct_by_method": means.sort_values(ascending=False).round(1).to_dict()}


def cell(row: pd.Series) -> str:
    """One task and method: AUC mean ± std (% of supervised), and how many seeds were refused."""
    failed = int(row.get("failed", 0) or 0)
    if failed == row["n"]:
        return f"refused ({failed} of {int(row['n'])})"
    spread = f" ± {row['auc_std']:.3f}" if pd.notna(row["auc_std"]) else ""
    text = f"{row['auc_mean']:.3f}{spread} ({row['pct_of_supervised']:.0f}%)"
    return text + (f", {failed} of {int(row['n'])} refused" if failed else "")


def refusals(runs: pd.DataFrame) -> str:
    """What fit_noisy's agreement check refused, and what the refused models would have scored."""
    if "refused_auc" not in runs or runs["refused_auc"].isna().all():
        return "No run was refused by fit_noisy's agreement check."
    refused = runs.dropna(subset=["refused_auc"])
    below = int((refused["refused_auc"] < 0.5).sum())
    return (f"fit_noisy's agreement check refused {len(refused)} of {len(runs)} runs (their model did "
            "not rank the validation rows as the annotator does). Had they been kept, their test "
            f"AUC would have been {refused['refused_auc'].min():.3f}-"
            f"{refused['refused_auc'].max():.3f} (median {refused['refused_auc'].median():.3f}); "
            f"{below} of them below 0.5.")


def markdown(summary: pd.DataFrame, verdict: dict[str, object], seeds: int, source: str,
             runs: pd.DataFrame) -> str:
    """Per method (rows) and task (columns): AUC mean ± std and % of supervised; then the verdict
    and the refusals."""
    tasks = list(dict.fromkeys(summary["dataset"]))
    lines = [f"Test AUC, mean ± std over {seeds} seeds (split and model), and in brackets the "
             f"percentage of the supervised AUC; a refused run (fit_noisy's checks) is left out of "
             f"the mean and counted. Annotator: {source}. Vertical model: MLP "
             "(tables), MiniLM + MLP head (abstracts).", "",
             "| method | " + " | ".join(tasks) + " | mean % (tables) | beats zero-shot (tables) |",
             "|---|" + "---|" * (len(tasks) + 2)]
    zero_shot = summary[summary["method"] == ZERO_SHOT].set_index("dataset")["auc_mean"]
    for method in dict.fromkeys(summary["method"]):
        part = summary[summary["method"] == method].set_index("dataset")
        cells = [cell(part.loc[t]) if t in part.index else "" for t in tasks]
        on_tables = part.index.isin(SERVAL_TASKS)
        pct = part.loc[on_tables, "pct_of_supervised"].mean(skipna=False)  # NaN: a table failed
        wins = int((part.loc[on_tables, "auc_mean"] > zero_shot[part.index[on_tables]]).sum())
        mean = f"{pct:.1f}%" if pd.notna(pct) else "none (a table refused)"
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {mean} | {wins} of "
                     f"{int(on_tables.sum())} |")
    lines += ["", refusals(runs), "",
              f"Acceptance on the {verdict['tables']} SERVAL tables: the best method without "
              f"gold labels, `{verdict['best_method']}`, reaches {verdict['mean_pct']:.1f}% of the "
              f"supervised AUC on average (target >= 95%) and beats the LLM's zero-shot AUC on "
              f"{verdict['beats_zero_shot']} of {verdict['tables']} tables (target >= 4 of 5): "
              f"**{'met' if verdict['passed'] else 'not met'}**."]
    return "\n".join(lines)


def write_doc(text: str, title: str, key: str, path: Path = DOC) -> None:
    """Replace the text between the doc's BEGIN/END markers for `key` (a new section if none)."""
    begin, end = f"<!-- BEGIN noisy_labels benchmark: {key} -->", f"<!-- END noisy_labels: {key} -->"
    doc = path.read_text()
    block = f"{begin}\n{text}\n{end}"
    if begin in doc:
        doc = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, doc, flags=re.S)
    else:
        doc = doc.rstrip("\n") + f"\n\n### {title}\n\n{block}\n"
    path.write_text(doc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=[*SERVAL_TASKS, *TEXT_TASKS])
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (default 5)")
    parser.add_argument("--llm", default=None, help="model folder or hub id (default: pocket LLM)")
    parser.add_argument("--annotator", choices=("llm", "rule", "rule_flips"), default="llm",
                        help="rule: the textbook rule the pocket LLM imitates (a stand-in); "
                             "rule_flips: the rule with a random share of its answers flipped")
    parser.add_argument("--flip-rate", type=float, default=0.3,
                        help="share of rows flipped by --annotator rule_flips (default 0.3)")
    parser.add_argument("--epochs", type=int, default=100, help="at most, per fit")
    parser.add_argument("--batch", type=int, default=16, help="LLM batch size")
    parser.add_argument("--stop-metric", choices=("accuracy", "loss", "auc"), default=None,
                        help="early stopping on confident rows minimizes this (default: "
                             "fit_noisy's, the error rate)")
    parser.add_argument("--no-doc", action="store_true", help="do not write docs/noisy_labels.md")
    args = parser.parse_args(argv)
    name = Path(args.llm).name if args.llm else "pocket-llm"
    rule = "the textbook rule the pocket LLM imitates (stand-in)"
    flips = f"rule + {args.flip_rate:.0%} random flips"
    source = {"llm": f"{name}, token mode P(Yes)", "rule": rule,
              "rule_flips": f"{rule}, with a random {args.flip_rate:.0%} of its answers flipped "
                            "to 1 - p"}[args.annotator]
    results = ROOT / "runs" / "noisy_labels" / "results.jsonl"  # keyed by answers, options, code
    runs = run(args.tasks, list(range(args.seeds)), args.llm, epochs=args.epochs, batch=args.batch,
               results=results, annotator_kind=args.annotator, flip_rate=args.flip_rate,
               stop_metric=args.stop_metric)
    if args.stop_metric:
        source += f"; early stopping minimizes the {args.stop_metric} on the confident rows"
    summary = table(runs)
    with pd.option_context("display.width", 200, "display.max_rows", 200):
        print(summary.round(3).to_string(index=False))
    verdict = acceptance(summary) if set(SERVAL_TASKS) <= set(args.tasks) else None
    if verdict is None:
        print("acceptance needs all five SERVAL tables; not computed")
        return 0
    text = markdown(summary, verdict, args.seeds, source, runs)
    print(text)
    if not args.no_doc:
        title = {"llm": f"Measured on the {name} labels",
                 "rule": "Stand-in: the textbook rule as annotator (systematic noise)",
                 "rule_flips": f"Stand-in: the textbook rule with random flips ({flips})"
                 }[args.annotator]
        key = {"llm": name, "rule": "rule", "rule_flips": "rule_flips"}[args.annotator] \
            + (f", stop {args.stop_metric}" if args.stop_metric else "")
        write_doc(text, title + (f" (stop on {args.stop_metric})" if args.stop_metric else ""),
                  key)
        print(f"written to {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
