"""losses: generalised JSD, sampled-token distillation, group advantages and the clipped policy gradient,
against hand-computed numbers, naive full-tensor formulas, autograd, and each other."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mentor.losses import (
    clipped_policy_gradient,
    fused_forward_kl,
    generalized_jsd,
    generalized_jsd_from_states,
    group_advantages,
    sampled_token_distill,
    token_logprobs,
)

BETAS = [0.0, 0.3, 0.5, 1.0]


def naive_jsd_terms(s_BTV: torch.Tensor, t_BTV: torch.Tensor, beta: float) -> torch.Tensor:
    """Per-(position, vocab entry) terms straight from the definition, on probabilities."""
    S, T = s_BTV.softmax(-1), t_BTV.softmax(-1)
    if beta == 0.0:
        return T * (T.log() - S.log())
    if beta == 1.0:
        return S * (S.log() - T.log())
    M = (1 - beta) * S + beta * T
    return beta * T * (T.log() - M.log()) + (1 - beta) * S * (S.log() - M.log())


def naive_jsd(s_BTV, t_BTV, mask_BT, beta, temperature=1.0, clip=None):
    terms = naive_jsd_terms(s_BTV / temperature, t_BTV.detach() / temperature, beta)
    if clip is not None:
        terms = terms.clamp(max=clip)
    mask = mask_BT.to(terms.dtype)
    return (terms.sum(-1) * mask).sum() / mask.sum()


def random_case(B=2, T=5, V=7, seed=0, scale=2.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(B, T, V, generator=g, dtype=dtype) * scale
    t = torch.randn(B, T, V, generator=g, dtype=dtype) * scale
    mask = torch.rand(B, T, generator=g) < 0.7
    mask[:, 0] = True
    return s, t, mask


def logits_of(*probs) -> torch.Tensor:
    """A 1 x len(probs) x V logits tensor whose softmax is exactly the given rows."""
    return torch.tensor(probs, dtype=torch.float64).log()[None]


# ----- generalized_jsd: closed forms --------------------------------------------------------------------


def test_two_token_closed_forms():
    s, t, mask = logits_of([0.5, 0.5]), logits_of([0.9, 0.1]), torch.ones(1, 1, dtype=torch.bool)
    forward = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    reverse = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    m = [0.7, 0.3]  # (S + T) / 2
    half = 0.5 * (0.9 * math.log(0.9 / m[0]) + 0.1 * math.log(0.1 / m[1])) + 0.5 * (
        0.5 * math.log(0.5 / m[0]) + 0.5 * math.log(0.5 / m[1])
    )
    for beta, want in [(0.0, forward), (1.0, reverse), (0.5, half)]:
        loss, metrics = generalized_jsd(s, t, mask, beta=beta)
        assert loss.item() == pytest.approx(want, abs=1e-12)
        assert metrics["loss"] == pytest.approx(want, abs=1e-12) and metrics["tokens"] == 1.0


def test_beta_quarter_uses_the_weighted_mixture():
    s, t, mask = logits_of([0.5, 0.5]), logits_of([0.9, 0.1]), torch.ones(1, 1, dtype=torch.bool)
    beta, m = 0.25, [0.75 * 0.5 + 0.25 * 0.9, 0.75 * 0.5 + 0.25 * 0.1]
    want = beta * (0.9 * math.log(0.9 / m[0]) + 0.1 * math.log(0.1 / m[1])) + (1 - beta) * (
        0.5 * math.log(0.5 / m[0]) + 0.5 * math.log(0.5 / m[1])
    )
    assert generalized_jsd(s, t, mask, beta=beta)[0].item() == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("beta", BETAS)
def test_matches_naive_formula(beta):
    s, t, mask = random_case(seed=1)
    got, _ = generalized_jsd(s, t, mask, beta=beta)
    torch.testing.assert_close(got, naive_jsd(s, t, mask, beta), rtol=1e-10, atol=1e-12)


def test_endpoints_are_forward_and_reverse_kl():
    s, t, mask = random_case(seed=2)
    S, T = s.log_softmax(-1), t.log_softmax(-1)
    m = mask.double()
    forward = ((T.exp() * (T - S)).sum(-1) * m).sum() / m.sum()
    reverse = ((S.exp() * (S - T)).sum(-1) * m).sum() / m.sum()
    torch.testing.assert_close(generalized_jsd(s, t, mask, beta=0.0)[0], forward, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(generalized_jsd(s, t, mask, beta=1.0)[0], reverse, rtol=1e-10, atol=1e-12)
    # forward KL with S and T swapped is reverse KL
    torch.testing.assert_close(generalized_jsd(t, s, mask, beta=0.0)[0], reverse, rtol=1e-10, atol=1e-12)


def test_half_jsd_is_symmetric():
    s, t, mask = random_case(seed=3)
    a, _ = generalized_jsd(s, t, mask, beta=0.5)
    b, _ = generalized_jsd(t, s, mask, beta=0.5)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert a.item() <= math.log(2) + 1e-12  # JSD(1/2) is bounded by log 2


@settings(max_examples=25, deadline=None)
@given(beta=st.floats(0.0, 1.0), seed=st.integers(0, 2**16), V=st.integers(1, 9))
def test_nonnegative_and_zero_on_equal_inputs(beta, seed, V):
    s, t, mask = random_case(B=2, T=3, V=V, seed=seed, scale=4.0)
    assert generalized_jsd(s, t, mask, beta=beta)[0].item() >= -1e-12
    assert generalized_jsd(s, s.clone(), mask, beta=beta)[0].item() == pytest.approx(0.0, abs=1e-12)


# ----- top-k and tail -----------------------------------------------------------------------------------


@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("tail", [False, True])
@pytest.mark.parametrize("source", ["teacher", "student"])
def test_top_k_with_k_equal_vocab_is_the_full_loss(beta, tail, source):
    s, t, mask = random_case(seed=4)
    full, _ = generalized_jsd(s, t, mask, beta=beta)
    for k in (7, 50):  # k = V and k > V
        got, _ = generalized_jsd(s, t, mask, beta=beta, top_k=k, tail=tail, top_k_source=source)
        torch.testing.assert_close(got, full, rtol=1e-10, atol=1e-12)


def test_top_k_buckets_by_hand():
    S, T = [0.6, 0.3, 0.1], [0.2, 0.5, 0.3]
    s, t, mask = logits_of(S), logits_of(T), torch.ones(1, 1, dtype=torch.bool)

    def kl(p, q):
        return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))

    cases = [
        # teacher's top-1 is id 1; tail holds the other ids' mass: S -> [0.3, 0.7], T -> [0.5, 0.5]
        (dict(top_k=1, tail=True), kl([0.5, 0.5], [0.3, 0.7])),
        # renormalised over one id: both are [1.0]
        (dict(top_k=1, tail=False), 0.0),
        # teacher's top-2 are ids 1 and 2, renormalised
        (dict(top_k=2, tail=False), kl([0.5 / 0.8, 0.3 / 0.8], [0.3 / 0.4, 0.1 / 0.4])),
        (dict(top_k=2, tail=True), kl([0.5, 0.3, 0.2], [0.3, 0.1, 0.6])),
        # student's top-1 is id 0
        (dict(top_k=1, tail=True, top_k_source="student"), kl([0.2, 0.8], [0.6, 0.4])),
    ]
    for kwargs, want in cases:
        got, _ = generalized_jsd(s, t, mask, beta=0.0, **kwargs)
        assert got.item() == pytest.approx(want, abs=1e-12), kwargs
        # beta = 1 on the same buckets is the reverse direction
    got, _ = generalized_jsd(s, t, mask, beta=1.0, top_k=1, tail=True)
    assert got.item() == pytest.approx(kl([0.3, 0.7], [0.5, 0.5]), abs=1e-12)


def test_tail_bucket_holds_the_remaining_mass():
    from mentor.losses import _with_tail

    s, _, _ = random_case(B=1, T=4, V=11, seed=5)
    logp = s[0].log_softmax(-1)
    ids = logp.topk(3, dim=-1).indices
    buckets = _with_tail(logp, ids).exp()
    torch.testing.assert_close(buckets.sum(-1), torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(buckets[:, -1], 1 - logp.exp().gather(-1, ids).sum(-1))


def test_top_k_with_tail_never_exceeds_full_kl():
    # merging vocabulary entries into buckets can only lower a KL (data processing inequality)
    s, t, mask = random_case(seed=6, V=20)
    full, _ = generalized_jsd(s, t, mask, beta=0.0)
    for k in (1, 3, 10, 19):
        assert generalized_jsd(s, t, mask, beta=0.0, top_k=k, tail=True)[0] <= full + 1e-12


# ----- clip, chunking, temperature, mask ----------------------------------------------------------------


@pytest.mark.parametrize("beta", BETAS)
def test_clip_caps_only_terms_above_it(beta):
    s, t, mask = random_case(seed=7, scale=3.0)
    terms = naive_jsd_terms(s, t, beta)[mask]
    full, _ = generalized_jsd(s, t, mask, beta=beta)
    clip = terms.max().item() / 2
    got, metrics = generalized_jsd(s, t, mask, beta=beta, clip=clip)
    torch.testing.assert_close(got, naive_jsd(s, t, mask, beta, clip=clip), rtol=1e-10, atol=1e-12)
    lowered_by = (terms - clip).clamp(min=0).sum() / mask.sum()
    torch.testing.assert_close(full - got, lowered_by, rtol=1e-10, atol=1e-12)
    assert got < full
    assert metrics["clip_frac"] == pytest.approx((terms > clip).double().mean().item())
    # a clip above every term changes nothing
    above, metrics = generalized_jsd(s, t, mask, beta=beta, clip=terms.max().item() + 1)
    torch.testing.assert_close(above, full, rtol=0, atol=0)
    assert metrics["clip_frac"] == 0.0


@pytest.mark.parametrize("beta", [0.0, 0.5])
def test_position_clip_caps_each_position_and_keeps_its_gradient_direction(beta):
    """clip_mode=position: a position's divergence d above the cap counts as the cap, and its gradient is
    d's own gradient times cap / d (never zero); positions below the cap are untouched."""
    s, t, mask = random_case(seed=7, scale=3.0)
    d = naive_jsd_terms(s, t, beta).sum(-1)[mask]
    ordered = d.sort().values
    clip = (ordered[len(d) // 2 - 1] + ordered[len(d) // 2]).item() / 2  # between two positions' values
    leaf = s.clone().requires_grad_()
    got, metrics = generalized_jsd(leaf, t, mask, beta=beta, clip=clip, clip_mode="position", chunk=2)
    got.backward()
    torch.testing.assert_close(got, d.clamp(max=clip).sum() / mask.sum(), rtol=1e-10, atol=1e-12)
    assert metrics["clip_frac"] == pytest.approx((d > clip).double().mean().item())
    # the gradient, position by position, against autograd of the unclipped divergence of that position alone
    ref = torch.zeros_like(s)
    for b, pos in mask.nonzero().tolist():
        one = s.clone().requires_grad_()
        d_one = naive_jsd_terms(one, t, beta)[b, pos].sum()
        (grad,) = torch.autograd.grad(d_one, one)
        ref += grad * min(1.0, clip / d_one.item()) / mask.sum()
    torch.testing.assert_close(leaf.grad, ref, rtol=1e-9, atol=1e-12)
    over = mask.clone()
    over[mask] = d > clip
    assert (leaf.grad[over].abs().sum(-1) > 0).all()  # a capped position still teaches (OPSD's term clip: less)
    above, _ = generalized_jsd(s, t, mask, beta=beta, clip=d.max().item() + 1, clip_mode="position")
    torch.testing.assert_close(above, generalized_jsd(s, t, mask, beta=beta)[0], rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="clip_mode"):
        generalized_jsd(s, t, mask, clip=0.1, clip_mode="row")


def test_position_clip_from_states_equals_it_on_logits():
    g = torch.Generator().manual_seed(3)
    h_s, h_t = torch.randn(2, 6, 5, generator=g, dtype=torch.float64), torch.randn(2, 6, 5, generator=g, dtype=torch.float64)
    w_s, w_t = torch.randn(9, 5, generator=g, dtype=torch.float64), torch.randn(9, 5, generator=g, dtype=torch.float64)
    tokens, mask = torch.randint(0, 9, (2, 6), generator=g), torch.rand(2, 6, generator=g) < 0.8
    leaf = h_s.clone().requires_grad_()
    got, metrics, _, _ = generalized_jsd_from_states(leaf, w_s, h_t, w_t, tokens, mask, clip=0.3,
                                                     clip_mode="position", chunk=3)
    got.backward()
    ref_leaf = h_s.clone().requires_grad_()
    ref, ref_metrics = generalized_jsd(ref_leaf @ w_s.T, h_t @ w_t.T, mask, clip=0.3, clip_mode="position")
    ref.backward()
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(leaf.grad, ref_leaf.grad, rtol=1e-9, atol=1e-12)
    assert metrics["clip_frac"] == pytest.approx(ref_metrics["clip_frac"])


@pytest.mark.parametrize(
    "kwargs", [{}, {"beta": 0.5}, {"beta": 1.0, "top_k": 3, "tail": True}, {"clip": 0.05}]
)
def test_chunked_equals_unchunked_value_and_gradient(kwargs):
    s, t, mask = random_case(B=3, T=9, V=6, seed=8)
    results = []
    for chunk in (1, 2, 4, 9, 128):
        leaf = s.clone().requires_grad_()
        loss, _ = generalized_jsd(leaf, t, mask, chunk=chunk, **kwargs)
        loss.backward()
        results.append((loss.detach(), leaf.grad))
    for loss, grad in results[1:]:
        torch.testing.assert_close(loss, results[0][0], rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(grad, results[0][1], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kwargs", [{}, {"beta": 0.5, "clip": 0.05}, {"top_k": 4, "tail": True}])
def test_autograd_saves_only_views_of_the_inputs(kwargs):
    # the graph keeps the logits themselves and at most per-position numbers (log-sum-exps, the mask), never a
    # B x T x V softmax copy
    s, t, mask = random_case(B=2, T=8, V=30, seed=17, dtype=torch.float32)
    student = s.clone().requires_grad_()
    inputs = {x.untyped_storage().data_ptr() for x in (student, t, mask)}
    extra = []

    def pack(x):
        if x.untyped_storage().data_ptr() not in inputs:
            extra.append(x.numel())
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        loss, _ = generalized_jsd(student, t, mask, chunk=3, **kwargs)
    loss.backward()
    assert max(extra, default=0) <= 2 * 8 and torch.isfinite(student.grad).all()


@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("clip", [None, 0.05])
def test_gradient_matches_naive_autograd_and_teacher_gets_none(beta, clip):
    s, t, mask = random_case(seed=9)
    student, teacher = s.clone().requires_grad_(), t.clone().requires_grad_()
    loss, _ = generalized_jsd(student, teacher, mask, beta=beta, temperature=1.3, clip=clip, chunk=2)
    loss.backward()
    ref = s.clone().requires_grad_()
    naive_jsd(ref, t, mask, beta, temperature=1.3, clip=clip).backward()
    torch.testing.assert_close(student.grad, ref.grad, rtol=1e-9, atol=1e-12)
    assert teacher.grad is None


def test_float32_and_bfloat16_inputs():
    s, t, mask = random_case(seed=10)
    ref = naive_jsd(s, t, mask, 0.5)
    got32, _ = generalized_jsd(s.float(), t.float(), mask, beta=0.5)
    assert got32.dtype == torch.float32
    torch.testing.assert_close(got32.double(), ref, rtol=1e-5, atol=1e-6)
    got16, _ = generalized_jsd(s.bfloat16(), t.bfloat16(), mask, beta=0.5)
    assert got16.dtype == torch.float32
    torch.testing.assert_close(got16.double(), ref, rtol=0.05, atol=0.02)


@pytest.mark.parametrize("beta", BETAS)
def test_temperature_divides_logits(beta):
    s, t, mask = random_case(seed=11)
    got, _ = generalized_jsd(s, t, mask, beta=beta, temperature=2.5, top_k=4, tail=True)
    want, _ = generalized_jsd(s / 2.5, t / 2.5, mask, beta=beta, top_k=4, tail=True)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    # a high temperature flattens both distributions, so the divergence shrinks
    hot, _ = generalized_jsd(s, t, mask, beta=beta, temperature=100.0)
    assert hot < generalized_jsd(s, t, mask, beta=beta)[0]


def test_masked_positions_contribute_nothing():
    s, t, mask = random_case(B=2, T=6, V=5, seed=12)
    garbage_s, garbage_t = s.clone(), t.clone()
    garbage_s[~mask] = 1e4 * torch.randn_like(s[~mask])
    garbage_t[~mask] = float("nan")
    leaf = garbage_s.clone().requires_grad_()
    loss, metrics = generalized_jsd(leaf, garbage_t, mask, beta=0.5, chunk=4)
    loss.backward()
    torch.testing.assert_close(loss, generalized_jsd(s, t, mask, beta=0.5)[0])
    assert metrics["tokens"] == float(mask.sum())
    assert torch.all(leaf.grad[~mask] == 0)
    # the mean runs over unmasked tokens only: the same as the loss of just those rows
    ones = torch.ones(1, int(mask.sum()), dtype=torch.bool)
    rows = generalized_jsd(s[mask][None], t[mask][None], ones, beta=0.5)[0]
    torch.testing.assert_close(loss, rows)


@pytest.mark.parametrize("beta", [0.0, 0.5])
def test_nan_logits_at_masked_positions_give_a_finite_gradient(beta):
    """beta=0 takes the closed-form forward-KL backward, beta=0.5 autograd: both must zero a masked NaN."""
    s, t, mask = random_case(B=2, T=6, V=5, seed=21)
    bad_s, bad_t = s.clone(), t.clone()
    bad_s[~mask], bad_t[~mask] = float("nan"), float("nan")
    leaf = bad_s.clone().requires_grad_()
    loss, _ = generalized_jsd(leaf, bad_t, mask, beta=beta, chunk=4)
    loss.backward()
    clean = s.clone().requires_grad_()
    generalized_jsd(clean, t, mask, beta=beta, chunk=4)[0].backward()
    assert torch.isfinite(loss) and torch.isfinite(leaf.grad).all()
    torch.testing.assert_close(leaf.grad, clean.grad)


def test_fully_masked_batch_gives_zero_with_a_gradient_path():
    s, t, _ = random_case(seed=13)
    leaf = s.clone().requires_grad_()
    loss, _ = generalized_jsd(leaf, t, torch.zeros(2, 5, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(leaf.grad == 0)


def test_banned_ids_with_minus_inf_logits_are_probability_zero():
    s, t, mask = random_case(seed=14)
    s[..., 0], t[..., 0] = float("-inf"), float("-inf")
    for kwargs in ({"beta": 0.0}, {"beta": 0.5}, {"beta": 1.0, "top_k": 6, "tail": True}):
        leaf = s.clone().requires_grad_()
        loss, _ = generalized_jsd(leaf, t, mask, **kwargs)
        loss.backward()
        want, _ = generalized_jsd(s[..., 1:], t[..., 1:], mask, **kwargs)
        torch.testing.assert_close(loss, want)
        assert torch.isfinite(leaf.grad).all()


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_closed_form_forward_kl_equals_the_autograd_path(temperature, dtype):
    # forward KL takes the closed-form path; a clip that never binds takes the checkpointed autograd path
    s, t, mask = random_case(B=3, T=6, V=11, seed=21, dtype=dtype)
    s[0, 1, 3] = t[0, 1, 3] = t[1, 2, 4] = float("-inf")  # an id banned on both sides, one the teacher bans
    results = []
    for kwargs in ({}, {"clip": 1e9}):
        leaf = s.clone().requires_grad_()
        loss, _ = generalized_jsd(leaf, t, mask, temperature=temperature, chunk=4, **kwargs)
        loss.backward()
        assert leaf.grad.dtype == dtype and torch.isfinite(leaf.grad).all()
        results.append((loss.detach(), leaf.grad.float()))
    tol = {"rtol": 1e-2, "atol": 1e-3} if dtype == torch.bfloat16 else {"rtol": 1e-5, "atol": 1e-6}
    torch.testing.assert_close(results[0][0], results[1][0], **tol)
    torch.testing.assert_close(results[0][1], results[1][1], **tol)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("chunk", [1, 4, 128])
@pytest.mark.parametrize("head_trains", [True, False])
def test_fused_head_forward_kl_equals_the_loss_on_materialised_logits(temperature, chunk, head_trains):
    g = torch.Generator().manual_seed(5)
    B, T, H, V = 3, 5, 4, 13
    h_s, h_t = torch.randn(B, T, H, generator=g, dtype=torch.float64), torch.randn(B, T, H, generator=g,
                                                                                   dtype=torch.float64)
    w_s, w_t = torch.randn(V, H, generator=g, dtype=torch.float64), torch.randn(V, H, generator=g, dtype=torch.float64)
    tokens = torch.randint(0, V, (B, T), generator=g)
    mask = torch.rand(B, T, generator=g) < 0.7
    leaves = [h_s.clone().requires_grad_(), w_s.clone().requires_grad_(head_trains)]
    fused, metrics, logp_s, logp_t = fused_forward_kl(leaves[0], leaves[1], h_t, w_t, tokens, mask,
                                                      temperature=temperature, chunk=chunk)
    fused.backward()
    plain = [h_s.clone().requires_grad_(), w_s.clone().requires_grad_(head_trains)]
    s, t = plain[0] @ plain[1].T, h_t @ w_t.T
    want, _ = generalized_jsd(s, t, mask, temperature=temperature)
    want.backward()
    torch.testing.assert_close(fused, want)
    torch.testing.assert_close(leaves[0].grad, plain[0].grad)
    assert (leaves[1].grad is None) == (not head_trains)
    if head_trains:
        torch.testing.assert_close(leaves[1].grad, plain[1].grad)
    # the log-probs of the unmasked positions, 0 at the masked ones (which do no vocabulary work)
    torch.testing.assert_close(logp_s.float(), token_logprobs(s.detach() / temperature, tokens) * mask)
    torch.testing.assert_close(logp_t.float(), token_logprobs(t / temperature, tokens) * mask)
    assert not logp_s.requires_grad and metrics["tokens"] == mask.sum()


def test_fused_head_forward_kl_does_no_work_for_masked_rows(monkeypatch):
    """Half the rows masked: the head product runs on the unmasked positions only, and NaN states there
    change nothing."""
    g = torch.Generator().manual_seed(6)
    B, T, H, V = 4, 6, 8, 11
    h_s, h_t = torch.randn(B, T, H, generator=g), torch.randn(B, T, H, generator=g)
    w_s, w_t = torch.randn(V, H, generator=g), torch.randn(V, H, generator=g)
    tokens = torch.randint(0, V, (B, T), generator=g)
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[:2, 1:] = True
    rows_seen = []
    real_matmul = torch.matmul

    def counting(a, b, **kwargs):
        if b.shape == (H, V):  # hidden @ head.T: one row per position that does vocabulary work
            rows_seen.append(a.shape[0])
        return real_matmul(a, b, **kwargs)

    monkeypatch.setattr(torch, "matmul", counting)
    poisoned_s, poisoned_t = h_s.clone(), h_t.clone()
    poisoned_s[~mask], poisoned_t[~mask] = float("nan"), float("nan")
    leaf = poisoned_s.clone().requires_grad_()
    loss, _, _, _ = fused_forward_kl(leaf, w_s, poisoned_t, w_t, tokens, mask, chunk=4)
    loss.backward()
    assert sum(rows_seen) == 2 * int(mask.sum())  # student and teacher, unmasked positions only
    monkeypatch.setattr(torch, "matmul", real_matmul)
    clean = h_s.clone().requires_grad_()
    want, _, _, _ = fused_forward_kl(clean, w_s, h_t, w_t, tokens, mask, chunk=4)
    want.backward()
    torch.testing.assert_close(loss, want)
    assert torch.isfinite(leaf.grad).all() and torch.all(leaf.grad[~mask] == 0)
    torch.testing.assert_close(leaf.grad, clean.grad)


def test_fused_head_forward_kl_bf16_head_gradient_sums_in_float32():
    """bf16 states and heads: the head's gradient against float64 on the same bf16 inputs is off by what
    bf16 logits and products cost (0.70-0.72% here) whatever the number of chunks; summed in bf16 it grew
    with the chunks (0.70% in one chunk, 0.97% in 64, 1.03% in 256)."""
    g = torch.Generator().manual_seed(7)
    B, T, H, V = 4, 64, 32, 97
    h_s, h_t = (torch.randn(B, T, H, generator=g).bfloat16() for _ in range(2))
    w_s, w_t = (torch.randn(V, H, generator=g).bfloat16() for _ in range(2))
    tokens = torch.randint(0, V, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.bool)
    exact = w_s.double().requires_grad_()
    fused_forward_kl(h_s.double(), exact, h_t.double(), w_t.double(), tokens, mask)[0].backward()
    errors = []
    for chunk in (256, 4, 1):
        head = w_s.clone().requires_grad_()
        fused_forward_kl(h_s, head, h_t, w_t, tokens, mask, chunk=chunk)[0].backward()
        assert head.grad.dtype == torch.bfloat16
        errors.append(float((head.grad.double() - exact.grad).norm() / exact.grad.norm()))
    assert max(errors) < 0.0075 and max(errors) - min(errors) < 5e-4, errors


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"beta": -0.1}, "beta"),
        ({"beta": 1.5}, "beta"),
        ({"temperature": 0.0}, "temperature"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": 2, "top_k_source": "mixture"}, "top_k_source"),
        ({"tail": True}, "tail"),
        ({"clip": 0.0}, "clip"),
        ({"chunk": 0}, "chunk"),
    ],
)
def test_generalized_jsd_validates_arguments(kwargs, match):
    s, t, mask = random_case()
    with pytest.raises(ValueError, match=match):
        generalized_jsd(s, t, mask, **kwargs)


def test_generalized_jsd_rejects_mismatched_shapes():
    s, t, mask = random_case()
    with pytest.raises(ValueError, match="shape"):
        generalized_jsd(s, t[:, :-1], mask)


@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("temperature", [1.0, 1.7])
def test_agrees_with_trl_gkd(beta, temperature):
    import trl.experimental.gkd as gkd  # a test dependency: a moved module must fail, not skip
    s, t, mask = random_case(B=3, T=6, V=9, seed=15)
    labels = torch.where(mask, 1, -100)  # TRL masks label == -100 and divides the sum by the token count
    theirs = gkd.GKDTrainer.generalized_jsd_loss(s, t, labels=labels, beta=beta, temperature=temperature)
    ours, _ = generalized_jsd(s, t, mask, beta=beta, temperature=temperature)
    torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-12)


# ----- sampled-token distillation -----------------------------------------------------------------------


def test_sampled_token_value_gradient_and_metrics():
    student = torch.tensor([[-1.0, -2.0, -0.5], [-0.1, -3.0, -9.0]], dtype=torch.float64, requires_grad=True)
    teacher = torch.tensor([[-0.5, -2.5, -0.5], [-0.3, -1.0, float("nan")]], dtype=torch.float64)
    teacher.requires_grad_()
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    adv = torch.tensor([[0.5, -0.5, 0.0], [-0.2, 2.0, 0.0]], dtype=torch.float64)
    loss, metrics = sampled_token_distill(student, teacher, mask)
    want = -(adv * student.detach() * mask).sum() / 5
    assert loss.item() == pytest.approx(want.item())
    loss.backward()
    torch.testing.assert_close(student.grad, -adv * mask / 5)  # -A_t grad log S(y_t) / N
    assert teacher.grad is None
    assert metrics["adv_mean"] == pytest.approx(1.8 / 5)
    assert metrics["adv_neg_frac"] == pytest.approx(2 / 5)
    assert metrics["tokens"] == 5.0


def test_sampled_token_gradient_through_logits():
    g = torch.Generator().manual_seed(16)
    logits = torch.randn(2, 4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    tokens = torch.randint(0, 6, (2, 4), generator=g)
    teacher_logp = token_logprobs(torch.randn(2, 4, 6, generator=g, dtype=torch.float64), tokens)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    student_logp = token_logprobs(logits, tokens)
    loss, _ = sampled_token_distill(student_logp, teacher_logp, mask)
    (grad,) = torch.autograd.grad(loss, logits, retain_graph=True)
    adv = (teacher_logp - student_logp).detach()
    want = torch.zeros_like(logits)
    for b, t in mask.nonzero().tolist():
        (g_bt,) = torch.autograd.grad(student_logp[b, t], logits, retain_graph=True)
        want -= adv[b, t] * g_bt / mask.sum()
    torch.testing.assert_close(grad, want)


# ----- group advantages ---------------------------------------------------------------------------------


def test_group_advantages_closed_form():
    adv, metrics = group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), eps=0.0)
    std = math.sqrt(0.25 * 0.75)  # population std of one success in four
    torch.testing.assert_close(adv, torch.tensor([0.75, -0.25, -0.25, -0.25]) / std)
    assert metrics["zero_var_frac"] == 0.0
    adv, _ = group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), eps=1e-6)
    torch.testing.assert_close(adv, torch.tensor([1.0, -1.0, -1.0, 1.0]) * 0.5 / (0.5 + 1e-6))


