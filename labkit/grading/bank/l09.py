"""Exercises of lesson 09 (preference alignment): the reward model's Bradley-Terry loss, DPO's loss,
GRPO's group advantages and PPO's KL-penalized reward, each checked against the code that trains."""

from __future__ import annotations

from typing import Any

import numpy as np

from labkit.grading.exercise import Case, Exercise, case, close

# The worker imports what the notebook imports (torch, transformers, TRL, the kit's trainers) before
# the first hidden case: on a busy 2-core machine that alone can pass the default 30 s (lessons 06, 08).
TIME_LIMIT_S = 90.0


def _tensor(values: Any) -> Any:
    import torch  # loaded when graded, not with the bank

    return torch.tensor(values, dtype=torch.float64)


def bradley_terry_loss(chosen_scores: list[float], rejected_scores: list[float]) -> float:
    """Reference: the reward model's loss in labkit.train.preference (TRL's RewardTrainer's)."""
    from labkit.train.preference import reward_model_loss

    return float(reward_model_loss(_tensor(chosen_scores), _tensor(rejected_scores)))


def dpo_loss(chosen: list[float], rejected: list[float], ref_chosen: list[float], ref_rejected: list[float],
             beta: float) -> float:
    """Reference: labkit.train.preference.dpo_loss (equal to TRL's DPO loss: tests/test_preference.py)."""
    from labkit.train.preference import dpo_loss as kit_dpo_loss

    loss, _, _ = kit_dpo_loss(_tensor(chosen), _tensor(rejected), _tensor(ref_chosen), _tensor(ref_rejected),
                              beta=beta)
    return float(loss)


def group_advantages(rewards: list[float], group_size: int) -> list[float]:
    """Reference: TRL 1.16's GRPO advantages (scale_rewards="group"), with TRL's own standard deviation."""
    import torch
    from trl.trainer.utils import nanstd

    grouped = torch.tensor(rewards, dtype=torch.float64).view(-1, group_size)
    mean = grouped.mean(dim=1, keepdim=True)
    std = nanstd(grouped, dim=1, keepdim=True)
    return ((grouped - mean) / (std + 1e-4)).flatten().tolist()


def kl_penalized_rewards(logps: list[list[float]], ref_logps: list[list[float]], scores: list[float],
                         mask: list[list[int]], kl_coef: float) -> list[list[float]]:
    """Reference: labkit.train.ppo.kl_penalized_rewards, what ppo_step trains on."""
    from labkit.train.ppo import kl_penalized_rewards as kit_rewards

    rewards, _ = kit_rewards(_tensor(logps), _tensor(ref_logps), _tensor(scores), _tensor(mask), kl_coef)
    return [[r + 0.0 for r in row] for row in rewards.tolist()]  # -0.0 as 0.0


# --- hidden cases ---------------------------------------------------------------------------------

def _scores(rng: np.random.Generator, n: int, scale: float) -> list[float]:
    return (rng.normal(size=n) * scale).round(4).tolist()


def _hidden_bradley_terry(rng: np.random.Generator) -> list[Case]:
    cases = [case([2.0], [2.0]), case([0.0, 5.0], [3.0, -5.0])]  # a tie costs log 2; a wrong order costs more
    for n in (1, 3, 8):
        cases.append(case(_scores(rng, n, 3.0), _scores(rng, n, 3.0)))
    return cases


def _logps(rng: np.random.Generator, n: int) -> list[float]:
    return (-rng.uniform(5, 60, size=n)).round(3).tolist()


def _hidden_dpo(rng: np.random.Generator) -> list[Case]:
    same = _logps(rng, 3)
    cases = [case(same, same, same, same, 0.1)]  # policy = reference: every pair costs log 2
    for n, beta in ((1, 0.1), (4, 0.5), (6, 0.05), (5, 1.0)):
        ref_chosen, ref_rejected = _logps(rng, n), _logps(rng, n)
        chosen = (np.array(ref_chosen) + rng.normal(size=n) * 3).round(3).tolist()
        rejected = (np.array(ref_rejected) + rng.normal(size=n) * 3).round(3).tolist()
        cases.append(case(chosen, rejected, ref_chosen, ref_rejected, beta))
    return cases


