"""LoRA SFT speed on this machine: the kit's trainer vs TRL's SFTTrainer and the transformers Trainer.

    .venv/bin/python benchmarks/sft_speed.py               # every variant, 3 alternated repeats, medians
    .venv/bin/python benchmarks/sft_speed.py --repeats 1 --variants kit trl
    .venv/bin/python benchmarks/sft_speed.py --omp-wait-policy passive   # on a machine others share

Setup (../shared/design/PEER_BENCH.md): random-init Llama of 7.36M parameters (hidden 256, 4 layers,
vocab 8192, ChatML), 512 synthetic alpaca-like examples, fp32, LoRA r8/alpha16 on all linear layers
but the head, lr 1e-4, batch 8, 64 steps, seed 42, cutoff 256, loss on the response only, no
gradient checkpointing, SDPA, 2 threads. One epoch: 64 steps of 8 examples, or with packing the
steps of 8 rows of 256 tokens that the same 512 examples fill. All trainers get the same token ids and answer masks
(the kit's encoding) and the same LoRA initialization. Each run is a fresh process, so that peak
RSS is its own; runs of the variants alternate, so that a busy spell on the machine hits all alike.

"s" is the wall time of the training call: `train_sft(...)` for the kit (which also tokenizes and
attaches the adapter), `trainer.train()` for TRL and the Trainer. tokens/s = non-padding tokens
trained on / s; tokens per CPU-s divides by the process's CPU time instead, a figure that other jobs on the
machine disturb less (with 2 threads on 2 quiet cores it is about half of tokens/s).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {
    "kit": "labkit.train.train_sft",
    "kit-nogroup": "labkit.train.train_sft, group_by_length=False",
    "kit-fullfwd": "labkit.train.train_sft, fast_loss=False",
    "kit-packed": "labkit.train.train_sft, packing=True (one epoch: fewer, fuller rows)",
    "trl": "TRL 1.16 SFTTrainer (fp32, use_cpu, no checkpointing)",
    "hf-trainer": "transformers 5.24 Trainer (group_by_length, model's own loss)",
}
SPECIALS = ["<pad>", "<|im_start|>", "<|im_end|>", "<unk>", "user", "assistant", "system"]
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
VOCAB, EXAMPLES, STEPS, BATCH, SEED, CUTOFF, THREADS = 8192, 512, 64, 8, 42, 256, 2


def pseudo_words(n: int, rng: random.Random) -> list[str]:
    """n distinct lowercase words built from syllables (a word-level vocabulary, no download)."""
    syllables = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"]
    words: set[str] = set()
    while len(words) < n:
        words.add("".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))))
    return sorted(words)


def alpaca_like(words: list[str], rng: random.Random) -> list[tuple[str, str]]:
    """(prompt, answer) pairs with alpaca's shape: instruction, an input for 40%, a long-tailed answer."""
    weights = [1 / (rank + 1) for rank in range(len(words))]  # Zipf: a few words are common

    def text(n: int) -> str:
        return " ".join(rng.choices(words, weights, k=n))

    pairs = []
    for _ in range(EXAMPLES):
        prompt = text(rng.randint(5, 25))
        if rng.random() < 0.4:
            prompt += "\n\n" + text(rng.randint(5, 60))
        pairs.append((prompt, text(max(1, int(rng.lognormvariate(4.3, 0.7))))))
    return pairs


