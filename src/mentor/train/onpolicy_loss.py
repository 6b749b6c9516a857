"""One micro-batch's losses: GRPO's clipped policy gradient and the self-distillation divergence, each
through the path its configuration needs (the fused closed form, the fused states, or the logits)."""

from __future__ import annotations

import math
import time

import torch

from mentor.losses import (
    clipped_policy_gradient,
    fused_forward_kl,
    generalized_jsd,
    generalized_jsd_from_states,
    sampled_token_distill,
    sparse_teacher_divergence,
    token_logprobs,
    truncated_importance_weights,
)
from mentor.models import encode_prompt
from mentor.train.completions import completion_logits, completion_states, plain_head
from mentor.train.distributed import CompletionForward, policy_of
from mentor.train.onpolicy_config import OnPolicyConfig
from mentor.train.rollouts import Row, _padded, signal_tokens
from mentor.train.teacher import SelfTeacher


def micro_losses(model, teacher: SelfTeacher | None, tokenizer, rows: list[Row], adv_B: torch.Tensor,
                 config: OnPolicyConfig, times: dict, forward=None
                 ) -> tuple[torch.Tensor | None, torch.Tensor | None, dict]:
    """GRPO's and the self-distillation loss of one micro-batch (each a mean over its own tokens; None when
    the method does not use it; the self-distillation loss is zero for rows without a context), and their
    metrics. ``forward``: the student's loss forward
    (:class:`~mentor.train.distributed.CompletionForward` of ``model``, DDP-wrapped or sharded with several
    processes); ``model``: the student's whole weights, which the self-teacher reads."""
    forward = forward or CompletionForward(model)
    completions = [r.sample.token_ids for r in rows]
    prompts = [encode_prompt(tokenizer, r.prompt) for r in rows]
    # pure self-distillation over the vocabulary (all of it, or the top k) never needs the student's logits: the
    # loss makes them a chunk at a time from the hidden states, with forward KL's closed-form gradient where it
    # applies (docs/methods.md, section 1)
    fused = (config.grpo_weight == 0 and config.divergence in ("full", "top-k") and plain_head(model) is not None
             and not getattr(teacher, "mixes", False)  # a mixture of teachers needs their logits
             and getattr(teacher, "kind", None) != "served")  # a served one gives its top k, read against logits
    closed_form = config.divergence == "full" and config.beta == 0 and config.divergence_clip is None
    if fused:
        hidden_BTH, mask_BT = forward(prompts, completions, states=True)
        head = plain_head(policy_of(forward))  # read after the forward: under FSDP it gathered the head's shards
    else:
        logits_BTV, mask_BT = forward(prompts, completions)
        if config.temperature != 1.0:  # at 1 the divide would only copy B x T x V
            logits_BTV = logits_BTV / config.temperature
    device = mask_BT.device
    tokens_BT = _padded(completions, mask_BT.shape[1], torch.long, device)
    if not fused:  # the fused loss returns the student's log-probs itself
        logp_BT = token_logprobs(logits_BTV, tokens_BT)
    pg = sd = None
    metrics = {}
    if config.grpo_weight > 0:
        old_BT = _padded([r.sample.logprobs for r in rows], mask_BT.shape[1], torch.float32, device)
        # the sampler's log-probs against the trainer's for the same weights: float rounding for mentor's loop,
        # more for an engine with its own kernels, whose numbers then give way to the trainer's in the ratio
        mismatch = (logp_BT.detach() - old_BT).abs()[mask_BT.bool()]
        metrics["pg_logp_mismatch"] = float(mismatch.mean()) if mismatch.numel() else 0.0
        weight_BT = None
        if config.generation_backend != "local" or (config.async_generation and config.max_staleness > 0):
            # drawn by other weights (an engine's kernels, or an older version): the trainer's log-probs are the
            # ratio's reference, and each token is weighted by the truncated importance weight
            weight_BT, is_metrics = truncated_importance_weights(logp_BT, old_BT, mask_BT, config.tis_cap)
            metrics.update({f"pg_{k}": v for k, v in is_metrics.items()})
            old_BT = logp_BT.detach()
        pg, pg_metrics = clipped_policy_gradient(logp_BT, old_BT, adv_B.to(device), mask_BT, clip_low=config.clip,
                                                 clip_high=config.clip, aggregation=config.aggregation,
                                                 weight_BT=weight_BT)
        metrics.update({f"pg_{k}": v for k, v in pg_metrics.items()})
    if config.grpo_weight < 1 and any(r.teacher_prompt is not None for r in rows):  # else no signal to compute
        # the teacher reads only the rows with a context; the others' places stay zero, under a zero mask
        asked = [i for i, r in enumerate(rows) if r.teacher_prompt is not None]
        sd_mask_BT = _padded([[1.0] * signal_tokens(r) for r in rows], mask_BT.shape[1], mask_BT.dtype, device)
        groups = teacher.groups(rows, asked)  # one teacher: every asked row; several: each teacher's rows
        parts = []
        for key, members in groups.items():
            group_mask_BT = torch.zeros_like(sd_mask_BT)
            group_mask_BT[members] = sd_mask_BT[members]
            if not group_mask_BT.any():
                continue
            start = time.time()
            teacher_prompts = [encode_prompt(tokenizer, rows[i].teacher_prompt) for i in members]
            group_completions = [completions[i] for i in members]
            if teacher.kind == "served":
                part = _served_part(teacher, teacher_prompts, group_completions, members, logits_BTV, logp_BT,
                                    group_mask_BT, config)
                times["teacher"] += time.time() - start
                parts.append((float(group_mask_BT.sum()), members, part))
                continue
            with torch.no_grad(), teacher.scoring(model, key) as scorer:
                if fused:
                    teacher_hidden_BTH = _in_place(completion_states(scorer, teacher_prompts, group_completions)[0],
                                                   members, mask_BT.shape)
                    teacher_head = plain_head(scorer)
                elif getattr(teacher, "mixes", False):  # log-probabilities of the mixture, temperature applied
                    teacher_BTV = _in_place(teacher.mixture_logits(teacher_prompts, group_completions,
                                                                   config.temperature), members, mask_BT.shape)
                else:
                    teacher_BTV = _in_place(completion_logits(scorer, teacher_prompts, group_completions)[0],
                                            members, mask_BT.shape)
                    if config.temperature != 1.0:
                        teacher_BTV = teacher_BTV / config.temperature
            times["teacher"] += time.time() - start
            if fused and closed_form:
                part = fused_forward_kl(hidden_BTH, head, teacher_hidden_BTH, teacher_head, tokens_BT, group_mask_BT,
                                        temperature=config.temperature)
            elif fused:
                part = generalized_jsd_from_states(
                    hidden_BTH, head, teacher_hidden_BTH, teacher_head, tokens_BT, group_mask_BT, beta=config.beta,
                    temperature=config.temperature, top_k=config.top_k if config.divergence == "top-k" else None,
                    top_k_source=config.top_k_source, tail=config.tail and config.divergence == "top-k",
                    clip=config.divergence_clip, clip_mode=config.divergence_clip_mode)
            else:
                teacher_logp_BT = token_logprobs(teacher_BTV, tokens_BT)
                if config.divergence == "sampled":
                    part = (*sampled_token_distill(logp_BT, teacher_logp_BT, group_mask_BT), logp_BT, teacher_logp_BT)
                else:
                    part = (*generalized_jsd(logits_BTV, teacher_BTV, group_mask_BT, beta=config.beta,
                                             top_k=config.top_k if config.divergence == "top-k" else None,
                                             top_k_source=config.top_k_source,
                                             tail=config.tail and config.divergence == "top-k",
                                             clip=config.divergence_clip,
                                             clip_mode=config.divergence_clip_mode), logp_BT, teacher_logp_BT)
            parts.append((float(group_mask_BT.sum()), members, part))
        if parts:
            sd, sd_metrics, logp_BT, teacher_logp_BT = _combine(parts)
            adv_T = (teacher_logp_BT - logp_BT.detach())[sd_mask_BT.bool() & _rows_mask(parts, sd_mask_BT)]
            sd_metrics.update(adv_t_mean=float(adv_T.mean()) if adv_T.numel() else 0.0,
                              adv_t_min=float(adv_T.min()) if adv_T.numel() else 0.0,
                              adv_t_neg_frac=float((adv_T < -0.1).float().mean()) if adv_T.numel() else 0.0)
            metrics.update({f"sd_{k}": v for k, v in sd_metrics.items()})
        if teacher.kind == "panel":  # several teachers: the signal no teacher was routed to
            routed = [i for members in groups.values() for i in members]
            metrics["teacher_unrouted_tokens"] = float(sd_mask_BT.sum() - sd_mask_BT[routed].sum())
    if pg is None and sd is None:
        # nothing to learn from these rows: a zero through this forward's outputs and the head, so that with
        # several processes this backward reduces the gradients of the same weights as the others' do
        sd = (hidden_BTH.sum() + head.sum()) * 0.0 if fused else logits_BTV.sum() * 0.0
    return pg, sd, metrics


