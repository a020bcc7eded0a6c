"""Config dataclasses: each field documented once, checked on creation, parsed from flags or YAML.

A config is a dataclass whose fields are declared with `option` (LlamaFactory writes the same
thing as `field(default=..., metadata={"help": ...})`):

    @dataclass
    class SFTConfig:
        lora_rank: int = option(8, "the rank r of the LoRA update B @ A")
        progress: bool = option(True, "show a progress bar", bookkeeping=True)

        def __post_init__(self) -> None:   # every config checks itself when it is made
            require(self.lora_rank >= 1, self, "lora_rank", "it must be at least 1")

The same declaration gives the command line (`add_arguments`: one flag per field, named as the
field, `--lora_rank 8` or `--lora-rank 8`, with its help and default; Literal fields offer their
choices; booleans take `--flag` / `--no-flag`) and the YAML file (`--config FILE`: the file sets
values, flags override them, as with `llamafactory-cli train config.yaml`). `settings(config)`
lists the fields that decide a result, as a run folder records them (labkit.runs).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

T = TypeVar("T")
SCALARS: dict[Any, Callable[[str], Any]] = {int: int, float: float, str: str, Path: Path}


def option(default: Any = dataclasses.MISSING, help: str = "", *,  # `help`: argparse's word
           factory: Callable[[], Any] | None = None, bookkeeping: bool = False,
           cli: bool = True) -> Any:
    """A config field with its help text.

    bookkeeping: the field changes no result (a progress bar, where checkpoints go, how long a
    run goes on), so a run folder may be resumed with another value. cli: offered as a flag
    (False for values a command line cannot spell, such as nested configs).
    """
    if not help:
        raise ValueError("every config field needs its help text")
    metadata = {"help": help, "bookkeeping": bookkeeping, "cli": cli}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def require(condition: bool, config: object, name: str, fix: str) -> None:
    """Raise ValueError naming the config, the field, its value and `fix` unless `condition`."""
    if not condition:
        value = getattr(config, name)
        raise ValueError(f"{type(config).__name__}.{name}={value!r}: {fix}.")


def require_choice(config: object, name: str, choices: Iterable[Any]) -> None:
    """A field whose value must be one of `choices` (checked at run time too, not only by mypy)."""
    options = tuple(choices)
    require(getattr(config, name) in options, config, name, f"choose one of {options}")


def settings(config: object) -> dict[str, Any]:
    """The fields that decide a run's results (bookkeeping fields left out), as JSON values."""
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)  # type: ignore[arg-type]
              if not f.metadata.get("bookkeeping", False)}
    return json.loads(json.dumps(values, default=_plain))


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)


# --- the command line ------------------------------------------------------------------------------


def _optional(kind: Any) -> tuple[Any, bool]:
    """(X, True) for `X | None`, else (kind, False)."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return rest[0], True
    return kind, False


def _maybe_none(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        return None if text.lower() == "none" else convert(text)

    parse.__name__ = getattr(convert, "__name__", "value")  # argparse names it in its errors
    return parse


def flag_options(name: str, kind: Any, default: Any) -> dict[str, Any]:
    """argparse keyword arguments for one field of type `kind`."""
    inner, optional = _optional(kind)
    origin = typing.get_origin(inner)
    if inner is bool:
        return {"action": argparse.BooleanOptionalAction}
    if origin is Literal:
        values = typing.get_args(inner)
        convert = type(values[0])
        return {"type": _maybe_none(convert) if optional else convert,
                "choices": (*values, None) if optional else values}
    if origin is list and typing.get_args(inner)[0] in SCALARS:
        return {"type": SCALARS[typing.get_args(inner)[0]], "nargs": "+"}
    if origin is dict:
        return {"type": json.loads, "metavar": "JSON"}
    if inner in SCALARS:
        return {"type": _maybe_none(SCALARS[inner]) if optional else SCALARS[inner]}
    raise TypeError(f"config field {name!r}: no command-line form for type {kind!r}; "
                    "declare it with option(..., cli=False)")


def add_arguments(parser: argparse.ArgumentParser, config_type: type,
                  skip: Sequence[str] = ()) -> None:
    """One flag per field of `config_type` (see the module docstring), in a group of its own."""
    group = parser.add_argument_group(config_type.__name__, (config_type.__doc__ or "").split("\n")[0])
    hints = typing.get_type_hints(config_type)
    for f in dataclasses.fields(config_type):
        if not f.metadata.get("cli", True) or f.name in skip:
            continue
        default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        names = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
        shown = f" (default: {default})" if not isinstance(default, bool) or default else ""
        group.add_argument(*names, dest=f.name, default=default,
                           help=f.metadata.get("help", "") + shown,
                           **flag_options(f.name, hints[f.name], default))


def from_arguments(config_type: type[T], namespace: argparse.Namespace) -> T:
    """The config built from the parsed flags (fields without a flag keep their defaults)."""
    values = {f.name: getattr(namespace, f.name) for f in dataclasses.fields(config_type)  # type: ignore[arg-type]
              if hasattr(namespace, f.name)}
    return config_type(**values)


def add_config_file(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument("--config", type=Path, default=None, metavar="YAML",
                        help="a YAML file of settings (field: value); flags given here override it")


def parse(parser: argparse.ArgumentParser, argv: Sequence[str],
          presets: Mapping[str, Mapping[str, Any]] | None = None) -> argparse.Namespace:
    """Parse `argv`. Values come, strongest first, from the flags given, from a preset named by a
    boolean flag that is set (presets={"fast": {...}}), from `--config FILE`, from the defaults.
    A preset is a flag of the command line, not a setting: a YAML file that names one is refused."""
    first = parser.parse_args(argv)
    defaults: dict[str, Any] = {}
    path = getattr(first, "config", None)
    if path is not None:
        known = {a.dest for a in parser._actions} - set(presets or {})
        defaults |= read_yaml(path, known=known, presets=set(presets or {}))
    for flag, values in (presets or {}).items():
        if getattr(first, flag, False):
            defaults |= values
    if not defaults:
        return first
    parser.set_defaults(**defaults)
    return parser.parse_args(argv)


def read_yaml(path: Path, known: Iterable[str], presets: Iterable[str] = ()) -> dict[str, Any]:
    """A YAML mapping of settings, checked against the names the command knows."""
    try:
        values = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise SystemExit(f"{path}: cannot read the settings ({err})") from err
    if not isinstance(values, dict):
        raise SystemExit(f"{path}: expected a mapping of settings (name: value), got "
                         f"{type(values).__name__}")
    names = set(known) - {"help", "config"}
    flags = sorted(set(values) & set(presets))
    if flags:
        raise SystemExit(f"{path}: {flags} are command-line presets, not settings; pass "
                         + " ".join(f"--{f}" for f in flags) + " instead")
    unknown = sorted(set(values) - names)
    if unknown:
        raise SystemExit(f"{path}: unknown setting(s) {unknown}; known: {sorted(names)}")
    return values


def write_yaml(config: object, path: Path, header: str = "") -> Path:
    """The config's settings (settings(config): bookkeeping left out) as a YAML file that
    `--config FILE` reads back; `header` becomes its leading comment."""
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    Path(path).write_text(comment + yaml.safe_dump(settings(config), sort_keys=False), encoding="utf-8")
    return Path(path)
