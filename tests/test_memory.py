"""labkit.memory: the ledger's counts against what autograd saves, what bitsandbytes stores and what
the allocator holds, on tiny Llamas."""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_models import SPECIALS, WORDS, tiny_tokenizer  # tests/ is on sys.path (conftest.py)
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from labkit import memory
from labkit.adapters import attach_adapter
from labkit.chat import IGNORE
from labkit.train import SFTConfig, train_sft
from labkit.train.data import collate, encode
from labkit.train.sft import AnswerLoss

BATCH, SEQ, ANSWER = 2, 12, 4  # rows, tokens per row, answer tokens per row (the last ANSWER)


def llama(*, layers: int = 3, heads: int = 4, kv_heads: int = 2, hidden: int = 16, intermediate: int = 40,
          vocab: int = 64, tied: bool = False) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                         max_position_embeddings=256, tie_word_embeddings=tied, attn_implementation="sdpa",
                         eos_token_id=SPECIALS.index("<|im_end|>"))  # tiny_tokenizer's end of turn
    return LlamaForCausalLM(config)


def batch(vocab: int = 64) -> dict[str, torch.Tensor]:
    """Rows without padding; the loss on the last ANSWER tokens of each."""
    ids = torch.randint(3, vocab, (BATCH, SEQ), generator=torch.Generator().manual_seed(1))
    labels = torch.full_like(ids, IGNORE)
    labels[:, -ANSWER:] = ids[:, -ANSWER:]
    return {"input_ids": ids, "labels": labels, "attention_mask": torch.ones_like(ids),
            "weights": (labels != IGNORE).float(), "tokens": torch.ones_like(ids)}


def saved_activation_bytes(model: nn.Module, data: dict[str, torch.Tensor]) -> int:
    """Bytes of the distinct storages that autograd saved in one forward pass of the kit's loss and
    still holds at its end (weights left out): measured with saved_tensors_hooks."""
    weights = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    packed: list[weakref.ref[torch.Tensor]] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.untyped_storage().data_ptr() not in weights:
            packed.append(weakref.ref(tensor))
        return tensor

    loss_fn = AnswerLoss(model, data)
    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = loss_fn(data)
    alive = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
             for t in (ref() for ref in packed) if t is not None}
    assert loss.requires_grad
    return sum(alive.values())


def answer_tokens() -> int:
    return BATCH * ANSWER


METHODS: list[tuple[str, dict[str, Any]]] = [
    ("full", {}),
    ("lora", {"r": 4}),
    ("lora", {"r": 4, "target_modules": ["q_proj", "v_proj"]}),
    ("lora", {"r": 4, "target_modules": ["o_proj"]}),
    ("lora", {"r": 4, "target_modules": ["down_proj"]}),
    ("freeze", {"freeze_trainable_layers": 1}),
    ("freeze", {"freeze_trainable_layers": 2}),
    ("freeze", {"freeze_trainable_layers": 1, "freeze_trainable_modules": "mlp"}),
]


@pytest.mark.parametrize(("method", "options"), METHODS)
@pytest.mark.parametrize("tied", [False, True])
def test_activation_formula_counts_exactly_what_autograd_saves(method: str, options: dict[str, Any],
                                                                tied: bool) -> None:
    model, _ = attach_adapter(llama(tied=tied), method, **options)  # type: ignore[arg-type]
    ledger = memory.predict(model, batch_size=BATCH, seq_len=SEQ, answer_tokens=answer_tokens())
    assert ledger.activations == saved_activation_bytes(model, batch())


def test_each_layer_adds_the_per_layer_count() -> None:
    """One more decoder layer adds exactly the formula's count for one layer (full fine-tuning)."""
    two, three = llama(layers=2), llama(layers=3)
    shape = memory.Dimensions.of(three)
    per_token = memory.layer_activations(shape, memory.layer_plans(three, grad_in=True)[1])
    elements = sum(per_token.values())
    # 8 hidden + 2 kv + 4 intermediate + heads + 2 numbers per token (docs/memory.md derives them)
    assert elements == 8 * 16 + 2 * 2 * 4 + 4 * 40 + 4 + 2
    step = saved_activation_bytes(three, batch()) - saved_activation_bytes(two, batch())
    assert step == BATCH * SEQ * 4 * elements


def test_frozen_layers_below_the_trained_ones_save_nothing() -> None:
    model, _ = attach_adapter(llama(layers=4), "freeze", freeze_trainable_layers=1)
    plans = memory.layer_plans(model, grad_in=False)
    shape = memory.Dimensions.of(model)
    counts = [sum(memory.layer_activations(shape, plan).values()) for plan in plans]
    assert counts[:3] == [0, 0, 0] and counts[3] > 0


