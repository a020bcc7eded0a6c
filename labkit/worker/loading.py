"""Reading registered datasets into Samples: files, rows, rejected rows, merging, streaming.

    samples, report = load_samples("alpaca_demo,sharegpt_demo", "data/instruct")
    for sample in iter_samples("big_corpus", folder, report=report): ...   # one row in memory at a time

The kit reads the files itself rather than through `datasets.load_dataset`: that reader types a
JSON column from its first rows and quietly rewrites later rows to fit (an answer `3` among strings
becomes the text "3", an answer `"b"` after it becomes '"b"' with its quotes), and reports a broken
line without its number. Here a row is read as written; a bad row is an error naming the file, the
row and the field, or, with on_error="skip", a line in the report. JSON lines and Parquet files
stream one row (one Parquet batch) at a time; `as_iterable_dataset` hands the stream to `datasets`.

Merging follows LlamaFactory's `mix_strategy`: "concat" (one file after the other),
"interleave_under" (draw each sample's source with `interleave_probs`, stop when one runs out),
"interleave_over" (the same, restarting a finished source until every one has been read whole).
"""

from __future__ import annotations

import csv
import itertools
import json
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from labkit.worker.formats import FormatError, Sample, convert
from labkit.worker.registry import DatasetAttr, RegistryError, lookup

MixStrategy = Literal["concat", "interleave_under", "interleave_over"]
MIX_STRATEGIES: tuple[str, ...] = ("concat", "interleave_under", "interleave_over")
OnError = Literal["raise", "skip"]
PARQUET_BATCH = 1024


@dataclass
class Report:
    """What reading kept and what it rejected (with on_error="skip"), row by row."""

    read: int = 0
    rejected: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"{self.read} samples read, {len(self.rejected)} rows rejected"]
        return "\n".join(lines + [f"  {r}" for r in self.rejected[:10]]
                         + ([f"  ... and {len(self.rejected) - 10} more"] if len(self.rejected) > 10 else []))


def read_rows(path: Path) -> Iterator[tuple[str, Any]]:
    """(where, row) for every row of a json, jsonl, csv or parquet file, in order."""
    if not path.is_file():
        raise RegistryError(f"{path}: file not found; check \"file_name\" in its dataset_info.json")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        yield from _csv_rows(path)
    elif suffix == ".parquet":
        yield from _parquet_rows(path)
    elif _is_json_array(path):
        yield from _json_array_rows(path)
    else:
        yield from _json_lines(path)


def _is_json_array(path: Path) -> bool:
    with path.open(encoding="utf-8") as f:
        while chunk := f.read(256):
            text = chunk.lstrip()
            if text:
                return text.startswith("[")
    return False


def _json_array_rows(path: Path) -> Iterator[tuple[str, Any]]:
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise FormatError(f"{path}, line {err.lineno} column {err.colno}: not valid JSON ({err.msg})"
                          ) from None
    for i, row in enumerate(rows):
        yield f"{path} row {i}", row


def _json_lines(path: Path) -> Iterator[tuple[str, Any]]:
    with path.open(encoding="utf-8") as f:
        row = 0
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path} row {row} (line {number})"
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as err:
                raise FormatError(f"{where}: not valid JSON ({err.msg} at column {err.colno}); a JSON-lines "
                                  "file holds one complete object per line") from None
            row += 1


def _csv_rows(path: Path) -> Iterator[tuple[str, Any]]:
    with path.open(encoding="utf-8", newline="") as f:
        for i, row in enumerate(csv.DictReader(f)):
            # an empty cell is a missing value; history and messages columns hold JSON text
            yield f"{path} row {i}", {k: _cell(v) for k, v in row.items() if k is not None}


def _cell(value: str | None) -> Any:
    if value is None or value == "":
        return None
    if value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _parquet_rows(path: Path) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq  # with datasets; imported here so that JSON users need no pyarrow

    i = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=PARQUET_BATCH):
        for row in batch.to_pylist():
            yield f"{path} row {i}", row
            i += 1


