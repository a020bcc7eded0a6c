"""The SERVAL loop's defaults re-derived on development tables only (docs/serval_protocol.md).

    .venv/bin/python benchmarks/serval_dev.py                    # 5 development tables, seeds 0 1 2
    .venv/bin/python benchmarks/serval_dev.py --seeds 0 --no-doc # a quick look

The protocol: a design choice of the loop is made on the five shipped tables that no headline
reports (DEVELOPMENT: Cleveland, heart failure clinical records, thyroid, breast cancer, cirrhosis),
scored on their test splits; the six tasks of the README's table are not read. Each seed fixes the
split and every initialization.

1. **The teacher**, from the zero-shot LLM's answers on the training rows (no back-tuning, so
   seconds per fit): every tabular vertical model, trained plainly ("naive") on the answers rounded
   to 0/1 (as `hard_labels` does: the probabilities where one class would be left) or on the
   probabilities, and the logistic regression trained on the confident answers only
   ("confident"); its AUC, how closely it copies the LLM (Spearman on validation rows), and
   how often labkit.noisy's agreement check refused it (the loop would stop there). The text
   teacher (naive against confident) is scored on the abstracts' validation split: no development
   text task ships, and the abstracts' test split is reported.
2. **The loop's ablations** (labkit.serval.ABLATIONS, each one ingredient of the defaults switched):
   the LLM after the loop, the vertical model kept and the supervised bound. The full runs are the
   ones benchmarks/serval_guard.py makes (runs/seeds/, resumed); the ablated ones land in
   runs/dev/<ablation>/ (resumed). `one_iteration` is read from the full run's first round, which
   is the same computation; `hard_labels` is the full run wherever rounding would leave one class
   (labkit.serval.can_round on the zero-shot answers), and is read from it there.

Printed, and written to docs/serval_protocol.md between its `serval_dev` markers (unless --no-doc),
with the rows in docs/results/serval_dev.csv.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from tqdm.auto import tqdm

from labkit import metrics, serval
from labkit.annotate import LocalAnnotator
from labkit.data import Dataset, load, to_text
from labkit.docblocks import write_block
from labkit.loader import load_model, load_tokenizer
from labkit.noisy import RankingDisagreement
from labkit.vertical import TABULAR_MODELS

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "serval_protocol.md"
RESULTS = ROOT / "docs" / "results" / "serval_dev.csv"
DEVELOPMENT = serval.DEVELOPMENT_TASKS
# No development text task ships: the text teacher is chosen on the abstracts' validation split.
TEXT_VALIDATION = ("abstracts",)
FULL_RUNS = Path("runs/seeds")  # shared with benchmarks/serval_seeds.py and serval_guard.py
ABLATED_RUNS = Path("runs/dev")
LOOP_ABLATIONS = tuple(a for a in serval.ABLATIONS if a not in ("full", "one_iteration"))


# --- 1. the teacher, from the zero-shot answers ------------------------------------------------


def zero_shot_answers(ds: Dataset, seed: int, model: Any, tokenizer: Any) -> dict[str, np.ndarray]:
    """The pocket LLM's answers (token P(Yes)) on the training and validation rows, read from the
    full run's annotation cache where it has them."""
    cache = FULL_RUNS / f"seed{seed}" / ds.schema.name / "answers.sqlite"
    annotator = LocalAnnotator(model, tokenizer, cache=cache, progress=False)
    out = {}
    for split in ("train", "val"):
        texts = [to_text(r, ds.schema) for r in ds.features(split).to_dict(orient="records")]
        out[split] = annotator.annotate(texts, ds.schema.task)["value"].to_numpy(dtype=float)
    return out


