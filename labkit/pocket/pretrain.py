"""Pre-train the pocket LLM from scratch: `labkit pretrain` (or `pretrain(PretrainConfig())`).

    corpus (labkit.pocket.corpus)  ->  leak check  ->  tokenizer (BPE, trained here)
      ->  packed rows (labkit.pocket.batches)  ->  a small Llama, AdamW + cosine schedule
      ->  data/models/pocket-llm/ (config, safetensors, tokenizer + chat template, loss curve)

Everything is seeded: the same seed and the same number of CPU threads give the same weights.
Training writes a checkpoint every `checkpoint_every` steps (and on Ctrl-C) into `run_dir`;
`--resume` continues from it and ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from labkit.loader import POCKET_LLM
from labkit.pocket.batches import IGNORE, Rows, encode, pack
from labkit.pocket.corpus import CHECK_WEIGHT, CorpusConfig, Example, build_corpus, check_leaks
from labkit.pocket.model import PACKED, Shape, attention, build_model, generation_config, model_config
from labkit.pocket.tokenizer import END_OF_TEXT, IM_END, train_tokenizer

RUN_DIR = Path("runs/pocket-pretrain")
CHECKPOINT = "checkpoint.pt"


@dataclass
class PretrainConfig:
    """Everything that decides the pocket LLM. The defaults rebuild the shipped model."""

    seed: int = 0
    out: Path = POCKET_LLM
    run_dir: Path = RUN_DIR
    corpus_scale: float = 1.0  # multiply every example count (0.02 for a one-minute demo)
    vocab_size: int = 4096
    shape: Shape = field(default_factory=Shape)
    seq_len: int = 640
    batch_rows: int = 4
    # True: attention stays inside each example packed in a row (position ids restart per
    # example; model.packed_attention). Decisive: when an example can see the records packed
    # before it, the small model has to learn first which glucose value is "this" patient's, and
    # in our runs it barely learned anything in the same time. It costs no time: packed_attention
    # skips the blocks that a mask would only hide.
    isolate_examples: bool = True
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup_steps: int = 30
    decay_fraction: float = 0.3  # the learning rate stays at its peak, then decays over this share
    weight_decay: float = 0.1
    max_steps: int | None = None  # stop early (the schedule still spans the whole corpus)
    checkpoint_every: int = 50
    eval_every: int = 500
    eval_records: int = 48  # held-out synthetic records per task for the fidelity check
    # The shipped weights come from 2 threads: a different thread count sums in another order and
    # ends with (slightly) different weights; on a machine shared with another heavy job, 1 thread
    # is steadier (2 threads then wait on each other).
    threads: int = 2
    leak_check: bool = True
    resume: bool = False
    progress: bool = True

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["out"], data["run_dir"] = _portable(self.out), str(self.run_dir)
        return data


def _portable(path: Path) -> str:
    """A path inside the kit relative to its root (training.json should not name the machine)."""
    root = POCKET_LLM.parents[2]
    path = Path(path).resolve()
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


@dataclass
class Prepared:
    """What training consumes: the tokenizer, the packed rows, and counts for the report."""

    tokenizer: Any
    rows: Rows
    counts: dict[str, int]


def prepare(config: PretrainConfig) -> Prepared:
    """Generate the corpus, check it for leaks, train the tokenizer, tokenize and pack."""
    corpus = build_corpus(CorpusConfig(seed=config.seed).scaled(config.corpus_scale))
    counts = corpus_counts(corpus)
    if config.leak_check:
        report = check_leaks(corpus, sorted({e.task for e in corpus if e.kind == "record"}))
        if not report.clean:
            raise RuntimeError(f"the generated corpus contains shipped data: {report}")
        print(f"leak check: {report}")
        counts |= {f"chance_matches:{k}": v for k, v in report.chance_matches.items()}
    texts = [e.render() for e in corpus]
    tokenizer = train_tokenizer(texts, config.vocab_size)
    rows = pack(encode(corpus, tokenizer), config.seq_len, tokenizer.pad_token_id,
                np.random.default_rng(config.seed))
    return Prepared(tokenizer, rows, counts | {"dropped_too_long": rows.dropped,
                                               "rows": len(rows), "tokens": rows.tokens})


def corpus_counts(corpus: list[Example]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for e in corpus:
        key = f"{e.kind}:{e.task}" if e.task else e.kind
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def learning_rate(step: int, total: int, config: PretrainConfig) -> float:
    """Warm-up, a constant peak, then cosine decay to min_lr at the last step ("WSD").

    The small model learns to read a table's numbers in a sudden jump after a few thousand
    examples of it; a peak held for most of the run gives every table its jump before the decay.
    """
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    start = max(config.warmup_steps, round(total * (1 - config.decay_fraction)))
    if step < start:
        return config.lr
    progress = (step - start) / max(1, total - start)
    return config.min_lr + 0.5 * (config.lr - config.min_lr) * (1 + math.cos(math.pi * progress))


def weighted_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor],
                  isolate_examples: bool = False) -> tuple[torch.Tensor, float]:
    """Weighted next-token cross-entropy with soft Yes/No targets; also the answer-token loss.

    The output layer runs only at positions with a weight (padding has none). With
    `isolate_examples` the position ids restart per example: run it under
    `attention(model, PACKED)` so that attention stays inside each example.
    """
    positions = {"position_ids": batch["position_ids"]} if isolate_examples else {}
    hidden = model.model(input_ids=batch["input_ids"], use_cache=False, **positions)
    keep = batch["weights"] > 0
    logits = model.lm_head(hidden.last_hidden_state[keep])
    logp = torch.log_softmax(logits.float(), dim=-1)
    targets, alt = batch["targets"][keep], batch["alt"][keep]
    nll = -logp.gather(-1, targets.clamp(min=0)[:, None]).squeeze(-1)
    nll_alt = -logp.gather(-1, alt.clamp(min=0)[:, None]).squeeze(-1)
    share = batch["alt_share"][keep]
    per_token = (1 - share) * nll + share * torch.where(alt == IGNORE, 0.0, nll_alt)
    weights = batch["weights"][keep]
    loss = (per_token * weights).sum() / weights.sum().clamp(min=1e-6)
    answers = weights > CHECK_WEIGHT  # the main answers (answer_weight 5), not the checks
    answer_loss = per_token[answers].mean().item() if answers.any() else float("nan")
    return loss, answer_loss


def optimizer_for(model: torch.nn.Module, config: PretrainConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on norms (1-D weights), as usual for transformers."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.95), eps=1e-8)


def batch_at(rows: Rows, step: int, size: int) -> dict[str, torch.Tensor]:
    """Rows of one step; a second epoch (if any) reuses the rows in the same order."""
    index = np.arange(step * size, (step + 1) * size) % len(rows)
    return {name: torch.from_numpy(getattr(rows, name)[index])
            for name in ("input_ids", "position_ids", "targets", "alt", "alt_share", "weights")}


def total_steps(rows: Rows, config: PretrainConfig) -> int:
    return max(1, len(rows) // config.batch_rows)


@dataclass
class PretrainResult:
    model: torch.nn.Module
    tokenizer: Any
    history: list[dict[str, float]]
    evals: list[dict[str, Any]]
    counts: dict[str, int]
    seconds: float


def pretrain(config: PretrainConfig | None = None) -> PretrainResult:
    """Build the corpus and tokenizer, train, and save the model to config.out."""
    config = config or PretrainConfig()
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return _pretrain(config)
    finally:
        torch.set_num_threads(threads)  # leave the caller's (e.g. a notebook's) setting alone


def _pretrain(config: PretrainConfig) -> PretrainResult:
    start = time.time()
    prepared = prepare(config)
    tokenizer, rows = prepared.tokenizer, prepared.rows
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in (IM_END, END_OF_TEXT)}
    model = build_model(model_config(config.shape, len(tokenizer), ids[IM_END], ids[END_OF_TEXT]),
                        config.seed)
    model.config.use_cache = False  # training: packed sequences need no KV cache
    optimizer = optimizer_for(model, config)
    state = {"step": 0, "history": [], "evals": [], "seconds": 0.0}
    config.run_dir.mkdir(parents=True, exist_ok=True)
    if config.resume:
        state = load_checkpoint(config, model, optimizer, tokenizer) or state
    steps = total_steps(rows, config)
    last = min(steps, config.max_steps or steps)
    try:
        with attention(model, PACKED if config.isolate_examples else "sdpa"):
            train_steps(model, optimizer, rows, config, state, steps, last, tokenizer)
    except KeyboardInterrupt:
        save_checkpoint(config, model, optimizer, tokenizer, state)
        print(f"\ninterrupted at step {state['step']}: checkpoint in {config.run_dir}; "
              "run again with --resume to continue")
        raise
    save_checkpoint(config, model, optimizer, tokenizer, state)
    model.config.use_cache = True
    model.eval()
    seconds = time.time() - start
    result = PretrainResult(model, tokenizer, state["history"], state["evals"], prepared.counts,
                            seconds)
    save_model(result, config)
    return result


def train_steps(model: torch.nn.Module, optimizer: torch.optim.Optimizer, rows: Rows,
                config: PretrainConfig, state: dict[str, Any], steps: int, last: int,
                tokenizer: Any) -> None:
    """The training loop from state["step"] to `last`, logging into `state`."""
    model.train()
    bar = tqdm(total=last, initial=state["step"], desc="pre-training", unit="step",
               disable=not config.progress)
    tick = time.time()
    while state["step"] < last:
        step = state["step"]
        lr = learning_rate(step, steps, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = batch_at(rows, step, config.batch_rows)
        loss, answer_loss = weighted_loss(model, batch, config.isolate_examples)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        now = time.time()
        state["seconds"] += now - tick
        tick = now
        state["step"] = step + 1
        state["history"].append({"step": step + 1, "loss": round(loss.item(), 5),
                                 "answer_loss": round(answer_loss, 5), "lr": lr,
                                 "seconds": round(state["seconds"], 2)})
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", answer=f"{answer_loss:.3f}")
        if state["step"] % config.checkpoint_every == 0:
            save_checkpoint(config, model, optimizer, tokenizer, state)
        if config.eval_every and (state["step"] % config.eval_every == 0 or state["step"] == last):
            with attention(model, "sdpa"):  # inference: padded batches, no packing
                evaluation = fidelity(model, tokenizer, config)
            state["evals"].append({"step": state["step"], **evaluation})
            bar.write(f"step {state['step']}: " + format_fidelity(evaluation))
            model.train()
            tick = time.time()  # evaluation time is not training time
    bar.close()


def fidelity(model: torch.nn.Module, tokenizer: Any, config: PretrainConfig) -> dict[str, float]:
    """How closely the model's P(Yes) follows the textbook rule, on held-out synthetic records:
    the correlation per task (1.0 = a perfect copy of the rule)."""
    from labkit.annotate import LocalAnnotator
    from labkit.data import SCHEMAS, to_text
    from labkit.pocket.abstracts import AbstractWriter
    from labkit.pocket.knowledge import load_knowledge
    from labkit.pocket.patients import sample_patients

    rng = np.random.default_rng(config.seed + 1_000_003)  # never the training stream
    model.config.use_cache = True
    annotator = LocalAnnotator(model, tokenizer, mode="token", batch_size=16, progress=False)
    out = {}
    n = config.eval_records
    for task, schema in SCHEMAS.items():
        knowledge = load_knowledge(task)
        if schema.kind == "text":
            writer = AbstractWriter(knowledge, rng)
            abstracts = [writer.write() for _ in range(n)]
            texts, rule = [a.text for a in abstracts], [writer.risk(a) for a in abstracts]
        else:
            records = sample_patients(knowledge, schema, n, rng)
            texts = [to_text(r, schema) for r in records]
            rule = [knowledge.risk(r) for r in records]
        values = annotator.annotate(texts, schema.task)["value"].to_numpy()
        out[task] = float(np.corrcoef(values, rule)[0, 1]) if np.std(values) > 0 else 0.0
    model.config.use_cache = False
    return out


def format_fidelity(evaluation: dict[str, float]) -> str:
    return "fidelity r " + " ".join(f"{k} {v:.2f}" for k, v in evaluation.items())


def save_checkpoint(config: PretrainConfig, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, tokenizer: Any, state: dict[str, Any]) -> None:
    """Model, optimizer and log, written atomically (a crash never leaves half a file)."""
    path = config.run_dir / CHECKPOINT
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "state": state, "vocab": tokenizer.get_vocab(), "config": config.to_json()}, tmp)
    os.replace(tmp, path)


def load_checkpoint(config: PretrainConfig, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, tokenizer: Any) -> dict[str, Any] | None:
    """Restore a checkpoint written with the same settings; None when there is none."""
    path = config.run_dir / CHECKPOINT
    if not path.is_file():
        return None
    saved = torch.load(path, weights_only=False)
    mine = config.to_json()
    differ = [k for k in mine if k not in ("resume", "max_steps", "progress", "out", "threads")
              and saved["config"].get(k) != mine[k]]
    if differ or saved["vocab"] != tokenizer.get_vocab():
        raise ValueError(
            f"{path} was written with other settings ({differ or 'tokenizer'}); delete it or run "
            "without --resume to start over."
        )
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    print(f"resuming from step {saved['state']['step']} ({path})")
    return saved["state"]


def save_model(result: PretrainResult, config: PretrainConfig) -> None:
    """The Hugging Face folder: config, weights, tokenizer with chat template, generation config,
    the training log (training.json) and the loss curve (loss_curve.png)."""
    out = Path(config.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    tokenizer = result.tokenizer
    result.model.generation_config = generation_config(tokenizer.eos_token_id,
                                                       tokenizer.pad_token_id)
    result.model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    log = {"config": config.to_json(), "corpus": result.counts, "seconds": round(result.seconds),
           "steps": len(result.history), "history": result.history, "evals": result.evals,
           "parameters": sum(p.numel() for p in result.model.parameters())}
    (out / "training.json").write_text(json.dumps(log, indent=1))
    with open(config.run_dir / "loss.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(result.history[0]))
        writer.writeheader()
        writer.writerows(result.history)
    figure = plot_loss(result.history)
    figure.savefig(out / "loss_curve.png", dpi=80, bbox_inches="tight")


def plot_loss(history: list[dict[str, float]], ax: Any = None) -> Any:
    """The loss curve: all tokens and the answer tokens, smoothed over 20 steps."""
    if ax is None:
        from matplotlib.figure import Figure  # no pyplot: works without a display

        ax = Figure(figsize=(6, 3.5)).subplots()
    steps = [h["step"] for h in history]
    for key, label in (("loss", "all tokens (weighted)"), ("answer_loss", "answer tokens")):
        values = np.array([h[key] for h in history], dtype=float)
        ax.plot(steps, _smooth(values), label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats)")
    ax.set_title("pocket LLM pre-training")
    ax.legend()
    return ax.figure


def _smooth(values: np.ndarray, window: int = 20) -> np.ndarray:
    out = np.empty_like(values)
    for i in range(len(values)):
        chunk = values[max(0, i - window + 1) : i + 1]
        chunk = chunk[~np.isnan(chunk)]
        out[i] = chunk.mean() if len(chunk) else np.nan
    return out


# --- command line --------------------------------------------------------------------------------

FAST = {"corpus_scale": 0.02, "max_steps": 20, "eval_every": 0, "leak_check": False}


def parse_args(argv: list[str]) -> PretrainConfig:
    parser = argparse.ArgumentParser(
        prog="labkit pretrain", description="Pre-train the pocket LLM from scratch (CPU, fp32).")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"model folder to write (default: {POCKET_LLM}; with --fast: "
                             "RUN_DIR/pocket-llm-fast)")
    parser.add_argument("--run-dir", type=Path, default=RUN_DIR, help="checkpoints and logs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=1.0, help="corpus size factor")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many steps")
    parser.add_argument("--threads", type=int, default=2,
                        help="CPU threads (default 2: the shipped weights' setting)")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    parser.add_argument("--fast", action="store_true",
                        help="a one-minute demo: 2%% of the corpus, 20 steps, no evaluation")
    parser.add_argument("--no-leak-check", action="store_true",
                        help="skip the check that no shipped record is in the corpus")
    args = parser.parse_args(argv)
    out = args.out or (args.run_dir / "pocket-llm-fast" if args.fast else POCKET_LLM)
    config = PretrainConfig(seed=args.seed, out=out, run_dir=args.run_dir,
                            corpus_scale=args.scale, max_steps=args.max_steps,
                            threads=args.threads, resume=args.resume,
                            leak_check=not args.no_leak_check)
    if args.fast:
        config = replace(config, **FAST)
    return config


def main(argv: list[str] | None = None) -> int:
    """`labkit pretrain`: rebuild the pocket LLM; prints where it went and how long it took."""
    config = parse_args(list(argv or []))
    if config.out == POCKET_LLM and config.max_steps is not None:
        print(f"note: stopping early overwrites the shipped model in {POCKET_LLM}; "
              "pass --out to write elsewhere")
    result = pretrain(config)
    final = result.history[-1]
    print(f"wrote {config.out} after {len(result.history)} steps in {result.seconds / 60:.1f} min "
          f"(loss {final['loss']:.3f}, answer loss {final['answer_loss']:.3f})")
    return 0