def test_group_advantages_batched_with_a_zero_variance_group():
    rewards = torch.tensor([[0.1, 0.1, 0.1], [2.0, 4.0, 6.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    adv, metrics = group_advantages(rewards)
    assert torch.all(adv[0] == 0) and torch.all(adv[2] == 0)
    std = math.sqrt(8 / 3)
    torch.testing.assert_close(adv[1], torch.tensor([-2.0, 0.0, 2.0], dtype=torch.float64) / (std + 1e-6))
    assert metrics["zero_var_frac"] == pytest.approx(2 / 3)
    centered, _ = group_advantages(rewards, scale_by_std=False)
    torch.testing.assert_close(centered[1], torch.tensor([-2.0, 0.0, 2.0], dtype=torch.float64))
    assert group_advantages(torch.tensor([3.0]))[0].item() == 0.0  # a group of one has no signal
    assert group_advantages(torch.tensor([1, 0]))[0].dtype == torch.float32  # integer rewards are fine


def test_group_advantages_validates():
    with pytest.raises(ValueError, match="shape"):
        group_advantages(torch.zeros(2, 2, 2))
    with pytest.raises(ValueError, match="eps"):
        group_advantages(torch.zeros(3), eps=-1.0)


# ----- clipped policy gradient --------------------------------------------------------------------------


def pg_case():
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -1.2, -4.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=torch.bool)
    return logp, mask, torch.tensor([2.0, -1.0], dtype=torch.float64)


def test_ratio_one_gives_minus_mean_advantage():
    logp, mask, adv = pg_case()
    leaf = logp.clone().requires_grad_()
    loss, metrics = clipped_policy_gradient(leaf, logp, adv, mask)
    assert loss.item() == pytest.approx(-(3 * 2.0 + 1 * -1.0) / 4)  # token-mean weighs by length
    loss.backward()
    torch.testing.assert_close(leaf.grad, -adv[:, None] * mask / 4)
    assert metrics["ratio_mean"] == pytest.approx(1.0) and metrics["clip_frac"] == 0.0
    seq, _ = clipped_policy_gradient(logp, logp, adv, mask, aggregation="sequence-mean")
    assert seq.item() == pytest.approx(-(2.0 + -1.0) / 2)


def test_token_mean_and_sequence_mean_on_unequal_lengths():
    logp, mask, adv = pg_case()
    old = logp - torch.tensor([[0.1, 0.0, -0.1], [0.05, 9.0, 9.0]], dtype=torch.float64)  # ratios near 1
    ratio = (logp - old).exp()
    per_token = -adv[:, None] * ratio
    tok, _ = clipped_policy_gradient(logp, old, adv, mask, clip_low=1.0, clip_high=1.0)
    seq, _ = clipped_policy_gradient(
        logp, old, adv, mask, clip_low=1.0, clip_high=1.0, aggregation="sequence-mean"
    )
    assert tok.item() == pytest.approx(((per_token * mask).sum() / 4).item())
    assert seq.item() == pytest.approx(((per_token[0].sum() / 3 + per_token[1, 0]) / 2).item())
    assert tok.item() != pytest.approx(seq.item())
    # a sequence with no tokens is left out of the sequence mean
    empty = torch.cat([mask, torch.zeros(1, 3, dtype=torch.bool)])
    logp3, old3, adv3 = (torch.cat([x, x[:1]]) for x in (logp, old, adv))
    seq3, _ = clipped_policy_gradient(
        logp3, old3, adv3, empty, clip_low=1.0, clip_high=1.0, aggregation="sequence-mean"
    )
    torch.testing.assert_close(seq3, seq)


def test_clipping_engages_exactly_beyond_the_bounds():
    # one sequence per token; ratios just inside and just outside [1 - 0.2, 1 + 0.3]
    ratio = torch.tensor([0.7, 0.85, 1.0, 1.25, 1.4, 0.7, 0.85, 1.25, 1.4], dtype=torch.float64)
    adv = torch.tensor([1.0] * 5 + [-1.0] * 4, dtype=torch.float64)
    old = torch.full((9, 1), -1.0, dtype=torch.float64)
    leaf = (old + ratio.log()[:, None]).clone().requires_grad_()
    mask = torch.ones(9, 1, dtype=torch.bool)
    loss, metrics = clipped_policy_gradient(leaf, old, adv, mask, clip_low=0.2, clip_high=0.3)
    loss.backward()
    # A > 0: only r > 1 + clip_high is clipped (r = 1.4); A < 0: only r < 1 - clip_low (r = 0.7)
    clipped = torch.tensor([0, 0, 0, 0, 1, 1, 0, 0, 0], dtype=torch.bool)
    assert torch.all(leaf.grad[clipped] == 0)
    # d/dlogp of -A r / N is -A r / N where the unclipped term is active
    torch.testing.assert_close(leaf.grad[~clipped, 0], (-adv * ratio / 9)[~clipped])
    assert metrics["clip_frac"] == pytest.approx(2 / 9)
    assert metrics["ratio_mean"] == pytest.approx(ratio.mean().item())
    clamped = ratio.clamp(0.8, 1.3)
    want = torch.maximum(-adv * ratio, -adv * clamped).mean()
    assert loss.item() == pytest.approx(want.item())


def test_clipped_pg_masked_padding_and_old_logp_get_no_gradient():
    logp, mask, adv = pg_case()
    logp[1, 1:] = float("-inf")
    old = logp.clone().requires_grad_()
    leaf = logp.clone().requires_grad_()
    loss, _ = clipped_policy_gradient(leaf, old, adv, mask)
    loss.backward()
    assert torch.isfinite(loss) and torch.all(leaf.grad[~mask] == 0) and old.grad is None


def test_clipped_pg_validates():
    logp, mask, adv = pg_case()
    with pytest.raises(ValueError, match="aggregation"):
        clipped_policy_gradient(logp, logp, adv, mask, aggregation="seq-sum")
    with pytest.raises(ValueError, match="clip"):
        clipped_policy_gradient(logp, logp, adv, mask, clip_low=-0.1)


# ----- a teacher known only by its top k (a served teacher's prompt log-probs) ---------------------------------


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("tail", [True, False])
@pytest.mark.parametrize("clip", [None, 0.05])
def test_sparse_teacher_equals_top_k_of_the_dense_teacher_value_and_gradient(beta, tail, clip):
    from mentor.losses import sparse_teacher_divergence

    torch.manual_seed(0)
    s = torch.randn(3, 7, 50, dtype=torch.float64, requires_grad=True)
    t = torch.randn(3, 7, 50, dtype=torch.float64) * 2
    mask = torch.rand(3, 7) > 0.3
    k = 6
    logp_t = t.log_softmax(-1)
    top = logp_t.topk(k, dim=-1)
    mode = "position" if clip else "term"
    dense, dense_m = generalized_jsd(s, t, mask, beta=beta, top_k=k, tail=tail, clip=clip, clip_mode=mode, chunk=3)
    (g_dense,) = torch.autograd.grad(dense, s)
    sparse, sparse_m = sparse_teacher_divergence(s, top.indices, top.values, mask, beta=beta, tail=tail, clip=clip,
                                                 clip_mode=mode, chunk=3)
    (g_sparse,) = torch.autograd.grad(sparse, s)
    assert float(sparse.detach()) == pytest.approx(float(dense.detach()), rel=1e-9, abs=1e-12) and float(dense.detach()) > 0
    assert torch.allclose(g_sparse, g_dense, rtol=1e-7, atol=1e-12)
    assert sparse_m == pytest.approx(dense_m)


def test_sparse_teacher_whose_top_k_holds_all_its_mass_leaves_an_empty_tail():
    from mentor.losses import sparse_teacher_divergence

    s = torch.tensor([[[0.0, 1.0, 2.0, 3.0]]])
    ids = torch.tensor([[[3, 2]]])
    half = torch.tensor([[[math.log(0.5), math.log(0.5)]]])  # a teacher sure it is one of two tokens
    mask = torch.ones(1, 1, dtype=torch.bool)
    loss, _ = sparse_teacher_divergence(s, ids, half, mask)
    p = s.log_softmax(-1)[0, 0]
    # forward KL over (id 3, id 2, tail): the tail's term is 0 * log(0 / q) = 0
    expected = 0.5 * (math.log(0.5) - float(p[3])) + 0.5 * (math.log(0.5) - float(p[2]))
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_sparse_teacher_rejects_mismatched_shapes():
    from mentor.losses import sparse_teacher_divergence

    with pytest.raises(ValueError, match="shape mismatch"):
        sparse_teacher_divergence(torch.zeros(2, 3, 5), torch.zeros(2, 3, 2, dtype=torch.long), torch.zeros(2, 3, 3),
                                  torch.ones(2, 3))
