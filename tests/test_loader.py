"""labkit.loader: the embedded pocket LLM, tiny random Llama/Qwen2 models, 8/4-bit on CPU,
gradient checkpointing, and the offline error."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from labkit import loader
from labkit.adapters import summarize_trainable
from labkit.loader import OfflineModelError, load_model, load_tokenizer, summarize
from labkit.paths import POCKET_LLM

TINY = {"vocab_size": 96, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64}


def _save_tiny(kind: str, folder: Path) -> torch.nn.Module:
    torch.manual_seed(0)
    model = (LlamaForCausalLM(LlamaConfig(**TINY)) if kind == "llama"
             else Qwen2ForCausalLM(Qwen2Config(**TINY)))
    model.save_pretrained(folder)
    return model.eval()


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    folder = tmp_path_factory.mktemp("tiny-llama")
    return folder, _save_tiny("llama", folder)


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_tiny_random_models_round_trip(kind: str, tmp_path: Path) -> None:
    original = _save_tiny(kind, tmp_path)
    model = load_model(tmp_path)
    ids = torch.randint(0, TINY["vocab_size"], (2, 10))
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, original(ids).logits, atol=1e-5)
    summary = summarize(model)
    assert summary.parameters == sum(p.numel() for p in original.parameters())
    assert summary.trainable == summary.parameters
    assert summary.dtype == "float32"  # the CPU rule of labkit.hardware
    assert summary.bytes >= 4 * summary.parameters
    assert "parameters" in str(summary) and f"{summary.parameters:,}" in str(summary)


def test_pocket_model_loads_and_answers() -> None:
    model, tokenizer = load_model("pocket"), load_tokenizer()
    summary = summarize(model)
    assert model.config.model_type == "llama"
    assert 1_000_000 < summary.parameters < 20_000_000
    assert sum(f.stat().st_size for f in POCKET_LLM.iterdir()) < 50 * 2**20
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hello!"}], add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|im_start|>assistant\n")
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**ids, max_new_tokens=12)
    reply = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert reply.strip(), "the pocket LLM should say something back"


def test_dtype_and_attention_options(tiny_llama: tuple[Path, torch.nn.Module]) -> None:
    folder, _ = tiny_llama
    eager = load_model(folder, attn_implementation="eager", dtype="bfloat16")
    assert eager.config._attn_implementation == "eager"
    assert summarize(eager).dtype == "bfloat16"
    with pytest.raises(ValueError, match="attn_implementation"):
        load_model(folder, attn_implementation="fast-please")
    with pytest.raises(ValueError, match="dtype"):
        load_model(folder, dtype="float99")


def test_gradient_checkpointing_trains(tiny_llama: tuple[Path, torch.nn.Module]) -> None:
    folder, _ = tiny_llama
    model = load_model(folder, gradient_checkpointing=True)
    assert model.is_activation_checkpointing and model.config.use_cache is False
    model.train()
    ids = torch.randint(0, TINY["vocab_size"], (2, 8))
    model(input_ids=ids, labels=ids).loss.backward()
    assert model.model.layers[0].self_attn.q_proj.weight.grad is not None


@pytest.mark.parametrize("bits", ["8bit", "4bit"])
def test_quantized_loading_on_cpu(bits: str, tiny_llama: tuple[Path, torch.nn.Module]) -> None:
    import bitsandbytes as bnb

    folder, original = tiny_llama
    model = load_model(folder, quantization=bits)
    layer_type = bnb.nn.Linear8bitLt if bits == "8bit" else bnb.nn.Linear4bit
    assert isinstance(model.model.layers[0].mlp.up_proj, layer_type)
    summary = summarize(model)
    assert summary.quantization == bits
    assert summary.parameters == sum(p.numel() for p in original.parameters())
    assert summarize_trainable(model).total == summary.parameters  # one counting rule (labkit.parameters)
    assert summary.bytes < summarize(original).bytes
    ids = torch.randint(0, TINY["vocab_size"], (1, 8))
    with torch.no_grad():
        quantized, full = model(ids).logits, original(ids).logits
    assert quantized.dtype == torch.float32
    # quantization error, not a different model
    assert torch.corrcoef(torch.stack([quantized.flatten(), full.flatten()]))[0, 1] > 0.95


def test_4bit_compute_dtype_follows_the_hardware_rule() -> None:
    config = loader.quantization_config("4bit", torch.device("cpu"))
    assert config.bnb_4bit_compute_dtype == torch.float32
    assert config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_use_double_quant  # QLoRA's defaults
    with pytest.raises(ValueError, match="quantization"):
        loader.quantization_config("3bit")


def test_quantization_takes_llamafactorys_knobs() -> None:
    fp4 = loader.quantization_config(4, torch.device("cpu"), quantization_type="fp4",
                                     double_quantization=False)
    assert fp4.load_in_4bit and fp4.bnb_4bit_quant_type == "fp4" and not fp4.bnb_4bit_use_double_quant
    eight = loader.quantization_config(8)
    assert eight.load_in_8bit and not eight.load_in_4bit
    assert loader.quantization_config(None) is None
    assert [loader.quantization_bits(q) for q in (4, "4bit", 8, "8bit", None)] == [4, 4, 8, 8, None]
    with pytest.raises(ValueError, match="quantization_type='int4'.*nf4"):
        loader.quantization_config(4, quantization_type="int4")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="quantization=16"):
        loader.quantization_config(16)


def test_load_model_passes_the_4bit_knobs_to_bitsandbytes(tiny_llama: tuple[Path, torch.nn.Module]) -> None:
    folder, _ = tiny_llama
    model = load_model(folder, quantization=4, quantization_type="fp4", double_quantization=False)
    state = model.model.layers[0].mlp.up_proj.weight.quant_state
    assert state.quant_type == "fp4" and not state.nested and state.blocksize == 64
    nested = load_model(folder, quantization=4).model.layers[0].mlp.up_proj.weight.quant_state
    assert nested.quant_type == "nf4" and nested.nested


def test_the_loader_steps_give_what_load_model_gives(tiny_llama: tuple[Path, torch.nn.Module]) -> None:
    folder, original = tiny_llama
    source, local_only = loader.resolve(folder)
    config = loader.load_config(source, local_only)
    options = loader.patch_config(config, torch.device("cpu"), attn_implementation="eager")
    assert options == {"dtype": torch.float32, "attn_implementation": "eager"}
    quantized = loader.patch_config(config, torch.device("cpu"), quantization=loader.quantization_config(8))
    assert quantized["device_map"] == {"": "cpu"}  # bitsandbytes places the weights it quantizes
    assert loader.choose_dtype(torch.device("cpu"), "bfloat16") == torch.bfloat16
    assert loader.choose_attention(None) is None


def test_tied_embeddings_are_one_matrix_and_a_broken_tie_is_restored(tmp_path: Path) -> None:
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**TINY, tie_word_embeddings=True)).save_pretrained(tmp_path)
    model = load_model(tmp_path)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert summarize(model).parameters == sum(p.numel() for p in model.parameters())  # counted once
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
    assert loader.tie_embeddings(model)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    untied = load_model(tmp_path, quantization=8)
    assert untied.lm_head.weight is untied.model.embed_tokens.weight  # the head stays unquantized
    assert not loader.tie_embeddings(_save_tiny("llama", tmp_path / "untied"))  # TINY: not tied


def test_patch_tokenizer_pads_with_the_end_token_when_there_is_no_pad() -> None:
    tokenizer = load_tokenizer()
    assert tokenizer.pad_token is not None and tokenizer.padding_side == "left"
    tokenizer.pad_token = None
    assert loader.patch_tokenizer(tokenizer).pad_token == tokenizer.eos_token


def test_hub_id_offline_fails_at_once_with_a_way_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.time()
    with pytest.raises(OfflineModelError) as error:
        load_model("labkit-tests/no-such-model-7f3a")
    assert time.time() - start < 5
    message = str(error.value)
    assert "offline" in message and str(POCKET_LLM) in message and "local folder" in message
    with pytest.raises(OfflineModelError):
        load_tokenizer("labkit-tests/no-such-model-7f3a")


def test_missing_local_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "nowhere" / "model")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(tmp_path)  # a folder, but not a model
