"""The SERVAL loop (Yan et al. 2024): an LLM and a vertical model teach each other, no gold label.

Each iteration:
1. the LLM annotates the training and validation splits with a soft label (labkit.annotate);
2. a vertical model is trained from scratch on those noisy labels (labkit.noisy), the LLM's
   probabilities as they are (or rounded to 0/1: `hard_labels`);
3. the vertical model's predictions back-tune the LLM with LoRA (labkit.backtune, labkit.train):
   every row with its probability as a soft Yes/No answer where the vertical model learned from
   every row (tables), the confident rows' classes where it learned from those only (text); the
   adapter is merged into the weights, so the next iteration starts from a plain model again (and
   the next LoRA is fresh, not stacked);
4. both are evaluated on the test split.

The loop itself never reads a gold label: a test shows that permuting them leaves every trained
weight unchanged. Gold labels are read in two places beside it, for the results table only:
`_evaluate` scores the test split, and `supervised_reference` trains the same vertical model on
the gold training labels (stopping early on the gold validation labels), the bound it is compared
with. The one exception is asked for: `val_labels` gold validation rows let the guard
(labkit.guard, `gold_report`) keep the LLM they vouch for and the best vertical model, and stop
a loop that hurts.
A vertical model that does not rank the rows as the LLM labelled them (labkit.noisy's agreement
check) ends the loop before back-tuning, with a warning.

Everything lands in `out_dir/<task>/`: the annotation cache, one folder per finished iteration
(record.json, predictions.npz and the merged LLM weights), the SFT checkpoints of the iteration in
progress. A run that is killed and started again skips the finished iterations, resumes
back-tuning from its last checkpoint, and ends with the same numbers. `run.json` holds the
settings and the LLM's fingerprint: a folder made with other ones is refused (labkit.runs) rather
than mixed into the table.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
import typing
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from labkit import guard, metrics, runs
from labkit.annotate import LocalAnnotator, model_fingerprint
from labkit.annotate.base import MODES, Mode
from labkit.backtune import ANSWERS, Answers, backtune_examples
from labkit.chat import CausalLM
from labkit.config import option, require, require_choice, settings
from labkit.data import SERVAL_TASKS, STYLES, TEXT_TASKS, Dataset, load, to_text
from labkit.data.text import Style
from labkit.loader import load_model, load_tokenizer
from labkit.noisy import NOISY_METHODS, NoisyMethod, RankingDisagreement, fit_noisy
from labkit.noisy.selection import Balance
from labkit.train import SFTConfig, checkpoint, train_sft
from labkit.vertical import MODELS, ModelName, VerticalModel, model_factory

logger = logging.getLogger(__name__)

TASKS: tuple[str, ...] = SERVAL_TASKS + TEXT_TASKS
# Shipped tables that no headline reports: the loop's and the guard's choices are made on them
# (docs/serval_protocol.md; benchmarks/serval_dev.py and serval_guard.py).
DEVELOPMENT_TASKS: tuple[str, ...] = ("cleveland", "heart_failure", "thyroid", "breast_cancer", "cirrhosis")
PREDICTIONS = "predictions.npz"  # per iteration: the LLM and the vertical model on val and test
FINAL_PREDICTIONS = "final_predictions.npz"  # the LLM in hand at the end, on val and test
# Each switches one ingredient of the defaults (ServalConfig.ablation); measured on the development
# tables by benchmarks/serval_dev.py (docs/serval_protocol.md).
ABLATIONS: tuple[str, ...] = ("full", "hard_labels", "hard_backtuning", "ft_transformer_teacher",
                              "one_iteration")


@dataclass
class ServalConfig:
    """Everything that decides a SERVAL run; the back-tuning fields carry SFTConfig's names
    (LlamaFactory's). A None field follows the data (the default_* functions of this module)."""

    # Two rounds: kept on the development tables against the one_iteration ablation
    # (docs/serval_protocol.md).
    iterations: int = option(
        2, "rounds of annotate, train the vertical model, back-tune; more extend a finished run",
        bookkeeping=True)
    mode: Mode = option("token", "how the LLM's soft label is read: token (P(Yes)), verbalized "
                                 "(the probability it states) or hard (Yes/No as 1/0)")
    style: Style = option("list", "how a record is written for the LLM: list or prose")
    vertical: ModelName | None = option(
        None, "the vertical model; None: logistic regression for tables, MiniLM for text "
              "(labkit.vertical.DEFAULT_MODELS, 'serval')")
    vertical_options: dict[str, Any] = option(
        factory=dict, help="options of the vertical model's constructor, e.g. {\"C\": 0.1} for logistic "
                           "or {\"epochs\": 8} for mlp")
    noisy_method: NoisyMethod | None = option(
        None, "the labkit.noisy method that trains the vertical model; None: naive on tables, "
              "confident on text (default_noisy_method)")
    answers: Answers | None = option(
        None, "what back-tuning teaches (labkit.backtune); None: as the noisy method learned "
              "(backtune_settings)")
    threshold: float | None = option(
        None, "confidence of the rows back-tuning teaches; None: see backtune_settings")
    balance: Balance | None = option(
        None, "class balance of the back-tuning rows: equal, prior or none; None: see backtune_settings")
    hard_labels: bool = option(
        False, "round the LLM's answers to 0/1 before the vertical model learns them, on a table where "
               "both classes remain (can_round); False: the probabilities (chosen on the development "
               "tables, docs/serval_protocol.md)")
    max_train_rows: int | None = option(
        None, "a random subset of the training rows (fast runs; no label is read); None: all")
    # The back-tuning budget below was set on the reported tasks. On the development tables
    # (docs/serval_protocol.md, part 3) 4 epochs held against 2, and a learning rate of 3e-3 beat
    # 1e-3: the change waits for the README's rerun (issue #19). Rank and example cap: not re-derived.
    # How long to tune within the budget is chosen per run (choose_epoch).
    max_backtune_examples: int = option(800, "at most this many back-tuning examples (whole rows)")
    lora_rank: int = option(16, "back-tuning: rank of the LoRA update")
    lora_alpha: int = option(32, "back-tuning: the LoRA update is scaled by lora_alpha / lora_rank")
    learning_rate: float = option(1e-3, "back-tuning: peak learning rate")
    num_train_epochs: int = option(
        4, "back-tuning: epochs, with a checkpoint after each (see choose_epoch)")
    choose_epoch: bool = option(
        True, "keep the epoch whose LLM ranks the validation rows most like the vertical model "
              "(Spearman; no label read), or none when tuning moves it away; False: the last epoch")
    per_device_train_batch_size: int = option(16, "back-tuning: examples per batch")
    cutoff_len: int = option(1024, "back-tuning: longest example in tokens (the pocket LLM's positions)")
    val_labels: int = option(
        0, "gold validation labels the guard may read (labkit.guard): the LLM and the vertical model "
           "are scored on that many validation rows at every iteration; a back-tuned LLM is kept only "
           "when they vouch for it, the best vertical model is kept, and the loop stops when back-tuning "
           "lowers the LLM beyond their noise; 0: none, no gold label is read")
    seed: int = option(0, "the split, every model's initialization and every sample drawn")
    progress: bool = option(True, "show progress bars", bookkeeping=True)

    def __post_init__(self) -> None:
        require_choice(self, "mode", MODES)
        require_choice(self, "style", STYLES)
        for name, choices in (("vertical", MODELS), ("noisy_method", NOISY_METHODS),
                              ("answers", ANSWERS), ("balance", typing.get_args(Balance))):
            if getattr(self, name) is not None:
                require_choice(self, name, choices)
        require(self.threshold is None or 0.5 <= self.threshold < 1, self, "threshold",
                "use a confidence in [0.5, 1), or None")
        for name in ("iterations", "max_backtune_examples", "lora_rank", "num_train_epochs",
                     "per_device_train_batch_size", "cutoff_len"):
            require(getattr(self, name) >= 1, self, name, "it must be at least 1")
        require(self.max_train_rows is None or self.max_train_rows >= 10, self, "max_train_rows",
                "use at least 10 rows, or None for all")
        require(self.learning_rate > 0, self, "learning_rate", "it must be positive")
        require(self.val_labels == 0 or self.val_labels >= 4, self, "val_labels",
                "use 0 (no gold label) or at least 4 rows (2 of each class)")

    def ablation(self, name: str) -> ServalConfig:
        """This config with one ingredient switched (see ABLATIONS):

        - hard_labels: the vertical model learns the LLM's answers rounded to 0/1 (the paper's
          hard-label ablation; where rounding would leave one class, or on text, this is the full
          run: see can_round);
        - hard_backtuning: the LLM is taught Yes/No answers on the rows the vertical model is at
          least 0.7 sure of, as many of each class (the kit's earlier back-tuning), not every row's
          probability as a soft answer;
        - ft_transformer_teacher: the paper's and the kit's earlier teacher instead of the logistic
          regression (tables only: text has one vertical model);
        - one_iteration: stop after the first round.
        """
        if name == "full":
            return replace(self)
        if name == "hard_labels":
            return replace(self, hard_labels=True)
        if name == "hard_backtuning":
            return replace(self, answers="yes_no", threshold=0.7, balance="equal")
        if name == "ft_transformer_teacher":
            return replace(self, vertical="ft_transformer")
        if name == "one_iteration":
            return replace(self, iterations=1)
        raise ValueError(f"unknown ablation {name!r}; choose one of {ABLATIONS}")


@dataclass
class IterationRecord:
    """What one iteration measured (test-split metrics use gold labels: evaluation only)."""

    iteration: int
    llm_auc: float  # the LLM that annotated this iteration, on the test split
    llm_accuracy: float
    vertical_auc: float
    vertical_accuracy: float
    agreement: float  # share of test rows where LLM and vertical model predict the same class
    annotated: int
    missing_annotations: int
    answer_spread: float  # standard deviation of the LLM's answers on the training rows
    annotator_agreement: dict[str, Any]  # Spearman of the vertical model vs the LLM's labels (labkit.noisy)
    refused: bool  # the vertical model failed that check: no back-tuning, the loop stopped
    hard_labels: bool  # the vertical model learned from the answers rounded to 0/1
    selected: dict[str, int]
    backtune_examples: int
    backtune_loss: float
    backtune_epoch: int  # the epoch kept (0: none; see ServalConfig.num_train_epochs)
    backtune_agreement: list[float]  # per epoch from 0: Spearman of LLM vs vertical model on val
    seconds: dict[str, float]


@dataclass
class ServalResult:
    task: str
    config: dict[str, Any]
    iterations: list[IterationRecord]
    llm_final_auc: float  # the LLM at the end (see kept_llm), on the test split
    llm_final_accuracy: float
    supervised_auc: float
    supervised_accuracy: float
    kept_llm: int = 0  # the LLM's state at the end: after this many back-tunings (the guard may roll back)
    kept_vertical: int = 1  # the iteration whose vertical model the row reports
    gold: dict[str, Any] | None = None  # the guard's GoldReport (config.val_labels > 0)
    warnings: list[str] = field(default_factory=list)  # label-free warning signs (labkit.guard.warnings)

    @property
    def row(self) -> dict[str, Any]:
        """One line of the results table."""
        vertical = self.iterations[self.kept_vertical - 1].vertical_auc
        return {
            "task": self.task,
            "LLM zero-shot": round(self.iterations[0].llm_auc, 3),
            "LLM after SERVAL": round(self.llm_final_auc, 3),
            "vertical (SERVAL)": round(vertical, 3),
            "vertical (supervised)": round(self.supervised_auc, 3),
            "% of supervised AUC": round(100 * vertical / self.supervised_auc, 1),
        }

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "row": self.row}


