"""Repeated experiments for lessons 02 and 03 and benchmarks/noisy_labels.py.

    runs = supervised_runs("pima", "mlp", seeds=range(5))           # one row per seed
    summarize(runs, ["dataset", "model"])                           # AUC / accuracy mean and std
    llm = annotate_rows("pima", annotator)                          # the LLM's P(yes) for every row
    runs = compare_noisy_methods("pima", llm, seeds=range(5))       # zero-shot, hard, methods, supervised
    with_percent_of_supervised(summarize(runs, ["dataset", "method"]))

A seed decides both the train/val/test split (labkit.data) and the model's initialization, so the
spread over seeds includes the luck of the split. The LLM is asked once per record: its answers
are given for every row of the dataset (`annotate_rows`) and each seed's split picks its rows.
Gold labels are read for two things only: the supervised reference and the test scores.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from tqdm.auto import tqdm

from labkit import metrics
from labkit.annotate.base import Annotator
from labkit.data import Dataset, load, to_text
from labkit.data.loading import LABEL, split_indices
from labkit.noisy import NOISY_METHODS, RankingDisagreement, fit_noisy, sides
from labkit.paths import PACKAGE_DIR
from labkit.pocket.knowledge import load_knowledge
from labkit.vertical import default_model, make_model, model_factory

SEEDS: tuple[int, ...] = (0, 1, 2, 3, 4)
# Rows of compare_noisy_methods that are not noisy-label methods.
ZERO_SHOT, HARD_LABELS, SUPERVISED = "llm_zero_shot", "hard_labels", "supervised"


def scores(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Test AUC and accuracy (threshold 0.5) of predicted probabilities against gold labels."""
    return {"auc": metrics.auc(labels, probs), "accuracy": metrics.accuracy(labels, probs)}


def _model_name(dataset: Dataset, model_name: str | None) -> str:
    return model_name or default_model(dataset.schema, "experiments")


def supervised_runs(dataset_name: str, model_name: str | None = None,
                    seeds: Iterable[int] = SEEDS, *, max_train_rows: int | None = None,
                    max_eval_rows: int | None = None, progress: bool = True,
                    **model_options: Any) -> pd.DataFrame:
    """The supervised upper bound: the model trained on gold training labels, validated on gold
    validation labels, scored on the test split; one row per seed.

    max_train_rows / max_eval_rows: random subsets of the training / validation and test rows,
    for fast runs (see `run_data`). model_options go to the model's constructor (e.g. epochs=30).
    """
    rows = []
    name = _model_name(load(dataset_name), model_name)
    for seed in tqdm(list(seeds), desc=f"{dataset_name} {name}", disable=not progress,
                     leave=False):
        data = run_data(dataset_name, seed, max_train_rows, max_eval_rows)
        start = time.perf_counter()
        got = one_run(data, None, SUPERVISED, model_name=model_name, model_options=model_options)
        rows.append({"dataset": dataset_name, "model": name, "seed": seed, **got,
                     "seconds": round(time.perf_counter() - start, 2)})
    return pd.DataFrame(rows)


def supervised_bound(dataset_names: str | Sequence[str], model_names: str | Sequence[str] | None = None,
                     seeds: Iterable[int] = SEEDS, **options: Any) -> pd.DataFrame:
    """Mean and standard deviation over seeds of supervised test AUC and accuracy, one row per
    (dataset, model). model_names None: each dataset's default model (labkit.vertical.DEFAULT_MODELS,
    "experiments"). options: see supervised_runs."""
    names = [dataset_names] if isinstance(dataset_names, str) else list(dataset_names)
    models = [model_names] if isinstance(model_names, str) or model_names is None else model_names
    seed_list = tuple(seeds)
    runs = [supervised_runs(d, m, seed_list, **options) for d in names for m in models]
    return summarize(pd.concat(runs, ignore_index=True), ["dataset", "model"])


