"""labkit.train.sft on a tiny random Llama with a word-level ChatML tokenizer built here."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_models import SPECIALS, WORDS, tiny_tokenizer  # tests/ is on sys.path (conftest.py)
from transformers import LlamaConfig, LlamaForCausalLM

from labkit.adapters import attach_adapter
from labkit.train import SFTConfig, StepInfo, StopTraining, train_sft
from labkit import chat
from labkit.train.data import (
    IGNORE,
    Encoded,
    collate,
    collate_packed,
    encode,
    length_grouped_batches,
    pack_rows,
    split_lengths,
)
from labkit.train.sft import AnswerLoss
from labkit.worker import Sample


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(SPECIALS) + len(WORDS), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=64, attn_implementation="sdpa",
                         initializer_range=0.2,  # wide enough a head that LoRA can move the logits
                         eos_token_id=SPECIALS.index("<|im_end|>"))  # generation stops where a turn ends
    return LlamaForCausalLM(config)


def pairs(n: int = 24) -> list[tuple[str, str]]:
    """Prompts of varied length; the answer follows from the prompt, so the loss can fall."""
    out = []
    for i in range(n):
        sick = i % 2 == 0
        prompt = f"the patient is {'old ' * (i % 5)}age {i % 10} glucose {'high' if sick else 'low'} sick ?"
        out.append((prompt, "yes" if sick else "no"))
    return out


def config(tmp_path: Path | None = None, **changes: object) -> SFTConfig:
    base = dict(output_dir=tmp_path, lora_rank=4, lora_alpha=8, learning_rate=5e-3,
                per_device_train_batch_size=4, max_steps=6, cutoff_len=32, seed=3, logging_steps=2,
                progress=False)
    return SFTConfig(**{**base, **changes})  # type: ignore[arg-type]


def adapter_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_loss_goes_on_the_answer_and_the_prompt_matches_the_annotators_rendering() -> None:
    tok = tiny_tokenizer()
    data = encode(tok, [("is the patient sick ?", "yes")], cutoff=64, system="be brief")
    example = data.examples[0]
    messages = [{"role": "system", "content": "be brief"},
                {"role": "user", "content": "is the patient sick ?"}]
    prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert list(example.ids[:example.prompt_len]) == tok(prompt, add_special_tokens=False)["input_ids"]
    batch = collate(data.examples, pad_id=0, device=torch.device("cpu"))
    answer = batch["labels"][batch["labels"] != IGNORE]
    assert answer.tolist() == tok.convert_tokens_to_ids(["yes", "<|im_end|>"])


def test_long_examples_are_cut_to_the_cutoff_and_counted() -> None:
    assert split_lengths(10, 3, 256) == (10, 3)
    assert split_lengths(300, 10, 256) == (246, 10)  # short answer kept whole
    assert split_lengths(20, 400, 256) == (20, 236)  # short prompt kept whole
    assert split_lengths(300, 300, 256) == (128, 128)
    data = encode(tiny_tokenizer(), [("old " * 40 + "sick ?", "yes"), ("sick ?", "no")], cutoff=16)
    assert data.truncated == 1
    assert [len(e.ids) for e in data.examples] == [16, 9]
    assert data.examples[0].prompt_len == 14  # the two answer tokens ("yes", end of turn) are kept
    # the prompt lost its start, not its end: the question and the assistant header are still there
    whole = encode(tiny_tokenizer(), [("old " * 40 + "sick ?", "yes")], cutoff=512).examples[0]
    assert data.examples[0].ids[:14] == whole.ids[whole.prompt_len - 14 : whole.prompt_len]


def test_bad_examples_name_the_example_and_the_fix() -> None:
    with pytest.raises(ValueError, match="example 1: expected a \\(prompt, answer\\) pair"):
        encode(tiny_tokenizer(), [("sick ?", "yes"), {"prompt": "sick ?"}], cutoff=16)
    tok = tiny_tokenizer()
    tok.chat_template = None
    with pytest.raises(ValueError, match="has no chat template"):
        encode(tok, [("sick ?", "yes")], cutoff=16)


def test_a_weight_counts_an_example_that_many_times_and_bad_weights_are_refused() -> None:
    from labkit.train.sft import _answer_weight

    tok = tiny_tokenizer()
    (a, _), (b, _) = pairs(2)
    weighted = collate(encode(tok, [{"prompt": a, "answer": "yes", "weight": 2.0},
                                    {"prompt": b, "answer": "no", "weight": 0.0}], cutoff=32).examples,
                       0, torch.device("cpu"))
    doubled = collate(encode(tok, [(a, "yes"), (a, "yes")], cutoff=32).examples, 0, torch.device("cpu"))
    loss = AnswerLoss(tiny_llama(), doubled)
    for path in (loss._fast, loss._full):
        assert torch.allclose(path(weighted), path(doubled), rtol=1e-5)
    assert _answer_weight(weighted) == _answer_weight(doubled) == 4  # "yes" and the end of turn, twice
    for bad in (-1, float("nan"), "0.5", True):
        with pytest.raises(ValueError, match="example 1: 'weight' must be a finite number >= 0"):
            encode(tok, [(a, "yes"), {"prompt": a, "answer": "yes", "weight": bad}], cutoff=32)


def test_yes_and_no_weighted_p_and_1_minus_p_teach_the_soft_label_p() -> None:
    tok = tiny_tokenizer()
    prompt = "the patient is old glucose high sick ?"
    examples = [{"prompt": prompt, "answer": "yes", "weight": 0.8},
                {"prompt": prompt, "answer": "no", "weight": 0.2}] * 4
    result = train_sft(tiny_llama(), tok, examples, config(max_steps=40, learning_rate=2e-2))
    ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        logits = result.model(input_ids=ids).logits[0, -1]
    yes = logits[tok.convert_tokens_to_ids(["yes", "no"])].softmax(-1)[0]
    assert abs(float(yes) - 0.8) < 0.05  # P(yes) among {yes, no}


def test_length_grouped_batches_cover_every_example_once_in_a_seeded_order() -> None:
    lengths = [(i * 37) % 50 for i in range(103)]
    epoch0 = length_grouped_batches(lengths, 4, seed=1, epoch=0)
    assert sorted(i for b in epoch0 for i in b) == list(range(103))
    assert epoch0 == length_grouped_batches(lengths, 4, seed=1, epoch=0)
    assert epoch0 != length_grouped_batches(lengths, 4, seed=1, epoch=1)
    grouped = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in epoch0)
    plain = length_grouped_batches(lengths, 4, seed=1, epoch=0, group_by_length=False)
    assert grouped < sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in plain) / 4


def test_the_answer_only_head_gives_the_loss_and_gradients_of_the_full_forward() -> None:
    from labkit.adapters import attach_adapter

    data = encode(tiny_tokenizer(), pairs(6), cutoff=32)
    batch = collate(data.examples, pad_id=0, device=torch.device("cpu"))
    assert (batch["attention_mask"] == 0).any()  # the batch holds padding
    model, _ = attach_adapter(tiny_llama(), "lora", r=4, seed=0)
    for name, p in model.named_parameters():
        if "lora_B" in name:  # B starts at zero, which would leave every lora_A gradient zero
            torch.nn.init.normal_(p, std=0.1)
    loss = AnswerLoss(model, batch)
    assert loss.path == "answer-only head"
    grads = []
    for path in (loss._fast, loss._full):
        model.zero_grad()
        value = path(batch)
        value.backward()
        grads.append((value.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]))
    assert torch.allclose(grads[0][0], grads[1][0], rtol=1e-5)
    for a, b in zip(grads[0][1], grads[1][1], strict=True):
        scale = float(a.abs().max())
        assert scale > 0 and torch.allclose(a, b, rtol=1e-4, atol=1e-5 * scale)


class ScaledLogitsLlama(LlamaForCausalLM):
    """A model whose forward does more than decoder + head (as Gemma's logit soft-capping does)."""

    def forward(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        out = super().forward(*args, **kwargs)
        out.logits = out.logits * 2
        return out


def test_a_model_the_fast_loss_does_not_fit_gets_the_full_forward() -> None:
    from labkit.adapters import attach_adapter

    model = ScaledLogitsLlama(tiny_llama().config)
    model, _ = attach_adapter(model, "lora", r=4, seed=0)
    batch = collate(encode(tiny_tokenizer(), pairs(4), cutoff=32).examples, 0, torch.device("cpu"))
    with pytest.warns(UserWarning, match="uses the full forward"):
        loss = AnswerLoss(model, batch)
    assert loss.path == "full forward"


def test_training_lowers_the_loss_and_touches_only_the_adapter() -> None:
    model = tiny_llama()
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = train_sft(model, tiny_tokenizer(), pairs(), config(max_steps=12, learning_rate=2e-2))
    assert result.history[-1]["loss"] < 0.5 * result.history[0]["loss"]
    assert result.steps == 12 and [h["step"] for h in result.history] == list(range(2, 13, 2))
    for name, p in result.model.named_parameters():
        if "lora_" not in name:
            short = name.removeprefix("base_model.model.").replace(".base_layer", "")
            assert torch.equal(p, base[short]), name
    assert result.tokens_per_second > 0 and result.peak_memory_mib > 10
    assert result.trainable.finetuning_type == "lora" and result.loss_path == "answer-only head"


def test_one_epoch_counts_every_token_once() -> None:
    tok = tiny_tokenizer()
    result = train_sft(tiny_llama(), tok, pairs(10),
                       config(max_steps=None, num_train_epochs=1, per_device_train_batch_size=4))
    assert result.steps == 3  # 10 examples in batches of 4
    assert result.tokens == encode(tok, pairs(10), cutoff=32).tokens


def test_same_seed_same_weights() -> None:
    runs = [train_sft(tiny_llama(), tiny_tokenizer(), pairs(), config(lora_dropout=0.1)) for _ in range(2)]
    a, b = (adapter_weights(r.model) for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = adapter_weights(train_sft(tiny_llama(), tiny_tokenizer(), pairs(), config(seed=4)).model)
    assert not all(torch.equal(a[k], other[k]) for k in a)


class Interrupt(Exception):
    pass


def interrupt_after(k: int):  # noqa: ANN201
    def callback(info: StepInfo) -> None:
        if info.step == k:
            raise Interrupt
    return callback


def test_resume_after_an_interruption_ends_with_the_uninterrupted_weights(tmp_path: Path) -> None:
    # dropout and accumulation make the run depend on the restored random state and data position
    settings = dict(lora_dropout=0.1, gradient_accumulation_steps=2, per_device_train_batch_size=3,
                    max_steps=7, save_steps=2, lr_scheduler_type="cosine", warmup_ratio=0.2)
    full = train_sft(tiny_llama(), tiny_tokenizer(), pairs(), config(tmp_path / "a", **settings))

    with pytest.raises(Interrupt):
        train_sft(tiny_llama(), tiny_tokenizer(), pairs(), config(tmp_path / "b", **settings),
                  callbacks=[interrupt_after(5)])
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    resumed = train_sft(tiny_llama(), tiny_tokenizer(), pairs(), config(tmp_path / "b", **settings),
                        resume=True)

    assert resumed.resumed_from == 4 and resumed.steps == 7
    a, b = adapter_weights(full.model), adapter_weights(resumed.model)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k]) for k in a)
    assert resumed.history == full.history
    assert resumed.checkpoint == tmp_path / "b" / "checkpoint-7"