# --- the pieces of one iteration ---------------------------------------------------------------


def default_noisy_method(dataset: Dataset) -> str:
    """The noisy-label method the teacher trains with: on the tables the pocket LLM's answers are a
    smooth function of the features, which plain training distills best ("naive"); on text its
    lexicon is wrong often enough that training on the confident, class-balanced answers only
    ("confident") wins. Chosen on development data: the development tables and the abstracts'
    validation split (docs/serval_protocol.md, the teacher part)."""
    return "confident" if dataset.schema.kind == "text" else "naive"


def can_round(dataset: Dataset, p_train: np.ndarray) -> bool:
    """Whether `hard_labels` can round the LLM's answers: on a table, and only where both classes
    remain (where the LLM never leans to one class, HCV or thyroid, no classifier could be trained
    on the rounded answers). Text keeps them soft: the `confident` method learns the classes of the
    confident answers already."""
    rounded = np.round(p_train[~np.isnan(p_train)])
    return bool(dataset.schema.kind != "text" and 0 < rounded.mean() < 1)


def backtune_settings(noisy_method: str, config: ServalConfig) -> tuple[Answers, float, Balance]:
    """(answers, threshold, balance) of back-tuning; None fields follow the noisy-label method.

    The vertical model teaches back what it learned from: trained on every row's label ("naive"
    and the other all-row methods), it teaches every row its probability (soft Yes/No answers, no
    selection; chosen on the development tables against the `hard_backtuning` ablation,
    docs/serval_protocol.md); trained on the confident rows only ("confident", text), it teaches
    the classes of the rows it is at least 0.7 sure of, as many of each class, as a Yes/No and a
    probability answer (set on the abstracts' test split and not yet re-derived on development
    data: docs/serval_protocol.md, "Not yet under the protocol").
    """
    confident = noisy_method == "confident"
    answers: Answers = config.answers or ("both" if confident else "soft")
    threshold = config.threshold if config.threshold is not None else (0.7 if confident else 0.5)
    balance: Balance = config.balance or ("equal" if confident else "none")
    return answers, threshold, balance


