"""The pocket LLM before and after SFT and DPO (lesson 09's recipe) on labkit.evaluation's suite, over seeds.

    .venv/bin/python benchmarks/evaluation_suite.py            # seeds 0 1 2; writes docs/evaluation.md
    .venv/bin/python benchmarks/evaluation_suite.py --seeds 0 --pairs 32 --dpo-steps 4 --fast --no-doc

For each seed, lesson 09's full-mode recipe (solutions/09_preference_alignment.ipynb, the DPO run of
benchmarks/alignment_faithfulness.py):

1. SFT: the pocket LLM fine-tuned with LoRA (lr 1e-3, 1 epoch, batch 8, merged) on the faithful
   explanations of --pairs synthetic Pima patients (labkit.pocket.explanations.preference_pairs, seed).
2. DPO from the SFT model on its own mistakes: its greedy explanations of 3 x --pairs other synthetic
   patients (seed + 500) that cite a rule the record lacks, each against the faithful explanation
   (at most --pairs pairs); lr 3e-4, beta 0.1, SFT term pref_ftx 1.0, --dpo-steps steps of 8 pairs
   (merged).

Every model is measured with one labkit.evaluation.Suite (suite seed --suite-seed, the same for every
training seed, so the differences are paired): multiple choice on rule questions, BLEU / ROUGE and
faithfulness of generated explanations (synthetic patients of a seed stream no recipe trains on),
calibration of probability answers on Pima's validation split (the test split is never read). The
base model is one model, measured once. The table is printed and, unless --no-doc, written between
the markers of docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import statistics
import time
from pathlib import Path
from typing import Any

DOC = Path(__file__).resolve().parent.parent / "docs" / "evaluation.md"
BEGIN, END = "<!-- BEGIN evaluation_suite benchmark -->", "<!-- END evaluation_suite benchmark -->"
TASK = "pima"
COUNTS = ("answered", "parse_failures")


def train(seed: int, pairs: int, dpo_steps: int) -> dict[str, Any]:
    """The SFT and DPO models of one seed (both merged), with their training seconds and pair count."""
    from labkit.loader import load_model, load_tokenizer
    from labkit.pocket.explanations import own_mistakes, preference_pairs, synthetic_records
    from labkit.train import SFTConfig, train_sft
    from labkit.train.preference import PreferenceConfig, train_preference

    tokenizer = load_tokenizer(None)
    demonstrations = preference_pairs(TASK, pairs, seed)
    start = time.perf_counter()
    sft = train_sft(load_model(None), tokenizer, [(p.prompt, p.chosen) for p in demonstrations],
                    SFTConfig(finetuning_type="lora", learning_rate=1e-3, num_train_epochs=1.0,
                              per_device_train_batch_size=8, cutoff_len=1024, seed=seed, progress=False)
                    ).model.merge_and_unload()  # type: ignore[operator]  # a PEFT model
    sft_seconds = time.perf_counter() - start
    mistakes = own_mistakes(sft, tokenizer, synthetic_records(TASK, 3 * pairs, seed + 500), pairs)
    start = time.perf_counter()
    dpo = train_preference(copy.deepcopy(sft), tokenizer, mistakes, PreferenceConfig(
        stage="dpo", learning_rate=3e-4, pref_beta=0.1, pref_ftx=1.0, max_steps=dpo_steps,
        per_device_train_batch_size=8, cutoff_len=1024, seed=seed, logging_steps=1, progress=False))
    merged = dpo.model.merge_and_unload()  # type: ignore[operator]  # a PEFT model
    return {"sft": sft, "dpo": merged, "sft_seconds": sft_seconds,
            "dpo_seconds": time.perf_counter() - start, "dpo_pairs": len(mistakes)}


def _cell(values: list[float], metric: str, signed: bool = False) -> str:
    digits = 1 if metric == "bleu" or metric in COUNTS else 3
    sign = "+" if signed else ""
    mean = statistics.mean(values)
    if len(values) == 1:
        return f"{mean:{sign}.{digits}f}"
    return f"{mean:{sign}.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def table(base: Any, runs: list[dict[str, Any]]) -> str:
    """Markdown: base, SFT and DPO (mean ± std over seeds) and the paired DPO - SFT difference."""
    lines = ["| benchmark | metric | n | base | sft | dpo | dpo − sft |", "|---|---|---|---|---|---|---|"]
    for i, row in base.iterrows():
        sft = [r["sft_table"]["value"].iloc[i] for r in runs]
        dpo = [r["dpo_table"]["value"].iloc[i] for r in runs]
        cells = [_cell([row["value"]], row["metric"]), _cell(sft, row["metric"]), _cell(dpo, row["metric"]),
                 _cell([d - s for d, s in zip(dpo, sft, strict=True)], row["metric"], signed=True)]
        lines.append(f"| {row['benchmark']} | {row['metric']} | {row['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_seed(runs: list[dict[str, Any]]) -> str:
    """Markdown: every seed's SFT and DPO values."""
    first = runs[0]["sft_table"]
    seeds = [r["seed"] for r in runs]
    head = " | ".join([f"sft {s}" for s in seeds] + [f"dpo {s}" for s in seeds])
    lines = [f"| benchmark | metric | {head} |", "|---|---|" + "---|" * (2 * len(seeds))]
    for i, row in first.iterrows():
        values = [r[f"{stage}_table"]["value"].iloc[i] for stage in ("sft", "dpo") for r in runs]
        lines.append(f"| {row['benchmark']} | {row['metric']} | "
                     + " | ".join(_cell([v], row["metric"]) for v in values) + " |")
    return "\n".join(lines)


