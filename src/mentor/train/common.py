"""Pieces every training loop shares."""

from __future__ import annotations

import torch


def optimizer_step(model, optimizer, loss: torch.Tensor, max_grad_norm: float) -> float:
    """Backward, clip the gradient norm, step; returns the norm before clipping."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    return float(grad_norm)
