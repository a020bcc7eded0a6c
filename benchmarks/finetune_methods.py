"""Fine-tuning methods on this machine, in the shape of LlamaFactory's Table 4: trainable parameters,
predicted and measured peak memory, tokens/s and held-out loss (Zheng et al. 2024, arXiv 2403.13372).

    .venv/bin/python benchmarks/finetune_methods.py                  # every method (docs/memory.md: how long)
    .venv/bin/python benchmarks/finetune_methods.py --fast           # a smoke run: a tiny model, 2 steps
    .venv/bin/python benchmarks/finetune_methods.py --methods full lora qlora-4bit --steps 8 --out t.md

Part 1, memory and speed: a random-init Llama of 54.8M parameters (BENCH_MODEL: hidden 640, 10
layers, vocabulary 4096), saved once under labkit's cache folder so that labkit.loader.load_model
loads it in 8 or 4 bits like any model. The data are fixed-length synthetic pairs of the pocket
LLM's single-token words (the answer repeats the prompt's last words), the same pairs, batches
and steps for every method; the held-out loss is the mean answer-token loss on pairs not trained
on. Each method runs in a process of its own, twice: a short run under the profiler for the peak
(labkit.memory.measure_peak: the allocator's peak of tensor memory, with the model's own bytes),
then a plain run of --steps for tokens/s and the loss (the profiler slows a run down). The
prediction is labkit.memory.predict on the trained model, with the batch's shape.

Part 2, a real task: the pocket LLM (labkit.loader.load_model()) back-tuned on Pima with examples
built as SERVAL builds them (labkit.backtune: a teacher's probabilities as "0.73" and Yes/No
answers; the teacher here is a logistic model fitted on the training split's labels, where SERVAL
fits it on the LLM's annotations), each method for the same steps; the held-out loss is on the
validation split's examples, never the test split.

bitsandbytes 0.50 on a CPU with AVX512-BF16 repacks a 4-bit layer for inference the first time it
runs in eval mode without gradients, and the repacked layer passes no gradient to its input; the
held-out loss before training is such a forward, so load() keeps the 4-bit layers in their
trainable format first (labkit.adapters.keep_quantized_layers_trainable, which train_sft also calls).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
THREADS, SEED = 2, 0
BENCH_MODEL = {"vocab_size": 4096, "hidden_size": 640, "intermediate_size": 1728, "num_hidden_layers": 10,
               "num_attention_heads": 10, "num_key_value_heads": 10, "tie_word_embeddings": False,
               "max_position_embeddings": 512}
FAST_MODEL = {**BENCH_MODEL, "hidden_size": 128, "intermediate_size": 384, "num_hidden_layers": 2,
              "num_attention_heads": 2, "num_key_value_heads": 2}
PROMPT_WORDS, ANSWER_WORDS, BATCH, TRAIN_PAIRS, HELDOUT_PAIRS = 48, 12, 4, 256, 32
MEMORY_STEPS = 3  # the first step creates AdamW's moments; the peak comes from the second on
POCKET_STEPS, POCKET_BATCH = 32, 8
FULL_LR, LORA_LR = 1e-4, 1e-3

# name -> (labkit.loader.load_model keyword arguments, SFTConfig keyword arguments); LlamaFactory's names.
METHODS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "full": ({}, {"finetuning_type": "full", "learning_rate": FULL_LR}),
    "freeze": ({}, {"finetuning_type": "freeze", "freeze_trainable_layers": 2, "learning_rate": FULL_LR}),
    "galore": ({}, {"finetuning_type": "full", "use_galore": True, "galore_rank": 16,
                    "learning_rate": FULL_LR}),
    "lora": ({}, {"finetuning_type": "lora", "lora_rank": 8, "learning_rate": LORA_LR}),
    "rslora": ({}, {"finetuning_type": "lora", "lora_rank": 8, "use_rslora": True, "learning_rate": LORA_LR}),
    "dora": ({}, {"finetuning_type": "lora", "lora_rank": 8, "use_dora": True, "learning_rate": LORA_LR}),
    "pissa": ({}, {"finetuning_type": "lora", "lora_rank": 8, "pissa_init": True, "learning_rate": LORA_LR}),
    "loraplus": ({}, {"finetuning_type": "lora", "lora_rank": 8, "loraplus_lr_ratio": 16.0,
                      "learning_rate": LORA_LR}),
    "qlora-8bit": ({"quantization": 8}, {"finetuning_type": "lora", "lora_rank": 8, "quantization_bit": 8,
                                         "learning_rate": LORA_LR}),
    "qlora-4bit": ({"quantization": 4}, {"finetuning_type": "lora", "lora_rank": 8, "quantization_bit": 4,
                                         "learning_rate": LORA_LR}),
}


# --- part 1: the benchmark model and its data ---------------------------------------------------

def bench_model_folder(fast: bool) -> Path:
    """The random-init benchmark model (seed 0), written once to labkit's cache folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from labkit.paths import CACHE_DIR

    shape = FAST_MODEL if fast else BENCH_MODEL
    folder = CACHE_DIR / "benchmarks" / f"llama-h{shape['hidden_size']}-l{shape['num_hidden_layers']}"
    if not (folder / "config.json").is_file():
        torch.manual_seed(SEED)
        model = LlamaForCausalLM(LlamaConfig(**shape))
        model.save_pretrained(folder)
    return folder


