"""The SERVAL loop (Yan et al. 2024): an LLM and a vertical model teach each other, no gold label.

Each iteration:
1. the LLM annotates the training and validation splits with a soft label (labkit.annotate);
2. a vertical model is trained from scratch on those noisy labels (labkit.noisy), rounded to 0/1
   on the tables (default_hard_labels);
3. the vertical model's predictions back-tune the LLM with LoRA (labkit.backtune, labkit.train):
   every row with its probability as a soft Yes/No answer where the vertical model learned from
   every row (tables), the confident rows' classes where it learned from those only (text); the
   adapter is merged into the weights, so the next iteration starts from a plain model again (and
   the next LoRA is fresh, not stacked);
4. both are evaluated on the test split.

Gold labels are read in one place only, `_evaluate`, and only for the test split; a test shows that
permuting them leaves every trained weight unchanged. A supervised reference (the same vertical
model trained on the gold training labels) is computed beside the loop for the results table.

Everything lands in `out_dir/<task>/`: the annotation cache, one folder per finished iteration
(record.json and the merged LLM weights), the SFT checkpoints of the iteration in progress. A run
that is killed and started again skips the finished iterations, resumes back-tuning from its last
checkpoint, and ends with the same numbers. `run.json` holds the settings and the LLM's fingerprint:
a folder made with other ones is refused rather than mixed into the table.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from labkit import metrics
from labkit.annotate import LocalAnnotator, model_fingerprint
from labkit.backtune import Answers, backtune_examples
from labkit.data import SERVAL_TASKS, TEXT_TASKS, Dataset, load, to_text
from labkit.loader import load_model, load_tokenizer
from labkit.noisy import fit_noisy
from labkit.train import SFTConfig, checkpoint, train_sft
from labkit.vertical import MODELS, TorchModel, VerticalModel, make_model

TASKS: tuple[str, ...] = SERVAL_TASKS + TEXT_TASKS
ABLATIONS: tuple[str, ...] = ("full", "no_confidence_filter", "hard_labels", "soft_labels", "one_iteration")


@dataclass
class ServalConfig:
    """Everything that decides a SERVAL run.

    mode: how the LLM's soft label is read ("token": P(Yes); "verbalized": the stated probability).
    vertical: a labkit.vertical model name (None: logistic regression for tables, MiniLM for
    text; see default_vertical). method: a labkit.noisy method (None: "naive" for tables,
    "confident" for text; see default_method). answers / threshold / balance: what back-tuning
    teaches (labkit.backtune) and the confidence selection of its rows (None: as the method
    learned, see backtune_settings). hard_labels: round the LLM's probabilities to 0/1 before the
    vertical model sees them (None: on tables, see default_hard_labels). max_train_rows: a
    stratification-free cap on the training rows used (fast mode); None uses the whole split.
    """

    iterations: int = 2
    mode: str = "token"
    style: str = "list"
    vertical: str | None = None
    vertical_options: dict[str, Any] = field(default_factory=dict)
    method: str | None = None
    answers: Answers | None = None
    threshold: float | None = None
    balance: str | None = None
    hard_labels: bool | None = None
    max_train_rows: int | None = None
    max_backtune_examples: int = 800
    lora_r: int = 16
    lora_alpha: float = 32
    learning_rate: float = 1e-3
    # How long to back-tune is chosen without labels: a checkpoint per epoch, and the LLM keeps the
    # epoch whose answers on the validation split rank the rows most like the vertical model
    # (Spearman), or none (epoch 0) when tuning moves it away: 3 epochs on HCV, none on heart,
    # where the vertical model is a copy of the LLM (docs/fine_tuning.md).
    epochs: int = 4
    choose_epoch: bool = True  # False: keep the last epoch
    batch_size: int = 16
    cutoff: int = 1024  # the pocket LLM's positions: a long abstract is taught whole
    seed: int = 0
    progress: bool = True

    def ablation(self, name: str) -> ServalConfig:
        """This config changed as one of the paper's ablations (see ABLATIONS)."""
        if name == "full":
            return replace(self)
        if name == "no_confidence_filter":
            return replace(self, method="naive", threshold=0.5, balance="none")
        if name == "hard_labels":
            return replace(self, hard_labels=True)
        if name == "soft_labels":
            return replace(self, hard_labels=False)
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
    hard_labels: bool  # the vertical model learned from the answers rounded to 0/1
    selected: dict[str, int]
    backtune_examples: int
    backtune_loss: float
    backtune_epoch: int  # the epoch kept (0: none; see ServalConfig.epochs)
    backtune_agreement: list[float]  # per epoch from 0: Spearman of LLM vs vertical model on val
    seconds: dict[str, float]