def _hidden_groups(rng: np.random.Generator) -> list[Case]:
    cases = [case([1.0, 1.0, 1.0, 1.0], 4),  # every answer as good: no advantage, and no division by zero
             case([0.0, 1.0, 0.0, 0.0, 1.0, 1.0], 3)]
    for groups, size in ((2, 4), (3, 2), (1, 8)):
        cases.append(case(rng.integers(0, 2, size=groups * size).astype(float).tolist(), size))
        cases.append(case(rng.uniform(-1, 1, size=groups * size).round(3).tolist(), size))
    return cases


def _hidden_kl(rng: np.random.Generator) -> list[Case]:
    cases = []
    for batch, tokens, kl_coef in ((1, 3, 0.1), (2, 5, 0.05), (3, 4, 0.2), (4, 6, 0.0)):
        ref = -rng.uniform(0.1, 4, size=(batch, tokens))
        logps = ref + rng.normal(size=(batch, tokens)) * 0.5
        lengths = rng.integers(1, tokens + 1, size=batch)
        lengths[0] = min(2, tokens)  # one answer always ends before the row does
        mask = (np.arange(tokens)[None, :] < lengths[:, None]).astype(int)
        cases.append(case(logps.round(3).tolist(), ref.round(3).tolist(), _scores(rng, batch, 1.0),
                          mask.tolist(), kl_coef))
    return cases


EXERCISES = [
    Exercise(
        id="09.bradley_terry", function="bradley_terry_loss", tier="warm-up", points=1,
        task="bradley_terry_loss(chosen_scores, rejected_scores) -> float: the reward model's loss, the "
             "mean over pairs of -log sigmoid(r_chosen - r_rejected).",
        reference=bradley_terry_loss,
        examples=(case([1.0], [0.0]), case([0.5, -1.0], [0.5, 2.0])),
        hidden=_hidden_bradley_terry,
        compare=close(rtol=1e-6, atol=1e-8), time_limit_s=TIME_LIMIT_S,
    ),
    Exercise(
        id="09.dpo", function="dpo_loss", tier="core", points=2,
        task="dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta) -> float: DPO's loss, the mean "
             "over pairs of -log sigmoid(beta * ((chosen - ref_chosen) - (rejected - ref_rejected))), "
             "from the summed log-probabilities of each answer under the policy and the reference.",
        reference=dpo_loss,
        examples=(case([-10.0], [-12.0], [-11.0], [-11.0], 0.1),
                  case([-5.0, -8.0], [-9.0, -4.0], [-6.0, -7.0], [-8.0, -6.0], 0.5)),
        hidden=_hidden_dpo,
        compare=close(rtol=1e-6, atol=1e-8), time_limit_s=TIME_LIMIT_S,
    ),
    Exercise(
        id="09.group", function="group_advantages", tier="core", points=2,
        task="group_advantages(rewards, group_size) -> list[float]: GRPO's advantages; rewards holds "
             "consecutive groups of group_size answers to one prompt; each answer's advantage is "
             "(reward - its group's mean) / (its group's sample standard deviation + 1e-4), the "
             "standard deviation with Bessel's correction (divide by n - 1), as TRL computes it; one "
             "flat list, in the order of rewards.",
        reference=group_advantages,
        examples=(case([1.0, 0.0, 0.0, 1.0], 2), case([0.0, 1.0, 1.0, 1.0], 4)),
        hidden=_hidden_groups,
        compare=close(rtol=1e-6, atol=1e-8), time_limit_s=TIME_LIMIT_S,
    ),
    Exercise(
        id="09.kl_reward", function="kl_penalized_rewards", tier="stretch", points=3,
        task="kl_penalized_rewards(logps, ref_logps, scores, mask, kl_coef) -> batch x tokens rewards: "
             "PPO's per-token reward; each answer token pays -kl_coef * (logps - ref_logps); the reward "
             "model's score is added on the answer's last token (the last 1 of its mask row); tokens "
             "after the answer (mask 0) get 0. Every answer has at least one token.",
        reference=kl_penalized_rewards,
        examples=(case([[-1.0, -2.0, -3.0]], [[-1.5, -2.0, -1.0]], [2.0], [[1, 1, 0]], 0.5),),
        hidden=_hidden_kl,
        compare=close(rtol=1e-6, atol=1e-8), time_limit_s=TIME_LIMIT_S,
    ),
]
