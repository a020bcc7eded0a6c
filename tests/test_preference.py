"""labkit.train.preference: DPO written out equals TRL's; every stage trains on CPU in fp32 with the
reference as the adapter switched off; TRL reads the pair with the kit's template."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from datasets import Dataset
from peft import PeftModel
from test_sft import adapter_weights, tiny_llama  # tests/ is on sys.path (conftest.py)
from tiny_models import tiny_tokenizer

from labkit.adapters import attach_adapter
from labkit.chat import IGNORE, check_template
from labkit.loader import load_tokenizer
from labkit.train.data import encode
from labkit.train.preference import (
    PreferenceConfig,
    _trainer,
    as_rows,
    dpo_loss,
    reward_model_from,
    sequence_logps,
    train_preference,
)
from labkit.worker import Sample

PAIRS = [Sample(f"is the patient {'old' if i % 2 else 'young'} ?", chosen="yes" if i % 2 else "no",
                rejected="no" if i % 2 else "yes") for i in range(8)]
FEEDBACK = [Sample(p.prompt, response=answer, desirable=answer == p.chosen)
            for p in PAIRS for answer in (p.chosen, p.rejected)]


def config(**changes: object) -> PreferenceConfig:
    base = dict(max_steps=2, per_device_train_batch_size=4, learning_rate=1e-2, lora_rank=4, lora_alpha=8,
                logging_steps=1, progress=False, seed=0)
    return PreferenceConfig(**{**base, **changes})  # type: ignore[arg-type]


def test_dpo_written_out_equals_trls_loss_on_a_batch(tmp_path: Path) -> None:
    model, _ = attach_adapter(tiny_llama(), "lora", r=4, alpha=8, seed=0)
    trainer = _trainer(model, tiny_tokenizer(), Dataset.from_list(as_rows(PAIRS, "dpo")),
                       config(stage="dpo", pref_beta=0.3), None, str(tmp_path))
    with torch.no_grad():  # as if trained: the policy's adapter moves, the reference's copy stays at zero
        for name, p in model.named_parameters():
            if "lora_B.default" in name:
                p.normal_(std=0.3)
    batch = next(iter(trainer.get_train_dataloader()))
    expected = trainer.compute_loss(trainer.model, batch).item()
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, IGNORE)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    with model.disable_adapter(), torch.no_grad():
        ref_logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    chosen, rejected = sequence_logps(logits, labels).chunk(2)  # TRL's batch: the chosen, then the rejected
    ref_chosen, ref_rejected = sequence_logps(ref_logits, labels).chunk(2)
    loss, chosen_reward, rejected_reward = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta=0.3)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert loss.item() != pytest.approx(torch.log(torch.tensor(2.0)).item(), rel=1e-3)  # not the untrained value
    assert (chosen_reward != rejected_reward).any()


@pytest.mark.parametrize(("stage", "samples"), [("dpo", PAIRS), ("kto", FEEDBACK), ("rm", PAIRS)])
def test_each_offline_stage_trains_the_adapter(stage: str, samples: list[Sample]) -> None:
    model = tiny_llama()
    result = train_preference(model, tiny_tokenizer(), samples, config(stage=stage))
    assert result.steps == 2 and isinstance(result.model, PeftModel)
    losses = [entry["loss"] for entry in result.history if "loss" in entry]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    trained = adapter_weights(result.model)
    assert any("lora_B" in name and p.abs().sum() > 0 for name, p in trained.items())  # B moved from zero
    assert next(result.model.parameters()).dtype == torch.float32  # the kit's dtype rule on a CPU
    if stage == "dpo":
        assert "rewards/accuracies" in result.history[0]


def test_grpo_samples_rewards_and_trains() -> None:
    calls = []

    def says_yes(prompts: list, completions: list, **_: object) -> list[float | None]:
        texts = [c[0]["content"] for c in completions]
        calls.append(texts)
        return [float("yes" in t.split()) for t in texts]

    prompts = [Sample(p.prompt) for p in PAIRS]
    result = train_preference(tiny_llama(), tiny_tokenizer(), prompts,
                              config(stage="grpo", num_generations=4, max_new_tokens=4), reward=says_yes)
    assert result.steps == 2 and len(calls) == 2 and all(len(texts) == 4 for texts in calls)


def test_a_stage_refuses_data_of_another_kind_and_a_misplaced_reward() -> None:
    with pytest.raises(ValueError, match=r"sample 0 \(no source\) is preference data; stage 'kto' needs feedback"):
        as_rows(PAIRS, "kto")
    with pytest.raises(ValueError, match="pass a reward function for stage 'grpo', and only for it"):
        train_preference(tiny_llama(), tiny_tokenizer(), PAIRS, config(stage="dpo"), reward=lambda **_: [])
    with pytest.raises(ValueError, match="GRPO's batch holds whole groups"):
        config(stage="grpo", num_generations=3, per_device_train_batch_size=4)


def test_trl_reads_a_pair_with_the_templates_ids(tmp_path: Path) -> None:
    """The ids TRL's DPO trains on for (prompt, chosen) are the kit's SFT ids, end of turn included."""
    tokenizer = load_tokenizer(None)
    pair = Sample("Is a fasting glucose of 140 mg/dL high?", chosen="Yes", rejected="No")
    model, _ = attach_adapter(tiny_llama(), "lora", r=4, alpha=8, seed=0)
    trainer = _trainer(model, tokenizer, Dataset.from_list(as_rows([pair], "dpo")),
                       config(stage="dpo"), None, str(tmp_path))
    row = trainer.train_dataset[0]
    trained = row["prompt_ids"] + row["chosen_ids"]
    kit = encode(tokenizer, [(pair.prompt, "Yes")], cutoff=256).examples[0]
    report = check_template(tokenizer, pair.messages(), "Yes", trained_ids=trained)
    assert trained == list(kit.ids), str(report)


def test_the_reward_model_keeps_the_lms_weights() -> None:
    model = tiny_llama()
    scorer = reward_model_from(model)
    assert torch.equal(scorer.model.layers[0].self_attn.q_proj.weight, model.model.layers[0].self_attn.q_proj.weight)
    assert scorer.score.weight.shape == (1, model.config.hidden_size)


def test_a_quiet_run_prints_no_bars_or_deprecations_and_restores_the_bars() -> None:
    import warnings

    import datasets

    assert datasets.is_progress_bar_enabled()
    with warnings.catch_warnings(record=True) as caught:
        train_preference(tiny_llama(), tiny_tokenizer(), PAIRS, config(stage="dpo", progress=False))
    assert not [w for w in caught if issubclass(w.category, FutureWarning)], [str(w.message) for w in caught]
    assert datasets.is_progress_bar_enabled()  # switched off for the run only