def test_dora_keeps_its_two_outputs_per_adapted_layer() -> None:
    """DoRA saves the base and the LoRA output of each layer for the magnitude's gradient; the
    formula leaves out a few constants of the first layer (below 0.1%)."""
    model, _ = attach_adapter(llama(), "lora", r=4, use_dora=True)
    lora, _ = attach_adapter(llama(), "lora", r=4)
    ledger = memory.predict(model, batch_size=BATCH, seq_len=SEQ, answer_tokens=answer_tokens())
    plain = memory.predict(lora, batch_size=BATCH, seq_len=SEQ, answer_tokens=answer_tokens())
    measured = saved_activation_bytes(model, batch())
    assert ledger.activations > 1.5 * plain.activations
    assert abs(ledger.activations - measured) / measured < 1e-3


# --- weights ------------------------------------------------------------------------------------

def quantized_llama(tmp_path: Path, bits: int, **options: Any) -> nn.Module:
    pytest.importorskip("bitsandbytes")
    from labkit.loader import load_model

    # sizes that are multiples of bitsandbytes' block of 64
    llama(layers=1, heads=2, kv_heads=1, hidden=64, intermediate=128, vocab=128).save_pretrained(tmp_path)
    return load_model(tmp_path, quantization=bits, **options)


def bnb_tensors(param: torch.Tensor) -> list[torch.Tensor]:
    """Every tensor bitsandbytes keeps for one quantized weight, found here independently of labkit."""
    state = getattr(param, "quant_state", None)
    if state is None:  # LLM.int8: the int8 weight and its absmax per row (SCB)
        return [param, param.SCB]  # type: ignore[attr-defined]
    found = [param, state.absmax, state.code]
    if state.nested:
        found += [state.offset, state.state2.absmax, state.state2.code]
    return found


@pytest.mark.parametrize(("bits", "options"), [(4, {}), (4, {"double_quantization": False}), (8, {})])
def test_quantized_weight_bytes_match_bitsandbytes_storage(tmp_path: Path, bits: int,
                                                           options: dict[str, Any]) -> None:
    model = quantized_llama(tmp_path, bits, **options)
    quantized = [p for p in model.parameters() if p.dtype in (torch.uint8, torch.int8)]
    assert len(quantized) == 7  # q, k, v, o, gate, up, down
    fp32 = memory.get_precision("fp32")
    for param in quantized:
        stored = sum(t.numel() * t.element_size() for t in bnb_tensors(param))
        assert memory.weight_bytes(param, fp32) == stored
    ledger = memory.predict(model, batch_size=1, seq_len=8)
    assert ledger.weights == memory.storage_bytes(model)


def test_nf4_with_double_quantization_costs_4_127_bits_per_weight() -> None:
    """QLoRA's figure: 4 bits + 8 bits per block of 64 + 32 bits per 256 blocks (tables aside)."""
    n = 64 * 256 * 1024
    bits = 8 * memory.nf4_bytes(n) / n
    assert bits == pytest.approx(4 + 8 / 64 + 32 / (64 * 256), abs=1e-3)
    assert 8 * memory.nf4_bytes(n, double_quantization=False) / n == pytest.approx(4.5, abs=1e-3)


def test_paper_ledger_reproduces_18_8_2_1_and_the_4bit_figure() -> None:
    rows = {(r.method, r.bits): r.bytes_per_parameter for r in memory.paper_ledger()}
    assert rows[("full (AMP)", "32/16")] == 18
    assert rows[("full (pure bf16)", "16")] == 8
    assert rows[("freeze / LoRA", "16")] == 2
    assert rows[("QLoRA", "8")] == 1
    assert 0.5 < rows[("QLoRA", "4")] < 0.6
    with_adapters = {(r.method, r.bits): r.bytes_per_parameter for r in memory.paper_ledger(0.01)}
    assert with_adapters[("QLoRA", "4")] == pytest.approx(rows[("QLoRA", "4")] + 0.18)
    assert "| full (AMP) | 32/16 | 18.000 |" in memory.paper_table()


@pytest.mark.parametrize(("precision", "expected"), [("fp32", 16), ("amp", 18), ("pure_bf16", 8)])
def test_full_tuning_static_bytes_per_parameter(precision: memory.PrecisionName, expected: int) -> None:
    model = llama()
    model.requires_grad_(True)
    ledger = memory.predict(model, batch_size=1, seq_len=8, precision=precision)
    # + the rotary tables (buffers) and AdamW's step counters: a hair above the paper's figure
    assert expected <= ledger.bytes_per_parameter < expected + 0.05
    assert "<- peak" in str(ledger) and "optimizer states" in str(ledger)


def test_galore_keeps_adam_moments_of_the_projection_only() -> None:
    model = llama(hidden=64, intermediate=128, vocab=128)
    model.requires_grad_(True)
    adamw = memory.predict(model, batch_size=1, seq_len=8)
    galore = memory.predict(model, batch_size=1, seq_len=8, galore_rank=4)
    linear = [m.weight for m in model.modules() if isinstance(m, nn.Linear) and m is not model.lm_head]
    # AdamW: m and v (fp32) and a step counter (a 0-dim fp32 tensor); GaLore: m and v of the
    # (max x 4) projection and the projection (min x 4), its step a Python int
    saved = sum(2 * p.numel() * 4 + 4 - (2 * max(p.shape) * 4 * 4 + min(p.shape) * 4 * 4) for p in linear)
    assert adamw.optimizer - galore.optimizer == saved


