"""Preference stages (LlamaFactory's rm, dpo, kto; and GRPO): the losses written out, the runs by TRL.

The objectives, as the lesson derives them (a policy pi, a frozen reference pi_ref, beta > 0):

    reward model   -log sigma(r(x, y_w) - r(x, y_l))                       (Bradley-Terry)
    DPO            -log sigma(beta [log pi(y_w|x)/pi_ref(y_w|x) - log pi(y_l|x)/pi_ref(y_l|x)])
    KTO            w_y (1 - sigma(+/-beta (log pi(y|x)/pi_ref(y|x) - z0))), + for a desirable answer,
                   - for an undesirable one; z0 a KL estimate (TRL clamps it at 0)
    GRPO           generate k answers per prompt, reward each,
                   advantage = (reward - the group's mean) / (the group's std + 1e-4)
    DPO + pref_ftx the DPO loss + pref_ftx * the chosen answers' mean token NLL (TRL's "sft" loss)

`sequence_logps` and `dpo_loss` compute DPO from scratch (checked against TRL's trainer in the
tests); `train_preference` runs a stage through TRL 1.16 with the kit's LoRA and its dtype rule
(fp32 on a CPU: TRL's configs default to bf16). The reference model is never a second copy of the
weights: TRL keeps a frozen copy of the LoRA adapter as it starts (B = 0), which computes what the
model does with the adapter switched off, as in LlamaFactory's model sharing.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import typing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from labkit import hardware
from labkit.adapters import (
    LoraArguments,
    attach_adapter,
    find_all_linear_modules,
    peft_model,
    without_checkpointing_deprecation,
)
from labkit.chat import IGNORE, CausalLM
from labkit.config import option, require, require_choice
from labkit.worker.formats import Sample

Stage = Literal["rm", "dpo", "kto", "grpo"]
STAGES: tuple[str, ...] = typing.get_args(Stage)
# What a stage trains on: the kind of labkit.worker.Sample it needs.
NEEDS: dict[str, str] = {"rm": "preference", "dpo": "preference", "kto": "feedback", "grpo": "prompt"}
# TRL's reward function: (prompts, completions, **columns) -> one float (or None) per completion
Reward = Callable[..., list[float | None]]


# --- the losses, from scratch ----------------------------------------------------------------------

def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log pi(answer | prompt) per row: the summed log-probabilities of the labelled tokens.

    logits (batch, tokens, vocab) from a causal LM; labels (batch, tokens) with IGNORE on the
    prompt and the padding. Position t predicts token t + 1, hence the shift."""
    targets, scores = labels[:, 1:], logits[:, :-1].float()
    keep = targets != IGNORE
    per_token = torch.gather(scores.log_softmax(-1), 2, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (per_token * keep).sum(dim=1)


def dpo_loss(chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float = 0.1
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO's loss (Rafailov et al. 2023, arXiv 2305.18290, eq. 7), mean over pairs, and the implicit
    rewards beta * log(pi / pi_ref) of the chosen and the rejected answers. Inputs: sequence_logps
    of the policy and of the reference, one per pair."""
    chosen_reward = beta * (chosen - ref_chosen)
    rejected_reward = beta * (rejected - ref_rejected)
    loss = -F.logsigmoid(chosen_reward - rejected_reward).mean()
    return loss, chosen_reward.detach(), rejected_reward.detach()


def reward_model_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """Bradley-Terry: the chosen answer's score should exceed the rejected one's."""
    return -F.logsigmoid(chosen - rejected).mean()


# --- the runs, through TRL --------------------------------------------------------------------------

@dataclass
class PreferenceConfig(LoraArguments):
    """A preference run, with LlamaFactory's keys where it has them (stage, pref_beta, kto_*)."""

    stage: Stage = option("dpo", "rm (a reward model), dpo, kto, or grpo (online: generate and reward)")
    pref_beta: float = option(
        0.1, "beta: how far from the reference the policy may move (DPO, KTO; GRPO's KL weight)")
    learning_rate: float = option(5e-5, "peak learning rate of AdamW")
    num_train_epochs: float = option(1.0, "passes over the data (max_steps overrides it)")
    max_steps: int | None = option(None, "optimizer steps; when set, overrides num_train_epochs")
    per_device_train_batch_size: int = option(8, "pairs (or prompts times generations, GRPO) per step")
    gradient_accumulation_steps: int = option(1, "micro-batches per optimizer step")
    cutoff_len: int = option(1024, "longest prompt plus answer, in tokens")
    pref_ftx: float = option(
        0.0, "DPO: weight of an SFT term (the chosen answers' token NLL) added to the loss; 0: none")
    kto_chosen_weight: float = option(1.0, "KTO: weight of the desirable answers' loss")
    kto_rejected_weight: float = option(1.0, "KTO: weight of the undesirable answers' loss")
    num_generations: int = option(4, "GRPO: answers sampled per prompt, compared within their group")
    max_new_tokens: int = option(64, "GRPO: longest sampled answer")
    temperature: float = option(1.0, "GRPO: sampling temperature")
    seed: int = option(42, "seeds the adapter, the data order and the sampling")
    logging_steps: int = option(5, "optimizer steps per entry of the history", bookkeeping=True)
    progress: bool = option(True, "show a progress bar", bookkeeping=True)

    def __post_init__(self) -> None:
        LoraArguments.__post_init__(self)
        require_choice(self, "stage", STAGES)
        require(self.pref_beta > 0, self, "pref_beta", "it must be positive")
        require(self.pref_ftx >= 0, self, "pref_ftx", "it must be 0 or positive")
        require(self.learning_rate > 0, self, "learning_rate", "it must be positive")
        require(self.max_steps is not None or self.num_train_epochs > 0, self, "num_train_epochs",
                "set num_train_epochs > 0 or max_steps")
        batch = self.per_device_train_batch_size
        require(self.stage != "kto" or batch > 1, self, "per_device_train_batch_size",
                "KTO estimates its KL term from the other answers of a batch: use at least 2")
        require(self.stage != "grpo" or self.num_generations >= 2, self, "num_generations",
                "GRPO compares the answers of one prompt: use at least 2")
        require(self.stage != "grpo" or batch % self.num_generations == 0, self,
                "per_device_train_batch_size",
                "GRPO's batch holds whole groups: use a multiple of num_generations")


@dataclass
class PreferenceResult:
    """The trained model (a PEFT model, or the reward model) and what the run logged."""

    model: nn.Module
    history: list[dict[str, float]]  # TRL's log entries: loss, rewards/accuracies, rewards/margins, ...
    steps: int
    seconds: float


def as_rows(samples: Sequence[Sample], stage: str) -> list[dict[str, Any]]:
    """Samples as TRL's conversational rows: prompt (messages), and chosen / rejected, completion /
    label, or nothing (GRPO), by stage. A sample of the wrong kind is an error naming it."""
    need = NEEDS[stage]
    rows = []
    for i, sample in enumerate(samples):
        if sample.kind != need:
            raise ValueError(f"sample {i} ({sample.source or 'no source'}) is {sample.kind} data; stage "
                             f"{stage!r} needs {need} data")
        row: dict[str, Any] = {"prompt": sample.messages()}
        if need == "preference":
            row |= {"chosen": _assistant(sample.chosen), "rejected": _assistant(sample.rejected)}
        elif need == "feedback":
            row |= {"completion": _assistant(sample.response), "label": bool(sample.desirable)}
        rows.append(row)
    if not rows:
        raise ValueError(f"no samples: stage {stage!r} needs {need} data")
    return rows


def _assistant(text: str | None) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": str(text)}]


def train_preference(model: CausalLM, tokenizer: Any, samples: Sequence[Sample], config: PreferenceConfig,
                     reward: Reward | None = None) -> PreferenceResult:
    """Run one preference stage on `model` (a causal LM; for "rm" its weights start the reward model).

    A LoRA adapter is attached here; the reference of DPO, KTO and GRPO is the model with it
    switched off. `reward` (GRPO only): TRL's reward function, (prompts, completions, **_) -> floats.
    """
    if (reward is None) == (config.stage == "grpo"):
        raise ValueError("pass a reward function for stage 'grpo', and only for it")
    from datasets import Dataset

    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")  # TRL's trainers ping the hub when they start
    rows = Dataset.from_list(as_rows(samples, config.stage))
    if config.stage == "rm":
        model = _reward_model_with_lora(reward_model_from(model), config)
    else:
        model, _ = attach_adapter(model, "lora", r=config.lora_rank, alpha=config.lora_alpha,
                                  dropout=config.lora_dropout, target_modules=config.target_modules,
                                  init_lora_weights=config.init_lora_weights, use_rslora=config.use_rslora,
                                  use_dora=config.use_dora, seed=config.seed)
    with tempfile.TemporaryDirectory() as scratch, _quiet(config.progress):
        trainer = _trainer(model, tokenizer, rows, config, reward, scratch)
        if not config.progress:  # without a progress bar, transformers prints every log entry instead
            from transformers import PrinterCallback

            trainer.remove_callback(PrinterCallback)
        result = trainer.train()
    history = [{k: float(v) for k, v in entry.items() if isinstance(v, int | float)}
               for entry in trainer.state.log_history]
    seconds = float(result.metrics["train_runtime"])
    return PreferenceResult(trainer.model, history, trainer.state.global_step, seconds)


@contextlib.contextmanager
def _quiet(progress: bool) -> Iterator[None]:
    """Without `progress`, no progress bars from 🤗 datasets either (TRL tokenizes and filters the rows
    with them)."""
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    if not progress:
        datasets.disable_progress_bars()
    try:
        with without_checkpointing_deprecation():  # TRL's DPO step reads the deprecated name
            yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def _common(config: PreferenceConfig, out: str) -> dict[str, Any]:
    return dict(output_dir=out, learning_rate=config.learning_rate, num_train_epochs=config.num_train_epochs,
                max_steps=config.max_steps or -1,
                per_device_train_batch_size=config.per_device_train_batch_size,
                gradient_accumulation_steps=config.gradient_accumulation_steps, seed=config.seed,
                data_seed=config.seed, logging_steps=config.logging_steps, report_to="none",
                save_strategy="no", activation_checkpointing=False, dataloader_num_workers=0,
                disable_tqdm=not config.progress, **hardware.trainer_precision())


def _trainer(model: CausalLM, tokenizer: Any, rows: Any, config: PreferenceConfig, reward: Reward | None,
             out: str) -> Any:
    import trl

    common = _common(config, out)
    if config.stage == "rm":
        return trl.RewardTrainer(model=model, args=trl.RewardConfig(**common, max_length=config.cutoff_len),
                                 train_dataset=rows, processing_class=tokenizer)
    if config.stage == "dpo":
        losses: dict[str, Any] = {}
        if config.pref_ftx:  # TRL's "sft" loss: the chosen answers' mean token NLL
            losses = {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, config.pref_ftx]}
        dpo = trl.DPOConfig(**common, beta=config.pref_beta, max_length=config.cutoff_len, **losses)
        return trl.DPOTrainer(model=model, ref_model=None, args=dpo, train_dataset=rows,
                              processing_class=tokenizer)
    if config.stage == "kto":
        kto = trl.KTOConfig(**common, beta=config.pref_beta, max_length=config.cutoff_len,
                            desirable_weight=config.kto_chosen_weight,
                            undesirable_weight=config.kto_rejected_weight)
        return trl.KTOTrainer(model=model, ref_model=None, args=kto, train_dataset=rows,
                              processing_class=tokenizer)
    grpo = trl.GRPOConfig(**common, beta=config.pref_beta, num_generations=config.num_generations,
                          max_completion_length=config.max_new_tokens, temperature=config.temperature)
    return trl.GRPOTrainer(model=model, reward_funcs=reward, args=grpo, train_dataset=rows,
                           processing_class=tokenizer)


def reward_model_from(model: CausalLM) -> CausalLM:
    """A sequence-scoring model (one score per sequence, read at its last token) with the causal
    LM's weights and a fresh score head."""
    from transformers import AutoModelForSequenceClassification

    config = model.config.__class__.from_dict({**model.config.to_dict(), "num_labels": 1,
                                               "id2label": {0: "score"}, "label2id": {"score": 0}})
    scorer = AutoModelForSequenceClassification.from_config(config)
    missing, _ = scorer.load_state_dict(model.state_dict(), strict=False)
    if any(not name.startswith("score") for name in missing):
        raise ValueError(f"{type(model).__name__}: the reward model lacks the causal LM's weights "
                         f"{missing[:3]}")
    hidden = int(config.hidden_size)
    with torch.no_grad():
        scorer.score.weight.normal_(std=hidden ** -0.5, generator=torch.Generator().manual_seed(0))
    return scorer.to(next(model.parameters()).device)


def _reward_model_with_lora(scorer: CausalLM, config: PreferenceConfig) -> CausalLM:
    """LoRA on the scorer's linear layers; the score head, which starts random, trains in full."""
    from peft import LoraConfig

    targets = config.target_modules
    if targets == "all-linear":
        targets = [name for name in find_all_linear_modules(scorer) if name != "score"]
    lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=targets, use_rslora=config.use_rslora, use_dora=config.use_dora,
                      modules_to_save=["score"], task_type="SEQ_CLS")
    with hardware.seeded(config.seed):
        return peft_model(scorer, lora)
