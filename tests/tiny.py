"""Tiny real transformers models for tests (built in memory, nothing downloaded)."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def tiny_llama(vocab_size: int, seed: int = 0, max_positions: int = 128, **token_ids: int | None) -> LlamaForCausalLM:
    """A 2-layer Llama of hidden size 32 in eval mode; ``token_ids`` are bos/eos/pad_token_id."""
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        **token_ids,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()
