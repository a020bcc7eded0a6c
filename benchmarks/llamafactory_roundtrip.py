"""The LlamaFactory round trip: a kit config, exported by labkit.llamafactory, trains in LlamaFactory's
own CLI to the loss of the kit's own run on the same data and model.

    .venv/bin/python benchmarks/llamafactory_roundtrip.py --peer-root ../peer
    .venv/bin/python benchmarks/llamafactory_roundtrip.py --peer-root ../peer --sampling grouped random
    .venv/bin/python benchmarks/llamafactory_roundtrip.py --peer-root ../peer --max-steps 4   # smoke test

Needs the side-by-side harness of ../shared/peer (see its README.md): LlamaFactory 0.9.5 in a venv of
its own (PEER_ROOT/lf-venv, built by setup_lf_venv.sh: its pins conflict with the kit's) and the
harness's assets (make_assets.py: PEER_ROOT/model, a random-init Llama of 7.36 M parameters with a
ChatML chat template; PEER_ROOT/data/alpaca_synth.json, 512 alpaca examples of 100-181 tokens).

Settings (the harness's): LoRA r8/alpha16/dropout 0 on every linear layer but the head, AdamW lr 1e-4
with linear decay and no warm-up, batch 8, one epoch = 64 steps, seed 42, cutoff 256 (nothing is
cut), fp32, no gradient checkpointing, logging every 8 steps, 2 threads. The kit's examples are the
alpaca rows as LlamaFactory's converter reads them (instruction + "\\n" + input). The export goes
through labkit.llamafactory unchanged and LlamaFactory runs the file as it is written.

Both sides train on the same token ids (docs/llamafactory.md), but each seeds its own LoRA
initialization and batch order, so the losses agree as two seeds of one job would. Reported per
side: the loss logged at the last step (the mean of its last 8 steps), the epoch mean of the step
losses (transformers' train_loss), and (kit - LlamaFactory) / LlamaFactory. It passes when both
differences are within 2%. Loss needs no quiet machine; this script times nothing.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TOLERANCE = 0.02
SAMPLINGS = {"grouped": True, "random": False}  # the kit's group_by_length


def kit_pairs(alpaca: Path) -> list[tuple[str, str]]:
    rows = json.loads(alpaca.read_text(encoding="utf-8"))
    return [(r["instruction"] + ("\n" + r["input"] if r["input"] else ""), r["output"]) for r in rows]


def sft_config(group_by_length: bool, max_steps: int | None) -> Any:
    from labkit.train import SFTConfig

    return SFTConfig(
        finetuning_type="lora", lora_rank=8, lora_alpha=16, lora_dropout=0.0, lora_target="all",
        learning_rate=1e-4, num_train_epochs=1.0, max_steps=max_steps, per_device_train_batch_size=8,
        gradient_accumulation_steps=1, cutoff_len=256, warmup_ratio=0.0, lr_scheduler_type="linear",
        weight_decay=0.0, max_grad_norm=1.0, seed=42, group_by_length=group_by_length, bf16=False,
        gradient_checkpointing=False, logging_steps=min(8, max_steps or 8), progress=False, output_dir=None)


def run_llamafactory(lf_venv: Path, job_yaml: Path, threads: int, log: Path) -> dict[str, Any]:
    """llamafactory-cli train on the exported file, offline; its logged losses and train_loss."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads), "HF_DATASETS_CACHE": tempfile.mkdtemp(prefix="lf-datasets-")}
    with log.open("w") as out:
        code = subprocess.call([str(lf_venv / "bin" / "llamafactory-cli"), "train", str(job_yaml)],
                               stdout=out, stderr=subprocess.STDOUT, env=env)
    if code != 0:
        raise SystemExit(f"llamafactory-cli train {job_yaml} failed ({code}); see {log}")
    import yaml

    output_dir = Path(yaml.safe_load(job_yaml.read_text(encoding="utf-8"))["output_dir"])
    logged = [json.loads(line) for line in (output_dir / "trainer_log.jsonl").read_text().splitlines()]
    results = json.loads((output_dir / "train_results.json").read_text())
    return {"logged": [(e["current_steps"], e["loss"]) for e in logged if "loss" in e],
            "epoch_mean": results["train_loss"]}


