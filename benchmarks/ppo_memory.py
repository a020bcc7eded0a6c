"""PPO's memory with model sharing against four separate models, on the pocket LLM, on this CPU.

    .venv/bin/python benchmarks/ppo_memory.py            # prints the table docs/alignment.md records
    .venv/bin/python benchmarks/ppo_memory.py --fast     # 2 prompts, 4 new tokens: a smoke run

Each variant (labkit.train.ppo.SharedRoles, SeparateRoles) runs in a process of its own: the
reward model is trained for a few steps on explanation pairs (labkit.pocket.explanations), then one
PPO step (rollouts of --batch prompts, --new-tokens each, ppo_epochs updates) runs under
labkit.memory.measure_peak. "held" is what the roles keep between steps (every distinct storage:
base weights, adapters, heads), the ledger's weights term; "peak" adds the step's largest rise of
tensor memory (activations, gradients, AdamW's moments); "peak RSS" is the whole process. Both
variants run the same algorithm from the same seed; their first-step score and loss are printed to
show it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("shared", "separate")


def child(variant: str, batch: int, new_tokens: int, seed: int) -> dict[str, float]:
    import torch

    from labkit.loader import load_model, load_tokenizer
    from labkit.memory import measure_peak, storage_bytes
    from labkit.pocket.explanations import preference_pairs
    from labkit.train.ppo import PPOConfig, SeparateRoles, SharedRoles, ppo_step
    from labkit.train.preference import PreferenceConfig, train_preference

    torch.manual_seed(seed)
    tokenizer = load_tokenizer(None)
    pairs = preference_pairs("pima", 16, seed)
    reward = train_preference(load_model(None), tokenizer, pairs, PreferenceConfig(
        stage="rm", max_steps=2, per_device_train_batch_size=4, learning_rate=1e-4, seed=seed, progress=False,
        cutoff_len=512)).model
    settings = PPOConfig(seed=seed, max_new_tokens=new_tokens)
    roles = (SharedRoles if variant == "shared" else SeparateRoles)(load_model(None), reward, settings)
    del reward  # the roles hold what they need of it
    optimizer = torch.optim.AdamW(roles.trainable(), lr=settings.learning_rate)
    prompts = [[{"role": "user", "content": p.prompt}] for p in pairs[:batch]]
    torch.manual_seed(seed)
    stats, peak = measure_peak(lambda: ppo_step(roles, tokenizer, prompts, settings, optimizer),
                               held=roles.modules())
    return {"variant": variant, "held_mib": storage_bytes(roles.modules()) / 2**20, "peak_mib": peak.peak_mib,
            "rss_mib": (peak.peak_rss_bytes or 0) / 2**20, "score": stats.score, "policy_loss": stats.policy_loss,
            "answer_tokens": stats.answer_tokens}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8, help="prompts per rollout")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fast", action="store_true", help="2 prompts, 4 new tokens")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fast:
        args.batch, args.new_tokens = 2, 4
    if args.child:
        print("RESULT " + json.dumps(child(args.child, args.batch, args.new_tokens, args.seed)), flush=True)
        return
    rows = []
    for variant in VARIANTS:
        proc = subprocess.run([sys.executable, __file__, "--child", variant, "--batch", str(args.batch),
                               "--new-tokens", str(args.new_tokens), "--seed", str(args.seed)],
                              capture_output=True, text=True, cwd=ROOT, check=False)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode or not lines:
            raise SystemExit(f"{variant} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        rows.append(json.loads(lines[-1].removeprefix("RESULT ")))
    print(f"PPO memory, measured {datetime.date.today()} by benchmarks/ppo_memory.py (--batch {args.batch} "
          f"--new-tokens {args.new_tokens} --seed {args.seed}), pocket LLM, fp32, CPU\n")
    print("| roles | held (weights, adapters, heads) MiB | peak of one PPO step MiB | peak RSS MiB "
          "| first-step score | first-step policy loss |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['held_mib']:.1f} | {r['peak_mib']:.1f} | {r['rss_mib']:,.0f} "
              f"| {r['score']:.4f} | {r['policy_loss']:.5f} |")
    shared, separate = rows
    print(f"\nshared / separate: held {shared['held_mib'] / separate['held_mib']:.2f}, "
          f"peak {shared['peak_mib'] / separate['peak_mib']:.2f}")


if __name__ == "__main__":
    main()
