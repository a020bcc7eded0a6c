"""Zero-shot quality and speed of the pocket LLM on every shipped task (test split by default).

    .venv/bin/python benchmarks/pocket_zero_shot.py                     # all tasks, test split
    .venv/bin/python benchmarks/pocket_zero_shot.py --tasks pima hcv --split val
    .venv/bin/python benchmarks/pocket_zero_shot.py --lora               # + LoRA fine-tune timing

Per task: AUC and accuracy (threshold 0.5) from the token probability P(Yes) / (P(Yes) + P(No))
on the Yes/No prompt, and from the verbalized probability (greedy) on SERVAL's probability prompt;
the share of verbalized answers that do not parse (they count as 0.5 in AUC and accuracy); and the
AUC of a supervised logistic regression trained on the train split's gold labels, for reference
(the zero-shot model never sees a label). Records are serialized with labkit.data.to_text
(style "list"), exactly as the lessons' annotators send them.

--lora times a LoRA fine-tune (r 16, all linear layers, 2 epochs) on 500 prompts of the Pima
train split answered by the logistic regression (a stand-in for SERVAL's vertical model).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from labkit.annotate import LocalAnnotator
from labkit.data import DATASETS, SERVAL_TASKS, TEXT_TASKS, Dataset, load, to_text
from labkit.loader import load_model, load_tokenizer

ACCEPTANCE_AUC = 0.65


def supervised_reference(ds: Dataset, split: str) -> Any:
    """A logistic regression on the train split's gold labels; returns the fitted pipeline."""
    train = ds.features("train")
    if ds.schema.kind == "text":
        model = make_pipeline(TfidfVectorizer(min_df=2, sublinear_tf=True),
                              LogisticRegression(max_iter=2000, C=4.0))
        return model.fit(train.iloc[:, 0], ds.labels("train"))
    numeric = [f.name for f in ds.schema.features if f.kind == "numeric"]
    coded = [f.name for f in ds.schema.features if f.kind != "numeric"]
    columns = ColumnTransformer([
        ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
        ("coded", make_pipeline(SimpleImputer(strategy="most_frequent"),
                                OneHotEncoder(handle_unknown="ignore")), coded),
    ])
    model = make_pipeline(columns, LogisticRegression(max_iter=2000))
    return model.fit(train.astype({c: object for c in coded}), ds.labels("train"))


def reference_scores(model: Any, ds: Dataset, split: str) -> np.ndarray:
    frame = ds.features(split)
    if ds.schema.kind == "text":
        return model.predict_proba(frame.iloc[:, 0])[:, 1]
    coded = [f.name for f in ds.schema.features if f.kind != "numeric"]
    return model.predict_proba(frame.astype({c: object for c in coded}))[:, 1]


def score_task(name: str, split: str, model: Any, tokenizer: Any, batch: int) -> dict[str, Any]:
    """One row of the table."""
    ds = load(name)
    records = ds.features(split).to_dict(orient="records")
    texts = [to_text(r, ds.schema, style="list") for r in records]
    labels = ds.labels(split)
    row: dict[str, Any] = {"task": name, "n": len(texts), "positive": float(labels.mean())}
    for mode in ("token", "verbalized"):
        annotator = LocalAnnotator(model, tokenizer, mode=mode, batch_size=batch, progress=False)
        start = time.time()
        frame = annotator.annotate(texts, ds.schema.task)
        row[f"{mode}_seconds"] = time.time() - start
        values = frame["value"].to_numpy(dtype=float)
        missing = np.isnan(values)
        filled = np.where(missing, 0.5, values)
        row[f"{mode}_auc"] = float(roc_auc_score(labels, filled))
        row[f"{mode}_acc"] = float(accuracy_score(labels, filled >= 0.5))
        row[f"{mode}_missing"] = float(missing.mean())
        row[f"{mode}_mean"] = float(np.nanmean(values)) if not missing.all() else float("nan")
    reference = supervised_reference(ds, split)
    row["logreg_auc"] = float(roc_auc_score(labels, reference_scores(reference, ds, split)))
    return row