def _texts(dataset: Dataset, split: str, config: ServalConfig, rows: np.ndarray | None = None) -> list[str]:
    frame = dataset.features(split)
    if rows is not None:
        frame = frame.iloc[rows]
    return [to_text(r, dataset.schema, style=config.style)  # type: ignore[arg-type]
            for r in frame.to_dict(orient="records")]


def _train_rows(dataset: Dataset, config: ServalConfig) -> np.ndarray:
    """The training rows used: all, or a seeded random subset of max_train_rows (no labels read)."""
    n = len(dataset.features("train"))
    if config.max_train_rows is None or config.max_train_rows >= n:
        return np.arange(n)
    rng = np.random.default_rng(config.seed)
    return np.sort(rng.choice(n, size=config.max_train_rows, replace=False))


def annotate(annotator: LocalAnnotator, texts: list[str], dataset: Dataset) -> tuple[np.ndarray, int]:
    """The LLM's soft labels for the texts, and how many answers were missing (NaN)."""
    frame = annotator.annotate(texts, dataset.schema.task)
    values = frame["value"].to_numpy(dtype=float)
    return values, int(np.isnan(values).sum())


def vertical_factory(dataset: Dataset, config: ServalConfig) -> Callable[[int], VerticalModel]:
    """seed -> a new, quiet, unfitted vertical model of the configured kind."""
    return model_factory(config.vertical, dataset.schema, purpose="serval", **config.vertical_options)