def teacher_rows(task: str, seed: int, model: Any, tokenizer: Any) -> list[dict[str, Any]]:
    """Each teacher variant trained on the zero-shot answers; scored on the test split of a
    development table, on the validation split of the reported text task (its test split is not read)."""
    ds = load(task, seed=seed)
    text = ds.schema.kind == "text"
    answers = zero_shot_answers(ds, seed, model, tokenizer)
    X, X_val = ds.features("train"), ds.features("val")
    scored = "val" if text else "test"
    X_scored, gold = ds.features(scored), ds.labels(scored)
    if text:  # one vertical model; the answers stay soft (labkit.serval.can_round)
        variants = [("text_minilm", method, False) for method in ("naive", "confident")]
    else:
        variants = [(name, "naive", rounded) for name in TABULAR_MODELS for rounded in (True, False)]
        variants += [("logistic", "confident", True), ("logistic", "confident", False)]
    rows = []
    for name, method, rounded in variants:
        rounds = rounded and serval.can_round(ds, answers["train"])  # soft where one class would be left
        targets, val_targets = (np.round(answers["train"]), np.round(answers["val"])) if rounds \
            else (answers["train"], answers["val"])
        row = {"task": task, "seed": seed, "teacher": name, "method": method, "scored on": scored,
               "targets": "rounded (hard_labels)" if rounded else "probabilities"}
        config = serval.ServalConfig(vertical=name, noisy_method=method,  # type: ignore[arg-type]
                                     seed=seed, progress=False)
        try:
            vertical, row["refused"] = serval.fit_vertical(ds, X, targets, (X_val, val_targets), config), 0
        except RankingDisagreement as error:  # the loop would stop here; still scored, and counted
            vertical, row["refused"] = error.model, 1
        known = ~np.isnan(answers["val"])
        row["AUC"] = metrics.auc(gold, vertical.predict_proba(X_scored))
        row["copies LLM"] = spearmanr(vertical.predict_proba(X_val)[known], answers["val"][known]).statistic
        rows.append(row)
    return rows


