"""PPO with model sharing (LlamaFactory's `reward_model_type: lora`): four roles, one base model.

RLHF with PPO (Ouyang et al. 2022, arXiv 2203.02155) needs four models: the policy that learns,
a frozen reference that the policy must stay near, a reward model that scores answers, and a value
model (the critic) that predicts the score. Four copies of an LLM rarely fit; LlamaFactory's model
sharing keeps one base and switches roles:

    policy      the base with LoRA adapter "policy" (trained)
    value       a linear head on the policy's last hidden states (trained)
    reference   the base with every adapter switched off
    reward      the base with LoRA adapter "reward" (from the reward-model stage) and its score head

TRL 1.16 removed its PPOTrainer, so the loop is written here, one step per batch of prompts:

    1. roll out: the policy samples an answer to each prompt
    2. score it: the reward model's score at the last token; every token pays -kl_coef * (log pi - log pi_ref)
    3. advantages by GAE over the answer's tokens (gamma, lam), whitened
    4. ppo_epochs updates of the clipped objective (clip_range) plus the clipped value loss (vf_coef)

`SeparateRoles` holds the same four roles as four models, for the memory comparison
(benchmarks/ppo_memory.py, docs/alignment.md).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from peft import LoraConfig, PeftModel
from torch import nn

from labkit import hardware
from labkit.adapters import find_all_linear_modules, peft_model
from labkit.chat import CausalLM, Messages, generation_config, pad_token_id, prompt_batch, stop_ids
from labkit.config import option, require


@dataclass
class PPOConfig:
    """One PPO run, with LlamaFactory's names where it has them (ppo_epochs, ...)."""

    learning_rate: float = option(1e-4, "AdamW's learning rate for the policy adapter and the value head")
    ppo_epochs: int = option(2, "optimization passes over each batch of rollouts")
    kl_coef: float = option(0.05, "price per token of moving away from the reference (log pi - log pi_ref)")
    clip_range: float = option(0.2, "the policy ratio is clipped to [1 - clip_range, 1 + clip_range]")
    value_clip: float = option(0.2, "a value may move this far from its rollout estimate per update")
    vf_coef: float = option(0.1, "weight of the value loss next to the policy loss")
    gamma: float = option(1.0, "discount over the answer's tokens")
    lam: float = option(0.95, "GAE's lambda: 1 is the Monte-Carlo return, 0 the one-step estimate")
    max_new_tokens: int = option(32, "longest sampled answer")
    temperature: float = option(1.0, "sampling temperature of the rollouts")
    lora_rank: int = option(8, "rank of the policy's LoRA adapter")
    lora_alpha: int = option(16, "the policy adapter's scale is lora_alpha / lora_rank")
    seed: int = option(42, "seeds the adapter, the value head and the sampling")

    def __post_init__(self) -> None:
        for name in ("learning_rate", "kl_coef", "clip_range", "max_new_tokens", "ppo_epochs"):
            require(getattr(self, name) > 0 or name == "kl_coef" and self.kl_coef == 0, self, name,
                    "it must be positive")
        require(0 < self.gamma <= 1 and 0 <= self.lam <= 1, self, "lam",
                "use gamma in (0, 1] and lam in [0, 1]")


