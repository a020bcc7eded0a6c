"""The GPU paths the CPU cannot check, in one short script for a device lease (under 5 minutes).

    python benchmarks/gpu_check.py            # on a machine with a CUDA GPU; exits 1 if a check fails

1. the dtype rule: labkit.hardware.compute_dtype picks bf16 on a GPU that has it (fp16 on older
   ones), and bf16=True (SFTConfig's switch) is accepted there;
2. QLoRA trains on CUDA: the benchmark model of benchmarks/finetune_methods.py (~55M parameters,
   random init) loaded in 4 bits (NF4, double quantization, bf16 compute), LoRA on every linear
   layer, the loss falls over 30 steps;
3. the ledger against torch.cuda.max_memory_allocated for LoRA, QLoRA (4-bit) and full
   fine-tuning (labkit.memory.predict with precision "amp": 16-bit compute, fp32 trainable weights).

It prints one table; paste it into docs/memory.md with the date and the GPU's name.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
STEPS = 30


def _benchmark_module() -> Any:
    """benchmarks/finetune_methods.py: the model, the data and the method table, shared."""
    spec = importlib.util.spec_from_file_location("finetune_methods", HERE / "finetune_methods.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_dtype_rule() -> list[str]:
    from labkit import hardware

    dev = torch.device("cuda")
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    got = hardware.compute_dtype(dev)
    if expected == torch.bfloat16:
        hardware.compute_dtype(dev, bf16=True)  # SFTConfig(bf16=True) is accepted here (refused on a CPU)
    return [] if got == expected else [f"compute_dtype(cuda) = {got}, expected {expected}"]


def run_method(bench: Any, name: str, load_kwargs: dict[str, Any], sft: dict[str, Any]) -> dict[str, Any]:
    from labkit import memory
    from labkit.loader import load_model, load_tokenizer
    from labkit.train import SFTConfig, train_sft

    tokenizer = load_tokenizer()
    pairs = bench.synthetic_pairs(tokenizer, 256, seed=0, fast=False)
    model = load_model(bench.bench_model_folder(fast=False), device="cuda", **load_kwargs)
    config = SFTConfig(**sft, max_steps=STEPS, per_device_train_batch_size=bench.BATCH, cutoff_len=1024,
                       logging_steps=5, progress=False)
    torch.cuda.empty_cache()
    result, peak = memory.measure_peak(lambda: train_sft(model, tokenizer, pairs, config), held=model)
    seq_len, answers = bench.batch_shape(tokenizer, pairs, bench.BATCH)
    ledger = memory.predict(result.model, batch_size=bench.BATCH, seq_len=seq_len, answer_tokens=answers,
                            precision="amp")
    first, last = result.history[0]["loss"], result.history[-1]["loss"]
    return {"method": name, "loss": f"{first:.3f} -> {last:.3f}", "falls": last < first,
            "tokens/s": f"{result.tokens_per_second:,.0f}", "predicted MiB": ledger.peak / 2**20,
            "measured MiB": peak.peak_bytes / 2**20, "ratio": ledger.peak / peak.peak_bytes}


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA GPU here: this script checks the GPU paths; run it on a device lease")
        return 1
    bench = _benchmark_module()
    problems = check_dtype_rule()
    rows = []
    for name in ("lora", "qlora-4bit", "full"):
        load_kwargs, sft = bench.METHODS[name]
        rows.append(run_method(bench, name, load_kwargs, sft))
        if not rows[-1]["falls"]:
            problems.append(f"{name}: the loss did not fall ({rows[-1]['loss']})")
    print(f"GPU: {torch.cuda.get_device_name()}, compute dtype "
          f"{'bf16' if torch.cuda.is_bf16_supported() else 'fp16'}, torch {torch.__version__}")
    print("| method | loss | tokens/s | predicted MiB | measured MiB (max allocated) | predicted / measured |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['loss']} | {r['tokens/s']} | {r['predicted MiB']:,.0f} | "
              f"{r['measured MiB']:,.0f} | {r['ratio']:.2f} |")
    for problem in problems:
        print("FAILED:", problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