def single_token_words(tokenizer: Any, n: int = 512) -> list[str]:
    """n words that the tokenizer reads as one token each after a space, so that a text of k words
    is k tokens and every example has the same length."""
    words = []
    for token in sorted(tokenizer.get_vocab()):
        word = tokenizer.convert_tokens_to_string([token])
        one_token = len(tokenizer(word, add_special_tokens=False)["input_ids"]) == 1
        if word.startswith(" ") and word[1:].isalpha() and one_token:
            words.append(word[1:])
    return words[:n]


def synthetic_pairs(tokenizer: Any, n: int, seed: int, fast: bool) -> list[tuple[str, str]]:
    """(prompt, answer): PROMPT_WORDS random words; the answer repeats the last ANSWER_WORDS of them."""
    words, rng = single_token_words(tokenizer), random.Random(seed)
    prompt_words, answer_words = (12, 4) if fast else (PROMPT_WORDS, ANSWER_WORDS)
    pairs = []
    for _ in range(n):
        prompt = [rng.choice(words) for _ in range(prompt_words)]
        pairs.append((" " + " ".join(prompt), " " + " ".join(prompt[-answer_words:])))
    return pairs


def batch_shape(tokenizer: Any, pairs: list[tuple[str, str]], batch_size: int) -> tuple[int, int]:
    """(tokens per row, answer tokens per micro-batch) of the kit's encoding; every row alike."""
    import torch

    from labkit.chat import IGNORE
    from labkit.train.data import collate, encode

    data = encode(tokenizer, pairs, 1024)
    lengths = {len(e.ids) for e in data.examples}
    if len(lengths) != 1:
        raise RuntimeError(f"the synthetic pairs encode to lengths {sorted(lengths)}; the memory "
                           "prediction assumes one length (no padding)")
    labels = collate(data.examples[:batch_size], 0, torch.device("cpu"))["labels"]
    return labels.shape[1], int((labels[:, 1:] != IGNORE).sum())


def load(folder: Path | None, load_kwargs: dict[str, Any]) -> Any:
    """The model, its 4-bit layers kept trainable before the held-out loss runs it in eval mode."""
    from labkit.adapters import keep_quantized_layers_trainable
    from labkit.loader import load_model

    model = load_model(folder, **load_kwargs)
    keep_quantized_layers_trainable(model)
    return model


def heldout_loss(model: Any, tokenizer: Any, pairs: list[Any]) -> float:
    """Mean answer-token loss on pairs not trained on (the kit's answer-only loss, no gradients)."""
    import torch

    from labkit.chat import pad_token_id
    from labkit.train.data import collate, encode
    from labkit.train.sft import AnswerLoss

    data = encode(tokenizer, pairs, 1024)
    device = next(model.parameters()).device
    pad = pad_token_id(tokenizer)
    loss_fn = AnswerLoss(model, collate(data.examples[:2], pad, device))
    model.eval()
    total = tokens = 0.0
    with torch.no_grad():
        for start in range(0, len(data.examples), 16):
            batch = collate(data.examples[start:start + 16], pad, device)
            total += float(loss_fn(batch))
            tokens += float(batch["weights"][:, 1:].sum())
    return total / tokens


def sft_config(sft: dict[str, Any], steps: int, batch_size: int) -> Any:
    from labkit.train import SFTConfig

    return SFTConfig(**sft, max_steps=steps, per_device_train_batch_size=batch_size, cutoff_len=1024,
                     seed=SEED, logging_steps=1, progress=False)