def check_vertical(dataset: Dataset, config: ServalConfig) -> None:
    """Fail before any annotation when the configured vertical model cannot learn this dataset
    (a tabular model on text, an option its constructor does not take)."""
    try:
        vertical_factory(dataset, config)(config.seed)
    except (ValueError, TypeError) as error:
        raise ValueError(f"ServalConfig.vertical={config.vertical!r} with vertical_options="
                         f"{config.vertical_options} cannot learn {dataset.schema.name}: {error}") from error


def fit_vertical(dataset: Dataset, X: pd.DataFrame, targets: np.ndarray,
                 validation: tuple[pd.DataFrame, np.ndarray], config: ServalConfig) -> VerticalModel:
    """Train the vertical model on (noisy) targets; rows without a target are left out."""
    known, val_known = ~np.isnan(targets), ~np.isnan(validation[1])
    X_val, y_val = validation
    method = config.noisy_method or default_noisy_method(dataset)
    return fit_noisy(method, vertical_factory(dataset, config),
                     X[known].reset_index(drop=True), targets[known],
                     validation=(X_val[val_known].reset_index(drop=True), y_val[val_known]), seed=config.seed)


def backtune(model: torch.nn.Module, tokenizer: Any, examples: list[dict[str, Any]], config: ServalConfig,
             output_dir: Path, judge: Callable[[torch.nn.Module], float] | None = None
             ) -> tuple[torch.nn.Module, float, int, list[float]]:
    """LoRA-tune the LLM on the examples (resuming from output_dir) and merge the adapter.

    A checkpoint is kept at the end of every epoch. With `judge` (a label-free score of the model,
    higher is better) the model before tuning and after each epoch is scored and the best one is
    kept: where no epoch scores above the untuned model, the adapter is dropped (epoch 0).
    Returns the model, the last training loss, the epoch kept and the scores (from epoch 0).
    """
    per_epoch = math.ceil(len(examples) / config.per_device_train_batch_size)
    sft = SFTConfig(output_dir=output_dir, finetuning_type="lora", lora_rank=config.lora_rank,
                    lora_alpha=config.lora_alpha, learning_rate=config.learning_rate,
                    num_train_epochs=config.num_train_epochs,
                    per_device_train_batch_size=config.per_device_train_batch_size,
                    cutoff_len=config.cutoff_len, seed=config.seed, save_steps=per_epoch,
                    save_total_limit=config.num_train_epochs, progress=config.progress)
    scores = [judge(model)] if judge is not None else []  # before the adapter is attached
    result = train_sft(model, tokenizer, examples, sft, resume=True)
    epoch = config.num_train_epochs
    if judge is not None:
        ends = checkpoint.checkpoints(output_dir)  # one per epoch, the last is the model in hand
        for end in ends:
            checkpoint.load(end, result.model)
            scores.append(judge(result.model))
        epoch = int(np.argmax(scores))  # the first of equal scores: the shorter tuning
        if epoch == 0:
            return result.model.unload(), result.final_loss, 0, scores  # type: ignore[operator]
        checkpoint.load(ends[epoch - 1], result.model)
    return result.model.merge_and_unload(), result.final_loss, epoch, scores  # type: ignore[operator]


