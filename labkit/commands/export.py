"""`labkit export llamafactory`: a kit fine-tuning run written as a LlamaFactory job.

    labkit export llamafactory --data pairs.jsonl --model pocket --out export
    labkit export llamafactory --config kit.yaml --data pairs.jsonl --model PATH --out export --lora_rank 16

--data holds one {"prompt": ..., "answer": ...} per line. Every SFTConfig field is a flag, and
--config FILE.yaml sets them from a file (flags override it). Writes export/kit_sft.yaml,
export/data/dataset_info.json and export/data/kit_sft.json; then, where LlamaFactory is
installed: `llamafactory-cli train export/kit_sft.yaml` (docs/llamafactory.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from labkit import config
from labkit.llamafactory import export_llamafactory, read_examples
from labkit.train.sft import SFTConfig

TARGETS = ("llamafactory",)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="labkit export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", choices=TARGETS, help="the framework to write a job for")
    command = parser.add_argument_group("the export")
    command.add_argument("--data", type=Path, required=True,
                         help="JSON Lines file of examples: one {\"prompt\": ..., \"answer\": ...} per line")
    command.add_argument("--model", default=None,
                         help="model folder or hub id the job fine-tunes (default: the pocket LLM)")
    command.add_argument("--out", type=Path, required=True, help="folder to write the job into")
    command.add_argument("--dataset_name", "--dataset-name", default="kit_sft",
                         help="names the YAML, the data file and its dataset_info.json entry")
    command.add_argument("--template", default=None,
                         help="a LlamaFactory template name; default: none, LlamaFactory parses the "
                              "tokenizer's chat template, as the kit renders it")
    config.add_config_file(command)
    config.add_arguments(parser, SFTConfig)
    return config.parse(parser, argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(list(argv or []))
    try:
        settings = config.from_arguments(SFTConfig, args)
        examples = read_examples(args.data)
        job = export_llamafactory(settings, examples, args.model, args.out,
                                  dataset_name=args.dataset_name, template=args.template)
    except (FileNotFoundError, ValueError) as err:
        print(f"labkit export: {err}", file=sys.stderr)
        return 2
    print(f"wrote {', '.join(map(str, job.paths))} ({len(examples)} examples)")
    print(f"run it where LlamaFactory is installed:\n  {job.command}")
    return 0
