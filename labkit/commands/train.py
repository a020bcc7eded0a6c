"""`labkit train`: supervised fine-tuning (SFT) of a model on (prompt, answer) pairs, as a script
or the LabBoard runs it.

    labkit train --data pairs.jsonl --model pocket --out runs/sft --lora_rank 16 --max_steps 100
    labkit train --config kit_sft.yaml --data pairs.jsonl --model pocket --out runs/sft
    labkit train --config kit_sft.yaml --data pairs.jsonl --model pocket --out runs/sft --resume

--data holds one {"prompt": ..., "answer": ...} per line. Every SFTConfig field is a flag, and
--config FILE.yaml sets them from a file (flags override it): the board's Export tab writes such a
file. Checkpoints (the trainable weights, safetensors) go to --out; --resume continues the newest.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from labkit import config
from labkit.llamafactory import read_examples
from labkit.train.sft import SFTConfig, load_for_sft, train_sft


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="labkit train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    command = parser.add_argument_group("the run")
    command.add_argument("--data", type=Path, required=True,
                         help="JSON Lines file of examples: one {\"prompt\": ..., \"answer\": ...} per line")
    command.add_argument("--model", default=None,
                         help="model folder or hub id to fine-tune (default: the pocket LLM)")
    command.add_argument("--out", type=Path, required=True, help="the run's folder: its checkpoints go here")
    command.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    config.add_config_file(command)
    config.add_arguments(parser, SFTConfig, skip=("output_dir",))
    return config.parse(parser, argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(list(argv or []))
    try:
        settings = config.from_arguments(SFTConfig, args)
        settings.output_dir = args.out
        examples = read_examples(args.data)
        model, tokenizer = load_for_sft(args.model, settings)
    except (FileNotFoundError, ValueError, OSError) as err:
        print(f"labkit train: {err}", file=sys.stderr)
        return 2
    result = train_sft(model, tokenizer, examples, settings, resume=args.resume)
    print(result.summary())
    print(f"the trained weights: {result.checkpoint}")
    return 0
