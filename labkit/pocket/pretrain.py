"""Pre-train the pocket LLM from scratch: `labkit pretrain` (or `pretrain(PretrainConfig())`).

    corpus (labkit.pocket.corpus)  ->  leak check  ->  tokenizer (BPE, trained here)
      ->  packed rows (labkit.pocket.batches)  ->  a small Llama, AdamW + cosine schedule
      ->  data/models/pocket-llm/ (config, safetensors, tokenizer + chat template, loss curve)

Everything is seeded: the same seed and the same number of CPU threads give the same weights.
Training writes a checkpoint every `save_steps` steps (and on Ctrl-C) into `run_dir`;
`resume=True` (`--resume`) continues from it and ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import LlamaForCausalLM

from labkit import hardware, runs
from labkit.chat import IGNORE
from labkit.config import option, require, settings
from labkit.parameters import count_parameters
from labkit.paths import POCKET_LLM, shipped_name
from labkit.pocket.batches import Rows, encode, pack
from labkit.pocket.corpus import CHECK_WEIGHT, CorpusConfig, Example, build_corpus, check_leaks
from labkit.pocket.model import PACKED, Shape, attention, build_model, generation_config, model_config
from labkit.pocket.tokenizer import END_OF_TEXT, IM_END, train_tokenizer

RUN_DIR = Path("runs/pocket-pretrain")
CHECKPOINT = "checkpoint.pt"
logger = logging.getLogger(__name__)


@dataclass
class PretrainConfig:
    """Everything that decides the pocket LLM. The defaults rebuild the shipped model."""

    seed: int = option(0, "the corpus, the initial weights and the order of rows")
    out: Path = option(POCKET_LLM, "model folder to write (a Hugging Face folder)", bookkeeping=True)
    run_dir: Path = option(RUN_DIR, "checkpoints and logs", bookkeeping=True)
    corpus_scale: float = option(1.0, "multiplies every example count (0.02 for a one-minute demo)")
    vocab_size: int = option(4096, "tokens of the byte-level BPE vocabulary")
    shape: Shape = option(factory=Shape, help="width and depth of the model", cli=False)
    seq_len: int = option(640, "tokens per packed training row")
    batch_rows: int = option(4, "packed rows per optimizer step")
    # Decisive: when an example can see the records packed before it, the small model has to
    # learn first which glucose value is "this" patient's, and in our runs it barely learned
    # anything in the same time. It costs no time: packed_attention skips the blocks a mask would
    # only hide.
    isolate_examples: bool = option(
        True, "attention stays inside each example packed in a row (position ids restart per "
              "example; model.packed_attention)")
    learning_rate: float = option(3e-3, "peak learning rate of AdamW")
    min_lr: float = option(3e-4, "learning rate at the last step")
    warmup_steps: int = option(30, "steps of linear warm-up")
    decay_fraction: float = option(
        0.3, "the learning rate stays at its peak, then decays (cosine) over this share of the steps")
    weight_decay: float = option(0.1, "AdamW weight decay (not on norms)")
    max_steps: int | None = option(
        None, "stop early (the schedule still spans the whole corpus)", bookkeeping=True)
    save_steps: int = option(50, "a checkpoint every n steps (and on Ctrl-C)", bookkeeping=True)
    eval_steps: int = option(500, "a fidelity check every n steps; 0: none", bookkeeping=True)
    eval_records: int = option(
        48, "held-out synthetic records per task for the fidelity check", bookkeeping=True)
    # A different thread count sums in another order and ends with (slightly) different weights,
    # so a run resumes with the threads it started with; on a machine shared with another heavy
    # job, 1 thread is steadier (2 then wait on each other).
    threads: int = option(2, "CPU threads (the shipped weights come from 2)")
    leak_check: bool = option(True, "check that no shipped record is in the corpus", bookkeeping=True)
    resume: bool = option(False, "continue from the checkpoint in run_dir", bookkeeping=True)
    progress: bool = option(True, "show a progress bar", bookkeeping=True)

    def __post_init__(self) -> None:
        self.out, self.run_dir = Path(self.out), Path(self.run_dir)
        for name in ("vocab_size", "seq_len", "batch_rows", "save_steps", "eval_records", "threads"):
            require(getattr(self, name) >= 1, self, name, "it must be at least 1")
        require(self.corpus_scale > 0, self, "corpus_scale", "it must be positive")
        require(0 < self.min_lr <= self.learning_rate, self, "min_lr",
                "use a positive rate no larger than learning_rate")
        require(0 <= self.decay_fraction <= 1, self, "decay_fraction", "use a fraction in [0, 1]")
        require(self.eval_steps >= 0, self, "eval_steps", "use 0 (no checks) or more")
        require(self.max_steps is None or self.max_steps >= 1, self, "max_steps",
                "it must be at least 1 (or None)")

    def to_json(self) -> dict[str, Any]:
        """Every field, as training.json records it (the model folder named inside the kit)."""
        data = asdict(self)
        data["out"], data["run_dir"] = shipped_name(self.out), str(self.run_dir)
        return data


# A one-minute demo (`labkit pretrain --fast`, lesson A1): 2% of the corpus, 20 steps, no checks.
FAST = {"corpus_scale": 0.02, "max_steps": 20, "eval_steps": 0, "leak_check": False}


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
        report = check_leaks(corpus, sorted({e.task for e in corpus if e.kind == "record" and e.task}))
        if not report.clean:
            raise RuntimeError(f"the generated corpus contains shipped data: {report}")
        logger.info("leak check: %s", report)
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
        return config.learning_rate * (step + 1) / config.warmup_steps
    start = max(config.warmup_steps, round(total * (1 - config.decay_fraction)))
    if step < start:
        return config.learning_rate
    progress = (step - start) / max(1, total - start)
    return config.min_lr + 0.5 * (config.learning_rate - config.min_lr) * (1 + math.cos(math.pi * progress))


def weighted_loss(model: LlamaForCausalLM, batch: dict[str, torch.Tensor],
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


def optimizer_for(model: LlamaForCausalLM, config: PretrainConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on norms (1-D weights), as usual for transformers."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=(0.9, 0.95), eps=1e-8)


def batch_at(rows: Rows, step: int, size: int) -> dict[str, torch.Tensor]:
    """Rows of one step; a second epoch (if any) reuses the rows in the same order."""
    index = np.arange(step * size, (step + 1) * size) % len(rows)
    return {name: torch.from_numpy(getattr(rows, name)[index])
            for name in ("input_ids", "position_ids", "targets", "alt", "alt_share", "weights")}


def total_steps(rows: Rows, config: PretrainConfig) -> int:
    return max(1, len(rows) // config.batch_rows)


@dataclass
class PretrainResult:
    model: LlamaForCausalLM
    tokenizer: Any
    history: list[dict[str, float]]
    evals: list[dict[str, Any]]
    counts: dict[str, int]
    seconds: float


def pretrain(config: PretrainConfig | None = None) -> PretrainResult:
    """Build the corpus and tokenizer, train, and save the model to config.out."""
    config = config or PretrainConfig()
    # build_model seeds the weights itself; this leaves the caller's thread count (and random
    # stream) as they were, e.g. a notebook's
    with hardware.seeded(None, threads=config.threads):
        return _pretrain(config)


def _pretrain(config: PretrainConfig) -> PretrainResult:
    start = time.time()
    prepared = prepare(config)
    tokenizer = prepared.tokenizer
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in (IM_END, END_OF_TEXT)}
    model = build_model(model_config(config.shape, len(tokenizer), ids[IM_END], ids[END_OF_TEXT]),
                        config.seed)
    model.config.use_cache = False  # training: packed sequences need no KV cache
    run = _Training(config, model, optimizer_for(model, config), tokenizer, prepared.rows,
                    {"step": 0, "history": [], "evals": [], "seconds": 0.0})
    if config.resume:
        run.resume()
    try:
        with attention(model, PACKED if config.isolate_examples else "sdpa"):
            run.train()
    except KeyboardInterrupt:
        run.save_checkpoint()
        logger.warning("interrupted at step %d: checkpoint in %s; run again with resume=True "
                       "(--resume) to continue", run.state["step"], config.run_dir)
        raise
    run.save_checkpoint()
    model.config.use_cache = True
    model.eval()
    result = PretrainResult(model, tokenizer, run.state["history"], run.state["evals"], prepared.counts,
                            time.time() - start)
    save_model(result, config)
    return result


@dataclass
class _Training:
    """The model in training, and everything its checkpoint holds."""

    config: PretrainConfig
    model: LlamaForCausalLM
    optimizer: torch.optim.Optimizer
    tokenizer: Any
    rows: Rows
    state: dict[str, Any]  # step, history, evals, seconds

    @property
    def checkpoint(self) -> Path:
        return self.config.run_dir / CHECKPOINT

    @functools.cached_property
    def settings(self) -> dict[str, Any]:
        """What must match for a checkpoint to be resumed: the config and the tokenizer."""
        vocabulary = json.dumps(sorted(self.tokenizer.get_vocab().items()))
        return {"tokenizer": hashlib.sha256(vocabulary.encode()).hexdigest()[:16], **settings(self.config)}

    def save_checkpoint(self) -> None:
        """Model, optimizer and log, written atomically (a crash never leaves half a file)."""
        runs.save_state(self.checkpoint, {"model": self.model.state_dict(),
                                          "optimizer": self.optimizer.state_dict(),
                                          "state": self.state, "settings": self.settings})

    def resume(self) -> None:
        """Continue from the checkpoint, if there is one written with the same settings."""
        if not self.checkpoint.is_file():
            return
        saved = runs.load_state(self.checkpoint)
        runs.check_same(self.checkpoint, saved.get("settings", {}), self.settings,
                        fix="delete it, or run without resume to start over")
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.state = saved["state"]
        logger.info("resuming from step %d (%s)", self.state["step"], self.checkpoint)

    def train(self) -> None:
        """The training loop from state["step"] on, logging into `state`."""
        config, state = self.config, self.state
        steps = total_steps(self.rows, config)
        last = min(steps, config.max_steps or steps)
        self.model.train()
        bar = tqdm(total=last, initial=state["step"], desc="pre-training", unit="step",
                   disable=not config.progress)
        tick = time.time()
        while state["step"] < last:
            loss, answer_loss, lr = self._step(state["step"], steps)
            now = time.time()
            state["seconds"] += now - tick
            tick = now
            state["step"] += 1
            state["history"].append({"step": state["step"], "loss": round(loss, 5),
                                     "answer_loss": round(answer_loss, 5), "lr": lr,
                                     "seconds": round(state["seconds"], 2)})
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", answer=f"{answer_loss:.3f}")
            if state["step"] % config.save_steps == 0:
                self.save_checkpoint()
            if config.eval_steps and (state["step"] % config.eval_steps == 0 or state["step"] == last):
                self._evaluate(bar)
                tick = time.time()  # evaluation time is not training time
        bar.close()

    def _step(self, step: int, steps: int) -> tuple[float, float, float]:
        """One optimizer step; (loss, answer-token loss, learning rate)."""
        lr = learning_rate(step, steps, self.config)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batch = batch_at(self.rows, step, self.config.batch_rows)
        loss, answer_loss = weighted_loss(self.model, batch, self.config.isolate_examples)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        return loss.item(), answer_loss, lr

    def _evaluate(self, bar: Any) -> None:
        with attention(self.model, "sdpa"):  # inference: padded batches, no packing
            evaluation = fidelity(self.model, self.tokenizer, self.config)
        self.state["evals"].append({"step": self.state["step"], **evaluation})
        bar.write(f"step {self.state['step']}: " + format_fidelity(evaluation))
        self.model.train()


def fidelity(model: LlamaForCausalLM, tokenizer: Any, config: PretrainConfig) -> dict[str, float]:
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
           "parameters": count_parameters(result.model).total}
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
