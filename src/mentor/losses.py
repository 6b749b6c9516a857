"""Losses as pure functions on tensors that return ``(loss, metrics)``.

Shape suffixes: B batch, T time (completion positions), V vocabulary.
"""

from __future__ import annotations

import torch


def token_logprobs(logits_BTV: torch.Tensor, tokens_BT: torch.Tensor, chunk: int = 128) -> torch.Tensor:
    """log p(tokens) under ``logits``, computed ``chunk`` positions at a time.

    Never materialises a float32 B x T x V log-softmax of the whole batch: only one slice at a time.
    """
    out = []
    for start in range(0, logits_BTV.shape[1], chunk):
        logits = logits_BTV[:, start : start + chunk].float()
        picked = logits.gather(-1, tokens_BT[:, start : start + chunk, None]).squeeze(-1)
        out.append(picked - torch.logsumexp(logits, dim=-1))
    return torch.cat(out, dim=1) if out else logits_BTV.new_zeros(tokens_BT.shape, dtype=torch.float32)


def weighted_nll(
    logp_BT: torch.Tensor, mask_BT: torch.Tensor, weight_B: torch.Tensor | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    """loss = - sum_i w_i sum_t log p(y_i,t) / sum_i |y_i|  (METHODS.md section 2).

    With every weight 1 this is the token-mean negative log-likelihood of SFT. Weights may be negative
    (they push probability away from a response); bounding them is the caller's choice.
    """
    mask_BT = mask_BT.to(logp_BT.dtype)
    if weight_B is None:
        weight_B = torch.ones(logp_BT.shape[0], dtype=logp_BT.dtype, device=logp_BT.device)
    n_tokens = mask_BT.sum().clamp(min=1.0)
    # masked_fill first: a padded position may hold -inf or NaN (e.g. a fully masked attention row), and
    # -inf * 0 or NaN * 0 is NaN, which would poison the whole batch's loss
    per_seq_B = (logp_BT.masked_fill(mask_BT == 0, 0.0) * mask_BT).sum(dim=1)
    loss = -(weight_B.to(logp_BT.dtype) * per_seq_B).sum() / n_tokens
    nll = -(per_seq_B.sum() / n_tokens).detach()
    return loss, {"loss": float(loss.detach()), "nll": float(nll), "tokens": float(n_tokens)}


def causal_lm_logprobs(model, input_ids_BL: torch.Tensor, attention_mask_BL: torch.Tensor) -> torch.Tensor:
    """log p(input_ids[:, 1:]) under a causal LM: the B x (L-1) log-probs of each next token."""
    logits_BLV = model(input_ids=input_ids_BL, attention_mask=attention_mask_BL).logits
    return token_logprobs(logits_BLV[:, :-1], input_ids_BL[:, 1:])