def _samples(attr: DatasetAttr, on_error: OnError, report: Report) -> Iterator[Sample]:
    rows = read_rows(attr.file)
    for where, row in itertools.islice(rows, attr.num_samples):
        try:
            sample = convert(row, attr, f"{where} of {attr.name!r}")
        except FormatError as err:
            if on_error == "raise":
                raise
            report.rejected.append(str(err))
            continue
        report.read += 1
        yield sample


def mix(sources: list[Callable[[], Iterator[Sample]]], strategy: MixStrategy = "concat",
        probabilities: list[float] | None = None, seed: int = 42) -> Iterator[Sample]:
    """Merge sources (each a function that starts it afresh) by LlamaFactory's mix strategy."""
    if strategy not in MIX_STRATEGIES:
        raise ValueError(f"mix_strategy={strategy!r}: use one of {MIX_STRATEGIES}")
    if strategy == "concat":
        if probabilities is not None:
            raise ValueError("interleave_probs is set, but mix_strategy='concat' ignores it; use "
                             "'interleave_under' or 'interleave_over'")
        return itertools.chain.from_iterable(source() for source in sources)
    even = np.full(len(sources), 1 / len(sources))
    weights = even if probabilities is None else np.asarray(probabilities, dtype=float)
    if len(weights) != len(sources) or (weights < 0).any() or not np.isclose(weights.sum(), 1.0):
        raise ValueError(f"interleave_probs={probabilities}: give one probability per dataset "
                         f"({len(sources)}), each >= 0, summing to 1")
    return _interleave(sources, weights, strategy == "interleave_over", np.random.default_rng(seed))


def _interleave(sources: list[Callable[[], Iterator[Sample]]], weights: np.ndarray, oversample: bool,
                rng: np.random.Generator) -> Iterator[Sample]:
    streams = [source() for source in sources]
    finished = np.zeros(len(sources), dtype=bool)
    while True:
        k = int(rng.choice(len(sources), p=weights))
        sample = next(streams[k], None)
        if sample is None:
            finished[k] = True
            if not oversample or finished[weights > 0].all():
                return
            streams[k] = sources[k]()
            sample = next(streams[k], None)
            if sample is None:  # an empty source cannot be oversampled
                return
        yield sample


def iter_samples(names: str | list[str], dataset_dir: str | Path, *, mix_strategy: MixStrategy = "concat",
                 interleave_probs: list[float] | None = None, seed: int = 42, on_error: OnError = "raise",
                 report: Report | None = None) -> Iterator[Sample]:
    """Stream the registered datasets `names` (comma-separated, as LlamaFactory's `dataset`) as Samples."""
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error={on_error!r}: use 'raise' or 'skip'")
    report = report if report is not None else Report()
    attrs = lookup(names, dataset_dir)
    sources = [_source(attr, on_error, report) for attr in attrs]
    return mix(sources, mix_strategy, interleave_probs, seed)


def _source(attr: DatasetAttr, on_error: OnError, report: Report) -> Callable[[], Iterator[Sample]]:
    return lambda: _samples(attr, on_error, report)


def load_samples(names: str | list[str], dataset_dir: str | Path, **options: Any
                 ) -> tuple[list[Sample], Report]:
    """All samples of the registered datasets `names`, and what was read and rejected (warned of)."""
    report = Report()
    samples = list(iter_samples(names, dataset_dir, report=report, **options))
    if report.rejected:
        warnings.warn(f"{len(report.rejected)} rows rejected, first: {report.rejected[0]}", stacklevel=2)
    if not samples:
        raise FormatError(f"no samples in {names!r} ({report}); check the files and their dataset_info.json")
    return samples, report


def as_iterable_dataset(samples: Iterable[Sample] | Callable[[], Iterable[Sample]]) -> Any:
    """A `datasets.IterableDataset` of the samples' fields (history as a list of pairs), for code that
    expects one; a function that starts the stream afresh lets it be iterated more than once."""
    from datasets import IterableDataset

    start = samples if callable(samples) else (lambda: samples)

    def rows() -> Iterator[dict[str, Any]]:
        for sample in start():
            row = asdict(sample)
            row["history"] = [list(turn) for turn in sample.history]
            yield row

    return IterableDataset.from_generator(rows)