def summarize(runs: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """auc_mean, auc_std, accuracy_mean, accuracy_std and n (seeds) per group, in first-seen order.

    The standard deviation is the sample one (ddof=1); with a single seed it is NaN, not 0.
    Runs with a NaN AUC (a method that refused the labels) are left out of the mean and counted
    in a column `failed`, present only when some run failed.
    """
    grouped = runs.groupby(list(by), sort=False)[["auc", "accuracy"]]
    table = grouped.agg(["mean", "std"])
    table.columns = [f"{metric}_{stat}" for metric, stat in table.columns]
    table["n"] = grouped.size()
    failed = runs["auc"].isna().groupby([runs[c] for c in by], sort=False).sum()
    if failed.any():
        table["failed"] = failed
    return table.reset_index()


def with_percent_of_supervised(summary: pd.DataFrame, dataset_column: str = "dataset",
                               method_column: str = "method") -> pd.DataFrame:
    """Add `pct_of_supervised`: each row's mean AUC as a percentage of the supervised mean AUC of
    the same dataset (the row whose method is "supervised")."""
    reference = summary[summary[method_column] == SUPERVISED].set_index(dataset_column)["auc_mean"]
    missing = sorted(set(summary[dataset_column]) - set(reference.index))
    if missing:
        raise ValueError(f"no '{SUPERVISED}' row for {missing}: the percentage needs one per dataset")
    out = summary.copy()
    out["pct_of_supervised"] = 100 * out["auc_mean"] / out[dataset_column].map(reference)
    return out


# ----- the LLM's labels -----
def annotate_rows(dataset_name: str, annotator: Annotator, style: str = "list") -> np.ndarray:
    """The annotator's probability of the positive answer for EVERY row of the dataset, in the
    order of `load(name).frame` (split-independent, so every seed's split can index it).

    With the annotator's cache, asking again costs nothing. Rows without an answer (a verbalized
    reply that did not parse) are set to 0.5, an abstention, and counted in a warning.
    """
    ds = load(dataset_name)
    records = ds.frame[ds.schema.feature_names].to_dict(orient="records")
    texts = [to_text(r, ds.schema, style=style) for r in records]  # type: ignore[arg-type]
    values = annotator.annotate(texts, ds.schema.task)["value"].to_numpy(dtype=np.float64)
    missing = np.isnan(values)
    if missing.any():
        warnings.warn(f"{dataset_name}: {int(missing.sum())} of {len(values)} answers missing; "
                      "set to 0.5", stacklevel=2)
    return np.where(missing, 0.5, values)


def rule_answers(dataset_name: str) -> np.ndarray:
    """The textbook rule's P(positive) for every row of a table (data/knowledge/<task>.yaml,
    ordered like load(name).frame, as annotate_rows): what the pocket LLM is pre-trained to
    imitate, an annotator whose mistakes are systematic (wrong wherever the textbook is)."""
    ds = load(dataset_name)
    if ds.schema.kind != "tabular":
        raise ValueError(f"{dataset_name}: the textbook rules cover tables only; annotate texts "
                         "with an LLM (annotate_rows)")
    rule = load_knowledge(dataset_name)
    records = ds.frame[ds.schema.feature_names].to_dict(orient="records")
    return np.array([rule.risk(r) for r in records], dtype=np.float64)


def with_shuffled_names(dataset: Dataset, seed: int = 0) -> Dataset:
    """A weakened annotator's view of a table: the same rows, labels and split, but the LLM reads
    each numeric value under another numeric feature's name, unit and description (a seeded
    permutation), so its rules meet the wrong measurements: an LLM that knows little about the
    task. The vertical model is unaffected (it reads the columns, not their names). The task is
    renamed <name>_shuffled, so its runs and caches stay apart."""
    numeric = [i for i, f in enumerate(dataset.schema.features) if f.kind == "numeric"]
    if len(numeric) < 2:
        raise ValueError(f"{dataset.schema.name}: {len(numeric)} numeric feature(s), nothing to shuffle; "
                         "pick a table with at least two")
    donors = np.random.default_rng(seed).permutation(numeric)
    features = list(dataset.schema.features)
    for i, j in zip(numeric, donors, strict=True):
        source = dataset.schema.features[j]
        features[i] = replace(features[i], label=source.label, unit=source.unit,
                              description=source.description)
    schema = replace(dataset.schema, features=tuple(features), name=f"{dataset.schema.name}_shuffled")
    return Dataset(schema, dataset.frame, dataset.seed)


def split_of(values: np.ndarray, ds: Dataset, split: str) -> np.ndarray:
    """The entries of a per-row array (ordered like ds.frame) that belong to one split of ds."""
    if len(values) != len(ds.frame):
        raise ValueError(f"{ds.schema.name}: {len(values)} values for {len(ds.frame)} rows; "
                         "pass one value per row of load(name).frame (see annotate_rows)")
    return np.asarray(values)[split_indices(ds.frame[LABEL].to_numpy(), ds.seed)[split]]


# ----- one seed's run -----
@dataclass(frozen=True)
class RunData:
    """One seed's split of a dataset, each split possibly cut to a random subset (fast runs).

    rows[split] are positions within that split of `ds`.
    """

    ds: Dataset
    rows: dict[str, np.ndarray]

    def features(self, split: str) -> pd.DataFrame:
        return self.ds.features(split).iloc[self.rows[split]].reset_index(drop=True)

    def gold(self, split: str) -> np.ndarray:
        """Gold labels: read for the supervised reference and for test scores only."""
        return self.ds.labels(split)[self.rows[split]]

    def llm(self, values: np.ndarray, split: str) -> np.ndarray:
        """The LLM's answers (one per row of the dataset, see annotate_rows) for this split."""
        return split_of(values, self.ds, split)[self.rows[split]]


def run_data(dataset_name: str, seed: int, max_train_rows: int | None = None,
             max_eval_rows: int | None = None) -> RunData:
    """The split of `seed`; with limits, a random subset (drawn by the seed) of at most
    max_train_rows training rows and max_eval_rows validation and test rows each."""
    ds = load(dataset_name, seed=seed)
    rng = np.random.default_rng(seed)
    rows = {}
    for split in ("train", "val", "test"):
        n = len(ds.labels(split))
        limit = max_train_rows if split == "train" else max_eval_rows
        # Rows of a split are sorted by index: draw at random before cutting.
        rows[split] = np.arange(n) if limit is None or limit >= n \
            else np.sort(rng.permutation(n)[:limit])
    return RunData(ds, rows)


def one_run(data: RunData, llm: np.ndarray | None, method: str, *, model_name: str | None = None,
            model_options: dict[str, Any] | None = None,
            method_options: dict[str, dict[str, Any]] | None = None) -> dict[str, float]:
    """Test scores of one method on one seed's data.

    method: ZERO_SHOT (the LLM's own probabilities), HARD_LABELS (the model's standard training
    on the LLM's rounded labels; when every answer is on one side of 0.5, a cut at the estimated
    prevalence, labkit.noisy.sides), SUPERVISED (gold training and validation labels), or a
    labkit.noisy method on the LLM's soft labels, validated on the LLM's labels of the val split.
    method_options: per-method options for fit_noisy, e.g. {"co_teaching": {"forget_rate": 0.2}}.
    """
    y_test, X_test = data.gold("test"), data.features("test")
    options = dict(model_options or {})
    if method == SUPERVISED:
        model = make_model(_model_name(data.ds, model_name), data.ds.schema, quiet=True,
                           skip_torch_options=True, seed=data.ds.seed, **options)
        model.fit(data.features("train"), data.gold("train"),
                  validation=(data.features("val"), data.gold("val")))
        return scores(y_test, model.predict_proba(X_test))
    if llm is None:
        raise ValueError(f"method {method!r} needs the LLM's answers (llm=annotate_rows(...))")
    if method == ZERO_SHOT:
        return scores(y_test, data.llm(llm, "test"))
    targets = data.llm(llm, "train")
    validation: tuple[pd.DataFrame, np.ndarray] | None = (data.features("val"),
                                                          data.llm(llm, "val"))
    extra = (method_options or {}).get(method, {})
    if method == HARD_LABELS:  # SERVAL's baseline: the rounded answers, standard training
        targets, validation, method = sides(targets).astype(float), None, "naive"
    factory = model_factory(model_name, data.ds.schema, purpose="experiments", skip_torch_options=True,
                            **options)
    model = fit_noisy(method, factory, data.features("train"), targets, validation=validation,
                      seed=data.ds.seed, **extra)
    return scores(y_test, model.predict_proba(X_test))


def compare_noisy_methods(dataset_name: str, llm: np.ndarray,
                          methods: Sequence[str] = (ZERO_SHOT, HARD_LABELS, *NOISY_METHODS,
                                                    SUPERVISED),
                          seeds: Iterable[int] = SEEDS, *, model_name: str | None = None,
                          max_train_rows: int | None = None, max_eval_rows: int | None = None,
                          model_options: dict[str, Any] | None = None,
                          method_options: dict[str, dict[str, Any]] | None = None,
                          results: str | Path | None = None, progress: bool = True) -> pd.DataFrame:
    """Every method on every seed: one row (dataset, method, seed, auc, accuracy, seconds) each.

    llm: the LLM's probability for every row of the dataset (annotate_rows). For the limits and
    options see run_data and one_run.
    A method that refuses the labels (a ValueError, e.g. `forward` on answers that look
    uninformative) gets a row with NaN scores and its `error`, and a warning: it shows as NaN in
    `summarize`, not as a missing row. A model refused by fit_noisy's agreement check
    (RankingDisagreement) also gets `refused_auc`, the test AUC it would have scored, for reports.
    results: a JSON-lines file; finished runs are appended as they end and skipped when found
    there with the same `config` (a hash of the LLM's answers, the model and every option), so an
    interrupted comparison resumes, and new answers or options are never mixed with old runs;
    refused runs are tried again.
    """
    name = _model_name(load(dataset_name), model_name)
    config = run_config(llm, name, max_train_rows=max_train_rows, max_eval_rows=max_eval_rows,
                        model_options=model_options, method_options=method_options)
    path = Path(results) if results is not None else None
    done = _read_results(path)
    todo = [(m, s) for s in seeds for m in methods]
    rows = []
    for method, seed in tqdm(todo, desc=dataset_name, disable=not progress):
        key = (dataset_name, method, seed, config)
        if key in done:
            rows.append(done[key])
            continue
        start = time.perf_counter()
        data = run_data(dataset_name, seed, max_train_rows, max_eval_rows)
        try:
            got: dict[str, Any] = one_run(data, llm, method, model_name=model_name,
                                          model_options=model_options,
                                          method_options=method_options)
        except ValueError as err:  # e.g. labels too uninformative for a transition matrix
            warnings.warn(f"{dataset_name}, {method}, seed {seed}: {err}", stacklevel=2)
            got = {"auc": float("nan"), "accuracy": float("nan"), "error": str(err)}
            if isinstance(err, RankingDisagreement):  # for the report: what the refusal prevented
                got["refused_auc"] = scores(data.gold("test"),
                                            err.model.predict_proba(data.features("test")))["auc"]
        row = {"dataset": dataset_name, "method": method, "seed": seed, "model": name, **got,
               "seconds": round(time.perf_counter() - start, 2), "config": config}
        rows.append(row)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as out:
                out.write(json.dumps(row) + "\n")
    return pd.DataFrame(rows)


def run_config(llm: np.ndarray, model_name: str, **options: Any) -> str:
    """A short hash of what decides a run besides dataset, method and seed: the answers, the
    model, the options and the code that trains and scores (`code_fingerprint`)."""
    answers = hashlib.sha256(np.asarray(llm, dtype=np.float64).tobytes()).hexdigest()
    text = json.dumps({"llm": answers, "model": model_name, "code": code_fingerprint(), **options},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@functools.cache
def code_fingerprint() -> str:
    """A hash of the source of labkit.noisy, labkit.vertical and this module: a stored run made
    by other code is not reused (a fixed method must not hide behind its old results)."""
    files = sorted([*(PACKAGE_DIR / "noisy").glob("*.py"), *(PACKAGE_DIR / "vertical").glob("*.py"),
                    PACKAGE_DIR / "experiments.py"])
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:12]


def _read_results(path: Path | None) -> dict[tuple[str, str, int, str], dict[str, Any]]:
    if path is None or not path.is_file():
        return {}
    done = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        try:
            row = json.loads(line)
            if "error" in row:  # a refused run is tried again: the method may have changed since
                continue
            done[(row["dataset"], row["method"], int(row["seed"]), row["config"])] = row
        except (json.JSONDecodeError, KeyError) as err:
            raise ValueError(f"{path}, line {number}: not a result row ({err}); delete the line "
                             "or the file to recompute") from err
    return done


def plot_scores(summary: pd.DataFrame, x: str = "dataset", hue: str = "model",
                metric: str = "auc", ax: Axes | None = None) -> Axes:
    """Grouped bars of `metric`_mean with `metric`_std error bars, from `summarize`'s table;
    returns the axes (new ones unless `ax` is given)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(max(6.0, 1.2 * summary[x].nunique() + 3), 3.5))
    groups, hues = list(dict.fromkeys(summary[x])), list(dict.fromkeys(summary[hue]))
    width = 0.8 / len(hues)
    for k, name in enumerate(hues):
        part = summary[summary[hue] == name].set_index(x).reindex(groups)
        positions = np.arange(len(groups)) + (k - (len(hues) - 1) / 2) * width
        ax.bar(positions, part[f"{metric}_mean"], width, yerr=part[f"{metric}_std"].fillna(0),
               capsize=2, label=str(name))
    ax.set_xticks(np.arange(len(groups)), groups)
    low = float(np.nanmin(summary[f"{metric}_mean"]))
    ax.set_ylim(max(0.0, low - 0.1), 1.0)
    ax.set_ylabel(f"test {metric} (mean, std over seeds)")
    ax.legend(fontsize="small", ncol=min(4, len(hues)), loc="lower right")
    return ax


def plot_memorization(curve: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """The memorization effect: per epoch, accuracy on the kept labels, the share of corrupted
    labels memorized (predicted as their wrong label) and test accuracy, from memorization_curve."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.5))
    lines = {"fit_clean": "training rows with a correct label: fit",
             "memorized": "training rows with a flipped label: memorized",
             "test_accuracy": "test accuracy (clean labels)"}
    for column, label in lines.items():
        if column in curve:
            ax.plot(curve["epoch"], curve[column], label=label)
    ax.set_xlabel("epoch")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize="small", loc="lower right")
    return ax
