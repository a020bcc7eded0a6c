"""The pocket LLM's architecture: a small Llama (RMSNorm, rotary positions, SwiGLU, tied embeddings).

A Llama-family model so that everything a lesson does with it (LoRA on q/k/v/o and the MLP,
4-bit loading, chat templates) carries over to a real Llama or Qwen model unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, GenerationConfig, LlamaConfig, LlamaForCausalLM
from transformers.masking_utils import AttentionMaskInterface

from labkit.config import option, require


@dataclass(frozen=True)
class Shape:
    """Width and depth of the pocket LLM. Width was the decisive choice: the narrower first build
    learned the tables of words but never learned to read the laboratory tables' numbers
    (docs/pocket_llm.md has the builds and their figures)."""

    hidden_size: int = option(192, "width of the residual stream")
    layers: int = option(4, "decoder layers")
    heads: int = option(6, "attention heads (each of hidden_size / heads dimensions)")
    intermediate_size: int = option(512, "width of the SwiGLU feed-forward layer")
    max_positions: int = option(1024, "longest sequence the rotary positions cover")

    def __post_init__(self) -> None:
        for name in ("hidden_size", "layers", "heads", "intermediate_size", "max_positions"):
            require(getattr(self, name) >= 1, self, name, "it must be at least 1")
        require(self.hidden_size % self.heads == 0, self, "heads", "it must divide hidden_size")

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
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        use_cache=True,
    )


def build_model(config: LlamaConfig, seed: int) -> LlamaForCausalLM:
    """A freshly initialized model; the same seed gives the same initial weights."""
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.float()  # fp32 whatever the default dtype: pre-training runs on a CPU
    return model


def generation_config(eos_id: int, pad_id: int) -> GenerationConfig:
    """Greedy decoding that stops at the end of the assistant's turn."""
    return GenerationConfig(do_sample=False, max_new_tokens=64, eos_token_id=eos_id,
                            pad_token_id=pad_id)


# --- attention for packed training rows ------------------------------------------------------------

PACKED = "pocket_packed"


def packed_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                     value: torch.Tensor, attention_mask: torch.Tensor | None, *,
                     scaling: float | None = None, dropout: float = 0.0,
                     position_ids: torch.Tensor | None = None, **kwargs: Any
                     ) -> tuple[torch.Tensor, None]:
    """Causal attention inside each example of a packed row (position ids restart at 0 where an
    example starts). The same result as sdpa with transformers' block-diagonal packed mask, but
    each example is its own causal call, which skips the blocks a mask would only hide (the CPU
    kernel cannot skip them; docs/pocket_llm.md has the time saved)."""
    if position_ids is None:
        raise ValueError("packed attention needs the position ids that mark where examples start")
    rows = []  # query etc.: [batch, heads, tokens, head_dim]
    for row in range(query.shape[0]):
        starts = (position_ids[row] == 0).nonzero().flatten().tolist()
        r = slice(row, row + 1)  # 4-D slices: sdpa's fused CPU kernel takes no 3-D input
        rows.append(torch.cat([
            F.scaled_dot_product_attention(query[r, :, a:b], key[r, :, a:b], value[r, :, a:b],
                                           dropout_p=dropout, is_causal=True, scale=scaling)
            for a, b in zip(starts, starts[1:] + [query.shape[2]], strict=True)], dim=2))
    return torch.cat(rows).transpose(1, 2).contiguous(), None


AttentionInterface.register(PACKED, packed_attention)
AttentionMaskInterface.register(PACKED, lambda *args, **kwargs: None)  # the kernel masks itself


@contextmanager
def attention(model: LlamaForCausalLM, implementation: str) -> Iterator[None]:
    """Run a block with another attention implementation (e.g. PACKED for training rows)."""
    previous = model.config._attn_implementation
    model.set_attn_implementation(implementation)
    try:
        yield
    finally:
        model.set_attn_implementation(previous)