def _agreement_judge(tokenizer: Any, texts: list[str], p_vertical: np.ndarray, dataset: Dataset,
                     config: ServalConfig, cache: Path) -> Callable[[torch.nn.Module], float]:
    """model -> how alike it ranks the rows as the vertical model (Spearman; no gold label)."""
    def judge(model: torch.nn.Module) -> float:
        annotator = LocalAnnotator(model, tokenizer, mode=config.mode, cache=cache, progress=False)
        p_llm, _ = annotate(annotator, texts, dataset)
        known = ~np.isnan(p_llm)
        value = metrics.agreement(p_llm[known], p_vertical[known])["rank_correlation"]
        return -1.0 if np.isnan(value) else value  # a constant answer agrees with nothing

    return judge


def _evaluate(dataset: Dataset, p_test: np.ndarray) -> tuple[float, float]:
    """AUC and accuracy on the test split (gold labels: the results table only)."""
    gold = dataset.labels("test")
    known = ~np.isnan(p_test)
    return metrics.auc(gold[known], p_test[known]), metrics.accuracy(gold[known], p_test[known])


def supervised_reference(dataset: Dataset, config: ServalConfig) -> tuple[float, float]:
    """The same vertical model trained on gold labels, stopping early on the gold validation
    labels: the upper bound the table compares with (trained as well as labels allow)."""
    rows = _train_rows(dataset, config)
    X = dataset.features("train").iloc[rows].reset_index(drop=True)
    y = dataset.labels("train")[rows].astype(float)
    model = vertical_factory(dataset, config)(config.seed)
    model.fit(X, y, validation=(dataset.features("val"), dataset.labels("val").astype(float)))
    return _evaluate(dataset, model.predict_proba(dataset.features("test")))


# --- the loop ----------------------------------------------------------------------------------


def _load_llm(path: str | Path | None) -> tuple[torch.nn.Module, Any]:
    model = load_model(path)
    model.eval()
    return model, load_tokenizer(path)


@dataclass
class _Task:
    """One task's data as the loop uses it: the rows, their texts, and where the run lives."""

    dataset: Dataset
    config: ServalConfig
    folder: Path
    X_train: pd.DataFrame
    texts: dict[str, list[str]]

    @classmethod
    def prepare(cls, dataset: Dataset, config: ServalConfig, out_dir: Path) -> _Task:
        rows = _train_rows(dataset, config)
        texts = {"train": _texts(dataset, "train", config, rows), "val": _texts(dataset, "val", config),
                 "test": _texts(dataset, "test", config)}
        X_train = dataset.features("train").iloc[rows].reset_index(drop=True)
        return cls(dataset, config, out_dir / dataset.schema.name, X_train, texts)

    @property
    def cache(self) -> Path:
        return self.folder / "answers.sqlite"

    def annotator(self, model: torch.nn.Module, tokenizer: Any) -> LocalAnnotator:
        return LocalAnnotator(model, tokenizer, mode=self.config.mode, cache=self.cache,
                              progress=self.config.progress)


