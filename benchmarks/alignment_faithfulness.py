"""Does preference training make the pocket LLM's explanations more faithful? SFT against DPO or GRPO, seeds.

    .venv/bin/python benchmarks/alignment_faithfulness.py          # 3 seeds, the table for docs/alignment.md
    .venv/bin/python benchmarks/alignment_faithfulness.py --seeds 0 --pairs 32 --held-out 16   # a smoke run
    .venv/bin/python benchmarks/alignment_faithfulness.py --first 80 --held-out 74 ...  # development slice

The task (labkit.pocket.explanations): asked which findings of a record point to the condition,
an answer should cite only rules that hold for that record. For each seed:

1. SFT: the pocket LLM is fine-tuned (LoRA, merged) on faithful explanations of --pairs synthetic
   patients: the SFT model, which is also the reference of the aligned stage.
2. --stage dpo: the SFT model explains other synthetic patients (greedy); each explanation that cites
   a rule the record lacks becomes a rejected answer, its faithful explanation the chosen one (the
   model's own mistakes, as RLHF collects them); --offpolicy uses the built-in unfaithful answers.
   DPO from the SFT model on those pairs (labkit.train.preference, TRL), --pref-ftx adds an SFT term.
   --stage grpo: GRPO from the SFT model on the prompts of --pairs other synthetic patients, with a
   verifiable reward: the answer's faithfulness precision (+ --recall-weight times its recall)
   against the synthetic record its prompt was written from.

Measured on validation records --first .. --first + --held-out - 1 of the task's split drawn with
--split-seed (the same records for every training seed, so the per-seed differences are paired;
real records, features only: faithfulness is checked against the knowledge rules, no label is read;
the test split is never used): precision (the share of cited rules that hold) and recall of greedy
explanations, and the preference accuracy on held-out pairs built the same way from those records
(the share where the model gives the faithful answer the higher log-likelihood). Records 0-79 are
the reported slice, records 80-153 the development slice that settings are chosen on.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import time
from typing import Any

TASK = "pima"


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
    from labkit.pocket.explanations import explain, mean_faithfulness

    scores = mean_faithfulness(explain(model, tokenizer, held.prompts), held)
    return {**scores, "preference accuracy": preference_accuracy(model, tokenizer, held_pairs)}


def faithfulness_reward(prompts: list[str], records: list[dict[str, Any]], recall_weight: float) -> Any:
    """TRL's reward function for GRPO: precision (+ recall_weight * recall) of each completion against
    the record its prompt was written from. TRL passes conversational prompts and completions
    (lists of messages); the user's last message is the prompt text."""
    from labkit.pocket.explanations import faithfulness
    from labkit.pocket.knowledge import load_knowledge

    knowledge = load_knowledge(TASK)
    by_prompt = dict(zip(prompts, records, strict=True))

    def reward(prompts: list[Any], completions: list[Any], **_: Any) -> list[float]:
        out = []
        for prompt, completion in zip(prompts, completions, strict=True):
            text = prompt[-1]["content"] if isinstance(prompt, list) else prompt
            answer = completion[-1]["content"] if isinstance(completion, list) else completion
            precision, recall = faithfulness(answer, by_prompt[text], knowledge)
            out.append(precision + recall_weight * recall)
        return out

    return reward


def held_out_slice(first: int, n: int, split_seed: int) -> Any:
    from labkit.pocket.explanations import HeldOut, held_out

    held = held_out(TASK, "val", seed=split_seed)
    if first + n > len(held.prompts):
        raise SystemExit(f"the validation split has {len(held.prompts)} records: --first {first} "
                         f"--held-out {n} reaches past it")
    return HeldOut(held.prompts[first:first + n], held.records[first:first + n], held.knowledge)


