"""The dataset registry: a `dataset_info.json` as LlamaFactory reads it (data/parser.py).

    {"pairs": {"file_name": "pairs.jsonl", "ranking": true, "formatting": "sharegpt",
               "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"}}}

Each entry names a local file (json, jsonl, csv or parquet, relative to the registry's folder), its
format, whether it holds preference pairs, and the names its columns and role tags have in that file.
The kit reads the same file LlamaFactory does, so one registry serves both. Misspelt keys and
formats are errors, not defaults that quietly read nothing (LlamaFactory's users meet "Invalid role
tag" and "Cannot find valid samples" after every row was skipped).
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from labkit.data.loading import DataError

Formatting = Literal["alpaca", "sharegpt", "openai"]
FORMATTINGS: tuple[str, ...] = ("alpaca", "sharegpt", "openai")
FILE_TYPES = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
HUB_SOURCES = ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name")
REGISTRY = "dataset_info.json"


class RegistryError(DataError):
    """A dataset_info.json entry that cannot be read as LlamaFactory would read it."""


@dataclass(frozen=True)
class Columns:
    """The name each standard column has in the file (LlamaFactory's `columns`); None: not present."""

    prompt: str | None = "instruction"  # alpaca
    query: str | None = "input"  # alpaca: appended to the prompt on a new line
    response: str | None = "output"  # alpaca
    history: str | None = None  # alpaca: earlier [user, assistant] turns
    messages: str = "conversations"  # sharegpt / openai
    system: str | None = None
    chosen: str | None = None  # preference data
    rejected: str | None = None
    kto_tag: str | None = None  # KTO: true (desirable) or false (undesirable)


@dataclass(frozen=True)
class Tags:
    """How a sharegpt file names roles (LlamaFactory's `tags`); openai uses role / content / user ..."""

    role_tag: str = "from"
    content_tag: str = "value"
    user_tag: str = "human"
    assistant_tag: str = "gpt"
    observation_tag: str = "observation"
    function_tag: str = "function_call"
    system_tag: str = "system"


OPENAI_TAGS = Tags("role", "content", "user", "assistant", "tool", "function", "system")


@dataclass(frozen=True)
class DatasetAttr:
    """One registered dataset: where its file is and how to read it."""

    name: str
    file: Path
    formatting: Formatting = "alpaca"
    ranking: bool = False
    columns: Columns = field(default_factory=Columns)
    tags: Tags = field(default_factory=Tags)
    num_samples: int | None = None  # read only the first n rows (LlamaFactory samples n; the kit keeps order)

    @property
    def file_type(self) -> str:
        return FILE_TYPES[self.file.suffix.lower()]


def _where(registry: Path, name: str, key: str | None = None) -> str:
    return f"{registry}, dataset {name!r}" + (f", key {key!r}" if key else "")


def _known(kind: type, values: dict[str, Any], where: str) -> dict[str, Any]:
    allowed = [f.name for f in fields(kind)]
    for key, value in values.items():
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(allowed)}"
            raise RegistryError(f"{where}: unknown key {key!r}; {hint}")
        if value is not None and not isinstance(value, str):
            raise RegistryError(f"{where}, key {key!r}: expected a column name, got {value!r}")
    return values