def memory_run(folder: Path, name: str, tokenizer: Any, pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """MEMORY_STEPS steps under the profiler: the measured peak, and the ledger's prediction."""
    from labkit import memory
    from labkit.train import train_sft

    load_kwargs, sft = METHODS[name]
    model = load(folder, load_kwargs)
    config = sft_config(sft, MEMORY_STEPS, BATCH)
    result, peak = memory.measure_peak(lambda: train_sft(model, tokenizer, pairs, config), held=model)
    seq_len, answers = batch_shape(tokenizer, pairs, BATCH)
    ledger = memory.predict(result.model, batch_size=BATCH, seq_len=seq_len, answer_tokens=answers,
                            galore_rank=config.galore_rank if config.use_galore else None,
                            gradient_checkpointing=config.gradient_checkpointing)
    return {"parameters": ledger.parameters, "trainable": ledger.trainable, "seq_len": seq_len,
            "answer_tokens": answers, "predicted": ledger.peak, "measured": peak.peak_bytes,
            "peak_rss": peak.peak_rss_bytes, "moment": ledger.peak_moment, "weights": ledger.weights,
            "gradients": ledger.gradients, "optimizer": ledger.optimizer, "activations": ledger.activations,
            "bytes_per_parameter": ledger.bytes_per_parameter, "ledger": str(ledger)}


def speed_run(folder: Path | None, name: str, tokenizer: Any, data: tuple[list[Any], list[Any]],
              steps: int, batch_size: int) -> dict[str, Any]:
    """Plain steps: tokens/s, training loss (first and last 4 steps), held-out loss before and after."""
    from labkit.train import train_sft

    train, heldout = data
    load_kwargs, sft = METHODS[name]
    model = load(folder, load_kwargs)
    before = heldout_loss(model, tokenizer, heldout)
    cpu = time.process_time()
    result = train_sft(model, tokenizer, train, sft_config(sft, steps, batch_size))
    cpu = time.process_time() - cpu  # includes train_sft's setup (encoding, adapter, loss check)
    return {"tokens_per_second": result.tokens_per_second, "seconds": result.seconds,
            "tokens_per_cpu_second": result.tokens / cpu,
            # batches differ (Pima: probability and Yes/No answers): the mean of a few steps each
            "train_first": statistics.mean(h["loss"] for h in result.history[:4]),
            "train_last": statistics.mean(h["loss"] for h in result.history[-4:]),
            "heldout_before": before, "heldout_after": heldout_loss(result.model, tokenizer, heldout),
            "trainable": result.trainable.trainable}


# --- part 2: the pocket LLM on back-tuning data -------------------------------------------------

def pocket_data(fast: bool) -> tuple[list[Any], list[Any]]:
    """Back-tuning examples of Pima (answers "both": a probability and Yes/No per row) from a
    logistic teacher fitted on the training split; (train examples, validation examples)."""
    from labkit.backtune import backtune_examples
    from labkit.data import load as load_dataset
    from labkit.data import to_text
    from labkit.vertical import make_model

    dataset = load_dataset("pima")
    teacher = make_model("logistic", dataset.schema, quiet=True, seed=SEED)
    teacher.fit(dataset.features("train"), dataset.labels("train"))
    out = []
    for split in ("train", "val"):
        frame = dataset.features(split)
        texts = [to_text(r, dataset.schema) for r in frame.to_dict(orient="records")]
        examples, _ = backtune_examples(texts, teacher.predict_proba(frame), dataset.schema.task,
                                        answers="both", threshold=0.5, balance="none", min_per_class=1,
                                        max_examples=64 if fast else None, seed=SEED)
        out.append(examples)
    return out[0], out[1][:32] if fast else out[1]


# --- processes, tables --------------------------------------------------------------------------

def child(name: str, steps: int, fast: bool) -> None:
    """Both parts for one method in this process; prints one JSON line."""
    import torch

    from labkit.loader import load_tokenizer

    torch.set_num_threads(THREADS)
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # its fp16-cast notice, once per layer
    tokenizer = load_tokenizer()
    folder = bench_model_folder(fast)
    train = synthetic_pairs(tokenizer, 16 if fast else TRAIN_PAIRS, SEED, fast)
    heldout = synthetic_pairs(tokenizer, 8 if fast else HELDOUT_PAIRS, SEED + 1, fast)
    row: dict[str, Any] = {"method": name, **memory_run(folder, name, tokenizer, train)}
    print(f"{name}: memory run done at {time.process_time():.0f} CPU-s", file=sys.stderr, flush=True)
    row["speed"] = speed_run(folder, name, tokenizer, (train, heldout), steps, BATCH)
    print(f"{name}: speed run done at {time.process_time():.0f} CPU-s", file=sys.stderr, flush=True)
    row["pocket"] = speed_run(None, name, tokenizer, pocket_data(fast), 2 if fast else POCKET_STEPS,
                              POCKET_BATCH)
    print("RESULT " + json.dumps(row), flush=True)


def measure(name: str, steps: int, fast: bool) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, __file__, "--child", name, "--steps", str(steps)]
    command += ["--fast"] if fast else []
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{name} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def mib(n: float) -> str:
    return f"{n / 2**20:,.1f}"


