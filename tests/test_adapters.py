"""labkit.adapters on a tiny random Llama: which layers get adapters, what trains, what stays frozen."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from labkit.adapters import _colliding_head_names, attach_adapter, find_all_linear_modules

LLAMA_LINEARS = ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]


def tiny_llama(tied: bool = False, layers: int = 3) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=layers,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32,
                         tie_word_embeddings=tied)
    return LlamaForCausalLM(config)


@pytest.mark.parametrize("tied", [False, True])
def test_all_linear_modules_leave_out_the_head(tied: bool) -> None:
    model = tiny_llama(tied=tied)
    assert find_all_linear_modules(model) == LLAMA_LINEARS


def test_quantized_linear_layers_are_found() -> None:
    bnb = pytest.importorskip("bitsandbytes")
    model = tiny_llama()
    model.model.layers[0].mlp.down_proj = bnb.nn.Linear8bitLt(32, 16, has_fp16_weights=False)
    model.model.layers[1].self_attn.q_proj = bnb.nn.Linear4bit(16, 16)
    model.model.layers[2].extra_proj = bnb.nn.Linear4bit(16, 16)  # a name no plain Linear has
    assert find_all_linear_modules(model) == sorted([*LLAMA_LINEARS, "extra_proj"])


def test_a_head_sharing_a_short_name_with_targets_is_excluded_by_full_name() -> None:
    class Toy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block = nn.Module()
            self.block.proj = nn.Linear(4, 4)
            self.out = nn.Module()
            self.out.proj = nn.Linear(4, 9)

        def get_output_embeddings(self) -> nn.Module:
            return self.out.proj

    toy = Toy()
    assert find_all_linear_modules(toy) == ["proj"]
    assert _colliding_head_names(toy, ["proj"]) == ["out.proj"]


def lora_parameters(model: nn.Module, r: int) -> int:
    """r * (in + out) for every linear layer but the head."""
    head = model.get_output_embeddings()
    return sum(r * (m.in_features + m.out_features) for m in model.modules()
               if isinstance(m, nn.Linear) and m is not head)


def test_lora_trains_only_the_adapters_on_every_linear_layer_but_the_head() -> None:
    model = tiny_llama()
    expected = lora_parameters(model, r=4)
    total = sum(p.numel() for p in model.parameters())
    model, summary = attach_adapter(model, "lora", r=4, alpha=8)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert summary.trainable == expected
    assert summary.total == total + expected
    assert summary.targets == tuple(LLAMA_LINEARS)
    assert not any("lm_head.lora" in n for n, _ in model.named_parameters())
    assert "(" in str(summary) and f"{expected:,}" in str(summary)


def test_a_second_lora_on_the_same_model_says_how_to_start_afresh() -> None:
    model, _ = attach_adapter(tiny_llama(), "lora", r=4, alpha=8)  # as a first training stage leaves it
    with pytest.raises(ValueError, match=r"already carries a LoRA adapter.*copy.deepcopy.*merge_and_unload"):
        attach_adapter(model, "lora", r=4, alpha=8)
    merged, _ = attach_adapter(model.merge_and_unload(), "lora", r=4, alpha=8)  # the named way out works
    assert any(".lora_A." in n for n, _ in merged.named_parameters())


def test_dora_adds_a_magnitude_per_output_feature() -> None:
    lora = attach_adapter(tiny_llama(), "lora", r=4)[1]
    model, dora = attach_adapter(tiny_llama(), "lora", r=4, use_dora=True)
    magnitudes = sum(p.numel() for n, p in model.named_parameters() if "lora_magnitude_vector" in n)
    assert magnitudes > 0
    assert dora.trainable == lora.trainable + magnitudes


@pytest.mark.parametrize(("n", "trained"), [(2, {1, 2}), (-1, {0})])
def test_freeze_trains_the_chosen_decoder_layers_only(n: int, trained: set[int]) -> None:
    model, summary = attach_adapter(tiny_llama(), "freeze", freeze_trainable_layers=n)
    layers = {int(name.split(".")[2]) for name, p in model.named_parameters() if p.requires_grad}
    assert layers == trained
    assert all(name.startswith("model.layers.") for name, p in model.named_parameters() if p.requires_grad)
    per_layer = sum(p.numel() for p in model.model.layers[0].parameters())
    assert summary.trainable == len(trained) * per_layer


def test_freeze_can_train_named_parts_of_the_layers_and_extra_modules() -> None:
    model, summary = attach_adapter(tiny_llama(), "freeze", freeze_trainable_layers=1,
                                    freeze_trainable_modules="mlp", freeze_extra_modules="norm")
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trained == {"model.layers.2.mlp.gate_proj.weight", "model.layers.2.mlp.up_proj.weight",
                       "model.layers.2.mlp.down_proj.weight", "model.norm.weight"}
    assert summary.trainable == sum(p.numel() for n, p in model.named_parameters() if n in trained)
    with pytest.raises(ValueError, match=r"freeze_trainable_modules names \['attn'\].*'mlp'"):
        attach_adapter(tiny_llama(), "freeze", freeze_trainable_modules="attn")
    with pytest.raises(ValueError, match="freeze_extra_modules names 'embeddings'"):
        attach_adapter(tiny_llama(), "freeze", freeze_extra_modules="embeddings")


def test_rslora_scales_by_alpha_over_the_square_root_of_the_rank() -> None:
    plain, _ = attach_adapter(tiny_llama(), "lora", r=4, alpha=8)
    stable, _ = attach_adapter(tiny_llama(), "lora", r=4, alpha=8, use_rslora=True)
    layer = "base_model.model.model.layers.0.self_attn.q_proj"
    assert dict(plain.named_modules())[layer].scaling["default"] == pytest.approx(8 / 4)
    assert dict(stable.named_modules())[layer].scaling["default"] == pytest.approx(8 / 2)


def test_pissa_moves_the_top_singular_directions_into_the_adapter_and_keeps_the_output() -> None:
    ids = torch.randint(0, 64, (2, 7), generator=torch.Generator().manual_seed(0))
    base = tiny_llama()
    with torch.no_grad():
        expected = base(ids).logits
        weight = base.model.layers[0].self_attn.q_proj.weight.clone()
    model, _ = attach_adapter(base, "lora", r=2, alpha=2, init_lora_weights="pissa")
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, expected, atol=1e-4)  # W = residual + B A at the start
        low_rank = layer.lora_B["default"].weight @ layer.lora_A["default"].weight
        top = torch.linalg.svdvals(weight)[:2]
        assert torch.allclose(torch.linalg.svdvals(low_rank)[:2], top, rtol=1e-3)


def test_a_quantized_model_takes_lora_only_and_not_pissa() -> None:
    model = tiny_llama()
    model.is_loaded_in_4bit = True
    with pytest.raises(ValueError, match="'full' cannot train a model loaded in 8 or 4 bits"):
        attach_adapter(model, "full")
    with pytest.raises(ValueError, match="PiSSA"):
        attach_adapter(model, "lora", init_lora_weights="pissa_niter_4")


def test_freeze_rejects_a_layer_count_out_of_range() -> None:
    with pytest.raises(ValueError, match="freeze_trainable_layers=4"):
        attach_adapter(tiny_llama(), "freeze", freeze_trainable_layers=4)


def test_full_trains_everything_and_keeps_half_weights_in_fp32() -> None:
    model = tiny_llama().to(torch.bfloat16).requires_grad_(False)
    model, summary = attach_adapter(model, "full")
    assert summary.trainable == summary.total
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_seed_fixes_the_adapter_init_and_leaves_the_global_random_state_alone() -> None:
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a, _ = attach_adapter(tiny_llama(), "lora", r=4, seed=7)
    torch.set_rng_state(before)
    b, _ = attach_adapter(tiny_llama(), "lora", r=4, seed=7)
    c, _ = attach_adapter(tiny_llama(), "lora", r=4, seed=8)
    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"
    weights = [dict(m.named_parameters())[key] for m in (a, b, c)]
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[0], weights[2])
    model = tiny_llama()
    state = torch.get_rng_state()
    attach_adapter(model, "lora", r=4, seed=7)
    assert torch.equal(torch.get_rng_state(), state)


def test_unknown_method_names_the_choices() -> None:
    with pytest.raises(ValueError, match="'lora', 'freeze', 'full'.*use_dora=True"):
        attach_adapter(tiny_llama(), "dora")  # type: ignore[arg-type]


def test_a_packed_4bit_weight_counts_as_the_weight_it_stands_for() -> None:
    from types import SimpleNamespace

    from labkit.parameters import count_parameters, logical_numel

    packed = nn.Parameter(torch.zeros(6, 1, dtype=torch.uint8), requires_grad=False)  # 12 values, 2 per byte
    packed.quant_state = SimpleNamespace(shape=torch.Size([3, 4]))  # type: ignore[attr-defined]
    assert logical_numel(packed) == 12 and logical_numel(torch.zeros(5)) == 5
    module = nn.Module()
    module.packed = packed
    module.bias = nn.Parameter(torch.zeros(3))
    count = count_parameters(module)
    assert (count.total, count.trainable) == (15, 3)