# --- the measured peak --------------------------------------------------------------------------

def test_measure_peak_sees_a_known_allocation_and_counts_what_is_held() -> None:
    held = torch.zeros(2**18)  # 1 MiB, allocated before the measurement

    def work() -> torch.Tensor:
        big = torch.ones(2**21)  # 8 MiB, freed before the end
        kept = big[: 2**20].clone()  # 4 MiB
        del big
        return kept

    result, peak = memory.measure_peak(work, held=held)
    assert result.numel() == 2**20
    assert peak.held_bytes == 2**20
    assert 13 * 2**20 <= peak.peak_bytes < 13 * 2**20 + 2**16  # held + big + kept, alive together
    assert peak.peak_rss_bytes is None or peak.peak_rss_bytes > peak.peak_bytes


def test_a_held_weight_replaced_during_the_run_is_not_counted_twice() -> None:
    """PiSSA replaces the base weights when it attaches: the old storage is counted as freed at the
    start. The profiler reports that free only now and then (when the old block's address once held
    a block it saw allocated, with that block's size): 30 runs meet that case with near certainty,
    and each must count the free once."""
    for _ in range(30):
        layer = nn.Linear(512, 512, bias=False)  # 1 MiB

        def rewrite_then_work(layer: nn.Linear = layer) -> None:
            layer.weight.data = layer.weight.data.clone()
            scratch = torch.ones(2**20)  # 4 MiB on top of the new weight
            del scratch

        _, peak = memory.measure_peak(rewrite_then_work, held=layer)
        assert peak.held_bytes == 2**20
        assert 5 * 2**20 <= peak.peak_bytes < 5 * 2**20 + 2**16


def sft_pairs() -> list[tuple[str, str]]:
    words = " ".join(WORDS[:24])
    return [(f"{words} {i % 10}", " ".join(WORDS[i % 20: i % 20 + 6])) for i in range(16)]


@pytest.mark.parametrize(("method", "checkpointing"), [("full", False), ("lora", False), ("lora", True)])
def test_prediction_is_within_20_percent_of_the_measured_peak(method: str, checkpointing: bool) -> None:
    """Training with train_sft under the profiler: the ledger's peak against the allocator's.
    The batch is large enough that activations are a large share of the peak, so that leaving a
    kind of tensor out of the formula would fail the test."""
    tokenizer = tiny_tokenizer()
    model = llama(layers=2, heads=2, kv_heads=2, hidden=64, intermediate=128,
                  vocab=len(SPECIALS) + len(WORDS))
    pairs = sft_pairs()
    data = encode(tokenizer, pairs, 256)
    assert len({len(e.ids) for e in data.examples}) == 1  # one length: no padding to model
    labels = collate(data.examples[:8], 0, torch.device("cpu"))["labels"]
    seq_len, answers = labels.shape[1], int((labels[:, 1:] != IGNORE).sum())
    config = SFTConfig(finetuning_type=method, per_device_train_batch_size=8, max_steps=2, cutoff_len=256,
                       progress=False, gradient_checkpointing=checkpointing)
    result, peak = memory.measure_peak(lambda: train_sft(model, tokenizer, pairs, config), held=model)
    ledger = memory.predict(result.model, batch_size=8, seq_len=seq_len, answer_tokens=answers,
                            gradient_checkpointing=checkpointing)
    plain = memory.predict(result.model, batch_size=8, seq_len=seq_len, answer_tokens=answers)
    assert plain.activations > 0.5 * plain.peak
    if checkpointing:
        assert ledger.activations < 0.5 * plain.activations and ledger.peak < plain.peak
    assert 0.8 < ledger.peak / peak.peak_bytes < 1.2


def test_predict_refuses_a_batch_that_cannot_be() -> None:
    with pytest.raises(ValueError, match="answer_tokens"):
        memory.predict(llama(), batch_size=2, seq_len=8, answer_tokens=17)
    with pytest.raises(ValueError, match="precision"):
        memory.predict(llama(), batch_size=2, seq_len=8, precision="fp8")  # type: ignore[arg-type]


def test_adamw_step_temporaries_on_a_cpu_follow_the_ledger_rule() -> None:
    """torch's single-tensor AdamW: denom = sqrt(v) / c makes two tensors the size of the parameter
    while the loop variable still holds the previous parameter's denom: max(previous + 2 x current)."""
    model = nn.Sequential(nn.Linear(256, 256, bias=False), nn.Linear(256, 512, bias=False),
                          nn.Linear(512, 256, bias=False))
    optimizer = torch.optim.AdamW(model.parameters())
    for param in model.parameters():
        param.grad = torch.ones_like(param)
    optimizer.step()  # the first step creates the moments
    _, peak = memory.measure_peak(optimizer.step)
    sizes = [p.numel() for p in model.parameters()]
    rule = 4 * max(prev + 2 * cur for prev, cur in zip([0, *sizes[:-1]], sizes, strict=True))
    assert rule != 4 * 2 * max(sizes)  # the sizes are chosen so that the previous denom matters
    assert rule <= peak.peak_bytes < rule + 2**12
