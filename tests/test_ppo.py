"""labkit.train.ppo: model sharing plays the four roles of PPO exactly, in less memory."""

from __future__ import annotations

import pytest
import torch
from test_preference import PAIRS, config  # tests/ is on sys.path (conftest.py)
from test_sft import tiny_llama
from tiny_models import tiny_tokenizer

from labkit.chat import prompt_batch
from labkit.memory import measure_peak
from labkit.train.ppo import (PPOConfig, SeparateRoles, SharedRoles, _positions, gae, kl_penalized_rewards,
                              ppo_step, train_ppo)
from labkit.train.preference import train_preference

PROMPTS = [p.messages() for p in PAIRS]


@pytest.fixture(scope="module")
def reward_model() -> torch.nn.Module:
    return train_preference(tiny_llama(), tiny_tokenizer(), PAIRS, config(stage="rm")).model


def test_gae_on_golden_values() -> None:
    rewards, values = torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[0.5, 0.5, 0.5]])
    mask = torch.ones(1, 3)
    advantages, returns = gae(rewards, values, mask, gamma=1.0, lam=1.0)  # Monte Carlo: return 1 everywhere
    assert advantages.tolist() == [[0.5, 0.5, 0.5]] and returns.tolist() == [[1.0, 1.0, 1.0]]
    one_step, _ = gae(rewards, values, mask, gamma=1.0, lam=0.0)  # r_t + V_{t+1} - V_t
    assert one_step.tolist() == [[0.0, 0.0, 0.5]]
    padded, _ = gae(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5, 9.0]]), torch.tensor([[1.0, 0.0]]), 1.0, 1.0)
    assert padded.tolist() == [[0.5, 0.0]]  # nothing flows back from the padding


def test_the_kl_penalty_is_paid_per_token_and_the_score_on_the_last_answer_token() -> None:
    logps = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -1.0, -1.0]])
    ref = torch.tensor([[-1.5, -2.0, -1.0], [-2.0, -1.0, -1.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])  # the first answer ended after two tokens
    rewards, kl = kl_penalized_rewards(logps, ref, torch.tensor([2.0, -1.0]), mask, kl_coef=0.5)
    assert kl.tolist() == [[0.5, 0.0, 0.0], [1.0, 0.0, 0.0]]  # nothing on the padding
    assert rewards.tolist() == [[-0.25, 2.0, 0.0], [-0.5, 0.0, -1.0]]


def test_shared_roles_are_the_reward_model_and_the_base(reward_model: torch.nn.Module) -> None:
    tokenizer = tiny_tokenizer()
    shared = SharedRoles(tiny_llama(), reward_model, PPOConfig(seed=0))
    ids, mask, _ = prompt_batch(tokenizer, PROMPTS[:3], torch.device("cpu"))
    with torch.no_grad():
        assert torch.allclose(shared.reward(ids, mask), reward_model(input_ids=ids, attention_mask=mask).logits[:, 0],
                              atol=1e-5)
        base = tiny_llama()(input_ids=ids, attention_mask=mask, position_ids=_positions(mask)).logits
        assert torch.allclose(shared.reference(ids, mask), base, atol=1e-5)
        assert torch.allclose(shared.policy(ids, mask)[0], base, atol=1e-5)  # B = 0: the policy starts at the base
    assert shared.model.active_adapter == "policy"  # scoring switched the adapter back


def test_sharing_refuses_a_reward_model_trained_on_other_weights(reward_model: torch.nn.Module) -> None:
    other = tiny_llama()
    with torch.no_grad():
        other.model.layers[0].self_attn.q_proj.weight.add_(0.01)  # as after SFT: the reward model never saw it
    with pytest.raises(ValueError, match="trained on other weights"):
        SharedRoles(other, reward_model, PPOConfig(seed=0))


def test_a_step_trains_the_policy_only_and_sharing_changes_no_number(reward_model: torch.nn.Module) -> None:
    tokenizer, settings = tiny_tokenizer(), PPOConfig(seed=0, max_new_tokens=6, learning_rate=1e-2)
    runs = {}
    for name, roles_type in (("shared", SharedRoles), ("separate", SeparateRoles)):
        roles = roles_type(tiny_llama(), reward_model, settings)
        trained = {id(p) for p in roles.trainable()}
        frozen = {n: p.detach().clone() for n, p in roles.modules().named_parameters() if id(p) not in trained}
        before = [p.detach().clone() for p in roles.trainable()]
        torch.manual_seed(0)
        optimizer = torch.optim.AdamW(roles.trainable(), lr=settings.learning_rate)
        runs[name] = ppo_step(roles, tokenizer, PROMPTS[:4], settings, optimizer)
        assert any(not torch.equal(a, b) for a, b in zip(before, roles.trainable(), strict=True))
        after = dict(roles.modules().named_parameters())
        assert all(torch.equal(after[n], p) for n, p in frozen.items()), "only the policy and the value head train"
    assert runs["shared"].score == pytest.approx(runs["separate"].score, abs=1e-5)
    assert runs["shared"].policy_loss == pytest.approx(runs["separate"].policy_loss, abs=1e-5)


def test_model_sharing_peaks_below_four_separate_models(reward_model: torch.nn.Module) -> None:
    tokenizer, settings = tiny_tokenizer(), PPOConfig(seed=0, max_new_tokens=6)
    peaks = {}
    for name, roles_type in (("shared", SharedRoles), ("separate", SeparateRoles)):
        roles = roles_type(tiny_llama(), reward_model, settings)
        optimizer = torch.optim.AdamW(roles.trainable(), lr=settings.learning_rate)
        torch.manual_seed(0)
        _, peak = measure_peak(lambda: ppo_step(roles, tokenizer, PROMPTS[:4], settings, optimizer),
                               held=roles.modules())
        peaks[name] = peak.peak_bytes
    assert peaks["shared"] < peaks["separate"], peaks


def test_train_ppo_repeats_itself_under_a_seed_and_moves_the_policy(reward_model: torch.nn.Module) -> None:
    settings = PPOConfig(seed=0, max_new_tokens=6, learning_rate=1e-2)
    runs = [train_ppo(SharedRoles(tiny_llama(), reward_model, settings), tiny_tokenizer(), PROMPTS, settings,
                      steps=2, batch_size=3) for _ in range(2)]
    assert len(runs[0]) == 2 and runs[0] == runs[1]
    first, second = runs[0]
    assert first.kl == 0.0  # the policy starts as the reference (B = 0)
    assert second.kl != 0.0  # and the first update moved it