class Roles(Protocol):
    """What PPO asks of its models, however they are held."""

    def trainable(self) -> list[nn.Parameter]: ...

    def generate(self, ids: torch.Tensor, mask: torch.Tensor, config: Any) -> torch.Tensor: ...

    def policy(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def reference(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor: ...

    def reward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor: ...


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids of left-padded rows, as generate() numbers them."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def _hidden(model: CausalLM, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The decoder's last hidden states (batch, tokens, hidden), whatever adapter is active."""
    base: Any = model.get_base_model() if isinstance(model, PeftModel) else model
    decoder = base.get_decoder()
    return decoder(input_ids=ids, attention_mask=mask, position_ids=_positions(mask), use_cache=False
                   ).last_hidden_state


def _logits(model: CausalLM, hidden: torch.Tensor) -> torch.Tensor:
    base: Any = model.get_base_model() if isinstance(model, PeftModel) else model
    return base.get_output_embeddings()(hidden)


def _last(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each row's value at its last real token (rows are left-padded prompts, right-padded answers)."""
    last = mask.shape[1] - 1 - mask.flip(-1).argmax(-1)
    return values[torch.arange(len(values)), last]


def _lora(model: nn.Module, rank: int, alpha: int) -> LoraConfig:
    return LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0,
                      target_modules=find_all_linear_modules(model), task_type="CAUSAL_LM")


def _head(hidden_size: int, seed: int) -> nn.Linear:
    with hardware.seeded(seed):
        head = nn.Linear(hidden_size, 1)
        nn.init.zeros_(head.weight)  # the critic starts with no opinion
        nn.init.zeros_(head.bias)
    return head


def reward_adapter(reward_model: Any) -> tuple[dict[str, torch.Tensor], nn.Linear, Any]:
    """The LoRA weights and the score head of a reward model trained by train_preference(stage="rm")."""
    state = {k: v.detach().clone() for k, v in reward_model.state_dict().items() if "lora_" in k}
    base = reward_model.get_base_model()
    score = base.score.modules_to_save["default"] if hasattr(base.score, "modules_to_save") else base.score
    head = nn.Linear(score.in_features, 1, bias=False)
    head.weight.data.copy_(score.weight.detach())
    return state, head, reward_model.peft_config["default"]


def same_trunk(model: CausalLM, reward_model: Any) -> bool:
    """Whether the reward model's frozen weights (its LoRA adapter and score head aside) are the model's."""
    mine = dict(model.named_parameters())
    trunk = reward_model.get_base_model().named_parameters()
    theirs = {name.replace(".base_layer", ""): p for name, p in trunk
              if "lora_" not in name and not name.startswith("score")}
    shared = [name for name in theirs if name in mine]
    return bool(shared) and all(torch.equal(mine[name], theirs[name]) for name in shared)


class SharedRoles:
    """The four roles on one base model: adapters "policy" and "reward", a value head, adapters off
    for the reference."""

    def __init__(self, model: CausalLM, reward_model: Any, config: PPOConfig) -> None:
        if not same_trunk(model, reward_model):
            raise ValueError("the reward model was trained on other weights than this model's: model "
                             "sharing switches its adapter on over the policy's base, so train it from the "
                             "same model (e.g. the SFT model that PPO starts from)")
        state, self.score_head, reward_config = reward_adapter(reward_model)
        with hardware.seeded(config.seed):
            self.model = peft_model(model, _lora(model, config.lora_rank, config.lora_alpha),
                                    adapter_name="policy")
        self.model.add_adapter("reward", LoraConfig(**{**reward_config.to_dict(), "task_type": "CAUSAL_LM",
                                                       "modules_to_save": None}))
        mine = self.model.state_dict()
        renamed = {_as_shared(k): v for k, v in state.items()}
        missing = [k for k in renamed if k not in mine]
        if missing:
            raise ValueError(f"the reward adapter does not fit this model: {missing[:2]}")
        self.model.load_state_dict(renamed, strict=False)
        self.model.set_adapter("policy")
        self.value_head = _head(model.config.hidden_size, config.seed)

    def modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.model, self.value_head, self.score_head])

    def trainable(self) -> list[nn.Parameter]:
        policy = [p for n, p in self.model.named_parameters() if ".policy." in n]
        return policy + list(self.value_head.parameters())

    def generate(self, ids: torch.Tensor, mask: torch.Tensor, config: Any) -> torch.Tensor:
        return self.model.generate(input_ids=ids, attention_mask=mask, generation_config=config)

    def policy(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = _hidden(self.model, ids, mask)
        return _logits(self.model, hidden), self.value_head(hidden).squeeze(-1)

    def reference(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        with self.model.disable_adapter():
            return _logits(self.model, _hidden(self.model, ids, mask))

    def reward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        self.model.set_adapter("reward")
        try:
            return _last(self.score_head(_hidden(self.model, ids, mask)).squeeze(-1), mask)
        finally:
            self.model.set_adapter("policy")  # set_adapter also makes the active adapter trainable


def _as_shared(key: str) -> str:
    """A reward model's LoRA key as the shared model names it: adapter "default" becomes "reward"."""
    return key.replace(".default.", ".reward.").replace(".default", ".reward")


class SeparateRoles:
    """The same four roles as four models: the classic set-up that model sharing replaces."""

    def __init__(self, model: CausalLM, reward_model: Any, config: PPOConfig) -> None:
        self.reference_model = copy.deepcopy(model).requires_grad_(False)
        self.critic = copy.deepcopy(model).requires_grad_(False)  # the value head's own trunk
        _, self.score_head, _ = reward_adapter(reward_model)
        self.reward_model = copy.deepcopy(reward_model).merge_and_unload().requires_grad_(False)
        with hardware.seeded(config.seed):
            self.model = peft_model(model, _lora(model, config.lora_rank, config.lora_alpha))
        self.value_head = _head(model.config.hidden_size, config.seed)

    def modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.model, self.reference_model, self.reward_model, self.critic,
                              self.value_head, self.score_head])

    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad] + list(self.value_head.parameters())

    def generate(self, ids: torch.Tensor, mask: torch.Tensor, config: Any) -> torch.Tensor:
        return self.model.generate(input_ids=ids, attention_mask=mask, generation_config=config)

    def policy(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = _logits(self.model, _hidden(self.model, ids, mask))
        return logits, self.value_head(_hidden(self.critic, ids, mask)).squeeze(-1)

    def reference(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return _logits(self.reference_model, _hidden(self.reference_model, ids, mask))

    def reward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return _last(self.score_head(_hidden(self.reward_model, ids, mask)).squeeze(-1), mask)


def token_logps(logits: torch.Tensor, ids: torch.Tensor, start: int) -> torch.Tensor:
    """log pi(token) of every answer token: ids[:, start:], predicted by the positions before them."""
    scores = logits[:, start - 1:-1].float().log_softmax(-1)
    return torch.gather(scores, 2, ids[:, start:].unsqueeze(-1)).squeeze(-1)


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation (Schulman et al. 2016) over each answer's tokens:
    A_t = sum_k (gamma lam)^k delta_{t+k}, delta_t = r_t + gamma V_{t+1} - V_t; returns (A, A + V)."""
    advantages = torch.zeros_like(rewards)
    running = torch.zeros(len(rewards), device=rewards.device)
    for t in reversed(range(rewards.shape[1])):
        following = values[:, t + 1] * mask[:, t + 1] if t + 1 < rewards.shape[1] else 0.0
        delta = rewards[:, t] + gamma * following - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, advantages + values


def kl_penalized_rewards(logps: torch.Tensor, ref_logps: torch.Tensor, score: torch.Tensor,
                         mask: torch.Tensor, kl_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """RLHF's per-token reward (Ouyang et al. 2022, eq. 2, spread over the answer's tokens):
    r_t = -kl_coef (log pi(y_t) - log pi_ref(y_t)), plus the reward model's score on the answer's last
    token; 0 after the answer. Returns (rewards, the per-token KL estimate), both (batch, tokens)."""
    kl = (logps - ref_logps) * mask
    rewards = -kl_coef * kl
    rewards[torch.arange(len(rewards)), mask.sum(1).long().clamp(min=1) - 1] += score
    return rewards, kl


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def _whiten(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mean = _masked_mean(x, mask)
    var = _masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + 1e-8) * mask


@dataclass(frozen=True)
class PPOStats:
    """One step: the mean score of the rollouts, the mean per-token KL to the reference, the losses."""

    score: float
    kl: float
    policy_loss: float
    value_loss: float
    answer_tokens: float


def ppo_step(roles: Roles, tokenizer: Any, prompts: list[Messages], config: PPOConfig,
             optimizer: torch.optim.Optimizer, eos: tuple[int, ...] = ()) -> PPOStats:
    """Roll out, score and update once (see the module docstring); returns what it measured."""
    device = next(iter(roles.trainable())).device
    ids, mask, _ = prompt_batch(tokenizer, prompts, device)
    start = ids.shape[1]
    model = getattr(roles, "model", None)
    sampling = generation_config(model, tokenizer, config.max_new_tokens, config.temperature)
    with torch.no_grad():
        sequences = roles.generate(ids, mask, sampling)
        stops = eos or stop_ids(model, tokenizer)
        answer = _answer_mask(sequences[:, start:], stops, pad_token_id(tokenizer))
        full = torch.cat([mask, answer], dim=1)
        logits, values = roles.policy(sequences, full)
        old = token_logps(logits, sequences, start)
        values = values[:, start - 1:-1] * answer
        reference = token_logps(roles.reference(sequences, full), sequences, start)
        score = roles.reward(sequences, full)
        rewards, kl = kl_penalized_rewards(old, reference, score, answer, config.kl_coef)
        advantages, returns = gae(rewards, values, answer, config.gamma, config.lam)
        advantages = _whiten(advantages, answer)
    policy_loss = value_loss = torch.tensor(0.0)
    for _ in range(config.ppo_epochs):
        logits, new_values = roles.policy(sequences, full)
        ratio = torch.exp(token_logps(logits, sequences, start) - old)
        clipped = ratio.clamp(1 - config.clip_range, 1 + config.clip_range)
        policy_loss = _masked_mean(torch.max(-advantages * ratio, -advantages * clipped), answer)
        new_values = new_values[:, start - 1:-1]
        kept = values + (new_values - values).clamp(-config.value_clip, config.value_clip)
        value_loss = 0.5 * _masked_mean(torch.max((new_values - returns) ** 2, (kept - returns) ** 2), answer)
        optimizer.zero_grad()
        (policy_loss + config.vf_coef * value_loss).backward()
        optimizer.step()
    return PPOStats(float(score.mean()), float(_masked_mean(kl, answer)), policy_loss.item(),
                    value_loss.item(), float(answer.sum(1).float().mean()))


def _answer_mask(answer: torch.Tensor, eos: tuple[int, ...], pad: int) -> torch.Tensor:
    """1 on each sampled token up to and including the first end token, 0 after it."""
    ended = torch.zeros(answer.shape[0], dtype=torch.bool, device=answer.device)
    mask = torch.zeros_like(answer, dtype=torch.float32)
    for t in range(answer.shape[1]):
        mask[:, t] = (~ended).float()
        ended |= torch.isin(answer[:, t], torch.tensor(eos or (pad,), device=answer.device))
    return mask


def train_ppo(roles: Roles, tokenizer: Any, prompts: list[Messages], config: PPOConfig, steps: int,
              batch_size: int = 8) -> list[PPOStats]:
    """`steps` PPO steps over batches of `prompts` in a seeded order; the stats of each step."""
    optimizer = torch.optim.AdamW(roles.trainable(), lr=config.learning_rate)
    generator = torch.Generator().manual_seed(config.seed)
    history = []
    torch.manual_seed(config.seed)  # the rollouts' sampling
    for _ in range(steps):
        chosen = torch.randperm(len(prompts), generator=generator)[:batch_size].tolist()
        history.append(ppo_step(roles, tokenizer, [prompts[i] for i in chosen], config, optimizer))
    return history

