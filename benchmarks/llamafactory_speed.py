"""LoRA SFT tokens per second: the kit's trainer against LlamaFactory's own CLI, on identical tokens.

Drives the side-by-side harness (`../shared/peer/`, read its README.md): LlamaFactory 0.9.5 runs in a
virtual environment of its own, the kit in this repository's `.venv`; both train the same model on
the same 512 alpaca examples (the harness proves the token ids and loss masks are byte-identical),
arms alternated, each run waiting for a quiet machine. Two model sizes:

  tiny   the harness's own model: random-init Llama, 7.36M parameters, 28% of them in the output head
  bench  the same tokenizer and data, a random-init Llama of ~60M parameters (hidden 640, 10 layers,
         intermediate 1728: the shape of benchmarks/finetune_methods.py's model with the harness's
         8,192-token vocabulary), where the head is 9% of the parameters: the kit's answer-only head
         saves less there

    python benchmarks/llamafactory_speed.py --size bench --reps 3          # ~25 min on 2 cores
    python benchmarks/llamafactory_speed.py --size tiny --reps 3

The table (medians, per-pair ratios, losses) is written to docs/results/llamafactory_speed_<size>.md;
docs/fine_tuning.md cites it. Needs LlamaFactory's venv: `bash ../shared/peer/setup_lf_venv.sh DIR`
(PyPI at install time), given here as --lf-venv.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The ~60M-parameter shape; the harness's tokenizer sets the vocabulary (8,192).
BENCH_SHAPE = {"hidden_size": 640, "intermediate_size": 1728, "num_hidden_layers": 10,
               "num_attention_heads": 10, "num_key_value_heads": 10}

REBUILD_MODEL = """
import json, sys, torch
from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM
folder, shape = sys.argv[1], json.loads(sys.argv[2])
tok = AutoTokenizer.from_pretrained(folder)
torch.manual_seed(42)
cfg = LlamaConfig(vocab_size=len(tok), max_position_embeddings=512, rope_theta=10000.0,
                  tie_word_embeddings=False, bos_token_id=None, eos_token_id=tok.eos_token_id,
                  pad_token_id=tok.pad_token_id, torch_dtype="float32", **shape)
model = LlamaForCausalLM(cfg).to(torch.float32)
model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
model.save_pretrained(folder, safe_serialization=True)
head = model.lm_head.weight.numel()
total = sum(p.numel() for p in model.parameters())
print(json.dumps({"parameters": total, "head_share": round(head / total, 3)}))
"""


def build_assets(harness: Path, root: Path, lf_python: Path, size: str) -> None:
    """The harness's data and tokenizer in `root`, and the model of `size` (built once, deterministic)."""
    if not (root / "model" / "config.json").is_file():
        run([str(lf_python), str(harness / "make_assets.py"), "--out", str(root)])
        if size == "bench":
            import json

            run([str(lf_python), "-c", REBUILD_MODEL, str(root / "model"), json.dumps(BENCH_SHAPE)])


def run(command: list[str], env: dict[str, str] | None = None) -> str:
    print("+", " ".join(command[:4]), "...", flush=True)
    done = subprocess.run(command, env=env, text=True, capture_output=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{command[0]} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def check_same_tokens(harness: Path, root: Path, lf_python: Path, env: dict[str, str]) -> str:
    """Both sides tokenize the 512 examples (LlamaFactory's own pipeline, the kit's encode) and the
    harness compares ids and loss masks; stops unless they are identical. Returns the comparison."""
    lf_dump, kit_dump = root / "tok_A.json", root / "tok_K.json"
    run([str(lf_python), str(harness / "check_same_tokens.py"), "--lf-dump", str(lf_dump)], env)
    run([str(REPO / ".venv" / "bin" / "python"), str(harness / "labkit_sft_lora.py"), "--model", str(root / "model"),
         "--data", str(root / "data" / "alpaca_synth.json"), "--out", str(root / "tokcheck"),
         "--dump_tokens", str(kit_dump)], env)
    report = run([sys.executable, str(harness / "check_same_tokens.py"), "--compare", str(lf_dump), str(kit_dump)],
                 env).strip()
    if not report.endswith("IDENTICAL") or "DIFFERENT" in report:
        sys.exit(f"the two sides do not train on the same tokens:\n{report}")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("tiny", "bench"), default="bench")
    parser.add_argument("--reps", type=int, default=3, help="alternated repetitions of each arm")
    parser.add_argument("--arms", default="A,Ag,K", help="harness arms: A (LF defaults), Ag (LF length-grouped), "
                        "K (the kit's default), Kn (the kit, ungrouped)")
    parser.add_argument("--harness", type=Path, default=REPO.parent / "shared" / "peer")
    parser.add_argument("--root", type=Path, default=None, help="scratch folder (default /tmp/peer-speed-SIZE)")
    parser.add_argument("--lf-venv", type=Path, required=True, help="LlamaFactory 0.9.5's venv")
    parser.add_argument("--max-wait", type=float, default=1800, help="seconds to wait for a quiet machine per run")
    parser.add_argument("--max-steps", type=int, default=-1, help="a smoke run (the table needs the full epoch)")
    parser.add_argument("--no-wait", action="store_true", help="do not wait for a quiet machine (smoke runs)")
    args = parser.parse_args()

    root = args.root or Path(f"/tmp/peer-speed-{args.size}")
    harness = root / "harness"
    if not harness.is_dir():
        shutil.copytree(args.harness, harness)  # shared/ is read-only; the harness writes beside itself
    # The kit's arm is maintained with the kit (its SFTConfig names change with it).
    shutil.copy(REPO / "benchmarks" / "peer" / "labkit_sft_lora.py", harness / "labkit_sft_lora.py")
    build_assets(harness, root, args.lf_venv / "bin" / "python", args.size)
    env = {**os.environ, "PEER_ROOT": str(root), "LF_VENV": str(args.lf_venv), "KIT_VENV": str(REPO / ".venv"),
           "KIT_SRC": str(REPO), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    identity = check_same_tokens(harness, root, args.lf_venv / "bin" / "python", env)
    tag = f"speed_{args.size}"
    run([sys.executable, str(harness / "run_bench.py"), "--tag", tag, "--reps", str(args.reps),
         "--arms", args.arms, "--threads", "2", "--max-wait", str(args.max_wait), "--max-steps", str(args.max_steps)]
        + (["--no-wait"] if args.no_wait else []), env)
    table = run([sys.executable, str(harness / "summarize_kit.py"), tag], env)
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True, check=False).stdout.strip()
    out = REPO / "docs" / "results" / f"llamafactory_speed_{args.size}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    header = (f"# LoRA SFT speed, kit vs LlamaFactory 0.9.5 CLI: {args.size} model\n\n"
              f"Measured {datetime.date.today()} on commit {commit} by benchmarks/llamafactory_speed.py "
              f"(--size {args.size} --reps {args.reps} --arms {args.arms}); 2 threads, fp32, LoRA r8/alpha16 on "
              "every linear layer but the head, batch 8, lr 1e-4, one epoch of the harness's 512 examples, "
              "the same token ids and loss masks on both sides, checked before the runs "
              "(the harness's check_same_tokens.py):\n\n```\n" + identity.replace(str(root) + "/", "")
              + "\n```\n\n")
    out.write_text(header + table)
    print(header + table)


if __name__ == "__main__":
    main()
