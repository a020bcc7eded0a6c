"""The pocket LLM's architecture: a small Llama (RMSNorm, rotary positions, SwiGLU, tied embeddings).

A Llama-family model so that everything a lesson does with it (LoRA on q/k/v/o and the MLP,
4-bit loading, chat templates) carries over to a real Llama or Qwen model unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM


@dataclass(frozen=True)
class Shape:
    """Width and depth: 4 layers of width 192 (about 2.6 million parameters with a 4,096-token
    vocabulary). Width 128 (1.3 M) learned the tables of words but never learned to read the
    laboratory tables' numbers (Pima, ILPD, HCV) in 4,000 steps; 192 learned them by step ~2,000
    and runs the 4,353 steps of the full corpus (2,560 tokens each) in ~33 minutes on 2 cores."""

    hidden_size: int = 192
    layers: int = 4
    heads: int = 6
    intermediate_size: int = 512
    max_positions: int = 1024

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def model_config(shape: Shape, vocab_size: int, eos_id: int, pad_id: int) -> LlamaConfig:
    """The transformers config of the pocket LLM."""
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.heads,
        max_position_embeddings=shape.max_positions,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        use_cache=True,
    )


def build_model(config: LlamaConfig, seed: int) -> LlamaForCausalLM:
    """A freshly initialized model; the same seed gives the same initial weights."""
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).to(torch.float32)


def generation_config(eos_id: int, pad_id: int) -> GenerationConfig:
    """Greedy decoding that stops at the end of the assistant's turn."""
    return GenerationConfig(do_sample=False, max_new_tokens=64, eos_token_id=eos_id,
                            pad_token_id=pad_id)