def memory_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| method | trainable params | predicted peak MiB | measured peak MiB | predicted / measured "
             "| tokens/s | tokens per CPU-s | held-out loss (before -> after) "
             "| train loss (first -> last 4 steps) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r["speed"]
        lines.append(f"| {r['method']} | {r['trainable']:,} | {mib(r['predicted'])} | {mib(r['measured'])} "
                     f"| {r['predicted'] / r['measured']:.3f} | {s['tokens_per_second']:,.0f} "
                     f"| {s['tokens_per_cpu_second']:,.0f} "
                     f"| {s['heldout_before']:.3f} -> {s['heldout_after']:.3f} "
                     f"| {s['train_first']:.3f} -> {s['train_last']:.3f} |")
    return "\n".join(lines)


def ledger_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| method | weights MiB | gradients MiB | optimizer MiB | static B/param | activations MiB "
             "| worst moment | peak RSS MiB (process) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {mib(r['weights'])} | {mib(r['gradients'])} | {mib(r['optimizer'])} "
                     f"| {r['bytes_per_parameter']:.2f} | {mib(r['activations'])} | {r['moment']} "
                     f"| {mib(r['peak_rss'] or 0)} |")
    return "\n".join(lines)


def pocket_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| method | trainable params | tokens/s | tokens per CPU-s "
             "| held-out loss, Pima validation (before -> after) | train loss (first -> last 4 steps) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        p = r["pocket"]
        lines.append(f"| {r['method']} | {p['trainable']:,} | {p['tokens_per_second']:,.0f} "
                     f"| {p['tokens_per_cpu_second']:,.0f} "
                     f"| {p['heldout_before']:.3f} -> {p['heldout_after']:.3f} "
                     f"| {p['train_first']:.3f} -> {p['train_last']:.3f} |")
    return "\n".join(lines)


def report(rows: list[dict[str, Any]], args: argparse.Namespace, skipped: dict[str, str],
           loads: list[str]) -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT, check=False).stdout.strip()
    first = rows[0] if rows else {}
    head = [f"Run {datetime.date.today().isoformat()}, commit {commit} (working tree may differ), "
            f"{THREADS} threads, {'--fast, ' if args.fast else ''}{args.steps} steps of batch {BATCH} "
            f"x {first.get('seq_len')} tokens ({first.get('answer_tokens')} answer tokens per batch), "
            f"{first.get('parameters', 0):,} parameters; memory from {MEMORY_STEPS} profiled steps; "
            f"load average at each method's end: {', '.join(loads)}."]
    head += [f"Skipped {name}: {why}." for name, why in skipped.items()]
    return "\n\n".join([*head, memory_table(rows), ledger_table(rows),
                        f"Pocket LLM, Pima back-tuning, {2 if args.fast else POCKET_STEPS} steps of "
                        f"batch {POCKET_BATCH}:", pocket_table(rows)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--steps", type=int, default=10, help="steps of the speed and loss run")
    parser.add_argument("--fast", action="store_true", help="a tiny model and 2 steps: a smoke run")
    parser.add_argument("--out", type=Path, help="also write the tables (markdown) and rows (.json) here")
    parser.add_argument("--child", choices=list(METHODS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.fast and "--steps" not in (argv if argv is not None else sys.argv):
        args.steps = 2
    if args.child:
        child(args.child, args.steps, args.fast)
        return
    skipped: dict[str, str] = {}
    rows, loads = [], []
    for name in args.methods:
        start = time.perf_counter()
        try:
            rows.append(measure(name, args.steps, args.fast))
        except RuntimeError as error:  # one method failing leaves the others' rows
            skipped[name] = f"failed ({str(error).strip().splitlines()[-1]})"
            print(error, file=sys.stderr, flush=True)
            continue
        loads.append(f"{name} {os.getloadavg()[0]:.1f}")
        print(f"{name}: {time.perf_counter() - start:.0f} s, predicted/measured "
              f"{rows[-1]['predicted'] / rows[-1]['measured']:.3f}", file=sys.stderr, flush=True)
    text = report(rows, args, skipped, loads)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
        args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