def _iteration(task: _Task, it: int, model: CausalLM,
               tokenizer: Any) -> tuple[IterationRecord, CausalLM]:
    """One round: annotate, train the vertical model, back-tune; saves it in iteration_<it>/."""
    dataset, config = task.dataset, task.config
    X_val, X_test = dataset.features("val"), dataset.features("test")
    seconds: dict[str, float] = {}
    annotator = task.annotator(model, tokenizer)
    start = time.perf_counter()
    p_train, missing = annotate(annotator, task.texts["train"], dataset)
    p_val, missing_val = annotate(annotator, task.texts["val"], dataset)
    p_test, _ = annotate(annotator, task.texts["test"], dataset)
    seconds["annotate"] = time.perf_counter() - start
    hard = config.hard_labels and can_round(dataset, p_train)
    targets, val_targets = (np.round(p_train), np.round(p_val)) if hard else (p_train, p_val)

    start = time.perf_counter()
    try:
        vertical, refused = fit_vertical(dataset, task.X_train, targets, (X_val, val_targets), config), False
    except RankingDisagreement as error:  # nothing to teach back; the record keeps what it scored
        vertical, refused = error.model, True
    p_vertical = {"train": vertical.predict_proba(task.X_train), "val": vertical.predict_proba(X_val),
                  "test": vertical.predict_proba(X_test)}
    seconds["vertical"] = time.perf_counter() - start

    start = time.perf_counter()
    examples: list[dict[str, Any]] = []
    selected: dict[str, int] = {}
    scores: list[float] = []
    loss, epoch = float("nan"), 0
    if not refused:
        answers, threshold, balance = backtune_settings(
            config.noisy_method or default_noisy_method(dataset), config)
        examples, selection = backtune_examples(
            task.texts["train"], p_vertical["train"], dataset.schema.task, answers=answers,
            threshold=threshold, balance=balance, max_examples=config.max_backtune_examples, seed=config.seed)
        selected = {str(k): v for k, v in selection.counts.items()}
        judge = _agreement_judge(tokenizer, task.texts["val"], p_vertical["val"], dataset, config, task.cache)
        model, loss, epoch, scores = backtune(model, tokenizer, examples, config, task.folder / f"sft_{it}",
                                              judge if config.choose_epoch else None)
    seconds["backtune"] = time.perf_counter() - start

    llm_auc, llm_acc = _evaluate(dataset, p_test)
    vertical_auc, vertical_acc = _evaluate(dataset, p_vertical["test"])
    known = ~np.isnan(p_test)
    agreement = float(np.mean((p_test[known] >= 0.5) == (p_vertical["test"][known] >= 0.5)))
    record = IterationRecord(
        iteration=it, llm_auc=llm_auc, llm_accuracy=llm_acc, vertical_auc=vertical_auc,
        vertical_accuracy=vertical_acc, agreement=agreement, annotated=len(p_train) + len(p_val),
        missing_annotations=missing + missing_val,
        answer_spread=round(float(np.nanstd(p_train)), 4),
        annotator_agreement=dict(vertical.info.get("annotator_agreement", {})), refused=refused,
        hard_labels=hard, selected=selected, backtune_examples=len(examples), backtune_loss=loss,
        backtune_epoch=epoch, backtune_agreement=[round(x, 4) for x in scores],
        seconds={k: round(v, 1) for k, v in seconds.items()})
    done = task.folder / f"iteration_{it}"
    done.mkdir(parents=True, exist_ok=True)
    np.savez(done / PREDICTIONS, llm=p_test, vertical=p_vertical["test"], llm_val=p_val,
             vertical_val=p_vertical["val"])
    model.save_pretrained(done / "llm")
    tokenizer.save_pretrained(done / "llm")
    runs.atomic_write_text(done / "record.json", json.dumps(asdict(record), indent=2))  # marks it done
    shutil.rmtree(task.folder / f"sft_{it}", ignore_errors=True)  # its weights are merged and saved
    return record, model


def run(task: str | Dataset, llm: str | Path | None = None, config: ServalConfig | None = None,
        out_dir: str | Path = "runs/serval", log: Callable[[str], None] | None = None) -> ServalResult:
    """Run the SERVAL loop on one task and return its records (see the module docstring).

    llm: a model folder or hub id (None: the embedded pocket LLM). log: where progress lines go
    (default: this module's logger; `labkit serval` prints them).
    """
    config = config or ServalConfig()
    say = log or logger.info
    dataset = load(task, seed=config.seed) if isinstance(task, str) else task
    check_vertical(dataset, config)
    data = _Task.prepare(dataset, config, Path(out_dir))
    name = dataset.schema.name
    model, tokenizer = _load_llm(llm)
    runs.claim(data.folder, {"llm": model_fingerprint(model, tokenizer), **settings(config)})
    records: list[IterationRecord] = []
    report: guard.GoldReport | None = None
    for it in range(1, config.iterations + 1):
        done = data.folder / f"iteration_{it}"
        if (done / "record.json").is_file():
            records.append(IterationRecord(**json.loads((done / "record.json").read_text())))
            model, tokenizer = _load_llm(done / "llm")
            say(f"{name}: iteration {it} already done, loaded from {done}")
        else:
            record, model = _iteration(data, it, model, tokenizer)
            records.append(record)
            say(f"{name}: iteration {it}: LLM AUC {record.llm_auc:.3f}, vertical AUC "
                f"{record.vertical_auc:.3f}, agreement {record.agreement:.2f}, "
                f"{record.backtune_examples} back-tuning examples")
        if records[-1].refused:
            say(f"{name}: iteration {it}: the vertical model does not follow the LLM's labels "
                f"({records[-1].annotator_agreement}); no back-tuning, the loop stops")
            break
        if config.val_labels:
            report = gold_report(dataset, config, data.folder, records,
                                 annotate(data.annotator(model, tokenizer), data.texts["val"], dataset)[0])
            if report.stopped_after is not None:
                say(f"{name}: " + report.lines()[1])
                break

    final = data.annotator(model, tokenizer)
    p_final = {split: annotate(final, data.texts[split], dataset)[0] for split in ("val", "test")}
    np.savez(data.folder / FINAL_PREDICTIONS, llm=p_final["test"], llm_val=p_final["val"])
    if config.val_labels:
        report = gold_report(dataset, config, data.folder, records, p_final["val"])
    kept_llm = report.kept_llm if report else tunings(records)
    kept_vertical = report.kept_vertical if report else last_accepted(records)
    llm_auc, llm_acc = (_evaluate(dataset, p_final["test"]) if kept_llm == tunings(records)
                        else (records[kept_llm].llm_auc, records[kept_llm].llm_accuracy))
    supervised_auc, supervised_acc = supervised_reference(dataset, config)
    result = ServalResult(name, asdict(config), records, llm_auc, llm_acc, supervised_auc, supervised_acc,
                          kept_llm=kept_llm, kept_vertical=kept_vertical,
                          gold=asdict(report) if report else None, warnings=guard.warnings(records))
    runs.atomic_write_text(data.folder / "result.json", json.dumps(result.to_json(), indent=2))
    return result


