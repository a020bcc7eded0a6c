"""labkit.quantization: the reference formats against bitsandbytes' own functions on CPU, and the
measurements (bytes, per-layer error, held-out loss) on a tiny random Llama."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from labkit import quantization as Q
from labkit.loader import load_model, load_tokenizer

bnbf = pytest.importorskip("bitsandbytes.functional")

TINY = {"vocab_size": 128, "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64,
        "tie_word_embeddings": True}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    folder = tmp_path_factory.mktemp("tiny-llama")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**TINY))
    model.save_pretrained(folder)
    return folder, model.eval()


def test_code_tables_are_bitsandbytes_and_nf4_is_normal_quantiles() -> None:
    for name in ("nf4", "fp4"):
        assert torch.equal(Q.code_table(name), bnbf.get_4bit_type(name, device="cpu"))
    assert torch.equal(Q.dynamic_code(), bnbf.create_dynamic_map())
    assert torch.allclose(Q.normal_float_code(), Q.code_table("nf4"), atol=1e-6)
    assert Q.NF4_OFFSET == pytest.approx(0.9677083, abs=1e-7)  # the constant bitsandbytes uses
    with pytest.raises(ValueError, match="quant_type='int3'"):
        Q.code_table("int3")


def test_nearest_code_takes_the_closer_value_and_the_smaller_on_a_tie() -> None:
    code = torch.tensor([-1.0, 0.0, 0.5, 1.0])
    scaled = torch.tensor([-0.6, -0.5, -0.4, 0.25, 0.26, 0.9, 1.0])
    assert Q.nearest_code(scaled, code).tolist() == [0, 0, 1, 1, 2, 3, 3]
    unsorted = code[[2, 0, 3, 1]]  # the index refers to the table as given (FP4 is not sorted)
    assert unsorted[Q.nearest_code(scaled, unsorted).long()].tolist() == code[[0, 0, 1, 1, 2, 3, 3]].tolist()


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
@pytest.mark.parametrize("shape", [(192, 192), (96, 64), (7, 9), (1, 1000)])
def test_4bit_reference_equals_bitsandbytes(quant_type: str, shape: tuple[int, int]) -> None:
    torch.manual_seed(sum(shape))
    weight = torch.randn(shape) * 0.05
    weight[0, 0] = 0.0  # an exact zero stays exact (NF4) or lands on a zero code (FP4)
    packed, state = bnbf.quantize_4bit(weight, blocksize=64, quant_type=quant_type)
    mine = Q.quantize_4bit(weight, quant_type)
    assert torch.equal(mine.absmax, state.absmax)  # type: ignore[arg-type]
    fill = int(Q.nearest_code(torch.zeros(1), Q.code_table(quant_type)))
    if quant_type == "nf4":  # FP4 has two zero codes (+0, -0): bitsandbytes may pick either
        assert torch.equal(Q.pack_4bit(mine.codes, fill), packed.reshape(-1))
    assert torch.equal(Q.dequantize_4bit(mine), bnbf.dequantize_4bit(packed, state))


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
def test_double_quantization_matches_bitsandbytes_up_to_its_approximate_bin_search(quant_type: str) -> None:
    torch.manual_seed(1)
    weight = torch.randn(512, 320) * 0.05  # 2560 blocks: 10 blocks of 256 constants
    packed, state = bnbf.quantize_4bit(weight, blocksize=64, quant_type=quant_type,
                                       compress_statistics=True)
    mine = Q.quantize_4bit(weight, quant_type, double_quantization=True)
    constants = mine.absmax
    assert isinstance(constants, Q.DoubleQuantized)
    assert constants.offset == pytest.approx(float(state.offset), rel=1e-6)
    assert torch.equal(constants.scales, state.state2.absmax)
    differ = constants.codes != state.absmax
    assert differ.float().mean() < 0.01  # a few constants sit near a midpoint of two codes...
    assert (constants.codes.int() - state.absmax.int())[differ].abs().max() <= 1  # ...and take the other
    bnb_absmax = bnbf.dequantize_blockwise(state.absmax, state.state2) + state.offset
    assert torch.allclose(Q.dequantize_constants(constants), bnb_absmax, atol=1e-5, rtol=0.02)
    without = Q.dequantize_4bit(Q.quantize_4bit(weight, quant_type))
    assert Q.relative_error(without, Q.dequantize_4bit(mine)) < 0.01  # 8-bit constants cost little


def test_int8_rows_equal_bitsandbytes_and_round_halves_to_even() -> None:
    torch.manual_seed(2)
    weight = torch.randn(64, 96)
    cb, scb, _ = bnbf.int8_vectorwise_quant(weight.half())
    q, absmax = Q.quantize_int8_rows(weight.half().float())
    assert torch.equal(q, cb) and torch.equal(absmax, scb)
    assert torch.allclose(Q.dequantize_int8_rows(q, absmax), bnbf.int8_vectorwise_dequant(cb, scb))
    q, absmax = Q.quantize_int8_rows(torch.tensor([[-254.0, 3.0, 5.0, -1.0]], dtype=torch.float64))
    assert q.tolist() == [[-127, 2, 2, 0]] and absmax.tolist() == [254.0]  # 1.5 -> 2, 2.5 -> 2, -0.5 -> 0


def test_blocks_run_over_the_flattened_weight_and_a_zero_block_stays_zero() -> None:
    values = torch.cat([torch.zeros(4), torch.tensor([0.5, -2.0, 1.0, 0.25, 3.0])]).double()
    codes, absmax = Q.quantize_blockwise(values, Q.code_table("nf4"), blocksize=4)
    assert absmax.tolist() == [0.0, 2.0, 3.0]  # the last block holds one value
    assert codes[:4].tolist() == [7] * 4  # NF4's exact zero
    restored = Q.dequantize_blockwise(codes, absmax, Q.code_table("nf4"), 4)
    assert restored[[5, 8]].tolist() == [-2.0, 3.0]  # each block's absmax is exact


@pytest.mark.parametrize("bits", [8, 4])
def test_storage_errors_and_loss_of_a_quantized_model(bits: int, tiny: tuple[Path, torch.nn.Module]) -> None:
    folder, original = tiny
    quantized = load_model(folder, quantization=bits, double_quantization=False)
    layers = Q.quantized_layers(quantized)
    assert len(layers) == 2 * 7  # q, k, v, o, gate, up, down per decoder layer; not the tied head
    storage = Q.storage_bytes(quantized)
    head = storage.loc["lm_head"]
    assert head["bytes_per_parameter"] == 4.0  # tied to the embedding, left in fp32
    down = storage.loc["model.layers.0.mlp.down_proj"]  # 64 x 160
    n = 64 * 160
    expected = n + 4 * 64 if bits == 8 else n // 2 + 4 * math.ceil(n / 64)
    assert down["codes"] + down["constants"] == expected
    errors = Q.layer_errors(quantized, original)
    assert list(errors.index) == list(layers)
    bound = 0.02 if bits == 8 else 0.2
    assert ((errors["relative_error"] > 0) & (errors["relative_error"] < bound)).all()
    assert Q.model_bytes(quantized) < Q.model_bytes(original)
    assert Q.model_bytes(original) == sum(p.numel() * 4 for p in original.parameters()) + sum(
        b.numel() * b.element_size() for b in original.buffers())


def test_a_loaded_4bit_layer_stores_what_the_reference_computes(tiny: tuple[Path, torch.nn.Module]) -> None:
    folder, original = tiny
    model = load_model(folder, quantization=4, quantization_type="fp4")
    for name in ("model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj"):  # 64 and 160 wide
        layer = model.get_submodule(name)
        stored = Q.stored_4bit(layer.weight)
        assert isinstance(stored.absmax, Q.DoubleQuantized) and stored.quant_type == "fp4"
        weight = original.get_submodule(name).weight.detach()
        fresh = Q.quantize_4bit(weight, "fp4", double_quantization=True)
        fp4 = Q.code_table("fp4")  # compared by value: FP4 has two zero codes, +0 and -0
        assert torch.equal(fp4[stored.codes.long()], fp4[fresh.codes.long()])
        assert torch.allclose(Q.dequantized_weight(layer), Q.dequantize_4bit(fresh), atol=2e-3)
    # rows of 64: bitsandbytes' own CPU dequantization agrees (rows that split a block of 64 it
    # gets wrong on AVX-512 machines in bitsandbytes 0.50; the kit dequantizes itself)
    q_proj = model.model.layers[0].self_attn.q_proj
    expected = bnbf.dequantize_4bit(q_proj.weight.data, q_proj.weight.quant_state)
    assert torch.equal(Q.dequantized_weight(q_proj), expected)
    if bnbf.has_avx512bf16():  # an inference pass repacks the weights for the CPU's bf16 kernel
        with torch.no_grad():
            q_proj.eval()(torch.zeros(1, 64))
        with pytest.raises(ValueError, match="repacked"):
            Q.stored_4bit(q_proj.weight)


def test_double_quantized_layer_storage_counts_every_constant(tiny: tuple[Path, torch.nn.Module]) -> None:
    folder, _ = tiny
    model = load_model(folder, quantization=4)  # nf4, double quantization: the defaults
    part = Q.layer_storage(model.model.layers[0].mlp.up_proj)  # 160 x 64: 160 blocks of 64
    assert part == {"codes": 160 * 64 // 2, "constants": 160 + 4 * 1 + 4, "tables": 4 * (16 + 256)}


def test_quantized_layers_are_bitsandbytes_own_not_peft_wrappers(tiny: tuple[Path, torch.nn.Module]) -> None:
    from peft import LoraConfig, get_peft_model

    folder, original = tiny
    model = get_peft_model(load_model(folder, quantization=4),
                           LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    layers = Q.quantized_layers(model)  # peft's wrapper is also called Linear4bit
    assert len(layers) == 14 and sum(name.endswith("q_proj.base_layer") for name in layers) == 2
    assert len(Q.quantized_layers(original)) == 0


def test_heldout_loss_is_the_mean_token_loss_and_ignores_padding(tiny: tuple[Path, torch.nn.Module]) -> None:
    _, model = tiny

    class Tokenizer:  # token ids are the characters' codes: texts of different lengths pad
        pad_token_id, eos_token_id = 0, 0

        def __call__(self, texts: list[str], add_special_tokens: bool = False) -> dict[str, list[list[int]]]:
            return {"input_ids": [[ord(c) for c in t] for t in texts]}

    texts = ["hello world", "a much longer text than the first", "ok"]
    by_one = []
    for text in texts:
        ids = torch.tensor([[ord(c) for c in text]])
        with torch.no_grad():
            by_one.append((float(model(input_ids=ids, labels=ids).loss), len(text) - 1))
    expected = sum(loss * n for loss, n in by_one) / sum(n for _, n in by_one)
    assert Q.heldout_loss(model, Tokenizer(), texts, batch_size=2) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="at least one text"):
        Q.heldout_loss(model, Tokenizer(), ["x"])


def test_pocket_model_in_4bit_costs_little_heldout_loss() -> None:
    from labkit.pocket.corpus import record_examples

    texts = [e.render() for e in record_examples("heart", 2, np.random.default_rng(7))]
    tokenizer = load_tokenizer()
    full = Q.heldout_loss(load_model().eval(), tokenizer, texts)
    nf4 = Q.heldout_loss(load_model(quantization=4).eval(), tokenizer, texts)
    assert 0 < full < 2.0
    assert abs(nf4 - full) < 0.1 * full


def test_the_exercise_bank_uses_these_block_sizes() -> None:
    from labkit.grading.bank import l06

    assert (l06.BLOCKSIZE, l06.CONSTANT_BLOCKSIZE) == (Q.BLOCKSIZE, Q.CONSTANT_BLOCKSIZE)
    assert l06.weight_bytes(192, 192, "nf4") == 192 * 192 // 2 + 4 * 576  # a pocket LLM q_proj