def lora_timing(model_path: str | None, seconds_budget: float = 120.0) -> dict[str, Any]:
    """Time a LoRA fine-tune on 500 Pima prompts (2 epochs) with the kit's SFT trainer."""
    from labkit.prompts import probability_answer, probability_prompt
    from labkit.train import SFTConfig, train_sft

    ds = load("pima")
    reference = supervised_reference(ds, "train")
    frame = ds.features("train")
    p = reference_scores(reference, ds, "train")
    records = frame.to_dict(orient="records")
    pairs = []
    for i in range(500):
        k = i % len(records)
        text = to_text(records[k], ds.schema, style="list" if i < len(records) else "prose")
        pairs.append((probability_prompt(text, ds.schema.task), probability_answer(p[k])))
    model, tokenizer = load_model(model_path), load_tokenizer(model_path)
    config = SFTConfig(finetuning_type="lora", lora_rank=16, lora_alpha=32, learning_rate=1e-3,
                       num_train_epochs=2, per_device_train_batch_size=8, cutoff_len=256, progress=False)
    result = train_sft(model, tokenizer, pairs, config)
    return {"examples": len(pairs), "epochs": 2, "steps": result.steps,
            "seconds": round(result.seconds, 1), "budget_seconds": seconds_budget,
            "trainable": str(result.trainable)}


def markdown(rows: list[dict[str, Any]], split: str) -> str:
    lines = [
        f"| task ({split} split) | n | P(Yes) AUC | P(Yes) acc | verbalized AUC | verbalized acc "
        "| parse failures | logistic regression AUC | gap (best zero-shot - LR) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        best = max(r["token_auc"], r["verbalized_auc"])
        star = "" if best >= ACCEPTANCE_AUC or r["task"] not in ACCEPTED else " (!)"
        lines.append(
            f"| {r['task']}{' *' if r['task'] in ACCEPTED else ''} | {r['n']} "
            f"| {r['token_auc']:.3f} | {r['token_acc']:.3f} | {r['verbalized_auc']:.3f} "
            f"| {r['verbalized_acc']:.3f} | {100 * r['verbalized_missing']:.1f}% "
            f"| {r['logreg_auc']:.3f} | {best - r['logreg_auc']:+.3f}{star} |"
        )
    return "\n".join(lines)


ACCEPTED = (*SERVAL_TASKS, *TEXT_TASKS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="model folder (default: the pocket LLM)")
    parser.add_argument("--tasks", nargs="*", default=list(DATASETS))
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--lora", action="store_true", help="also time a LoRA fine-tune")
    parser.add_argument("--json", type=Path, default=None, help="write the rows to this file")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    model, tokenizer = load_model(args.model), load_tokenizer(args.model)
    rows = []
    for name in args.tasks:
        row = score_task(name, args.split, model, tokenizer, args.batch)
        rows.append(row)
        print(f"{name:15s} P(Yes) AUC {row['token_auc']:.3f} ({row['token_seconds']:.1f} s) | "
              f"verbalized AUC {row['verbalized_auc']:.3f}, parse failures "
              f"{100 * row['verbalized_missing']:.1f}% | logistic regression {row['logreg_auc']:.3f}",
              flush=True)
    print()
    print(markdown(rows, args.split))
    scored = sum(r["n"] for r in rows)
    seconds = sum(r["token_seconds"] for r in rows)
    print(f"\nP(Yes) scoring: {scored} records in {seconds:.1f} s "
          f"({1000 * seconds / scored:.1f} s per 1,000 records); load average "
          f"{os.getloadavg()[0]:.1f}")
    result: dict[str, Any] = {"split": args.split, "rows": rows}
    if args.lora:
        result["lora"] = lora_timing(args.model)
        print(f"LoRA fine-tune: {result['lora']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    failing = [r["task"] for r in rows if r["task"] in ACCEPTED
               and max(r["token_auc"], r["verbalized_auc"]) < ACCEPTANCE_AUC]
    if failing:
        print(f"below the acceptance AUC {ACCEPTANCE_AUC}: {failing}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