def run(seed: int, args: argparse.Namespace, held: Any, held_pairs: list[Any]) -> dict[str, Any]:
    from labkit.loader import load_model, load_tokenizer
    from labkit.pocket.explanations import own_mistakes, preference_pairs, synthetic_records
    from labkit.train import SFTConfig, train_sft
    from labkit.train.preference import PreferenceConfig, train_preference
    from labkit.worker import Sample

    tokenizer = load_tokenizer(None)
    rows: dict[str, Any] = {"seed": seed}
    demonstrations = preference_pairs(TASK, args.pairs, seed)
    start = time.perf_counter()
    sft = train_sft(load_model(None), tokenizer, [(p.prompt, p.chosen) for p in demonstrations],
                    SFTConfig(learning_rate=1e-3, num_train_epochs=1.0, per_device_train_batch_size=8,
                              seed=seed, cutoff_len=1024, progress=False)).model.merge_and_unload()
    rows["sft_seconds"] = time.perf_counter() - start
    rows["sft"] = measure(sft, tokenizer, held, held_pairs)
    config = dict(stage=args.stage, learning_rate=args.lr, pref_beta=args.beta, num_train_epochs=args.epochs,
                  per_device_train_batch_size=8, seed=seed, cutoff_len=1024, progress=False)
    if args.stage == "grpo":
        patients = synthetic_records(TASK, args.pairs, seed + 500)  # never the ones SFT trained on
        prompts, records = patients.prompts, patients.records
        rows["prompts"] = len(prompts)
        aligned = train_preference(sft, tokenizer, [Sample(p) for p in prompts], PreferenceConfig(
            **config, num_generations=args.generations, temperature=args.temperature,
            max_new_tokens=args.max_new_tokens),
            reward=faithfulness_reward(prompts, records, args.recall_weight))
    else:
        pairs = preference_pairs(TASK, args.pairs, seed + 1) if args.offpolicy else own_mistakes(
            sft, tokenizer, synthetic_records(TASK, 3 * args.pairs, seed + 500), args.pairs)
        rows["pairs"] = len(pairs)
        aligned = train_preference(sft, tokenizer, pairs, PreferenceConfig(**config, pref_ftx=args.pref_ftx))
    rows["aligned_seconds"] = aligned.seconds
    rows["history"] = aligned.history
    rows["aligned"] = measure(aligned.model, tokenizer, held, held_pairs)
    rows["seconds"] = time.perf_counter() - start
    return rows


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def table(base: dict[str, float], results: list[dict[str, Any]], stage: str) -> str:
    metrics = ("precision", "recall", "preference accuracy")
    lines = ["| model | seed | " + " | ".join(metrics) + " |", "|---|---|---|---|---|",
             "| base | (one model) | " + " | ".join(f"{base[m]:.3f}" for m in metrics) + " |"]
    for name, label in (("sft", "sft"), ("aligned", stage)):
        for r in results:
            cells = [f"{r[name][m]:.3f}" for m in metrics]
            lines.append(f"| {label} | {r['seed']} | " + " | ".join(cells) + " |")
        spread = [_mean_std([r[name][m] for r in results]) for m in metrics]
        lines.append(f"| {label} | mean ± std | "
                     + " | ".join(f"{m:.3f} ± {s:.3f}" for m, s in spread) + " |")
    for r in results:
        lines.append(f"| {stage} − sft | {r['seed']} | "
                     + " | ".join(f"{r['aligned'][m] - r['sft'][m]:+.3f}" for m in metrics) + " |")
    gains = [_mean_std([r["aligned"][m] - r["sft"][m] for r in results]) for m in metrics]
    lines.append(f"| {stage} − sft | mean ± std | "
                 + " | ".join(f"{m:+.3f} ± {s:.3f}" for m, s in gains) + " |")
    gain, gain_spread = gains[0]
    sft_spread = _mean_std([r["sft"]["precision"] for r in results])[1]
    met = len(results) > 1 and gain > max(gain_spread, sft_spread)
    verdict = "a gain larger than the spread" if met else "no gain beyond the spread"
    lines.append(f"\nPrecision gain {gain:+.3f}, seed-to-seed std of the gain {gain_spread:.3f}, of SFT "
                 f"{sft_spread:.3f}: {verdict}.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--pairs", type=int, default=256,
                        help="SFT demonstrations; DPO pairs at most; GRPO prompts")
    parser.add_argument("--first", type=int, default=0, help="first validation record measured on")
    parser.add_argument("--held-out", type=int, default=80, help="validation records measured on")
    parser.add_argument("--split-seed", type=int, default=0, help="draws the split, once for every seed")
    parser.add_argument("--stage", choices=("dpo", "grpo"), default="dpo")
    parser.add_argument("--offpolicy", action="store_true", help="DPO on the built-in unfaithful answers")
    parser.add_argument("--lr", type=float, default=1e-4, help="learning rate of the aligned stage")
    parser.add_argument("--beta", type=float, default=0.1, help="DPO's beta; GRPO's KL weight")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--pref-ftx", type=float, default=0.0, help="DPO: weight of the SFT term")
    parser.add_argument("--generations", type=int, default=4, help="GRPO: answers per prompt")
    parser.add_argument("--temperature", type=float, default=1.0, help="GRPO: sampling temperature")
    parser.add_argument("--max-new-tokens", type=int, default=100, help="GRPO: longest sampled answer")
    parser.add_argument("--recall-weight", type=float, default=0.0,
                        help="GRPO: reward = precision + w recall")
    parser.add_argument("--json", help="also write every run here")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)  # the machine is shared; the figures do not depend on it
    from labkit.loader import load_model, load_tokenizer
    from labkit.pocket.explanations import held_out_pairs

    held = held_out_slice(args.first, args.held_out, args.split_seed)
    held_pairs = held_out_pairs(held, args.split_seed + 1000)
    base = measure(load_model(None), load_tokenizer(None), held, held_pairs)
    results = []
    for seed in args.seeds:
        results.append(run(seed, args, held, held_pairs))
        print(json.dumps(results[-1]), flush=True)
    settings = (f"GRPO lr {args.lr}, KL beta {args.beta}, {args.generations} generations, temperature "
                f"{args.temperature}, {args.max_new_tokens} new tokens, "
                f"reward precision + {args.recall_weight} recall"
                if args.stage == "grpo" else
                f"{'off' if args.offpolicy else 'on'}-policy DPO, lr {args.lr}, beta {args.beta}, "
                f"pref_ftx {args.pref_ftx}")
    last = args.first + args.held_out - 1
    print(f"\nFaithfulness of explanations, {TASK} validation records {args.first}-{last} "
          f"(split seed {args.split_seed}), measured {datetime.date.today()} by "
          f"benchmarks/alignment_faithfulness.py (seeds {args.seeds}, --pairs {args.pairs}, {settings}, "
          f"{args.epochs} epoch)\n")
    print(table(base, results, args.stage))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "base": base, "runs": results}, f, indent=1)


if __name__ == "__main__":
    main()
