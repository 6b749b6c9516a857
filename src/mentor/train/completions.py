"""A policy's outputs at the completion positions of a batch: logits, or the last hidden states and the head.

Prompts are left-padded and completions right-padded, so every row's completion starts in the same column
and the model's output at the last T columns *is* the aligned B x T tensor: no per-row copy in the forward,
no per-row zero-filled gradient in the backward. The last completion token is never an input (nothing is
predicted after it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def _aligned_inputs(prompts: Sequence[list[int]], completions: Sequence[list[int]], device):
    """input ids, attention mask and position ids (B x L), the completion width T and the B x T mask."""
    width_p, steps = max(len(p) for p in prompts), max(1, max(len(c) for c in completions))
    rows, attention = [], []
    for p, c in zip(prompts, completions):
        body = list(p) + list(c[:-1])
        left, right = width_p - len(p), steps - 1 - (len(body) - len(p))
        rows.append([0] * left + body + [0] * right)
        attention.append([0] * left + [1] * len(body) + [0] * right)
    ids = torch.tensor(rows, dtype=torch.long, device=device)
    attention_BL = torch.tensor(attention, dtype=torch.long, device=device)
    positions = (attention_BL.cumsum(dim=1) - 1).clamp(min=0)  # each row's positions start at 0 after its padding
    mask_BT = torch.tensor([[1.0] * len(c) + [0.0] * (steps - len(c)) for c in completions], device=device)
    return {"input_ids": ids, "attention_mask": attention_BL, "position_ids": positions}, steps, mask_BT


def completion_logits(model, prompts: Sequence[list[int]], completions: Sequence[list[int]]):
    """Logits that predict each completion token after its prompt, aligned across rows: B x T x V, and the
    B x T mask; the head runs on the T completion columns only."""
    inputs, steps, mask_BT = _aligned_inputs(prompts, completions, next(model.parameters()).device)
    return model(**inputs, logits_to_keep=steps).logits, mask_BT


def completion_states(model, prompts: Sequence[list[int]], completions: Sequence[list[int]]):
    """The last hidden states (after the final norm) at the positions that predict each completion token:
    B x T x H, and the B x T mask. ``hidden @ plain_head(model).T`` are the logits."""
    inputs, steps, mask_BT = _aligned_inputs(prompts, completions, next(model.parameters()).device)
    return model.get_decoder()(**inputs).last_hidden_state[:, -steps:], mask_BT


def plain_head(model) -> torch.Tensor | None:
    """The output head's weight (V x H) when the logits are exactly ``hidden @ weight.T``; None for a head
    with a bias, soft-capped or scaled logits, or a model without a separate decoder (then use the logits)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if not isinstance(head, torch.nn.Linear) or head.bias is not None or not hasattr(model, "get_decoder"):
        return None
    config = getattr(model, "config", None)
    if getattr(config, "final_logit_softcapping", None) is not None:
        return None
    if any(getattr(config, name, None) not in (None, 1, 1.0) for name in ("logit_scale", "logits_scaling")):
        return None
    return head.weight