def tunings(records: list[IterationRecord]) -> int:
    """How many back-tunings the records made (a refused iteration makes none)."""
    return sum(not r.refused for r in records)


def last_accepted(records: list[IterationRecord]) -> int:
    """The last iteration whose vertical model passed the agreement check (the last one if none did)."""
    accepted = [r.iteration for r in records if not r.refused]
    return accepted[-1] if accepted else records[-1].iteration


def gold_report(dataset: Dataset, config: ServalConfig, folder: Path, records: list[IterationRecord],
                llm_val: np.ndarray) -> guard.GoldReport:
    """The guard's verdict on a run's records so far (labkit.guard.judge): config.val_labels gold
    validation rows, the LLM's answers on them per state (those saved with each iteration, and
    `llm_val`, the model in hand, unless the last iteration made no back-tuning) and each vertical
    model's. `benchmarks/serval_guard.py` applies it to unguarded runs: the same verdict, since
    the gold labels change nothing before the loop stops."""
    labels = dataset.labels("val")
    rows = guard.gold_rows(labels, config.val_labels, config.seed)
    saved = [np.load(folder / f"iteration_{r.iteration}" / PREDICTIONS) for r in records]
    states = [s["llm_val"] for s in saved] + ([] if records[-1].refused else [llm_val])
    return guard.judge(labels[rows], [p[rows] for p in states], [s["vertical_val"][rows] for s in saved],
                       config.seed)


def results_table(results: list[ServalResult]) -> pd.DataFrame:
    """task | LLM zero-shot | LLM after SERVAL | vertical (SERVAL) | vertical (supervised) | %."""
    table = pd.DataFrame([r.row for r in results]).set_index("task")
    table.loc["mean"] = table.mean(numeric_only=True).round(3)
    return table


def acceptance(table: pd.DataFrame) -> dict[str, float]:
    """The results table in three figures (the acceptance of the kit's main job): `improved`, how
    many of the `tasks` end with the LLM above its zero-shot AUC; `closed`, the share of the LLM's
    mean gap to the supervised vertical model that the loop closed (mean `gain` / mean `gap`, over
    the tasks); `percent`, the label-free vertical model's mean percentage of the supervised AUC."""
    rows = table.drop(index="mean", errors="ignore")
    gain = rows["LLM after SERVAL"] - rows["LLM zero-shot"]
    gap = rows["vertical (supervised)"] - rows["LLM zero-shot"]
    return {"improved": float((gain > 0).sum()), "tasks": float(len(rows)),
            "closed": gain.mean() / gap.mean() if gap.mean() > 0 else float("nan"),
            "gain": float(gain.mean()), "gap": float(gap.mean()),
            "percent": float(rows["% of supervised AUC"].mean())}