def _served_part(teacher, prompts: list[list[int]], completions: list[list[int]], members: list[int],
                 logits_BTV: torch.Tensor, logp_BT: torch.Tensor, group_mask_BT: torch.Tensor,
                 config: OnPolicyConfig) -> tuple:
    """One group's (loss, metrics, student log-probs, teacher log-probs) from a served teacher's numbers: its
    log-probs of the student's tokens (sampled-token loss) or its top k (top-k divergence)."""
    shape = group_mask_BT.shape
    own_BT, ids_BTK, top_BTK = teacher.score(prompts, completions, shape[1], group_mask_BT.device)
    teacher_logp_BT = _in_place(own_BT[..., None], members, shape)[..., 0]
    if config.divergence == "sampled":
        return (*sampled_token_distill(logp_BT, teacher_logp_BT, group_mask_BT), logp_BT, teacher_logp_BT)
    loss = sparse_teacher_divergence(logits_BTV, _in_place(ids_BTK, members, shape), _in_place(top_BTK, members, shape),
                                     group_mask_BT, beta=config.beta, tail=config.tail, clip=config.divergence_clip,
                                     clip_mode=config.divergence_clip_mode)
    return (*loss, logp_BT, teacher_logp_BT)


def critique_prediction_loss(forward, tokenizer, rows: list[Row]) -> tuple[torch.Tensor | None, int, dict]:
    """The student's mean NLL of the critic's critique of its own attempt, asked for after it (the rows with a
    critique to predict): (loss or None, its tokens, metrics)."""
    asked = [r for r in rows if r.critique_ids]
    if not asked:
        return None, 0, {}
    targets = [r.critique_ids for r in asked]
    logits_BTV, mask_BT = forward([encode_prompt(tokenizer, r.critique_prompt) for r in asked], targets)
    tokens_BT = _padded(targets, mask_BT.shape[1], torch.long, mask_BT.device)
    n = int(mask_BT.sum())
    loss = -(token_logprobs(logits_BTV, tokens_BT) * mask_BT).sum() / max(n, 1)
    return loss, n, {"critique_nll": float(loss.detach()), "critique_tokens": n}