def write_doc(text: str, path: Path = DOC) -> None:
    """Replace the text between the doc's markers (appended with them when they are missing)."""
    doc = path.read_text(encoding="utf-8") if path.exists() else ""
    block = f"{BEGIN}\n{text}\n{END}"
    if BEGIN in doc and END in doc:
        doc = doc[:doc.index(BEGIN)] + block + doc[doc.index(END) + len(END):]
    else:
        doc = doc.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(doc, encoding="utf-8")


def report(args: argparse.Namespace, suite: Any, base: Any, runs: list[dict[str, Any]],
           seconds: float) -> str:
    import torch

    records = base[base.benchmark == "calibration_token"]["n"].iloc[0]
    sizes = (f"{suite.n_questions} questions, {suite.n_explanations} explanations (up to "
             f"{suite.max_new_tokens} new tokens), {records} validation records")
    trained = "; ".join(f"seed {r['seed']}: SFT {r['sft_seconds']:.0f} s, DPO {r['dpo_seconds']:.0f} s on "
                        f"{r['dpo_pairs']} pairs, evaluation {r['eval_seconds']:.0f} s" for r in runs)
    return "\n\n".join([
        f"Measured {datetime.date.today()} by `benchmarks/evaluation_suite.py "
        f"--seeds {' '.join(map(str, args.seeds))} --pairs {args.pairs} --dpo-steps {args.dpo_steps}"
        f"{' --fast' if args.fast else ''}` on {TASK}: training seeds {args.seeds}, suite seed "
        f"{args.suite_seed} ({sizes}), {torch.get_num_threads()} CPU thread(s), "
        f"{seconds / 60:.1f} minutes in all.",
        "Mean ± std over the training seeds; base is one model, measured once; dpo − sft is the paired "
        "difference per seed. BLEU is on sacrebleu's 0-100 scale, ROUGE and the rest on 0-1; answered and "
        "parse_failures are counts of records.",
        table(base, runs), "Every seed:", per_seed(runs), f"Cost: {trained}."])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    parser.add_argument("--pairs", type=int, default=256, help="SFT demonstrations; DPO pairs at most")
    parser.add_argument("--dpo-steps", type=int, default=32, help="DPO optimizer steps of 8 pairs")
    parser.add_argument("--suite-seed", type=int, default=0, help="draws the suite's records, once for all")
    parser.add_argument("--fast", action="store_true", help="Suite(fast=True): a smoke run's sizes")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: the machine is shared)")
    parser.add_argument("--no-doc", action="store_true", help="print only; leave docs/evaluation.md alone")
    parser.add_argument("--json", help="also write every value here")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from labkit.evaluation import Suite, evaluate
    from labkit.loader import load_model, load_tokenizer

    start = time.perf_counter()
    suite = Suite(task=TASK, seed=args.suite_seed, fast=args.fast, progress=False)
    tokenizer = load_tokenizer(None)
    base = evaluate(load_model(None), tokenizer, suite)
    runs = []
    for seed in args.seeds:
        models = train(seed, args.pairs, args.dpo_steps)
        began = time.perf_counter()
        run = {"seed": seed, "sft_table": evaluate(models["sft"], tokenizer, suite),
               "dpo_table": evaluate(models["dpo"], tokenizer, suite),
               **{k: v for k, v in models.items() if k not in ("sft", "dpo")}}
        runs.append(run | {"eval_seconds": time.perf_counter() - began})
        print(json.dumps({k: v for k, v in run.items() if not k.endswith("table")}), flush=True)
    text = report(args, suite, base, runs, time.perf_counter() - start)
    print("\n" + text)
    if not args.no_doc:
        write_doc(text)
    if args.json:
        values = {"base": base["value"].tolist(), "rows": base[["benchmark", "metric"]].values.tolist(),
                  "runs": [{k: (v["value"].tolist() if k.endswith("table") else v) for k, v in r.items()}
                           for r in runs]}
        Path(args.json).write_text(json.dumps(values, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