@dataclass
class ServalResult:
    task: str
    config: dict[str, Any]
    iterations: list[IterationRecord]
    llm_final_auc: float  # the LLM after the last back-tuning, on the test split
    llm_final_accuracy: float
    supervised_auc: float
    supervised_accuracy: float

    @property
    def row(self) -> dict[str, Any]:
        """One line of the results table."""
        vertical = self.iterations[-1].vertical_auc
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


def default_vertical(dataset: Dataset) -> str:
    """MiniLM for text; for tables logistic regression, not the paper's FT-Transformer: the pocket
    LLM's answers are a logistic rule plus its own per-record slips, and a linear model keeps the
    rule and smooths the slips away, where the FT-Transformer copies both (rank correlation
    0.97-0.99 with the LLM) and has nothing left to teach it back (docs/fine_tuning.md)."""
    return "text_minilm" if dataset.schema.kind == "text" else "logistic"


def default_method(dataset: Dataset) -> str:
    """The noisy-label method that did best on the pocket LLM's labels (benchmarks/noisy_labels.py,
    docs/noisy_labels.md): on the tables its answers are a smooth function of the features, which
    plain training distills best ("naive"); on the abstracts its lexicon is wrong often enough that
    training on the confident, class-balanced answers only ("confident") wins by a wide margin."""
    return "confident" if dataset.schema.kind == "text" else "naive"


def default_hard_labels(dataset: Dataset, p_train: np.ndarray) -> bool:
    """Round the LLM's answers to 0/1 on the tables, keep them soft on text.

    Measured over three seeds (docs/fine_tuning.md): a logistic teacher trained on the rounded
    answers ranks better than one trained on the probabilities, whose sizes carry the LLM's slips
    (LLM after the loop, heart +0.029 to +0.074, early diabetes +0.014 to +0.015, ILPD +0.002 to
    +0.028). Where the LLM never leans to one class (HCV: no answer above 0.5), rounding would
    leave a single class: the answers stay soft.
    """
    rounded = np.round(p_train[~np.isnan(p_train)])
    return bool(dataset.schema.kind != "text" and 0 < rounded.mean() < 1)


def backtune_settings(method: str, config: ServalConfig) -> tuple[Answers, float, str]:
    """(answers, threshold, balance) of back-tuning; None fields follow the noisy-label method.

    The vertical model teaches back what it learned from: trained on every row's label ("naive"
    and the other all-row methods), it teaches every row its probability (soft Yes/No
    answers, no selection); trained on the confident rows only ("confident"), it teaches the
    classes of the rows it is at least 0.7 sure of, as many of each class, as a Yes/No and a
    probability answer (at 0.8 some tables had 10 rows per class, too few to teach).
    """
    confident = method == "confident"
    answers = config.answers or ("both" if confident else "soft")
    threshold = config.threshold if config.threshold is not None else (0.7 if confident else 0.5)
    balance = config.balance or ("equal" if confident else "none")
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
    """seed -> a new, unfitted vertical model of the configured kind (quiet: the loop reports)."""
    name = config.vertical or default_vertical(dataset)
    quiet = {"progress": False} if issubclass(MODELS[name], TorchModel) else {}
    options = {**quiet, **config.vertical_options}

    def factory(seed: int) -> VerticalModel:
        return make_model(name, dataset.schema, seed=seed, **options)

    return factory