def accumulate(totals: dict[str, float], key: str, value: float, share: float) -> None:
    """Add one part's metric to ``totals``: a count (``...tokens``) summed, a ``..._min`` the smallest, any
    other a mean weighted by the part's ``share`` of what it is a mean over."""
    if key.endswith("tokens"):
        totals[key] = totals.get(key, 0.0) + value
    elif key.endswith("_min"):
        totals[key] = min(totals.get(key, math.inf), value)
    else:
        totals[key] = totals.get(key, 0.0) + value * share


def _combine(parts: list[tuple[float, list[int], tuple]]) -> tuple:
    """One teacher group's (loss, metrics, student log-probs, teacher log-probs), or several groups' combined:
    the loss and the metrics weighted by each group's tokens (a ``_min`` the smallest, a count summed), the
    log-probs each from its own group's rows."""
    if len(parts) == 1:
        return parts[0][2]
    total = sum(n for n, _, _ in parts)
    sd, metrics = 0.0, {}
    logp_BT = torch.zeros_like(parts[0][2][2].detach())
    teacher_logp_BT = torch.zeros_like(parts[0][2][3])
    for n, members, (loss, part_metrics, logp, teacher_logp) in parts:
        sd = sd + loss * (n / total)
        for key, value in part_metrics.items():
            accumulate(metrics, key, value, n / total)
        logp_BT[members] = logp.detach()[members]
        teacher_logp_BT[members] = teacher_logp[members]
    return sd, metrics, logp_BT, teacher_logp_BT


def _rows_mask(parts: list[tuple[float, list[int], tuple]], like_BT: torch.Tensor) -> torch.Tensor:
    """True on the rows some teacher scored."""
    mask = torch.zeros_like(like_BT, dtype=torch.bool)
    for _, members, _ in parts:
        mask[members] = True
    return mask


def _in_place(sub_BTX: torch.Tensor, rows: list[int], shape: torch.Size) -> torch.Tensor:
    """Rows ``rows`` of a batch of ``shape[0]`` rows and ``shape[1]`` completion columns, from the forward of
    those rows alone (its columns are the first of theirs), zero elsewhere."""
    if len(rows) == shape[0] and sub_BTX.shape[1] == shape[1]:
        return sub_BTX
    full = sub_BTX.new_zeros((shape[0], shape[1], sub_BTX.shape[-1]))
    full[rows, : sub_BTX.shape[1]] = sub_BTX
    return full
