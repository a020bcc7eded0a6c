"""The data worker (LlamaFactory's data/): instruction and preference data from any of its formats.

    from labkit.worker import load_samples, register
    register("data/mine", "pairs", "pairs.jsonl", formatting="sharegpt", ranking=True,
             columns={"messages": "conversations", "chosen": "chosen", "rejected": "rejected"})
    samples, report = load_samples("pairs", "data/mine")

registry.py reads a LlamaFactory dataset_info.json, formats.py aligns alpaca / sharegpt / openai rows
to one Sample, loading.py reads files (json, jsonl, csv, parquet), merges and streams them. Turning
samples into token ids, masks and packed rows is labkit.train.data's work.
"""

from labkit.worker.formats import FormatError, Sample, convert
from labkit.worker.loading import Report, as_iterable_dataset, iter_samples, load_samples, mix, read_rows
from labkit.worker.registry import DatasetAttr, RegistryError, lookup, read_registry, register

__all__ = ["DatasetAttr", "FormatError", "RegistryError", "Report", "Sample", "as_iterable_dataset",
           "convert", "iter_samples", "load_samples", "lookup", "mix", "read_registry", "read_rows",
           "register"]