def summary(table: pd.DataFrame) -> str:
    """`acceptance` in a sentence."""
    a = acceptance(table)
    return (f"LLM above its zero-shot AUC on {a['improved']:.0f} of {a['tasks']:.0f} tasks; "
            f"it closed {100 * a['closed']:.0f}% of its mean gap to the supervised vertical model "
            f"(mean gain {a['gain']:+.3f}, mean gap {a['gap']:.3f}); "
            f"the label-free vertical model reached {a['percent']:.1f}% of the supervised AUC on average.")


def _spread(values: pd.Series, digits: int) -> str:
    """mean ± sample standard deviation (the mean alone for a single value)."""
    if len(values) < 2:
        return f"{values.mean():.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def seeds_table(rows: pd.DataFrame) -> pd.DataFrame:
    """The results table over seeds: per task, each figure's mean ± standard deviation over the
    seeds; the last line ("mean") is the mean over the tasks taken within each seed, then over
    the seeds. rows: one line per task and seed (columns "task", "seed" and those of `results_table`)."""
    figures = [c for c in rows.columns if c not in ("task", "seed")]
    within_seed = rows.groupby("seed")[figures].mean().reset_index().assign(task="mean")
    both = pd.concat([rows, within_seed], ignore_index=True)
    return pd.DataFrame({c: both.groupby("task", sort=False)[c].agg(_spread, digits=1 if "%" in c else 3)
                         for c in figures})


def seeds_summary(rows: pd.DataFrame) -> str:
    """`acceptance` within each seed, then mean ± standard deviation over the seeds, in a sentence."""
    per_seed = pd.DataFrame([acceptance(group.drop(columns="seed").set_index("task"))
                             for _, group in rows.groupby("seed")])
    return (f"Over seeds {', '.join(map(str, sorted(rows['seed'].unique())))} (mean ± standard "
            f"deviation): the LLM ends above its zero-shot AUC on {_spread(per_seed['improved'], 1)} "
            f"of {per_seed['tasks'].iloc[0]:.0f} tasks and closes {_spread(100 * per_seed['closed'], 0)}% "
            f"of its mean gap to the supervised vertical model (mean gain {_spread(per_seed['gain'], 3)}); "
            f"the label-free vertical models reach {_spread(per_seed['percent'], 1)}% of the supervised "
            "AUC on average.")


def seeds_markdown(rows: pd.DataFrame, header: str) -> str:
    """The results over seeds as the README shows them: `header` (how and when they were measured),
    `seeds_table` and `seeds_summary`."""
    return "\n\n".join([header, seeds_table(rows).to_markdown(disable_numparse=True), seeds_summary(rows)])


def write_seed_rows(path: Path, rows: pd.DataFrame, header: str) -> None:
    """One line per task and seed (`seeds_table`'s input), under a '# ' header line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    runs.atomic_write_text(path, f"# {header}\n" + rows.to_csv(index=False))


def read_seed_rows(path: Path) -> tuple[pd.DataFrame, str]:
    """What `write_seed_rows` wrote: the lines and the header."""
    header = path.read_text(encoding="utf-8").splitlines()[0]
    if not header.startswith("# "):
        raise ValueError(f"{path}: the first line should be '# <how and when it was measured>'; "
                         "write the file with labkit.serval.write_seed_rows")
    return pd.read_csv(path, comment="#"), header.removeprefix("# ")


def plot_curves(results: list[ServalResult]):  # type: ignore[no-untyped-def]
    """Test AUC per iteration of the LLM and the vertical model, with the supervised bound."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(3.2 * len(results), 3), squeeze=False, sharey=True)
    for ax, result in zip(axes[0], results, strict=True):
        steps = [r.iteration for r in result.iterations]
        llm = [r.llm_auc for r in result.iterations] + [result.llm_final_auc]
        ax.plot([s - 1 for s in steps] + [steps[-1]], llm, "o-", label="LLM (token P(Yes))")
        ax.plot(steps, [r.vertical_auc for r in result.iterations], "s-", label="vertical model")
        ax.axhline(result.supervised_auc, color="grey", ls="--", label="supervised vertical")
        ax.set_title(result.task, fontsize=9)
        ax.set_xlabel("back-tuning rounds")
        ax.set_xticks(range(0, steps[-1] + 1))
    axes[0][0].set_ylabel("test AUC")
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def save_results(results: list[ServalResult], out: Path) -> list[Path]:
    """results.csv (the table), results.json (every record) and serval_curves.png in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "results.csv", out / "results.json", out / "serval_curves.png"]
    results_table(results).to_csv(paths[0])
    runs.atomic_write_text(paths[1], json.dumps([r.to_json() for r in results], indent=2))
    plot_curves(results).savefig(paths[2], dpi=120)
    return paths
