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
3. **The back-tuning budget** (BUDGETS: the learning rate a third, three and ten times the
   default's, half the epochs, half the LoRA rank), run like the ablations, in runs/dev/<variant>/. The cap
   on back-tuning examples is not varied: no development table reaches it (at most 341 training
   rows, two examples each, against 800).

Printed, and written to docs/serval_protocol.md between its `serval_dev` markers (unless --no-doc),
with the rows in docs/results/serval_dev.csv; with --keep-results the saved rows this call does
not re-measure are kept (a part added without remaking the others).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
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
# The back-tuning budget's variants: ServalConfig fields against the defaults (lora_alpha follows
# the rank, so the update's scale alpha / rank stays 2).
BUDGETS: dict[str, dict[str, Any]] = {
    "learning_rate=3e-4": {"learning_rate": 3e-4},
    "learning_rate=3e-3": {"learning_rate": 3e-3},
    "learning_rate=1e-2": {"learning_rate": 1e-2},
    "num_train_epochs=2": {"num_train_epochs": 2},
    "lora_rank=8": {"lora_rank": 8, "lora_alpha": 16},
}


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


def _variant(task: str, seed: int, name: str, config: serval.ServalConfig) -> dict[str, Any]:
    out = ABLATED_RUNS / name / f"seed{seed}"
    return _line(seed, name, _result(out / task) or serval.run(task, None, config, out, log=print).to_json())


def loop_rows(task: str, seed: int, ablations: list[str], roundable: bool,
              budgets: list[str]) -> list[dict[str, Any]]:
    """One line per ablation and budget variant of this task and seed (the results table's
    columns); roundable: whether the zero-shot answers can be rounded (labkit.serval.can_round)."""
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
        lines.append(_variant(task, seed, ablation, config.ablation(ablation)))
    return lines + [_variant(task, seed, name, replace(config, **BUDGETS[name])) for name in budgets]


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
    budget = loops["ablation"].isin(list(BUDGETS))
    parts += ["**2. The loop's ablations** (LLM after the loop minus zero-shot per table, mean over the "
              "seeds; the acceptance figures within each seed, mean ± sd over the seeds):",
              ablation_table(loops[~budget]).to_markdown(disable_numparse=True)]
    if budget.any():
        c = serval.ServalConfig()
        budget_rows = loops[budget | (loops["ablation"] == "full")]
        parts += [f"**3. The back-tuning budget** (the full run's: learning rate {c.learning_rate:g}, up to "
                  f"{c.num_train_epochs} epochs, LoRA rank {c.lora_rank} with alpha {c.lora_alpha}; each "
                  "variant changes one of them; same columns):",
                  ablation_table(budget_rows).to_markdown(disable_numparse=True)]
    return "\n\n".join(parts)


KEY = ["part", "task", "seed", "teacher", "method", "targets", "ablation"]  # one measurement


def merged(saved: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """The saved rows with the re-measured ones replaced, so that a call can add a part without
    remaking the others; prints how many re-measured rows reproduce the saved ones exactly."""
    def keys(rows: pd.DataFrame) -> pd.Series:
        frame = rows.reindex(columns=KEY).astype(object)
        frame["seed"] = rows["seed"].astype(int)  # a CSV may read it back as a float
        return frame.fillna("-").astype(str).agg("|".join, axis=1)

    saved = saved[~keys(saved).duplicated(keep="last")]
    old_keys, new_keys = keys(saved), keys(new)
    both = new_keys.isin(old_keys)
    if both.any():
        numbers = [c for c in new.columns if c not in KEY and pd.api.types.is_numeric_dtype(new[c])]
        before = saved.set_index(old_keys)[numbers].loc[new_keys[both]].to_numpy(dtype=float)
        after = new.loc[both, numbers].to_numpy(dtype=float)
        same = np.isclose(before, after, rtol=0, atol=1e-9, equal_nan=True).all(axis=1)
        print(f"re-measured {both.sum()} saved rows: {same.sum()} reproduce them exactly"
              + ("" if same.all() else f"; differ: {list(new_keys[both][~same])}"))
    return pd.concat([saved[~old_keys.isin(new_keys)], new], ignore_index=True).astype({"seed": int})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--tasks", nargs="+", default=list(DEVELOPMENT), choices=DEVELOPMENT)
    parser.add_argument("--ablations", nargs="+", default=list(serval.ABLATIONS), choices=serval.ABLATIONS)
    parser.add_argument("--budgets", nargs="*", default=list(BUDGETS), choices=list(BUDGETS),
                        help="the back-tuning budget's variants (none: leave part 3 out)")
    parser.add_argument("--no-teachers", dest="teachers", action="store_false",
                        help="leave out part 1 (with --keep-results its saved rows stay)")
    parser.add_argument("--no-text", dest="text", action="store_false",
                        help="leave out the text teacher (abstracts, validation split)")
    parser.add_argument("--keep-results", action="store_true",
                        help="keep the rows of docs/results/serval_dev.csv that this call does not "
                             "re-measure (and report whether the re-measured ones reproduce them)")
    parser.add_argument("--no-doc", action="store_true", help="print only; write neither file")
    args = parser.parse_args(argv)
    if not args.teachers and not args.keep_results:
        parser.error("--no-teachers needs --keep-results: part 1 of the report comes from the saved rows")
    pairs = [(t, s) for s in args.seeds for t in args.tasks]
    for task, seed in tqdm(pairs, desc="full runs"):
        full_run(task, seed)  # first: part 1 reads its annotation cache, and a run claims an empty folder
    model, tokenizer = load_model(None), load_tokenizer(None)
    text_pairs = [(t, s) for s in args.seeds for t in TEXT_VALIDATION] if args.text else []
    teacher_pairs = pairs + text_pairs if args.teachers else []
    teachers = pd.DataFrame([r for t, s in tqdm(teacher_pairs, desc="teachers")
                             for r in teacher_rows(t, s, model, tokenizer)])
    roundable = {}
    for task, seed in pairs:
        ds = load(task, seed=seed)
        roundable[task, seed] = serval.can_round(ds, zero_shot_answers(ds, seed, model, tokenizer)["train"])
    loops = pd.DataFrame([r for t, s in tqdm(pairs, desc="ablations")
                          for r in loop_rows(t, s, args.ablations, roundable[t, s], args.budgets)])
    rows = pd.concat([teachers.assign(part="teacher"), loops.assign(part="loop")], ignore_index=True)
    if args.keep_results and RESULTS.is_file():
        rows = merged(pd.read_csv(RESULTS), rows)
    report = markdown(rows[rows["part"] == "teacher"], rows[rows["part"] == "loop"], args.seeds)
    print(report)
    if not args.no_doc:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        rows.to_csv(RESULTS, index=False)
        write_block(DOC, "serval_dev", report)
        print(f"\nwrote {RESULTS.relative_to(ROOT)} and the block of {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