def test_a_failing_callback_finds_the_checkpoint_of_its_step_written(tmp_path: Path) -> None:
    with pytest.raises(Interrupt):
        train_sft(tiny_llama(), tiny_tokenizer(), pairs(), config(tmp_path, max_steps=6, save_steps=2),
                  callbacks=[interrupt_after(4)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2", "checkpoint-4"]


def test_a_stop_ends_the_run_with_a_checkpoint_that_resumes_to_the_uninterrupted_weights(tmp_path: Path) -> None:
    settings = dict(lora_dropout=0.1, max_steps=6, per_device_train_batch_size=3)
    full = train_sft(tiny_llama(), tiny_tokenizer(), pairs(), config(tmp_path / "a", **settings))
    seen: list[int] = []

    def stop_at_3(info: StepInfo) -> None:
        if info.step == 3:
            raise StopTraining

    stopped = train_sft(tiny_llama(), tiny_tokenizer(), pairs(), config(tmp_path / "b", **settings),
                        callbacks=[stop_at_3, lambda info: seen.append(info.step)])
    assert stopped.stopped and stopped.steps == 3 and seen == [1, 2, 3]  # the next callback saw step 3
    assert stopped.checkpoint == tmp_path / "b" / "checkpoint-3" and stopped.checkpoint.is_dir()
    resumed = train_sft(tiny_llama(), tiny_tokenizer(), pairs(), config(tmp_path / "b", **settings), resume=True)
    assert resumed.resumed_from == 3 and not resumed.stopped
    a, b = adapter_weights(full.model), adapter_weights(resumed.model)
    assert all(torch.allclose(a[k], b[k]) for k in a)


def test_resuming_a_finished_run_trains_nothing_and_returns_its_weights(tmp_path: Path) -> None:
    done = train_sft(tiny_llama(), tiny_tokenizer(), pairs(), config(tmp_path, max_steps=3))
    again = train_sft(tiny_llama(), tiny_tokenizer(), pairs(), config(tmp_path, max_steps=3), resume=True)
    assert again.resumed_from == 3 and again.tokens == 0
    assert again.final_loss == done.final_loss and again.history == done.history
    a, b = adapter_weights(done.model), adapter_weights(again.model)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_other_settings(tmp_path: Path) -> None:
    train_sft(tiny_llama(), tiny_tokenizer(), pairs(), config(tmp_path, max_steps=2))
    with pytest.raises(ValueError, match="learning_rate: 0.005 -> 0.001"):
        train_sft(tiny_llama(), tiny_tokenizer(), pairs(), config(tmp_path, max_steps=2, learning_rate=1e-3),
                  resume=True)


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="SFTConfig.per_device_train_batch_size=0"):
        train_sft(tiny_llama(), tiny_tokenizer(), pairs(), config(per_device_train_batch_size=0))


# Every method of LlamaFactory's table is a value of SFTConfig (finetuning_type plus switches).
METHODS: dict[str, dict[str, object]] = {
    "full": dict(finetuning_type="full", learning_rate=2e-3),
    "freeze": dict(finetuning_type="freeze", freeze_trainable_layers=1, learning_rate=2e-3),
    "lora": dict(),
    "rslora": dict(use_rslora=True),
    "dora": dict(use_dora=True),
    "pissa": dict(pissa_init=True, pissa_iter=-1, learning_rate=2e-3),
    "loraplus": dict(loraplus_lr_ratio=4.0),
    "galore": dict(finetuning_type="full", use_galore=True, galore_rank=4, galore_update_interval=3,
                   galore_scale=0.5, learning_rate=2e-3),
    "checkpointed": dict(gradient_checkpointing=True),
}


@pytest.mark.parametrize("method", METHODS)
def test_every_method_lowers_the_loss(method: str) -> None:
    settings = {"max_steps": 10, "learning_rate": 2e-2, **METHODS[method]}
    result = train_sft(tiny_llama(), tiny_tokenizer(), pairs(), config(**settings))
    assert result.history[-1]["loss"] < 0.7 * result.history[0]["loss"], result.history


def test_gradient_checkpointing_changes_memory_not_the_result() -> None:
    plain = train_sft(tiny_llama(), tiny_tokenizer(), pairs(), config(max_steps=3))
    checkpointed = train_sft(tiny_llama(), tiny_tokenizer(), pairs(), config(max_steps=3, gradient_checkpointing=True))
    a, b = adapter_weights(plain.model), adapter_weights(checkpointed.model)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_loraplus_gives_b_its_own_learning_rate() -> None:
    from labkit.train.sft import parameter_groups

    cfg = config(loraplus_lr_ratio=16.0, learning_rate=1e-3)
    model, _ = attach_adapter(tiny_llama(), "lora", r=4)
    slow, fast = parameter_groups(model, cfg)
    names = {id(p): n for n, p in model.named_parameters()}
    assert fast["lr"] == pytest.approx(1.6e-2) and "lr" not in slow
    assert fast["params"] and all("lora_B" in names[id(p)] for p in fast["params"])
    assert slow["params"] and all("lora_A" in names[id(p)] for p in slow["params"])


def test_galore_keeps_adam_moments_of_rank_r_for_the_linear_weights_only() -> None:
    from labkit.train.sft import _Optimizer

    cfg = config(**METHODS["galore"])
    model, _ = attach_adapter(tiny_llama(), "full")
    optimizer = _Optimizer.create(model, cfg, total=2, dtype=torch.float32)
    model(input_ids=torch.tensor([[1, 2, 3, 4]]), labels=torch.tensor([[1, 2, 3, 4]])).loss.backward()
    optimizer.step(max_grad_norm=1.0)
    moments = {name: optimizer.adamw.state[p]["exp_avg"].shape for name, p in model.named_parameters()}
    assert moments["model.layers.0.mlp.down_proj.weight"] == (4, 64)  # wide (32, 64): P^T G is (r, n)
    assert moments["model.layers.0.mlp.up_proj.weight"] == (64, 4)    # tall (64, 32): G P^T is (m, r)
    assert moments["model.embed_tokens.weight"] == model.model.embed_tokens.weight.shape  # plain AdamW
    assert moments["lm_head.weight"] == model.lm_head.weight.shape


@pytest.mark.parametrize(("changes", "message"), [
    (dict(finetuning_type="full", use_dora=True), "SFTConfig.use_dora=True: it applies to finetuning_type 'lora'"),
    (dict(use_galore=True), "SFTConfig.use_galore=True: GaLore trains full weights"),
    (dict(quantization_bit=3), "SFTConfig.quantization_bit=3: use 4, 8 or None"),
    (dict(quantization_bit=4, pissa_init=True), "SFTConfig.pissa_init=True: PiSSA rewrites"),
    (dict(finetuning_type="freeze", quantization_bit=4), "quantization_bit=4: it applies to finetuning_type 'lora'"),
    (dict(quantization_type="int4"), "SFTConfig.quantization_type='int4'"),
    (dict(loraplus_lr_ratio=0.0), "SFTConfig.loraplus_lr_ratio=0.0"),
])
def test_methods_that_do_not_go_together_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        config(**changes)


def test_the_config_must_describe_how_the_model_was_loaded() -> None:
    with pytest.raises(ValueError, match=r"quantization_bit=4, but the model was loaded without quantization: "
                                         r"load it with labkit.loader.load_model\(path, quantization='4bit'\)"):
        train_sft(tiny_llama(), tiny_tokenizer(), pairs(), config(quantization_bit=4))
    with pytest.raises(ValueError, match="bf16=True, but cpu is a CPU or a GPU older than Ampere"):
        train_sft(tiny_llama(), tiny_tokenizer(), pairs(), config(bf16=True))


def test_qlora_keeps_the_4bit_layers_passing_gradients_on_any_cpu(tmp_path: Path) -> None:
    """On a CPU with AVX512-BF16, bitsandbytes repacks a 4-bit layer the first time it runs in eval mode
    without gradients (train_sft's check of the fast loss is such a forward); repacked, it passes no
    gradient to its input. After train_sft the layers must still pass it."""
    from labkit.loader import load_model

    tiny_llama().save_pretrained(tmp_path / "model")
    model = load_model(tmp_path / "model", quantization=4)
    result = train_sft(model, tiny_tokenizer(), pairs(), config(quantization_bit=4, max_steps=2))
    layer = result.model.base_model.model.model.layers[1].mlp.down_proj.base_layer
    x = torch.randn(3, layer.in_features, requires_grad=True)
    layer.train()
    layer(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_training_warns_when_generation_would_not_stop_at_the_end_of_turn() -> None:
    model = tiny_llama()
    model.generation_config.eos_token_id = SPECIALS.index("<pad>")
    with pytest.warns(UserWarning, match=r"SFT: training teaches the model to close its turn with '<\|im_end\|>'"):
        train_sft(model, tiny_tokenizer(), pairs(), config(max_steps=1))


# --- conversations, masks and packing --------------------------------------------------------------

TALK = Sample("is the patient old ?", history=(("is the patient sick ?", "yes"), ("is glucose high ?", "no")),
              system="be brief", response="yes")


def trained_words(tok: object, example: Encoded) -> list[str]:
    return tok.convert_ids_to_tokens([i for i, t in zip(example.ids, example.trained, strict=True) if t])  # type: ignore[attr-defined]


def test_every_answer_of_a_conversation_is_trained_or_only_the_last_one() -> None:
    tok = tiny_tokenizer()
    every = encode(tok, [TALK], cutoff=64).examples[0]
    assert trained_words(tok, every) == ["yes", "<|im_end|>", "no", "<|im_end|>", "yes", "<|im_end|>"]
    last = encode(tok, [TALK], cutoff=64, mask_history=True).examples[0]
    assert trained_words(tok, last) == ["yes", "<|im_end|>"] and last.ids == every.ids
    # the last answer's prompt is exactly what the model reads at inference
    prompt, _ = chat.prompt_batch(tok, [TALK.messages()], torch.device("cpu"))[:2]
    assert list(last.ids[:last.prompt_len]) == prompt[0].tolist()
    assert all(encode(tok, [TALK], cutoff=64, train_on_prompt=True).examples[0].trained)


def test_a_long_conversation_loses_its_oldest_turns_first() -> None:
    tok = tiny_tokenizer()
    whole = encode(tok, [TALK], cutoff=64).examples[0]
    cut = encode(tok, [TALK], cutoff=len(whole.ids) - 1)
    assert cut.truncated == 1
    assert trained_words(tok, cut.examples[0]) == ["no", "<|im_end|>", "yes", "<|im_end|>"]
    assert tok.convert_ids_to_tokens(list(cut.examples[0].ids[:6])) == [
        "<|im_start|>", "system", "be", "brief", "<|im_end|>", "<|im_start|>"]  # the system message stays


def test_preference_data_is_refused_by_sft_with_its_source() -> None:
    pair = Sample("sick ?", chosen="yes", rejected="no", source="pairs.jsonl row 4")
    with pytest.raises(ValueError, match=r"example 0 \(pairs.jsonl row 4\) is preference data"):
        encode(tiny_tokenizer(), [pair], cutoff=32)


def test_packing_puts_examples_in_few_rows_best_fit_first() -> None:
    assert pack_rows([5, 3, 4, 2, 6], capacity=8) == [[4, 3], [0, 1], [2]]
    assert sorted(i for row in pack_rows([7] * 9 + [1] * 9, 8) for i in row) == list(range(18))
    with pytest.raises(ValueError, match=r"examples \[1\] are longer than a row \(8 tokens\)"):
        pack_rows([3, 9], 8)


@pytest.mark.parametrize("full", [True, False])
def test_a_packed_example_sees_only_itself(full: bool) -> None:
    """Each example's loss in a packed row equals its loss alone: no example attends to another."""
    model, tok = tiny_llama().eval(), tiny_tokenizer()
    examples = encode(tok, pairs(6), cutoff=32).examples
    loss = AnswerLoss(model, collate(examples[:2], 0, torch.device("cpu")), fast=not full)
    alone = torch.stack([loss._full(collate([e], 0, torch.device("cpu")), "none").sum() for e in examples])
    rows = pack_rows([len(e.ids) for e in examples], 48)
    assert len(rows) < len(examples)
    batch = collate_packed([[examples[i] for i in row] for row in rows], 0, torch.device("cpu"))
    assert "attention_mask" not in batch  # a mask of ones would let the examples see each other
    packed = loss._full(batch, "none") if full else loss._fast(batch, "none")
    expected = torch.cat([torch.cat([loss._full(collate([examples[i]], 0, torch.device("cpu")), "none")
                                     for i in row]) for row in rows])
    assert torch.allclose(packed, expected, atol=1e-5)
    assert torch.isclose(packed.sum(), alone.sum(), atol=1e-4)
    leaky = {**batch, "attention_mask": torch.ones_like(batch["input_ids"])}
    leaky.pop("position_ids")
    assert not torch.allclose(loss._full(leaky, "none"), expected, atol=1e-3)  # what plain packing does


def test_packed_training_matches_padded_training() -> None:
    padded = train_sft(tiny_llama(), tiny_tokenizer(), pairs(), config(max_steps=1, per_device_train_batch_size=24))
    packed = train_sft(tiny_llama(), tiny_tokenizer(), pairs(),
                       config(max_steps=1, per_device_train_batch_size=24, packing=True, cutoff_len=64))
    assert packed.final_loss == pytest.approx(padded.final_loss, abs=1e-5)
    a, b = adapter_weights(padded.model), adapter_weights(packed.model)
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    run = train_sft(tiny_llama(), tiny_tokenizer(), pairs(), config(packing=True, cutoff_len=64, max_steps=None,
                                                                    num_train_epochs=1.0))
    assert run.steps < config(max_steps=None).total_steps(24)  # 24 examples fill fewer than 24 rows of 64