def setup() -> tuple[object, object, list[tuple[str, str]]]:
    """The model, the tokenizer and the examples, identical in every process."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    rng = random.Random(SEED)
    words = pseudo_words(VOCAB - len(SPECIALS), rng)
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(SPECIALS + words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", unk_token="<unk>",
                                        eos_token="<|im_end|>", additional_special_tokens=SPECIALS[1:3])
    tokenizer.chat_template = CHATML
    torch.manual_seed(SEED)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                         num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=512,
                         tie_word_embeddings=False, attn_implementation="sdpa")
    return LlamaForCausalLM(config), tokenizer, alpaca_like(words, rng)


def run_kit(model, tokenizer, pairs, **changes) -> dict[str, float]:  # noqa: ANN001
    from labkit.train import SFTConfig, train_sft

    base = dict(finetuning_type="lora", lora_rank=8, lora_alpha=16, learning_rate=1e-4,
                per_device_train_batch_size=BATCH, max_steps=STEPS, cutoff_len=CUTOFF, seed=SEED,
                progress=False)
    config = SFTConfig(**{**base, **changes})
    t0, cpu0 = time.perf_counter(), time.process_time()
    result = train_sft(model, tokenizer, pairs, config)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"s": seconds, "cpu_s": cpu, "tokens": result.tokens, "loss": result.final_loss,
            "rss": result.peak_memory_mib, "steps": result.steps}


def timed_train(trainer, tokens: int) -> dict[str, float]:  # noqa: ANN001
    """trainer.train() (TRL or the transformers Trainer) with its wall and CPU time, last loss, peak RSS."""
    from labkit.train.sft import peak_rss_mib

    t0, cpu0 = time.perf_counter(), time.process_time()
    trainer.train()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"s": seconds, "cpu_s": cpu, "tokens": tokens, "loss": losses[-1], "rss": peak_rss_mib()}


def run_trl(model, tokenizer, pairs) -> dict[str, float]:  # noqa: ANN001
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from labkit import hardware
    from labkit.adapters import attach_adapter
    from labkit.train.data import encode

    data = encode(tokenizer, pairs, CUTOFF)
    rows = {"input_ids": [list(e.ids) for e in data.examples],
            "completion_mask": [[0] * e.prompt_len + [1] * (len(e.ids) - e.prompt_len)
                                for e in data.examples]}
    model, _ = attach_adapter(model, "lora", r=8, alpha=16, seed=SEED)  # the kit's LoRA init, same seed
    with tempfile.TemporaryDirectory() as out:
        args = SFTConfig(output_dir=out, per_device_train_batch_size=BATCH, max_steps=STEPS,
                         learning_rate=1e-4, seed=SEED, max_length=CUTOFF, packing=False,
                         completion_only_loss=True, gradient_checkpointing=False, logging_steps=1,
                         save_strategy="no", report_to="none", disable_tqdm=True, dataloader_num_workers=0,
                         **hardware.trainer_precision("cpu"))
        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_dict(rows),
                             processing_class=tokenizer)
        # one epoch of 512 examples in 64 batches of 8: every example once
        return timed_train(trainer, data.tokens)


def run_hf_trainer(model, tokenizer, pairs) -> dict[str, float]:  # noqa: ANN001
    """The plain transformers Trainer: length-grouped sampler, dynamic padding, the model's own loss."""
    from datasets import Dataset
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from labkit import hardware
    from labkit.adapters import attach_adapter
    from labkit.train.data import IGNORE, encode

    data = encode(tokenizer, pairs, CUTOFF)
    rows = {"input_ids": [list(e.ids) for e in data.examples],
            "attention_mask": [[1] * len(e.ids) for e in data.examples],
            "labels": [[IGNORE] * e.prompt_len + list(e.ids[e.prompt_len:]) for e in data.examples],
            "length": [len(e.ids) for e in data.examples]}
    model, _ = attach_adapter(model, "lora", r=8, alpha=16, seed=SEED)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, per_device_train_batch_size=BATCH, max_steps=STEPS,
                                 learning_rate=1e-4, seed=SEED, train_sampling_strategy="group_by_length",
                                 logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True,
                                 dataloader_num_workers=0, **hardware.trainer_precision("cpu"))
        collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE)
        trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_dict(rows),
                          data_collator=collator)
        return timed_train(trainer, data.tokens)


def child(variant: str) -> None:
    """One measured run in this process; prints one JSON line."""
    import torch

    torch.set_num_threads(THREADS)
    model, tokenizer, pairs = setup()
    if variant == "trl":
        row = run_trl(model, tokenizer, pairs)
    elif variant == "hf-trainer":
        row = run_hf_trainer(model, tokenizer, pairs)
    else:
        changes = {"kit": {}, "kit-nogroup": {"group_by_length": False}, "kit-fullfwd": {"fast_loss": False},
                   "kit-packed": {"packing": True, "max_steps": None, "num_train_epochs": 1.0}}
        row = run_kit(model, tokenizer, pairs, **changes[variant])
    print("RESULT " + json.dumps({"variant": variant, **row}), flush=True)


def measure(variant: str, wait_policy: str | None) -> dict[str, float]:
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    if wait_policy:
        env["OMP_WAIT_POLICY"] = wait_policy.upper()
    proc = subprocess.run([sys.executable, __file__, "--child", variant], capture_output=True, text=True,
                          env=env, cwd=ROOT, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{variant} run failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--child", choices=list(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="also write every run here")
    parser.add_argument("--omp-wait-policy", choices=["active", "passive"],
                        help="OpenMP threads' wait policy; passive keeps a busy shared machine from "
                             "burning its cores in spin-waits (default: OpenMP's own)")
    args = parser.parse_args(argv)
    if args.child:
        child(args.child)
        return
    runs: dict[str, list[dict[str, float]]] = {v: [] for v in args.variants}
    for repeat in range(args.repeats):
        for variant in args.variants:
            row = measure(variant, args.omp_wait_policy)
            row["load"] = load_average()
            runs[variant].append(row)
            print(f"repeat {repeat + 1}: {variant:12s} {row['s']:6.1f} s"
                  f"  {row['tokens'] / row['s']:7,.0f} tokens/s"
                  f"  {row['tokens'] / row['cpu_s']:7,.0f} tokens/CPU-s  load average {row['load']}",
                  file=sys.stderr, flush=True)
    print(table(runs))
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))


def table(runs: dict[str, list[dict[str, float]]]) -> str:
    """Medians per variant, as a markdown table."""
    lines = ["| trainer | steps | s | tokens/s | tokens per CPU-s | peak RSS MiB | loss at last step |",
             "|---|---|---|---|---|---|---|"]
    for variant, rows in runs.items():
        seconds = statistics.median(r["s"] for r in rows)
        speed = statistics.median(r["tokens"] / r["s"] for r in rows)
        rss = statistics.median(r["rss"] for r in rows)
        per_cpu = statistics.median(r["tokens"] / r["cpu_s"] for r in rows)
        loss = statistics.median(r["loss"] for r in rows)
        steps = rows[0].get("steps", STEPS)
        lines.append(f"| {VARIANTS[variant]} | {steps:.0f} | {seconds:.1f} | {speed:,.0f} | {per_cpu:,.0f} | {rss:,.0f} "
                     f"| {loss:.4f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
