"""`labkit pretrain`: rebuild the pocket LLM from scratch (CPU, fp32); every PretrainConfig field
is a flag, e.g. `labkit pretrain --fast` (a one-minute demo) or `labkit pretrain --seed 1 --out DIR`."""

from __future__ import annotations

import argparse
import logging

from labkit import config
from labkit.paths import POCKET_LLM
from labkit.pocket.pretrain import FAST, PretrainConfig, pretrain

logger = logging.getLogger(__name__)


def parse_args(argv: list[str]) -> PretrainConfig:
    parser = argparse.ArgumentParser(prog="labkit pretrain", description=__doc__)
    parser.add_argument("--fast", action="store_true",
                        help=f"a one-minute demo: {FAST}; the model goes to RUN_DIR/pocket-llm-fast "
                             "unless --out says otherwise")
    config.add_config_file(parser)
    config.add_arguments(parser, PretrainConfig)
    parser.set_defaults(out=None)  # None: the shipped folder, or beside the run for a --fast demo
    args = config.parse(parser, argv, presets={"fast": FAST})
    if args.out is None:
        args.out = args.run_dir / "pocket-llm-fast" if args.fast else POCKET_LLM
    return config.from_arguments(PretrainConfig, args)


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(list(argv or []))
    if settings.out == POCKET_LLM and settings.max_steps is not None:
        logger.warning("note: stopping early overwrites the shipped model in %s; pass --out to write "
                       "elsewhere", POCKET_LLM)
    result = pretrain(settings)
    final = result.history[-1]
    print(f"wrote {settings.out} after {len(result.history)} steps in {result.seconds / 60:.1f} min "
          f"(loss {final['loss']:.3f}, answer loss {final['answer_loss']:.3f})")
    return 0
