"""Does preference training make the pocket LLM's explanations more faithful? SFT against DPO, seeds.

    .venv/bin/python benchmarks/alignment_faithfulness.py                 # 3 seeds, the table for docs/alignment.md
    .venv/bin/python benchmarks/alignment_faithfulness.py --seeds 0 --pairs 32 --held-out 16   # a smoke run

The task (labkit.pocket.explanations): asked which findings of a record point to the condition,
an answer should cite only rules that hold for that record. For each seed:

1. SFT: the pocket LLM is fine-tuned (LoRA, merged) on faithful explanations of --pairs synthetic
   patients: the SFT model, which is also DPO's reference.
2. Pairs: the SFT model explains other synthetic patients (greedy); each explanation that cites a
   rule the record lacks becomes a rejected answer, its faithful explanation the chosen one (the
   model's own mistakes, as RLHF collects them); --offpolicy uses the built-in unfaithful answers.
3. DPO from the SFT model on those pairs (labkit.train.preference, TRL).

Measured on the first --held-out records of the task's *validation* split (real records, features
only: faithfulness is checked against the knowledge rules, no label is read; the test split is not
used): precision (the share of cited rules that hold) and recall of greedy explanations, and the
preference accuracy on held-out pairs built the same way from those records (the share where the
model gives the faithful answer the higher log-likelihood).
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import time
from typing import Any

TASK = "pima"


def generate(model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int = 100) -> list[str]:
    import torch

    from labkit.chat import generation_config, prompt_batch

    out = []
    model.eval()
    for start in range(0, len(prompts), 32):
        conversations = [[{"role": "user", "content": p}] for p in prompts[start:start + 32]]
        ids, mask, _ = prompt_batch(tokenizer, conversations, next(model.parameters()).device)
        with torch.no_grad():
            sequences = model.generate(input_ids=ids, attention_mask=mask,
                                       generation_config=generation_config(model, tokenizer, max_new_tokens, 0))
        out += tokenizer.batch_decode(sequences[:, ids.shape[1]:], skip_special_tokens=True)
    return out


def preference_accuracy(model: Any, tokenizer: Any, pairs: list[Any]) -> float:
    """The share of pairs whose chosen answer the model finds likelier than the rejected one."""
    import torch

    from labkit.chat import pad_token_id
    from labkit.train.data import collate, encode
    from labkit.train.preference import sequence_logps

    wins = 0
    model.eval()
    for pair in pairs:
        data = encode(tokenizer, [(pair.prompt, pair.chosen), (pair.prompt, pair.rejected)], cutoff=1024)
        batch = collate(data.examples, pad_token_id(tokenizer), next(model.parameters()).device)
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        chosen, rejected = sequence_logps(logits, batch["labels"]).tolist()
        wins += chosen > rejected
    return wins / len(pairs)


def measure(model: Any, tokenizer: Any, held: Any, held_pairs: list[Any]) -> dict[str, float]:
    from labkit.pocket.explanations import faithfulness

    scores = [faithfulness(a, r, held.knowledge) for a, r in zip(generate(model, tokenizer, held.prompts),
                                                                   held.records, strict=True)]
    return {"precision": statistics.mean(s[0] for s in scores), "recall": statistics.mean(s[1] for s in scores),
            "preference accuracy": preference_accuracy(model, tokenizer, held_pairs)}


def held_out_pairs(held: Any, seed: int) -> list[Any]:
    import numpy as np

    from labkit.pocket.corpus import explanation
    from labkit.pocket.explanations import MOST, unfaithful_explanation
    from labkit.worker import Sample

    rng = np.random.default_rng(seed + 1000)
    return [Sample(prompt, chosen=explanation(record, held.knowledge, MOST),
                   rejected=unfaithful_explanation(record, held.knowledge, rng))
            for prompt, record in zip(held.prompts, held.records, strict=True)]


def on_policy_pairs(model: Any, tokenizer: Any, n: int, seed: int) -> list[Any]:
    """The model's own unfaithful explanations of synthetic patients, each against the faithful one."""
    import numpy as np

    from labkit.data import SCHEMAS, to_text
    from labkit.pocket.corpus import explanation
    from labkit.pocket.explanations import MOST, faithfulness
    from labkit.pocket.knowledge import load_knowledge
    from labkit.pocket.patients import sample_patients
    from labkit.prompts import explain_prompt
    from labkit.worker import Sample

    knowledge, schema = load_knowledge(TASK), SCHEMAS[TASK]
    records = sample_patients(knowledge, schema, 3 * n, np.random.default_rng(seed + 500))
    prompts = [explain_prompt(to_text(r, schema), knowledge.condition) for r in records]
    pairs = []
    for prompt, record, answer in zip(prompts, records, generate(model, tokenizer, prompts), strict=True):
        if faithfulness(answer, record, knowledge)[0] < 1 and len(pairs) < n:
            pairs.append(Sample(prompt, chosen=explanation(record, knowledge, MOST), rejected=answer.strip()))
    return pairs