def teacher_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per teacher: AUC per task (mean over seeds), its mean over the tasks ± sd over the seeds."""
    key = ["teacher", "method", "targets"]
    per_task = rows.groupby([*key, "task"], sort=False)["AUC"].mean().unstack("task")
    per_seed = rows.groupby([*key, "seed"], sort=False)[["AUC", "copies LLM"]].mean()
    spread = per_seed.groupby(level=key, sort=False).agg(lambda v: serval._spread(v, 3))
    refused = rows.groupby(key, sort=False)["refused"].sum().rename("refused (runs)")
    return per_task.round(3).join(spread.rename(columns={"AUC": "mean AUC",
                                                         "copies LLM": "Spearman with LLM"})).join(refused)


# --- 2. the loop's ablations -------------------------------------------------------------------


def _result(folder: Path) -> dict[str, Any] | None:
    path = folder / "result.json"  # written last: the run is complete
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _line(seed: int, ablation: str, saved: dict[str, Any]) -> dict[str, Any]:
    return {"ablation": ablation, "seed": seed, **saved["row"]}


def full_run(task: str, seed: int) -> dict[str, Any]:
    """The run with the defaults (made if missing; its annotation cache serves part 1)."""
    saved = _result(FULL_RUNS / f"seed{seed}" / task)
    if saved is None:
        config = serval.ServalConfig(seed=seed, progress=False)
        saved = serval.run(task, None, config, FULL_RUNS / f"seed{seed}", log=print).to_json()
    return saved


def loop_rows(task: str, seed: int, ablations: list[str], roundable: bool) -> list[dict[str, Any]]:
    """One line per ablation of this task and seed (the results table's columns); roundable:
    whether the zero-shot answers can be rounded (labkit.serval.can_round)."""
    config = serval.ServalConfig(seed=seed, progress=False)
    full = full_run(task, seed)
    lines = [_line(seed, "full", full)]
    first = full["iterations"][0]
    if "one_iteration" in ablations:  # the full run's first round is that run
        after_one = full["iterations"][1]["llm_auc"] if len(full["iterations"]) > 1 else full["llm_final_auc"]
        lines.append({**lines[0], "ablation": "one_iteration", "LLM after SERVAL": round(after_one, 3),
                      "vertical (SERVAL)": round(first["vertical_auc"], 3),
                      "% of supervised AUC": round(100 * first["vertical_auc"] / full["supervised_auc"], 1)})
    for ablation in [a for a in ablations if a in LOOP_ABLATIONS]:
        if ablation == "hard_labels" and not roundable:  # nothing to round: the full run
            lines.append({**lines[0], "ablation": ablation})
            continue
        out = ABLATED_RUNS / ablation / f"seed{seed}"
        saved = _result(out / task) or serval.run(task, None, config.ablation(ablation), out,
                                                  log=print).to_json()
        lines.append(_line(seed, ablation, saved))
    return lines


def ablation_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per ablation: the LLM's change against zero-shot per table (mean over seeds) and the
    acceptance figures (labkit.serval.acceptance within each seed, mean ± sd over the seeds)."""
    out = []
    for ablation, part in rows.groupby("ablation", sort=False):
        change = (part["LLM after SERVAL"] - part["LLM zero-shot"]).groupby(part["task"], sort=False).mean()
        per_seed = pd.DataFrame([serval.acceptance(g.drop(columns=["seed", "ablation"]).set_index("task"))
                                 for _, g in part.groupby("seed")])
        out.append({"ablation": ablation, **{t: f"{v:+.3f}" for t, v in change.items()},
                    "mean LLM change": serval._spread(per_seed["gain"], 3),
                    "tables improved": serval._spread(per_seed["improved"], 1),
                    "vertical % of supervised": serval._spread(per_seed["percent"], 1)})
    return pd.DataFrame(out).set_index("ablation")


def markdown(teachers: pd.DataFrame, loops: pd.DataFrame, seeds: list[int]) -> str:
    tables, text = teachers[teachers["scored on"] == "test"], teachers[teachers["scored on"] == "val"]
    parts = [
        f"Measured {time.strftime('%d %b %Y')} by `python benchmarks/serval_dev.py` (2 cores; development "
        f"tables {', '.join(DEVELOPMENT)}; seeds {seeds}; the AUC on these tables' test splits, none of "
        "them reported).",
        "**1. The teacher**, trained on the zero-shot LLM's answers (AUC per table, mean over the "
        "seeds; then the mean over the tables ± its sd over the seeds, the teacher's Spearman "
        "correlation with the LLM on the validation rows, 1 for a copy, and how many fits the "
        "agreement check refused):",
        teacher_table(tables).to_markdown(disable_numparse=True),
    ]
    if len(text):
        parts += ["The text teacher (MiniLM embeddings and a small MLP), on the abstracts' "
                  "**validation** split (its test split is reported, so it is not read):",
                  teacher_table(text).to_markdown(disable_numparse=True)]
    parts += ["**2. The loop's ablations** (LLM after the loop minus zero-shot per table, mean over the "
              "seeds; the acceptance figures within each seed, mean ± sd over the seeds):",
              ablation_table(loops).to_markdown(disable_numparse=True)]
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--tasks", nargs="+", default=list(DEVELOPMENT), choices=DEVELOPMENT)
    parser.add_argument("--ablations", nargs="+", default=list(serval.ABLATIONS), choices=serval.ABLATIONS)
    parser.add_argument("--no-text", dest="text", action="store_false",
                        help="leave out the text teacher (abstracts, validation split)")
    parser.add_argument("--no-doc", action="store_true", help="print only; write neither file")
    args = parser.parse_args(argv)
    pairs = [(t, s) for s in args.seeds for t in args.tasks]
    for task, seed in tqdm(pairs, desc="full runs"):
        full_run(task, seed)  # first: part 1 reads its annotation cache, and a run claims an empty folder
    model, tokenizer = load_model(None), load_tokenizer(None)
    text_pairs = [(t, s) for s in args.seeds for t in TEXT_VALIDATION] if args.text else []
    teachers = pd.DataFrame([r for t, s in tqdm(pairs + text_pairs, desc="teachers")
                             for r in teacher_rows(t, s, model, tokenizer)])
    roundable = {}
    for task, seed in pairs:
        ds = load(task, seed=seed)
        roundable[task, seed] = serval.can_round(ds, zero_shot_answers(ds, seed, model, tokenizer)["train"])
    loops = pd.DataFrame([r for t, s in tqdm(pairs, desc="ablations")
                          for r in loop_rows(t, s, args.ablations, roundable[t, s])])
    report = markdown(teachers, loops, args.seeds)
    print(report)
    if not args.no_doc:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        pd.concat([teachers.assign(part="teacher"), loops.assign(part="loop")]).to_csv(RESULTS, index=False)
        write_block(DOC, "serval_dev", report)
        print(f"\nwrote {RESULTS.relative_to(ROOT)} and the block of {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
