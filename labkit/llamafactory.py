"""The bridge to LlamaFactory: a kit fine-tuning run written out as a LlamaFactory training job.

    from labkit.llamafactory import export_llamafactory
    job = export_llamafactory(SFTConfig(max_steps=64), pairs, "pocket", "export")
    job.yaml           # export/kit_sft.yaml: LlamaFactory's own keys (v0 schema, 0.9.5)
    job.dataset_info   # export/data/dataset_info.json: the entry that names the data's columns
    job.data           # export/data/kit_sft.json: the examples in alpaca format
    job.command        # "llamafactory-cli train export/kit_sft.yaml", run in LlamaFactory's environment

Why: the kit trains on one machine; a student who outgrows it runs the same job in LlamaFactory,
which brings DeepSpeed and FSDP for many GPUs. LlamaFactory refuses a key it does not know, so the
file holds its keys only. Every SFTConfig field is either written under LlamaFactory's name
(FIELDS) or named in the file's header as kit-only (KIT_ONLY); a field in neither is refused, so
whoever adds one to SFTConfig decides where it goes (tests/test_llamafactory.py checks it).

The template: the kit renders every example with the tokenizer's own chat template (labkit.chat).
Without `template`, the file names none and LlamaFactory parses the same Jinja template from the
tokenizer; docs/llamafactory.md records that both then train on identical token ids, and the
measured loss of the round trip. The kit cannot import LlamaFactory (their pins conflict), so
nothing here does.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from labkit import hardware, runs
from labkit.loader import POCKET_NAMES, load_tokenizer
from labkit.paths import POCKET_LLM
from labkit.train.data import as_conversation, as_pair, encode, weight_of
from labkit.train.sft import SFTConfig

logger = logging.getLogger(__name__)

DATA_FOLDER = "data"  # LlamaFactory's dataset_dir, inside the export folder


@dataclass(frozen=True)
class LlamaFactoryJob:
    """The files an export wrote."""

    yaml: Path
    dataset_info: Path
    data: Path

    @property
    def command(self) -> str:
        return f"llamafactory-cli train {self.yaml}"

    @property
    def paths(self) -> tuple[Path, Path, Path]:
        return self.yaml, self.dataset_info, self.data


@dataclass
class _Export:
    """What the field writers need besides the config, and the notes they leave for the header."""

    config: SFTConfig
    examples: int
    out_dir: Path
    notes: list[str] = dataclasses.field(default_factory=list)

    def get(self, name: str) -> Any:
        return getattr(self.config, name)


Writer = Callable[[_Export], dict[str, Any]]


def _same(name: str, when: Callable[[_Export], bool] = lambda _: True) -> Writer:
    """The field under its own name (LlamaFactory's), written only `when` it is in use."""
    def write(job: _Export) -> dict[str, Any]:
        if not when(job):
            return {}
        return {name: job.get(name)}
    return write


def _lora(job: _Export) -> bool:
    return bool(job.get("finetuning_type") == "lora")


def _freeze(job: _Export) -> bool:
    return job.get("finetuning_type") == "freeze"


def _galore(job: _Export) -> bool:
    return bool(job.get("use_galore"))


def _quantized(job: _Export) -> bool:
    return job.get("quantization_bit") is not None


def _finetuning_type(job: _Export) -> dict[str, Any]:
    kind = job.get("finetuning_type")
    if kind is None:
        raise ValueError("SFTConfig.finetuning_type=None trains a model prepared by hand, which "
                         "LlamaFactory cannot rebuild from a file: set finetuning_type to 'lora', "
                         "'freeze' or 'full' before exporting.")
    return {"finetuning_type": kind}


def _lora_target(job: _Export) -> dict[str, Any]:
    if not _lora(job):
        return {}
    target = job.get("lora_target")
    return {"lora_target": "all" if target in ("all", "all-linear") else target}


def _loraplus(job: _Export) -> dict[str, Any]:
    ratio = job.get("loraplus_lr_ratio")
    return {} if ratio is None or not _lora(job) else {"loraplus_lr_ratio": ratio}


def _quantization_bit(job: _Export) -> dict[str, Any]:
    if not _quantized(job):
        return {}
    return {"quantization_method": "bnb", "quantization_bit": job.get("quantization_bit")}


def _precision(job: _Export) -> dict[str, Any]:
    bf16 = job.get("bf16")
    if bf16 is not None:
        return {"bf16": bool(bf16), "fp16": False}
    # None is the kit's rule, which depends on the machine: resolved on this one (CPU: fp32).
    rule = hardware.trainer_precision()
    precision = "bf16" if rule["bf16"] else "fp16" if rule["fp16"] else "fp32"
    job.notes.append(f"bf16 None (the kit's rule) -> {precision} on the machine that exported; "
                     "on GPUs set bf16: true")
    return {"bf16": rule["bf16"], "fp16": rule["fp16"]}


def _gradient_checkpointing(job: _Export) -> dict[str, Any]:
    # LlamaFactory turns gradient checkpointing on unless told not to; the kit leaves it off.
    return {"disable_gradient_checkpointing": not job.get("gradient_checkpointing")}


def _warmup(job: _Export) -> dict[str, Any]:
    # transformers 5 dropped warmup_ratio (5.24 has none); warmup_steps takes an exact count.
    ratio = job.get("warmup_ratio")
    if job.get("packing") and ratio:
        # the step count depends on how many rows the examples pack into, which LlamaFactory decides
        job.notes.append(f"warmup_ratio {ratio} -> warmup_steps: {ratio} (below 1 it is a ratio)")
        return {"warmup_steps": ratio}
    total = job.config.total_steps(job.examples)
    steps = int(ratio * total)  # as train_sft rounds it
    if ratio:
        job.notes.append(f"warmup_ratio {ratio} -> warmup_steps: {steps} (of the kit's {total} steps on "
                         f"one device; on more, write warmup_steps: {ratio}: below 1 it is a ratio)")
    return {"warmup_steps": steps}


def _max_steps(job: _Export) -> dict[str, Any]:
    steps = job.get("max_steps")
    return {} if steps is None else {"max_steps": steps}


def _group_by_length(job: _Export) -> dict[str, Any]:
    # LlamaFactory 0.9.5 refuses group_by_length (transformers 5 renamed it).
    if not job.get("group_by_length"):
        return {}
    job.notes.append("group_by_length true -> train_sampling_strategy: group_by_length "
                     "(HF's length-grouped sampler: same idea, another batch order)")
    return {"train_sampling_strategy": "group_by_length"}


def _packing(job: _Export) -> dict[str, Any]:
    # the kit's packing keeps examples apart, which LlamaFactory calls neat packing
    return {"packing": True, "neat_packing": True} if job.get("packing") else {}


def _system(job: _Export) -> dict[str, Any]:
    if job.get("system"):
        job.notes.append("system -> the 'system' column of the data file")
    return {}  # written into the data (see _rows)


def _save_steps(job: _Export) -> dict[str, Any]:
    steps = job.get("save_steps")
    if steps > 0:
        return {"save_steps": steps}
    job.notes.append("save_steps 0 -> save_strategy: 'no' (LlamaFactory still saves the model at the end)")
    return {"save_strategy": "no"}


def _save_total_limit(job: _Export) -> dict[str, Any]:
    limit = job.get("save_total_limit")
    # 0 (keep all) is LlamaFactory's default; without checkpoints there is nothing to limit
    return {"save_total_limit": limit} if limit and job.get("save_steps") > 0 else {}


def _progress(job: _Export) -> dict[str, Any]:
    return {} if job.get("progress") else {"disable_tqdm": True}


def _output_dir(job: _Export) -> dict[str, Any]:
    # A sub-folder: LlamaFactory would resume from the kit's own checkpoint-N folders.
    kit = job.get("output_dir")
    folder = Path(kit) / "llamafactory" if kit is not None else job.out_dir / "saves"
    return {"output_dir": str(folder.resolve())}


# SFTConfig field -> what it becomes in the YAML. Fields that only matter with another setting
# (LoRA's with finetuning_type lora, ...) are written only then.
FIELDS: dict[str, Writer] = {
    "output_dir": _output_dir,
    "finetuning_type": _finetuning_type,
    "lora_rank": _same("lora_rank", _lora),
    "lora_alpha": _same("lora_alpha", _lora),
    "lora_dropout": _same("lora_dropout", _lora),
    "lora_target": _lora_target,
    "use_rslora": _same("use_rslora", _lora),
    "use_dora": _same("use_dora", _lora),
    "pissa_init": _same("pissa_init", _lora),
    "pissa_iter": _same("pissa_iter", lambda job: bool(job.get("pissa_init"))),
    "loraplus_lr_ratio": _loraplus,
    "freeze_trainable_layers": _same("freeze_trainable_layers", _freeze),
    "freeze_trainable_modules": _same("freeze_trainable_modules", _freeze),
    "freeze_extra_modules": _same("freeze_extra_modules",
                                  lambda job: _freeze(job) and job.get("freeze_extra_modules") is not None),
    "use_galore": _same("use_galore", _galore),
    "galore_target": _same("galore_target", _galore),
    "galore_rank": _same("galore_rank", _galore),
    "galore_update_interval": _same("galore_update_interval", _galore),
    "galore_scale": _same("galore_scale", _galore),
    "quantization_bit": _quantization_bit,
    "quantization_type": _same("quantization_type", _quantized),
    "double_quantization": _same("double_quantization", _quantized),
    "bf16": _precision,
    "gradient_checkpointing": _gradient_checkpointing,
    "learning_rate": _same("learning_rate"),
    "num_train_epochs": _same("num_train_epochs"),
    "max_steps": _max_steps,
    "per_device_train_batch_size": _same("per_device_train_batch_size"),
    "gradient_accumulation_steps": _same("gradient_accumulation_steps"),
    "cutoff_len": _same("cutoff_len"),
    "warmup_ratio": _warmup,
    "lr_scheduler_type": _same("lr_scheduler_type"),
    "weight_decay": _same("weight_decay"),
    "max_grad_norm": _same("max_grad_norm"),
    "seed": _same("seed"),
    "group_by_length": _group_by_length,
    "packing": _packing,
    "train_on_prompt": _same("train_on_prompt"),
    "mask_history": _same("mask_history"),
    "system": _system,
    "save_steps": _save_steps,
    "save_total_limit": _save_total_limit,
    "logging_steps": _same("logging_steps"),
    "progress": _progress,
}

# Fields with no LlamaFactory counterpart: named in the YAML's header, with why.
KIT_ONLY: dict[str, str] = {
    "fast_loss": "the kit's answer-only output head, a faster path to the same loss "
                 "(LlamaFactory always computes the full logits)",
}

# Always written: a supervised run, plain logging, in-process data loading (fine on a laptop too).
FIXED: dict[str, Any] = {
    "stage": "sft",
    "do_train": True,
    "report_to": "none",
    "plot_loss": True,
    "preprocessing_num_workers": 1,
    "dataloader_num_workers": 0,
}

SECTIONS: dict[str, tuple[str, ...]] = {
    "model": ("model_name_or_path", "quantization_method", "quantization_bit", "quantization_type",
              "double_quantization", "disable_gradient_checkpointing"),
    "method": ("stage", "do_train", "finetuning_type", "lora_", "use_rslora", "use_dora", "pissa_",
               "loraplus_", "freeze_", "use_galore", "galore_"),
    "dataset": ("dataset", "dataset_dir", "template", "cutoff_len", "preprocessing_num_workers",
                "dataloader_num_workers"),
    "output": ("output_dir", "logging_steps", "save_", "plot_loss", "report_to", "disable_tqdm"),
}


def _place(key: str) -> tuple[int, int]:
    """(section, position in it) of a key: the order the YAML lists it in."""
    for s, keys in enumerate(SECTIONS.values()):
        for k, name in enumerate(keys):
            if key == name or (name.endswith("_") and key.startswith(name)):
                return s, k
    return len(SECTIONS), 0  # train


def unknown_fields(config_type: type = SFTConfig) -> list[str]:
    """SFTConfig fields the exporter neither writes nor lists as kit-only (must be empty)."""
    return [f.name for f in dataclasses.fields(config_type)
            if f.name not in FIELDS and f.name not in KIT_ONLY]


def llamafactory_settings(config: SFTConfig, examples: int, model_name_or_path: str,
                          out_dir: Path, *, dataset_name: str = "kit_sft",
                          template: str | None = None) -> tuple[dict[str, Any], list[str]]:
    """The YAML's settings (LlamaFactory key -> value) and the notes for its header."""
    unknown = unknown_fields(type(config))
    if unknown:
        raise ValueError(f"SFTConfig field(s) {unknown} are unknown to the LlamaFactory export: add "
                         "each to labkit.llamafactory.FIELDS (its LlamaFactory key) or KIT_ONLY (why "
                         "it has none).")
    job = _Export(config, examples, out_dir)
    data_dir = str((out_dir / DATA_FOLDER).resolve())
    settings: dict[str, Any] = {"model_name_or_path": model_name_or_path, **FIXED,
                                "dataset": dataset_name, "dataset_dir": data_dir}
    if template is not None:
        settings["template"] = template
    for write in FIELDS.values():
        settings.update(write(job))
    return settings, job.notes


def _model_path(model_name_or_path: str | Path | None) -> str:
    """A local folder as an absolute path (the pocket LLM for None), a hub id as it is."""
    if model_name_or_path is None or str(model_name_or_path) in POCKET_NAMES:
        return str(POCKET_LLM.resolve())
    path = Path(model_name_or_path).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if path.is_absolute() or str(model_name_or_path).startswith((".", "~")):
        raise FileNotFoundError(f"model folder {path} does not exist: point at a folder written by "
                                "save_pretrained(), or give a hub id such as 'Qwen/Qwen2.5-0.5B-Instruct'.")
    return str(model_name_or_path)  # a hub id


def _tokenizer_check(model: str, examples: Sequence[Any], config: SFTConfig,
                     template: str | None) -> str | None:
    """For a local model: refuse a job LlamaFactory would template otherwise than the kit, and
    the note on examples longer than cutoff_len (None when there are none)."""
    if not Path(model).is_dir():
        return None  # a hub id: nothing to read here
    tokenizer = load_tokenizer(model)
    if not getattr(tokenizer, "chat_template", None):
        if template is None:
            raise ValueError(f"{model} has no chat template, so LlamaFactory would fall back to its "
                             "'empty' template: name a LlamaFactory template (template='chatml', ...).")
        return None  # the kit cannot encode without one; LlamaFactory's named template decides
    cut = encode(tokenizer, examples, config.cutoff_len, config.system).truncated
    if cut == 0:
        return None
    logger.warning("%d of %d examples are longer than cutoff_len=%d; LlamaFactory cuts them otherwise "
                   "than the kit", cut, len(examples), config.cutoff_len)
    return (f"{cut} of {len(examples)} examples are longer than cutoff_len {config.cutoff_len}: the "
            "kit cuts a long prompt at its start, LlamaFactory at its end, so these train on other "
            "tokens; a larger cutoff_len makes them the same")


def _rows(examples: Sequence[Any], system: str | None) -> list[dict[str, Any]]:
    """The examples as alpaca rows; LlamaFactory's converter turns one into the kit's turns."""
    rows = []
    for i, example in enumerate(examples):
        conversation = as_conversation(example, i, system)
        if conversation.weight != 1.0:
            raise ValueError(f"example {i}: weight {conversation.weight} -- LlamaFactory's data "
                             "has no per-example loss weight; export hard answers (weight 1), e.g. "
                             "back-tuning with answers='yes_no' instead of 'soft'.")
        *history, (prompt, answer) = conversation.turns
        # input stays empty: LlamaFactory joins instruction and input with a newline
        row = {"instruction": prompt, "input": "", "output": answer, "history": [list(t) for t in history]}
        rows.append(row | ({"system": conversation.system} if conversation.system else {}))
    if not rows:
        raise ValueError("no examples to export: pass at least one (prompt, answer) pair.")
    return rows


def _dataset_entry(name: str, system: bool) -> dict[str, Any]:
    columns = {"prompt": "instruction", "query": "input", "response": "output", "history": "history"}
    return {"file_name": f"{name}.json", "formatting": "alpaca",
            "columns": columns | ({"system": "system"} if system else {})}


def _comment(text: str) -> str:
    return textwrap.fill(text, 100, initial_indent="#   ", subsequent_indent="#     ")


def _yaml_text(settings: dict[str, Any], notes: list[str], config: SFTConfig) -> str:
    lines = ["# A LlamaFactory (0.9.5, v0 keys) supervised fine-tuning job written by labkit from an",
             "# SFTConfig. Run it where LlamaFactory is installed:  llamafactory-cli train THIS_FILE",
             "# Paths are absolute on the machine that exported; edit them on another one.",
             "# per_device_train_batch_size is per GPU: on N GPUs a step sees N times the kit's batch;",
             "# divide gradient_accumulation_steps or the batch by N to keep it.",
             "# From the kit's fields, where the name or the value changes:"]
    lines += [_comment(note) for note in notes] or ["#   (none)"]
    lines += ["# Kit-only (no LlamaFactory key, not written):"]
    lines += [_comment(f"{name}={getattr(config, name)!r}: {why}") for name, why in KIT_ONLY.items()]
    for s, section in enumerate((*SECTIONS, "train")):
        part = {k: settings[k] for k in sorted(settings, key=_place) if _place(k)[0] == s}
        if part:
            lines += ["", f"### {section}", yaml.safe_dump(part, sort_keys=False, allow_unicode=True,
                                                           width=1000).rstrip()]
    return "\n".join(lines) + "\n"


def _check_name(dataset_name: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", dataset_name):
        raise ValueError(f"dataset_name={dataset_name!r}: use letters, digits, '_', '.' or '-' (it "
                         "names the data file and the dataset_info.json entry).")


def export_llamafactory(config: SFTConfig, examples: Sequence[Any], model_name_or_path: str | Path | None,
                        out_dir: str | Path, *, dataset_name: str = "kit_sft",
                        template: str | None = None) -> LlamaFactoryJob:
    """Write `config` and `examples` as a LlamaFactory job into `out_dir` (see the module docstring).

    examples: what train_sft takes ((prompt, answer) pairs or mappings), every weight 1.
    model_name_or_path: a model folder (None or "pocket": the pocket LLM) or a hub id.
    template: a LlamaFactory template name; None leaves it out, and LlamaFactory parses the
    tokenizer's chat template, as the kit renders it (the model must have one).
    An existing dataset_info.json keeps its other entries.
    """
    _check_name(dataset_name)
    out = Path(out_dir)
    model = _model_path(model_name_or_path)
    rows = _rows(examples, config.system)
    truncation = _tokenizer_check(model, examples, config, template)
    settings, notes = llamafactory_settings(config, len(rows), model, out, dataset_name=dataset_name,
                                            template=template)
    notes += [truncation] if truncation else []
    data_dir = out / DATA_FOLDER
    job = LlamaFactoryJob(out / f"{dataset_name}.yaml", data_dir / "dataset_info.json",
                          data_dir / f"{dataset_name}.json")
    entries = json.loads(job.dataset_info.read_text(encoding="utf-8")) if job.dataset_info.is_file() else {}
    entries[dataset_name] = _dataset_entry(dataset_name, any("system" in row for row in rows))
    runs.atomic_write_text(job.data, json.dumps(rows, ensure_ascii=False, indent=1))
    runs.atomic_write_text(job.dataset_info, json.dumps(entries, ensure_ascii=False, indent=1))
    runs.atomic_write_text(job.yaml, _yaml_text(settings, notes, config))
    logger.debug("wrote %s (%d examples)", out, len(rows))
    return job


def read_examples(path: str | Path) -> list[dict[str, Any]]:
    """(prompt, answer) examples from a JSON Lines file: one {"prompt": ..., "answer": ...} per line
    (an optional "weight" too); an error names the file, the line and the field."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such data file (one JSON object per line, with 'prompt' "
                                "and 'answer').")
    examples = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            examples.append(_example(path, number, line))
    if not examples:
        raise ValueError(f"{path}: no examples (one JSON object per line, with 'prompt' and 'answer').")
    return examples


def _example(path: Path, number: int, line: str) -> dict[str, Any]:
    where = f"{path}, line {number}"
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"{where}: not JSON ({err.msg} at column {err.colno}).") from None
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected an object with 'prompt' and 'answer', got "
                         f"{type(row).__name__}.")
    for field in ("prompt", "answer"):
        if field not in row:
            raise ValueError(f"{where}: field '{field}' is missing (each line needs 'prompt' and 'answer').")
        if not isinstance(row[field], str):
            raise ValueError(f"{where}: field '{field}' must be a string, got {type(row[field]).__name__}.")
    try:
        as_pair(row, number - 1)
        weight_of(row, number - 1)
    except ValueError as err:
        raise ValueError(f"{where}: {str(err).split(': ', 1)[-1]}") from None
    return row