def run(seed: int, n_pairs: int, n_held: int, offpolicy: bool, dpo_lr: float, beta: float, epochs: float
        ) -> dict[str, Any]:
    from labkit.loader import load_model, load_tokenizer
    from labkit.pocket.explanations import held_out, preference_pairs
    from labkit.train import SFTConfig, train_sft
    from labkit.train.preference import PreferenceConfig, train_preference

    tokenizer = load_tokenizer(None)
    held = held_out(TASK, "val", n=n_held, seed=seed)
    held_pairs = held_out_pairs(held, seed)
    rows: dict[str, Any] = {"seed": seed, "base": measure(load_model(None), tokenizer, held, held_pairs)}
    demonstrations = preference_pairs(TASK, n_pairs, seed)
    start = time.perf_counter()
    sft = train_sft(load_model(None), tokenizer, [(p.prompt, p.chosen) for p in demonstrations],
                    SFTConfig(learning_rate=1e-3, num_train_epochs=1.0, per_device_train_batch_size=8, seed=seed,
                              cutoff_len=1024, progress=False)).model.merge_and_unload()
    rows["sft_seconds"] = time.perf_counter() - start
    rows["sft"] = measure(sft, tokenizer, held, held_pairs)
    pairs = preference_pairs(TASK, n_pairs, seed + 1) if offpolicy else on_policy_pairs(sft, tokenizer, n_pairs, seed)
    rows["dpo_pairs"] = len(pairs)
    dpo = train_preference(sft, tokenizer, pairs, PreferenceConfig(
        stage="dpo", learning_rate=dpo_lr, pref_beta=beta, num_train_epochs=epochs, per_device_train_batch_size=8,
        seed=seed, cutoff_len=1024, progress=False))
    rows["dpo_seconds"] = dpo.seconds
    rows["dpo"] = measure(dpo.model, tokenizer, held, held_pairs)
    return rows


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| model | precision | recall | preference accuracy |", "|---|---|---|---|"]
    for name in ("base", "sft", "dpo"):
        cells = []
        for metric in ("precision", "recall", "preference accuracy"):
            values = [r[name][metric] for r in results]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.3f} ± {spread:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    gains = [r["dpo"]["precision"] - r["sft"]["precision"] for r in results]
    lines.append(f"\nDPO - SFT precision per seed: {', '.join(f'{g:+.3f}' for g in gains)}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--pairs", type=int, default=256, help="SFT demonstrations, and DPO pairs at most")
    parser.add_argument("--held-out", type=int, default=80, help="validation records measured on")
    parser.add_argument("--offpolicy", action="store_true", help="DPO on the built-in unfaithful answers")
    parser.add_argument("--dpo-lr", type=float, default=5e-4)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--json", help="also write every run here")
    args = parser.parse_args()
    results = []
    for seed in args.seeds:
        results.append(run(seed, args.pairs, args.held_out, args.offpolicy, args.dpo_lr, args.beta, args.epochs))
        print(json.dumps(results[-1]), flush=True)
    print(f"\nFaithfulness of explanations, {TASK} validation records 0-{args.held_out - 1}, measured "
          f"{datetime.date.today()} by benchmarks/alignment_faithfulness.py (seeds {args.seeds}, --pairs {args.pairs}, "
          f"{'off' if args.offpolicy else 'on'}-policy pairs, DPO lr {args.dpo_lr}, beta {args.beta}, "
          f"{args.epochs} epoch); mean ± standard deviation over seeds\n")
    print(table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