def fit_vertical(dataset: Dataset, X: pd.DataFrame, targets: np.ndarray,
                 validation: tuple[pd.DataFrame, np.ndarray], config: ServalConfig) -> VerticalModel:
    """Train the vertical model on (noisy) targets; rows without a target are left out."""
    known, val_known = ~np.isnan(targets), ~np.isnan(validation[1])
    X_val, y_val = validation
    return fit_noisy(config.method or default_method(dataset), vertical_factory(dataset, config),
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
    per_epoch = math.ceil(len(examples) / config.batch_size)
    sft = SFTConfig(output_dir=output_dir, method="lora", lora_r=config.lora_r, lora_alpha=config.lora_alpha,
                    learning_rate=config.learning_rate, epochs=config.epochs, batch_size=config.batch_size,
                    cutoff=config.cutoff, seed=config.seed, save_steps=per_epoch,
                    save_total_limit=config.epochs, progress=config.progress)
    scores = [judge(model)] if judge is not None else []  # before the adapter is attached
    result = train_sft(model, tokenizer, examples, sft, resume=True)
    epoch = config.epochs
    if judge is not None:
        ends = checkpoint.checkpoints(output_dir)  # one per epoch, the last is the model in hand
        for end in ends:
            checkpoint.load(end, result.model)
            scores.append(judge(result.model))
        epoch = int(np.argmax(scores))  # the first of equal scores: the shorter tuning
        if epoch == 0:
            return result.model.unload(), result.final_loss, 0, scores
        checkpoint.load(ends[epoch - 1], result.model)
    return result.model.merge_and_unload(), result.final_loss, epoch, scores


def _agreement_judge(tokenizer: Any, texts: list[str], p_vertical: np.ndarray, dataset: Dataset,
                     config: ServalConfig, cache: Path) -> Callable[[torch.nn.Module], float]:
    """model -> how alike it ranks the rows as the vertical model (Spearman; no gold label)."""
    def judge(model: torch.nn.Module) -> float:
        annotator = LocalAnnotator(model, tokenizer, mode=config.mode, cache=cache,  # type: ignore[arg-type]
                                   progress=False)
        p_llm, _ = annotate(annotator, texts, dataset)
        known = ~np.isnan(p_llm)
        value = metrics.agreement(p_llm[known], p_vertical[known])["rank_correlation"]
        return -1.0 if np.isnan(value) else value  # a constant answer agrees with nothing

    return judge


def _evaluate(dataset: Dataset, p_test: np.ndarray) -> tuple[float, float]:
    """AUC and accuracy on the test split: the only place the loop reads gold labels."""
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


# Settings that change no result: a run may resume with other values (more iterations add to it).
_BOOKKEEPING = ("iterations", "progress")


def _claim(folder: Path, config: ServalConfig, llm: str) -> None:
    """Mark `folder` as this config's and this LLM's; refuse to resume a run made with others
    (its finished iterations would be mixed into this one's table)."""
    mine = {"llm": llm, **{k: v for k, v in asdict(config).items() if k not in _BOOKKEEPING}}
    mine = json.loads(json.dumps(mine, default=str))  # as it reads back (tuples become lists)
    path = folder / "run.json"
    fix = "delete the folder to start over, or pass another out_dir (--out)."
    if not path.is_file():
        if any(folder.glob("iteration_*")):
            raise ValueError(f"{folder} holds a SERVAL run that recorded no settings "
                             f"(an older labkit): {fix}")
        path.write_text(json.dumps(mine, indent=2))
        return
    saved = json.loads(path.read_text())
    changed = sorted(k for k in mine.keys() | saved.keys() if saved.get(k) != mine.get(k))
    if changed:
        raise ValueError(f"{folder} holds a SERVAL run with other settings ({', '.join(changed)}): {fix}")


def run(task: str | Dataset, llm: str | Path | None = None, config: ServalConfig | None = None,
        out_dir: str | Path = "runs/serval", log: Callable[[str], None] = print) -> ServalResult:
    """Run the SERVAL loop on one task and return its records (see the module docstring).

    llm: a model folder or hub id (None: the embedded pocket LLM).
    """
    config = config or ServalConfig()
    dataset = load(task, seed=config.seed) if isinstance(task, str) else task
    name = dataset.schema.name
    folder = Path(out_dir) / name
    folder.mkdir(parents=True, exist_ok=True)
    cache = folder / "answers.sqlite"

    rows = _train_rows(dataset, config)
    X_train = dataset.features("train").iloc[rows].reset_index(drop=True)
    X_val, X_test = dataset.features("val"), dataset.features("test")
    texts = {"train": _texts(dataset, "train", config, rows), "val": _texts(dataset, "val", config),
             "test": _texts(dataset, "test", config)}

    model, tokenizer = _load_llm(llm)
    _claim(folder, config, model_fingerprint(model, tokenizer))
    records: list[IterationRecord] = []
    for it in range(1, config.iterations + 1):
        done = folder / f"iteration_{it}"
        if (done / "record.json").is_file():
            records.append(IterationRecord(**json.loads((done / "record.json").read_text())))
            model, tokenizer = _load_llm(done / "llm")
            log(f"{name}: iteration {it} already done, loaded from {done}")
            continue
        seconds: dict[str, float] = {}
        annotator = LocalAnnotator(model, tokenizer, mode=config.mode, cache=cache,  # type: ignore[arg-type]
                                   progress=config.progress)
        start = time.perf_counter()
        p_train, missing = annotate(annotator, texts["train"], dataset)
        p_val, missing_val = annotate(annotator, texts["val"], dataset)
        p_test, _ = annotate(annotator, texts["test"], dataset)
        seconds["annotate"] = time.perf_counter() - start
        hard = default_hard_labels(dataset, p_train) if config.hard_labels is None else config.hard_labels
        targets = np.round(p_train) if hard else p_train
        val_targets = np.round(p_val) if hard else p_val

        start = time.perf_counter()
        vertical = fit_vertical(dataset, X_train, targets, (X_val, val_targets), config)
        p_vertical_train = vertical.predict_proba(X_train)
        p_vertical_val = vertical.predict_proba(X_val)
        p_vertical_test = vertical.predict_proba(X_test)
        seconds["vertical"] = time.perf_counter() - start

        start = time.perf_counter()
        answers, threshold, balance = backtune_settings(config.method or default_method(dataset), config)
        examples, selection = backtune_examples(texts["train"], p_vertical_train, dataset.schema.task,
                                                answers=answers, threshold=threshold,
                                                balance=balance,  # type: ignore[arg-type]
                                                max_examples=config.max_backtune_examples, seed=config.seed)
        judge = _agreement_judge(tokenizer, texts["val"], p_vertical_val, dataset, config, cache)
        model, loss, epoch, scores = backtune(model, tokenizer, examples, config, folder / f"sft_{it}",
                                              judge if config.choose_epoch else None)
        seconds["backtune"] = time.perf_counter() - start

        llm_auc, llm_acc = _evaluate(dataset, p_test)
        vertical_auc, vertical_acc = _evaluate(dataset, p_vertical_test)
        known = ~np.isnan(p_test)
        agreement = float(np.mean((p_test[known] >= 0.5) == (p_vertical_test[known] >= 0.5)))
        record = IterationRecord(
            iteration=it, llm_auc=llm_auc, llm_accuracy=llm_acc, vertical_auc=vertical_auc,
            vertical_accuracy=vertical_acc, agreement=agreement, annotated=len(p_train) + len(p_val),
            missing_annotations=missing + missing_val, hard_labels=hard,
            selected={str(k): v for k, v in selection.counts.items()},
            backtune_examples=len(examples), backtune_loss=loss,
            backtune_epoch=epoch, backtune_agreement=[round(x, 4) for x in scores],
            seconds={k: round(v, 1) for k, v in seconds.items()})
        done.mkdir(parents=True, exist_ok=True)
        np.savez(done / "test_predictions.npz", llm=p_test, vertical=p_vertical_test)
        model.save_pretrained(done / "llm")
        tokenizer.save_pretrained(done / "llm")
        (done / "record.json").write_text(json.dumps(asdict(record), indent=2))
        shutil.rmtree(folder / f"sft_{it}", ignore_errors=True)  # its weights are merged and saved
        records.append(record)
        log(f"{name}: iteration {it}: LLM AUC {llm_auc:.3f}, vertical AUC {vertical_auc:.3f}, "
            f"agreement {agreement:.2f}, {record.backtune_examples} back-tuning examples")

    final = LocalAnnotator(model, tokenizer, mode=config.mode, cache=cache,  # type: ignore[arg-type]
                           progress=config.progress)
    llm_final_auc, llm_final_acc = _evaluate(dataset, annotate(final, texts["test"], dataset)[0])
    supervised_auc, supervised_acc = supervised_reference(dataset, config)
    result = ServalResult(name, asdict(config), records, llm_final_auc, llm_final_acc,
                          supervised_auc, supervised_acc)
    (folder / "result.json").write_text(json.dumps(result.to_json(), indent=2))
    return result


def results_table(results: list[ServalResult]) -> pd.DataFrame:
    """task | LLM zero-shot | LLM after SERVAL | vertical (SERVAL) | vertical (supervised) | %."""
    table = pd.DataFrame([r.row for r in results]).set_index("task")
    table.loc["mean"] = table.mean(numeric_only=True).round(3)
    return table


def summary(table: pd.DataFrame) -> str:
    """The results table in three figures (the acceptance of the kit's main job):
    how many tasks' LLM ends above its zero-shot AUC, the share of the LLM's mean gap to the
    supervised vertical model that the loop closed (mean gain / mean gap, over the tasks), and the
    label-free vertical model's mean percentage of the supervised AUC."""
    rows = table.drop(index="mean", errors="ignore")
    gain = rows["LLM after SERVAL"] - rows["LLM zero-shot"]
    gap = rows["vertical (supervised)"] - rows["LLM zero-shot"]
    closed = gain.mean() / gap.mean() if gap.mean() > 0 else float("nan")
    return (f"LLM above its zero-shot AUC on {int((gain > 0).sum())} of {len(rows)} tasks; "
            f"it closed {100 * closed:.0f}% of its mean gap to the supervised vertical model "
            f"(mean gain {gain.mean():+.3f}, mean gap {gap.mean():.3f}); "
            f"the label-free vertical model reached {rows['% of supervised AUC'].mean():.1f}% "
            "of the supervised AUC on average.")


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


def main(argv: list[str] | None = None) -> int:
    """`labkit serval`: the loop over the five SERVAL tables and the neoplasm text task."""
    parser = argparse.ArgumentParser(prog="labkit serval", description=main.__doc__)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--llm", default=None, help="model folder or hub id (default: the pocket LLM)")
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/serval", help="output folder (resumes what is there)")
    parser.add_argument("--ablation", default="full", choices=ABLATIONS)
    parser.add_argument("--fast", action="store_true", help="a small, quick run (CI, smoke tests)")
    args = parser.parse_args(argv)
    config = ServalConfig(iterations=args.iterations, seed=args.seed).ablation(args.ablation)
    if args.fast:
        config = replace(config, max_train_rows=120, max_backtune_examples=64, epochs=1)
    out = Path(args.out)
    results = [run(task, args.llm, config, out) for task in args.tasks]
    table = results_table(results)
    print(table.to_string())
    print(summary(table))
    table.to_csv(out / "results.csv")
    (out / "results.json").write_text(json.dumps([r.to_json() for r in results], indent=2))
    plot_curves(results).savefig(out / "serval_curves.png", dpi=120)
    print(f"\nwrote {out / 'results.json'}, {out / 'results.csv'} and {out / 'serval_curves.png'}")
    return 0