def parse_entry(name: str, entry: Any, folder: Path, registry: Path) -> DatasetAttr:
    """One entry of a dataset_info.json, checked."""
    if not isinstance(entry, dict):
        raise RegistryError(f"{_where(registry, name)}: expected an object, got {type(entry).__name__}")
    hub = [key for key in HUB_SOURCES if key in entry]
    if hub and "file_name" not in entry:
        raise RegistryError(f"{_where(registry, name, hub[0])}: the kit reads local files only (no network "
                            "at run time); download the data once and register it with \"file_name\"")
    # split, subset and folder select parts of a hub dataset; a local file is read whole
    top = {"file_name", "formatting", "ranking", "columns", "tags", "num_samples", "split", "subset",
           "folder", *HUB_SOURCES}
    unknown = sorted(set(entry) - top)
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(top), n=1)
        raise RegistryError(f"{_where(registry, name, unknown[0])}: unknown key"
                            + (f"; did you mean {close[0]!r}?" if close else ""))
    if not isinstance(entry.get("file_name"), str):
        raise RegistryError(f"{_where(registry, name, 'file_name')}: missing; name the data file, relative "
                            f"to {folder}")
    file = folder / entry["file_name"]
    if file.suffix.lower() not in FILE_TYPES:
        raise RegistryError(f"{_where(registry, name, 'file_name')}: {file.name} is not one of "
                            f"{', '.join(FILE_TYPES)}; convert it or rename it")
    formatting = entry.get("formatting", "alpaca")
    if formatting not in FORMATTINGS:
        raise RegistryError(f"{_where(registry, name, 'formatting')}: {formatting!r} is not one of "
                            f"{FORMATTINGS}")
    ranking = entry.get("ranking", False)
    if not isinstance(ranking, bool):
        raise RegistryError(f"{_where(registry, name, 'ranking')}: expected true or false, got {ranking!r}")
    num_samples = entry.get("num_samples")
    if num_samples is not None and (not isinstance(num_samples, int) or num_samples < 1):
        raise RegistryError(f"{_where(registry, name, 'num_samples')}: expected a positive integer")
    columns = _known(Columns, entry.get("columns", {}), _where(registry, name, "columns"))
    tags = _known(Tags, entry.get("tags", {}), _where(registry, name, "tags"))
    default_columns = Columns(messages="messages") if formatting == "openai" else Columns()
    default_tags = OPENAI_TAGS if formatting == "openai" else Tags()
    return DatasetAttr(name, file, formatting, ranking, replace(default_columns, **columns),
                       replace(default_tags, **tags), num_samples)


def read_registry(dataset_dir: str | Path) -> dict[str, Any]:
    """The entries of `dataset_dir`/dataset_info.json, unchecked: `lookup` checks those it is asked for,
    so that LlamaFactory's own registry, full of hub datasets, still serves its local ones."""
    folder = Path(dataset_dir)
    registry = folder / REGISTRY
    if not registry.is_file():
        raise RegistryError(f"{registry}: not found; a dataset folder holds a {REGISTRY} that names its "
                            "files (labkit.worker.register writes one)")
    try:
        entries = json.loads(registry.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise RegistryError(f"{registry}, line {err.lineno}: not valid JSON ({err.msg})") from None
    if not isinstance(entries, dict):
        raise RegistryError(f"{registry}: expected an object of dataset name -> entry")
    return entries


def lookup(names: str | list[str], dataset_dir: str | Path) -> list[DatasetAttr]:
    """The entries named (a list, or one string of comma-separated names, as LlamaFactory's `dataset`)."""
    wanted = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
    registry = read_registry(dataset_dir)
    out = []
    for name in wanted:
        if name not in registry:
            hint = (" It looks like a file: register it in dataset_info.json and pass its name."
                    if Path(name).suffix in FILE_TYPES else "")
            raise RegistryError(f"{Path(dataset_dir) / REGISTRY}: no dataset {name!r}; registered: "
                                f"{', '.join(sorted(registry)) or 'none'}.{hint}")
        out.append(parse_entry(name, registry[name], Path(dataset_dir), Path(dataset_dir) / REGISTRY))
    return out


def register(dataset_dir: str | Path, name: str, file_name: str, *, formatting: Formatting = "alpaca",
             ranking: bool = False, columns: dict[str, str] | None = None,
             tags: dict[str, str] | None = None) -> DatasetAttr:
    """Add (or replace) one entry of `dataset_dir`/dataset_info.json, checked as it will be read."""
    folder = Path(dataset_dir)
    registry = folder / REGISTRY
    entries = json.loads(registry.read_text(encoding="utf-8")) if registry.is_file() else {}
    entry: dict[str, Any] = {"file_name": file_name, "formatting": formatting}
    if ranking:
        entry["ranking"] = True
    if columns:
        entry["columns"] = columns
    if tags:
        entry["tags"] = tags
    attr = parse_entry(name, entry, folder, registry)
    entries[name] = entry
    folder.mkdir(parents=True, exist_ok=True)
    registry.write_text(json.dumps(entries, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return attr