def run_kit(model_dir: Path, pairs: list[tuple[str, str]], config: Any, threads: int) -> dict[str, Any]:
    """train_sft on the same model and examples; its logged losses and the mean step loss."""
    import torch

    from labkit import hardware
    from labkit.loader import load_model, load_tokenizer
    from labkit.train import train_sft

    steps: list[float] = []
    with hardware.seeded(None, threads):
        model = load_model(model_dir, attn_implementation="sdpa", dtype=torch.float32)
        result = train_sft(model, load_tokenizer(model_dir), pairs, config,
                           callbacks=[lambda info: steps.append(info.loss)])
    return {"logged": [(h["step"], h["loss"]) for h in result.history],
            "epoch_mean": sum(steps) / len(steps), "truncated": result.truncated}


def compare(kit: dict[str, Any], lf: dict[str, Any]) -> dict[str, Any]:
    (kit_step, kit_last), (lf_step, lf_last) = kit["logged"][-1], lf["logged"][-1]
    if kit_step != lf_step:
        raise SystemExit(f"the runs stopped at different steps: kit {kit_step}, LlamaFactory {lf_step}")
    final = (kit_last - lf_last) / lf_last
    mean = (kit["epoch_mean"] - lf["epoch_mean"]) / lf["epoch_mean"]
    return {"step": kit_step, "kit_final": kit_last, "lf_final": lf_last, "final_diff": final,
            "kit_mean": kit["epoch_mean"], "lf_mean": lf["epoch_mean"], "mean_diff": mean,
            "passed": abs(final) <= TOLERANCE and abs(mean) <= TOLERANCE}


def table(rows: dict[str, dict[str, Any]]) -> str:
    lines = ["| sampling | loss at step N (kit / LF, diff) | epoch mean loss (kit / LF, diff) | within 2% |",
             "|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | step {r['step']}: {r['kit_final']:.4f} / {r['lf_final']:.4f}, "
                     f"{100 * r['final_diff']:+.2f}% | {r['kit_mean']:.4f} / {r['lf_mean']:.4f}, "
                     f"{100 * r['mean_diff']:+.2f}% | {'yes' if r['passed'] else 'NO'} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_root = Path(os.environ.get("PEER_ROOT", ROOT.parent / "peer"))
    parser.add_argument("--peer-root", type=Path, default=default_root,
                        help="the harness's root: model/, data/, lf-venv/ (default $PEER_ROOT or ../peer)")
    parser.add_argument("--lf-venv", type=Path, default=None, help="default: PEER_ROOT/lf-venv")
    parser.add_argument("--out", type=Path, default=None,
                        help="exports, logs, results.json (default: a temp dir)")
    parser.add_argument("--sampling", nargs="+", choices=SAMPLINGS, default=["grouped"],
                        help="the kit's default (grouped: group_by_length) and/or random batches")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=None, help="stop early (a smoke test)")
    args = parser.parse_args()
    from labkit.llamafactory import export_llamafactory

    root = args.peer_root.resolve()
    lf_venv = (args.lf_venv or root / "lf-venv").resolve()
    out = (args.out or Path(tempfile.mkdtemp(prefix="lf-roundtrip-"))).resolve()
    pairs = kit_pairs(root / "data" / "alpaca_synth.json")
    rows, raw = {}, {}
    for name in args.sampling:
        config = sft_config(SAMPLINGS[name], args.max_steps)
        shutil.rmtree(out / name, ignore_errors=True)  # LlamaFactory refuses a finished output_dir
        job = export_llamafactory(config, pairs, root / "model", out / name)
        print(f"[{name}] exported {job.yaml}; running LlamaFactory ...", flush=True)
        lf = run_llamafactory(lf_venv, job.yaml, args.threads, out / name / "lf.log")
        print(f"[{name}] running the kit ...", flush=True)
        kit = run_kit(root / "model", pairs, config, args.threads)
        rows[name], raw[name] = compare(kit, lf), {"kit": kit, "llamafactory": lf}
    report = {"date": datetime.date.today().isoformat(), "examples": len(pairs), "results": rows, "raw": raw}
    (out / "results.json").write_text(json.dumps(report, indent=1))
    print(f"\n{report['date']}, {len(pairs)} examples, results in {out / 'results.json'}\n")
    print(table(rows))
    return 0 if all(r["passed"] for r in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
