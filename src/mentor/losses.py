"""Losses as pure functions on tensors that return ``(loss, metrics)``.

Shape suffixes: B batch, T time (completion positions), V vocabulary.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
from torch.utils.checkpoint import checkpoint


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
    """loss = - sum_i w_i sum_t log p(y_i,t) / sum_i |y_i|  (docs/methods.md, section 2).

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


# ----- self-distillation: divergence to a self-teacher (docs/methods.md, section 1) ---------------------------


def _kl_terms(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """Per-entry terms p * (log p - log q) of KL(P || Q); they sum to KL over the last dimension."""
    return logp.exp() * (logp - logq)


def _with_tail(logp_NV: torch.Tensor, ids_NK: torch.Tensor) -> torch.Tensor:
    """The k chosen log-probs plus one bucket holding log of the remaining mass: N x (K + 1)."""
    rest_N1 = logp_NV.scatter(-1, ids_NK, float("-inf")).logsumexp(-1, keepdim=True)
    return torch.cat([logp_NV.gather(-1, ids_NK), rest_N1], dim=-1)


CLIP_MODES = ("term", "position")


def _chunk_divergence(s_BCV, t_BCV, m_BC, *, beta, temperature, top_k, from_teacher, tail, clip, clip_mode="term"):
    """Summed divergence over the unmasked positions of one time chunk, and the number of clipped terms (or,
    with ``clip_mode="position"``, positions)."""
    # -inf logits (banned ids) become a huge finite negative number: probability 0 without 0 * inf = NaN
    dtype = torch.promote_types(s_BCV.dtype, torch.float32)  # bf16 / fp16 logits are upcast per chunk
    s_NV = (s_BCV[m_BC].to(dtype) / temperature).clamp(min=-1e30)
    t_NV = (t_BCV[m_BC].to(dtype) / temperature).clamp(min=-1e30)
    if top_k is not None and top_k < s_NV.shape[-1]:
        ids_NK = (t_NV if from_teacher else s_NV).detach().topk(top_k, dim=-1).indices
        if tail:  # k ids + tail: already a proper distribution, no renormalisation
            logs, logt = _with_tail(s_NV.log_softmax(-1), ids_NK), _with_tail(t_NV.log_softmax(-1), ids_NK)
        else:  # renormalise over the k ids
            logs, logt = s_NV.gather(-1, ids_NK).log_softmax(-1), t_NV.gather(-1, ids_NK).log_softmax(-1)
    else:
        logs, logt = s_NV.log_softmax(-1), t_NV.log_softmax(-1)
    return _bucket_divergence(logs, logt, beta=beta, clip=clip, clip_mode=clip_mode)


def _bucket_divergence(logs, logt, *, beta, clip, clip_mode):
    """The summed divergence of aligned log-probabilities (N x buckets: the vocabulary, or k ids and a tail),
    and the number of clipped terms or positions."""
    # the endpoints are explicit: through the mixture, beta = 0 or 1 would give 0 * KL(.||.) = 0
    if beta == 0.0:
        terms = _kl_terms(logt, logs)  # forward KL(T || S)
    elif beta == 1.0:
        terms = _kl_terms(logs, logt)  # reverse KL(S || T)
    else:
        logm = torch.logaddexp(logs + math.log1p(-beta), logt + math.log(beta))
        terms = beta * _kl_terms(logt, logm) + (1.0 - beta) * _kl_terms(logs, logm)
    n_clipped = terms.new_zeros(())
    if clip is not None and clip_mode == "position":
        # mentor's: a position whose divergence d exceeds the cap is scaled by cap / sg(d): its value is the
        # cap and its gradient keeps its direction, shrunk. A clamp would pass no gradient at all where the
        # teacher disagrees most, which is where a confident teacher teaches (docs/world5.md)
        d_N = terms.sum(-1)
        n_clipped = (d_N > clip).sum().to(d_N.dtype)
        return (d_N * (clip / d_N.detach().clamp(min=clip))).sum(), n_clipped
    if clip is not None:  # OPSD: clamp each (position, vocab entry) term before the vocabulary sum
        n_clipped = (terms > clip).sum().to(terms.dtype)
        terms = terms.clamp(max=clip)
    return terms.sum(), n_clipped


class _ForwardKL(torch.autograd.Function):
    """sum_t m_t KL(T_t || S_t) from raw logits, with the closed-form gradient (S - T) m / temperature.

    Autograd through a log-softmax would keep (or, checkpointed, recompute) float32 copies of both
    distributions; here the forward makes two reductions and one product per position, the backward one
    fused difference, both ``chunk`` rows at a time, and nothing of size V is saved but the inputs.
    """

    @staticmethod
    def forward(ctx, s_BTV, t_BTV, m_BT, temperature: float, chunk: int):
        s_NV, t_NV = s_BTV.reshape(-1, s_BTV.shape[-1]), t_BTV.reshape(-1, t_BTV.shape[-1])
        dtype = torch.promote_types(s_BTV.dtype, torch.float32)
        lse_s, lse_t = s_NV.new_empty(s_NV.shape[0], dtype=dtype), s_NV.new_empty(s_NV.shape[0], dtype=dtype)
        kl_N = s_NV.new_empty(s_NV.shape[0], dtype=dtype)
        for start in range(0, s_NV.shape[0], chunk):
            rows = slice(start, start + chunk)
            s, t = _scaled(s_NV[rows], dtype, temperature), _scaled(t_NV[rows], dtype, temperature)
            lse_s[rows], lse_t[rows] = s.logsumexp(-1), t.logsumexp(-1)
            p_t = (t - lse_t[rows, None]).exp_()
            # KL = sum_v p_t (t - s) + lse_s - lse_t; nansum: an entry with p_t = 0 adds 0 even where t or s is
            # -inf (a NaN logit still shows, through the log-sum-exps)
            kl_N[rows] = (t - s).mul_(p_t).nansum(-1) + lse_s[rows] - lse_t[rows]
        m_N = m_BT.reshape(-1).to(dtype)
        ctx.save_for_backward(s_BTV, t_BTV, m_N, lse_s, lse_t)
        ctx.temperature, ctx.chunk = temperature, chunk
        return (kl_N.masked_fill(m_N == 0, 0.0) * m_N).sum()

    @staticmethod
    def backward(ctx, grad):
        s_BTV, t_BTV, m_N, lse_s, lse_t = ctx.saved_tensors
        s_NV, t_NV = s_BTV.reshape(-1, s_BTV.shape[-1]), t_BTV.reshape(-1, t_BTV.shape[-1])
        out_NV = torch.empty_like(s_NV)
        scale_N = m_N * grad / ctx.temperature
        for start in range(0, s_NV.shape[0], ctx.chunk):
            rows = slice(start, start + ctx.chunk)
            p_s = (_scaled(s_NV[rows], lse_s.dtype, ctx.temperature) - lse_s[rows, None]).exp_()
            p_t = (_scaled(t_NV[rows], lse_t.dtype, ctx.temperature) - lse_t[rows, None]).exp_()
            # torch.where, not a product with the mask: a NaN logit at a masked position must give a zero
            # gradient there, as autograd through the masked sum does (NaN * 0 is NaN)
            out_NV[rows] = torch.where(m_N[rows, None] != 0, p_s.sub_(p_t).mul_(scale_N[rows, None]), 0.0)
        return out_NV.view_as(s_BTV), None, None, None, None


class _FusedHeadForwardKL(torch.autograd.Function):
    """sum_t m_t KL(T_t || S_t) straight from the last hidden states and the output heads.

    The logits exist only ``chunk`` positions at a time: each chunk's student and teacher logits are made,
    give their KL and the token log-probs, and their gradient (S - T) m / temperature goes at once through
    the head into the hidden states and the head's weight. No B x T x V tensor exists anywhere, and the
    vocabulary-sized work per position is two log-softmaxes, two exps and three in-place passes; what the
    backward keeps is the hidden-state gradient (B x T x H) and, when the head trains, its weight's gradient.
    """

    @staticmethod
    def forward(ctx, h_s, w_s, h_t, w_t, tokens_BT, m_BT, temperature: float, chunk: int):
        H = h_s.shape[-1]
        hs_NH, ht_NH, tok_N = h_s.reshape(-1, H), h_t.reshape(-1, H), tokens_BT.reshape(-1)
        dtype = torch.promote_types(h_s.dtype, torch.float32)
        m_N = m_BT.reshape(-1).to(dtype)
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.empty_like(hs_NH) if need_h else None  # every row is written by its chunk
        # the head's gradient sums over every chunk: in float32 whatever the weights' dtype (bf16 sums lose
        # about 1% against float64, more with more chunks)
        grad_w = torch.zeros_like(w_s, dtype=dtype) if need_w else None
        kl_N = hs_NH.new_zeros(hs_NH.shape[0], dtype=dtype)
        tok_logp_s, tok_logp_t = torch.zeros_like(kl_N), torch.zeros_like(kl_N)
        # three chunk x V buffers reused by every chunk: a fresh large tensor costs more in page faults than
        # the pass that fills it
        width = min(chunk, hs_NH.shape[0])
        logits = hs_NH.new_empty((width, w_s.shape[0]))
        logp_s, logp_t = logits.new_empty(logits.shape, dtype=dtype), logits.new_empty(logits.shape, dtype=dtype)
        for start in range(0, hs_NH.shape[0], chunk):
            rows = slice(start, start + chunk)
            n = hs_NH[rows].shape[0]
            for hidden, head, out in ((hs_NH, w_s, logp_s), (ht_NH, w_t, logp_t)):
                torch.matmul(hidden[rows], head.T, out=logits[:n])
                if temperature != 1.0:
                    logits[:n].div_(temperature)
                torch.log_softmax(logits[:n], -1, dtype=dtype, out=out[:n])
            ls, lt = logp_s[:n], logp_t[:n]
            tok_logp_s[rows] = ls.gather(-1, tok_N[rows, None]).squeeze(-1)
            tok_logp_t[rows] = lt.gather(-1, tok_N[rows, None]).squeeze(-1)
            p_t = torch.exp(lt, out=logits[:n]) if dtype == logits.dtype else lt.exp()
            kl_N[rows] = lt.sub_(ls).mul_(p_t).sum(-1)  # logits from a matmul are finite: no 0 * inf
            if need_h or need_w:
                # d KL / d logits = (p_s - p_t) / temperature; each row's mask and scale go on the small side
                g = ls.exp_().sub_(p_t)
                scale = (m_N[rows] / temperature)[:, None]
                if need_h:
                    torch.matmul(g.to(h_s.dtype), w_s, out=grad_h[rows])
                    grad_h[rows] *= scale.to(h_s.dtype)
                if need_w:
                    if w_s.dtype == dtype:
                        grad_w.addmm_(g.T, hs_NH[rows] * scale)
                    else:  # the chunk's product at the weights' (tensor-core) precision, the sum over chunks in float32
                        grad_w.add_(torch.matmul(g.T.to(w_s.dtype), hs_NH[rows] * scale.to(h_s.dtype)))
        ctx.save_for_backward(*(x for x in (grad_h, grad_w) if x is not None))
        ctx.shapes, ctx.weight_dtype = (h_s.shape, need_h, need_w), w_s.dtype
        tok_logp_s, tok_logp_t = tok_logp_s.view(m_BT.shape), tok_logp_t.view(m_BT.shape)
        ctx.mark_non_differentiable(tok_logp_s, tok_logp_t)
        return (kl_N.masked_fill(m_N == 0, 0.0) * m_N).sum(), tok_logp_s, tok_logp_t

    @staticmethod
    def backward(ctx, grad, _logp_s, _logp_t):
        saved = list(ctx.saved_tensors)
        shape, need_h, need_w = ctx.shapes
        grad_h = (saved.pop(0) * grad).view(shape) if need_h else None
        grad_w = (saved.pop(0) * grad).to(ctx.weight_dtype) if need_w else None
        return grad_h, grad_w, None, None, None, None, None, None


def _check_states(student_hidden_BTH, student_head_VH, teacher_hidden_BTH, teacher_head_VH, tokens_BT, mask_BT):
    if student_hidden_BTH.shape != teacher_hidden_BTH.shape or mask_BT.shape != student_hidden_BTH.shape[:2] \
            or tokens_BT.shape != mask_BT.shape or student_head_VH.shape != teacher_head_VH.shape:
        raise ValueError(f"shape mismatch: hidden {tuple(student_hidden_BTH.shape)} / "
                         f"{tuple(teacher_hidden_BTH.shape)}, heads {tuple(student_head_VH.shape)} / "
                         f"{tuple(teacher_head_VH.shape)}, tokens {tuple(tokens_BT.shape)}, mask {tuple(mask_BT.shape)}")


def fused_forward_kl(
    student_hidden_BTH: torch.Tensor,
    student_head_VH: torch.Tensor,
    teacher_hidden_BTH: torch.Tensor,
    teacher_head_VH: torch.Tensor,
    tokens_BT: torch.Tensor,
    mask_BT: torch.Tensor,
    *,
    temperature: float = 1.0,
    chunk: int = 128,
) -> tuple[torch.Tensor, dict[str, float], torch.Tensor, torch.Tensor]:
    """Forward KL(T || S) over the whole vocabulary, averaged over unmasked tokens, from hidden states and
    output-head weights (logits = hidden @ head.T, a head without bias), never materialising the logits.

    The same number and gradient as ``generalized_jsd`` on the logits (beta = 0); also returns the student's
    and the teacher's log-probs of ``tokens`` (B x T, detached) for the token-advantage metrics.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    _check_states(student_hidden_BTH, student_head_VH, teacher_hidden_BTH, teacher_head_VH, tokens_BT, mask_BT)
    # only the unmasked positions (padding, spans past a divergence, rows without a context do no vocabulary
    # work); their log-probs go back to their places, 0 elsewhere
    keep = mask_BT != 0
    total, logp_s, logp_t = _FusedHeadForwardKL.apply(
        student_hidden_BTH[keep][None], student_head_VH, teacher_hidden_BTH.detach()[keep][None],
        teacher_head_VH.detach(), tokens_BT[keep][None], mask_BT[keep][None], float(temperature), chunk)
    logp_s_BT = logp_s.new_zeros(mask_BT.shape)
    logp_t_BT = torch.zeros_like(logp_s_BT)
    logp_s_BT[keep], logp_t_BT[keep] = logp_s[0], logp_t[0]
    n_tokens = mask_BT.sum().clamp(min=1).to(total.dtype)
    loss = total / n_tokens
    return loss, {"loss": float(loss.detach()), "tokens": float(mask_BT.sum())}, logp_s_BT, logp_t_BT


def _scaled(logits: torch.Tensor, dtype: torch.dtype, temperature: float) -> torch.Tensor:
    """``logits / temperature`` in ``dtype``, without a copy when there is nothing to do."""
    logits = logits.to(dtype)
    return logits if temperature == 1.0 else logits / temperature


def _check_divergence(beta: float, temperature: float, top_k: int | None, top_k_source: str, tail: bool,
                      clip: float | None, chunk: int, clip_mode: str = "term") -> None:
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
    if top_k_source not in ("teacher", "student"):
        raise ValueError(f"top_k_source must be 'teacher' or 'student', got {top_k_source!r}")
    if tail and top_k is None:
        raise ValueError("tail=True needs top_k")
    if clip is not None and not clip > 0:
        raise ValueError(f"clip must be > 0 or None, got {clip}")
    if clip_mode not in CLIP_MODES:
        raise ValueError(f"clip_mode must be one of {', '.join(CLIP_MODES)}, got {clip_mode!r}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")


def _clip_fraction(n_clipped: torch.Tensor, n_tokens: torch.Tensor, V: int, top_k: int | None, tail: bool,
                   clip_mode: str = "term") -> float:
    """The share of (position, bucket) terms, or of positions, the clip capped."""
    n_buckets = 1 if clip_mode == "position" else V if top_k is None or top_k >= V else top_k + int(tail)
    return float(n_clipped / (n_tokens * n_buckets))


def generalized_jsd_from_states(
    student_hidden_BTH: torch.Tensor,
    student_head_VH: torch.Tensor,
    teacher_hidden_BTH: torch.Tensor,
    teacher_head_VH: torch.Tensor,
    tokens_BT: torch.Tensor,
    mask_BT: torch.Tensor,
    *,
    beta: float = 0.0,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_k_source: str = "teacher",
    tail: bool = False,
    clip: float | None = None,
    clip_mode: str = "term",
    chunk: int = 128,
) -> tuple[torch.Tensor, dict[str, float], torch.Tensor, torch.Tensor]:
    """:func:`generalized_jsd` of the logits ``hidden @ head.T`` (a head without bias), computed ``chunk``
    unmasked positions at a time under activation checkpointing: no B x T x V tensor of either model exists,
    forward or backward (the chunk's head product runs again in backward). For the divergences the
    closed-form :func:`fused_forward_kl` does not cover: top-k (with or without the tail), beta > 0, the
    clip. Also returns the student's and the teacher's log-probs of ``tokens`` (B x T, detached).
    """
    _check_divergence(beta, temperature, top_k, top_k_source, tail, clip, chunk, clip_mode)
    _check_states(student_hidden_BTH, student_head_VH, teacher_hidden_BTH, teacher_head_VH, tokens_BT, mask_BT)
    divergence = functools.partial(_chunk_divergence, beta=float(beta), temperature=float(temperature), top_k=top_k,
                                   from_teacher=top_k_source == "teacher", tail=tail, clip=clip,
                                   clip_mode=clip_mode)
    teacher_head_VH = teacher_head_VH.detach()

    def piece(h_s_CH, h_t_CH, ids_C):
        s_CV = h_s_CH @ student_head_VH.T
        with torch.no_grad():
            t_CV = h_t_CH @ teacher_head_VH.T
        div, clipped = divergence(s_CV[None], t_CV[None], torch.ones_like(ids_C, dtype=torch.bool)[None])
        with torch.no_grad():
            dtype = torch.promote_types(s_CV.dtype, torch.float32)
            logps = [_scaled(x, dtype, temperature).log_softmax(-1).gather(-1, ids_C[:, None])[:, 0] for x in (s_CV, t_CV)]
        return div, clipped, *logps

    mask = mask_BT.bool()
    h_s, h_t, ids = student_hidden_BTH[mask], teacher_hidden_BTH.detach()[mask], tokens_BT[mask]
    checkpointed = torch.is_grad_enabled() and h_s.requires_grad
    dtype = torch.promote_types(student_hidden_BTH.dtype, torch.float32)
    total, n_clipped = h_s.new_zeros((), dtype=dtype), h_s.new_zeros((), dtype=dtype)
    logp_s, logp_t = [], []
    for div, clipped, lp_s, lp_t in _in_chunks(piece, (h_s, h_t, ids), 0, chunk, checkpointed):
        total, n_clipped = total + div, n_clipped + clipped
        logp_s.append(lp_s)
        logp_t.append(lp_t)
    logp_s_BT = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    logp_t_BT = torch.zeros_like(logp_s_BT)
    if logp_s:
        logp_s_BT[mask], logp_t_BT[mask] = torch.cat(logp_s), torch.cat(logp_t)
    loss, metrics = _mean_with_metrics(total, n_clipped, mask, student_head_VH.shape[0], top_k, tail, clip, clip_mode)
    return loss, metrics, logp_s_BT, logp_t_BT


def generalized_jsd(
    student_logits_BTV: torch.Tensor,
    teacher_logits_BTV: torch.Tensor,
    mask_BT: torch.Tensor,
    *,
    beta: float = 0.0,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_k_source: str = "teacher",
    tail: bool = False,
    clip: float | None = None,
    clip_mode: str = "term",
    chunk: int = 128,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Generalised JSD to a detached teacher, summed over the vocabulary, averaged over unmasked tokens.

    M = (1-beta) S + beta T and JSD_beta = beta KL(T||M) + (1-beta) KL(S||M); beta=0 is forward KL(T||S),
    beta=1 reverse KL(S||T) (the same convention as TRL's GKD). ``top_k`` keeps the teacher's (or the
    student's) k most likely ids per position, renormalised over them, or with ``tail`` plus one bucket
    for the rest of each distribution's mass. ``clip`` caps each (position, vocab entry) term (OPSD's
    ``clip_mode="term"``), or scales each position whose divergence exceeds it down to it, gradient
    direction kept (``clip_mode="position"``).
    Positions are processed ``chunk`` at a time under activation checkpointing, so neither the forward
    nor the saved graph holds float32 B x T x V copies of both distributions.
    """
    _check_divergence(beta, temperature, top_k, top_k_source, tail, clip, chunk, clip_mode)
    if student_logits_BTV.shape != teacher_logits_BTV.shape or mask_BT.shape != student_logits_BTV.shape[:2]:
        raise ValueError(
            f"shape mismatch: student {tuple(student_logits_BTV.shape)}, "
            f"teacher {tuple(teacher_logits_BTV.shape)}, mask {tuple(mask_BT.shape)}"
        )
    fn = functools.partial(
        _chunk_divergence, beta=float(beta), temperature=float(temperature), top_k=top_k,
        from_teacher=top_k_source == "teacher", tail=tail, clip=clip, clip_mode=clip_mode,
    )
    if beta == 0.0 and clip is None and (top_k is None or top_k >= student_logits_BTV.shape[-1]):
        # forward KL over the whole vocabulary, the study's divergence: the closed-form path
        total = _ForwardKL.apply(student_logits_BTV, teacher_logits_BTV.detach(), mask_BT, float(temperature),
                                 chunk)
        n_tokens = mask_BT.sum().clamp(min=1).to(total.dtype)
        loss = total / n_tokens
        return loss, {"loss": float(loss.detach()), "tokens": float(mask_BT.sum())}
    mask_BT = mask_BT.bool()
    total, n_clipped = _summed_over_chunks(fn, (student_logits_BTV, teacher_logits_BTV.detach(), mask_BT), chunk)
    return _mean_with_metrics(total, n_clipped, mask_BT, student_logits_BTV.shape[-1], top_k, tail, clip, clip_mode)


def sparse_teacher_divergence(
    student_logits_BTV: torch.Tensor,
    teacher_ids_BTK: torch.Tensor,
    teacher_logp_BTK: torch.Tensor,
    mask_BT: torch.Tensor,
    *,
    beta: float = 0.0,
    tail: bool = True,
    clip: float | None = None,
    clip_mode: str = "term",
    chunk: int = 128,
) -> tuple[torch.Tensor, dict[str, float]]:
    """:func:`generalized_jsd` with ``top_k`` from the teacher, for a teacher known only by its k most likely
    ids and their log-probabilities at each position (a served teacher's prompt log-probs): the student's
    log-probs are taken at the same ids, with ``tail`` one more bucket each for the remaining mass (the
    teacher's: ``log(1 - sum_k p)``), else both renormalised over the k ids. The teacher's numbers are at
    temperature 1, so the student's logits are too. With the teacher's own top-k this equals
    ``generalized_jsd(student, teacher, top_k=k, tail=tail)``, gradient included."""
    _check_divergence(beta, 1.0, teacher_ids_BTK.shape[-1], "teacher", tail, clip, chunk, clip_mode)
    if teacher_ids_BTK.shape != teacher_logp_BTK.shape or teacher_ids_BTK.shape[:2] != mask_BT.shape \
            or student_logits_BTV.shape[:2] != mask_BT.shape:
        raise ValueError(f"shape mismatch: student {tuple(student_logits_BTV.shape)}, teacher ids "
                         f"{tuple(teacher_ids_BTK.shape)}, log-probs {tuple(teacher_logp_BTK.shape)}, mask "
                         f"{tuple(mask_BT.shape)}")

    def piece(s_BCV, ids_BCK, logt_BCK, m_BC):
        dtype = torch.promote_types(s_BCV.dtype, torch.float32)
        logp_NV = s_BCV[m_BC].to(dtype).clamp(min=-1e30).log_softmax(-1)
        ids_NK, logt_NK = ids_BCK[m_BC], logt_BCK[m_BC].to(dtype)
        if tail:
            logs = _with_tail(logp_NV, ids_NK)
            # the teacher's remaining mass; a top-k that already holds all of it leaves a bucket of ~0
            rest_N1 = torch.log1p(-logt_NK.exp().sum(-1, keepdim=True).clamp(max=1.0 - 1e-7))
            logt = torch.cat([logt_NK, rest_N1], dim=-1)
        else:
            logs, logt = logp_NV.gather(-1, ids_NK).log_softmax(-1), logt_NK.log_softmax(-1)
        return _bucket_divergence(logs, logt, beta=float(beta), clip=clip, clip_mode=clip_mode)

    mask_BT = mask_BT.bool()
    total, n_clipped = _summed_over_chunks(piece, (student_logits_BTV, teacher_ids_BTK, teacher_logp_BTK.detach(),
                                                   mask_BT), chunk)
    return _mean_with_metrics(total, n_clipped, mask_BT, student_logits_BTV.shape[-1], teacher_ids_BTK.shape[-1],
                              tail, clip, clip_mode)


def _in_chunks(fn: Callable, tensors: tuple[torch.Tensor, ...], dim: int, chunk: int, checkpointed: bool):
    """``fn`` on ``chunk``-sized slices of ``tensors`` along ``dim``, one after another, each under
    activation checkpointing when ``checkpointed`` (its inputs kept, its activations recomputed in backward)."""
    for start in range(0, tensors[0].shape[dim], chunk):
        args = tuple(x.narrow(dim, start, min(chunk, x.shape[dim] - start)) for x in tensors)
        yield checkpoint(fn, *args, use_reentrant=False) if checkpointed else fn(*args)


def _summed_over_chunks(fn: Callable, tensors: tuple[torch.Tensor, ...], chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The divergence and clipped count that ``fn`` returns for each ``chunk`` of positions (dim 1 of B x T x ...
    ``tensors``, the first the student's logits), summed in at least float32; checkpointed when the logits
    need a gradient."""
    logits = tensors[0]
    checkpointed = torch.is_grad_enabled() and logits.requires_grad
    total = logits.new_zeros((), dtype=torch.promote_types(logits.dtype, torch.float32))
    n_clipped = total.new_zeros(())
    for div, clipped in _in_chunks(fn, tensors, 1, chunk, checkpointed):
        total, n_clipped = total + div, n_clipped + clipped
    return total, n_clipped


def _mean_with_metrics(total: torch.Tensor, n_clipped: torch.Tensor, mask: torch.Tensor, V: int, top_k: int | None,
                       tail: bool, clip: float | None, clip_mode: str) -> tuple[torch.Tensor, dict[str, float]]:
    """The summed divergence as a mean over the unmasked tokens, with its metrics."""
    n_tokens = mask.sum().clamp(min=1).to(total.dtype)
    loss = total / n_tokens
    metrics = {"loss": float(loss.detach()), "tokens": float(mask.sum())}
    if clip is not None:
        metrics["clip_frac"] = _clip_fraction(n_clipped, n_tokens, V, top_k, tail, clip_mode)
    return loss, metrics


def sampled_token_distill(
    student_logp_BT: torch.Tensor, teacher_logp_BT: torch.Tensor, mask_BT: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    """Reverse KL on the sampled tokens as an advantage: A_t = sg[log T(y_t) - log S(y_t)],
    loss = - mean_t A_t log S(y_t) over unmasked tokens (its gradient is -A_t grad log S(y_t) / N)."""
    mask_BT = mask_BT.bool()
    n_tokens = mask_BT.sum().clamp(min=1)
    adv_BT = (teacher_logp_BT - student_logp_BT).detach().masked_fill(~mask_BT, 0.0)
    loss = -(adv_BT * student_logp_BT.masked_fill(~mask_BT, 0.0)).sum() / n_tokens
    adv = adv_BT[mask_BT]
    metrics = {
        "loss": float(loss.detach()),
        "adv_mean": float(adv.mean()) if adv.numel() else 0.0,
        "adv_neg_frac": float((adv < 0).float().mean()) if adv.numel() else 0.0,
        "tokens": float(mask_BT.sum()),
    }
    return loss, metrics


# ----- GRPO ---------------------------------------------------------------------------------------------


def truncated_importance_weights(trainer_logp_BT: torch.Tensor, behaviour_logp_BT: torch.Tensor, mask_BT: torch.Tensor,
                                 cap: float) -> tuple[torch.Tensor, dict[str, float]]:
    """min(pi_trainer / pi_behaviour, cap) per token, from the log-probs (the log-ratio clamped at log cap before
    the exponential, so no ratio overflows): the rollout correction for tokens another copy of the weights drew
    (an older version, or an engine with its own kernels). Masked positions get 1."""
    if not cap > 0:
        raise ValueError(f"the importance weight cap must be > 0, got {cap}")
    mask_BT = mask_BT.bool()
    log_ratio_BT = (trainer_logp_BT.detach() - behaviour_logp_BT).clamp(max=math.log(cap)).masked_fill(~mask_BT, 0.0)
    weight_BT = log_ratio_BT.exp()
    n = mask_BT.sum().clamp(min=1)
    return weight_BT, {"is_weight_mean": float(weight_BT[mask_BT].sum() / n),
                       "is_truncated_frac": float(((log_ratio_BT >= math.log(cap)) & mask_BT).sum() / n)}


def group_advantages(
    rewards_BG: torch.Tensor, eps: float = 1e-6, scale_by_std: bool = True
) -> tuple[torch.Tensor, dict[str, float]]:
    """A_i = (r_i - mean r) / (std r + eps) within each group (the last dimension; shape G or B x G).

    std is the population standard deviation (divide by G, not G - 1). A group whose rewards are all
    equal carries no signal and gets exact zeros.
    """
    if rewards_BG.dim() not in (1, 2) or rewards_BG.shape[-1] < 1:
        raise ValueError(f"rewards must have shape (G,) or (B, G) with G >= 1, got {tuple(rewards_BG.shape)}")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    r = rewards_BG.double() if rewards_BG.dtype == torch.float64 else rewards_BG.float()
    adv = r - r.mean(dim=-1, keepdim=True)
    std = r.std(dim=-1, keepdim=True, correction=0)
    if scale_by_std:
        adv = adv / (std + eps)
    flat = (r == r[..., :1]).all(dim=-1, keepdim=True)
    adv = adv.masked_fill(flat, 0.0)
    metrics = {
        "reward_mean": float(r.mean()),
        "reward_std": float(std.mean()),
        "zero_var_frac": float(flat.float().mean()),
    }
    return adv, metrics


def clipped_policy_gradient(
    logp_BT: torch.Tensor,
    old_logp_BT: torch.Tensor,
    advantages_B: torch.Tensor,
    mask_BT: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    aggregation: str = "token-mean",
    weight_BT: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO clipped surrogate: - min(r A, clip(r, 1 - clip_low, 1 + clip_high) A), r = exp(logp - old_logp).

    ``token-mean`` averages over all unmasked tokens of the batch (long sequences weigh more);
    ``sequence-mean`` averages within each sequence, then over the sequences that have any token.
    ``weight_BT`` (detached) multiplies each token's term: the truncated importance weight of tokens drawn by
    other weights than the trainer's (:func:`truncated_importance_weights`).
    """
    if aggregation not in ("token-mean", "sequence-mean"):
        raise ValueError(f"aggregation must be 'token-mean' or 'sequence-mean', got {aggregation!r}")
    if clip_low < 0 or clip_high < 0:
        raise ValueError(f"clip_low and clip_high must be >= 0, got {clip_low}, {clip_high}")
    mask_BT = mask_BT.bool()
    log_ratio_BT = (logp_BT - old_logp_BT.detach()).masked_fill(~mask_BT, 0.0)
    ratio_BT = log_ratio_BT.exp()
    adv_BT = advantages_B.detach().to(ratio_BT.dtype)[:, None].expand_as(ratio_BT)
    unclipped_BT = -adv_BT * ratio_BT
    clipped_BT = -adv_BT * ratio_BT.clamp(1.0 - clip_low, 1.0 + clip_high)
    per_token_BT = torch.maximum(unclipped_BT, clipped_BT)
    if weight_BT is not None:
        per_token_BT = per_token_BT * weight_BT.detach().to(per_token_BT.dtype)
    per_token_BT = per_token_BT.masked_fill(~mask_BT, 0.0)
    len_B = mask_BT.sum(dim=1)
    if aggregation == "token-mean":
        loss = per_token_BT.sum() / len_B.sum().clamp(min=1)
    else:
        has_B = len_B > 0
        loss = (per_token_BT.sum(dim=1)[has_B] / len_B[has_B]).sum() / has_B.sum().clamp(min=1)
    n = len_B.sum().clamp(min=1)
    metrics = {
        "loss": float(loss.detach()),
        "clip_frac": float(((clipped_BT > unclipped_BT) & mask_BT).sum() / n),
        "ratio_mean": float(ratio_BT.detach()[mask_BT].sum() / n),
        "tokens": float(len_B.sum()),
    }
    return loss, metrics
