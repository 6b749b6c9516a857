"""losses: chunked token log-probs and weighted NLL against naive formulas and hand-computed numbers."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mentor.losses import causal_lm_logprobs, token_logprobs, weighted_nll


def naive_logprobs(logits_BTV: torch.Tensor, tokens_BT: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits_BTV.float(), dim=-1).gather(-1, tokens_BT[..., None]).squeeze(-1)


def random_case(B: int, T: int, V: int, seed: int, scale: float = 3.0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=g, dtype=torch.float64) * scale
    tokens = torch.randint(0, V, (B, T), generator=g)
    return logits, tokens


# ----- token_logprobs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 2, 3, 4, 7, 10, 11, 128])
def test_token_logprobs_equals_log_softmax_gather_for_any_chunk(chunk):
    logits, tokens = random_case(B=3, T=10, V=17, seed=chunk)
    logits = logits.float()
    got = token_logprobs(logits, tokens, chunk=chunk)
    assert got.shape == (3, 10) and got.dtype == torch.float32
    torch.testing.assert_close(got, naive_logprobs(logits, tokens), rtol=0, atol=1e-5)


@settings(max_examples=30, deadline=None)
@given(B=st.integers(1, 3), T=st.integers(1, 12), V=st.integers(1, 20), chunk=st.integers(1, 15),
       seed=st.integers(0, 2**16))
def test_token_logprobs_matches_naive_for_random_shapes(B, T, V, chunk, seed):
    logits, tokens = random_case(B, T, V, seed)
    got = token_logprobs(logits.float(), tokens, chunk=chunk)
    torch.testing.assert_close(got, naive_logprobs(logits.float(), tokens), rtol=0, atol=1e-5)
    assert (got <= 1e-6).all()


def test_token_logprobs_with_chunk_larger_or_smaller_is_the_same_number():
    logits, tokens = random_case(B=2, T=13, V=31, seed=0)
    logits = logits.float()
    reference = token_logprobs(logits, tokens, chunk=1000)
    for chunk in (1, 5, 6, 12, 13, 14):
        torch.testing.assert_close(token_logprobs(logits, tokens, chunk=chunk), reference, rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("chunk", [1, 4, 64])
def test_half_precision_logits_give_float32_logprobs(dtype, chunk):
    logits, tokens = random_case(B=2, T=9, V=23, seed=1)
    low = logits.to(dtype)
    got = token_logprobs(low, tokens, chunk=chunk)
    assert got.dtype == torch.float32
    # computed in float32 from the rounded logits: exactly the float32 answer on those logits
    torch.testing.assert_close(got, naive_logprobs(low.float(), tokens), rtol=0, atol=1e-5)
    # and close to the float64 answer on the unrounded ones (rounding of the inputs only)
    tol = 0.05 if dtype is torch.float16 else 0.3
    torch.testing.assert_close(got.double(), naive_logprobs(logits, tokens).double(), rtol=0, atol=tol)


def test_token_logprobs_of_uniform_logits_is_minus_log_v():
    V = 7
    tokens = torch.tensor([[0, 3, 6, 2]])
    got = token_logprobs(torch.zeros(1, 4, V), tokens, chunk=3)
    torch.testing.assert_close(got, torch.full((1, 4), -math.log(V)))


def test_token_logprobs_hand_example():
    # logits (0, ln 3) -> p = (1/4, 3/4)
    logits = torch.tensor([[[0.0, math.log(3.0)], [0.0, math.log(3.0)]]])
    got = token_logprobs(logits, torch.tensor([[0, 1]]), chunk=1)
    torch.testing.assert_close(got, torch.tensor([[math.log(0.25), math.log(0.75)]]))


def test_token_logprobs_empty_time_axis():
    got = token_logprobs(torch.zeros(2, 0, 5), torch.zeros(2, 0, dtype=torch.long))
    assert got.shape == (2, 0) and got.dtype == torch.float32


@pytest.mark.parametrize("chunk", [1, 3, 50])
def test_token_logprobs_gradients_match_autograd_of_naive_formula(chunk):
    logits, tokens = random_case(B=2, T=7, V=11, seed=5)
    upstream = torch.randn(2, 7, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    (token_logprobs(a, tokens, chunk=chunk).double() * upstream).sum().backward()
    (naive_logprobs(b, tokens).double() * upstream).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6)
    # closed form: d logp_t / d logits_t = onehot(y_t) - softmax(logits_t)
    closed = (torch.nn.functional.one_hot(tokens, 11) - torch.softmax(logits, -1)) * upstream[..., None]
    torch.testing.assert_close(a.grad, closed, rtol=1e-5, atol=1e-6)


def test_token_logprobs_gradient_reaches_half_precision_inputs():
    logits, tokens = random_case(B=1, T=5, V=9, seed=2)
    low = logits.to(torch.bfloat16).requires_grad_(True)
    token_logprobs(low, tokens, chunk=2).sum().backward()
    assert low.grad is not None and low.grad.dtype == torch.bfloat16
    expected = (torch.nn.functional.one_hot(tokens, 9) - torch.softmax(low.detach().float(), -1))
    torch.testing.assert_close(low.grad.float(), expected, rtol=0, atol=2e-2)


# ----- weighted_nll -----------------------------------------------------------------------------------


def test_weight_one_is_the_token_mean_nll_on_uniform_distributions():
    V = 5
    logp = token_logprobs(torch.zeros(2, 4, V), torch.zeros(2, 4, dtype=torch.long))  # every entry -log 5
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    loss, metrics = weighted_nll(logp, mask)
    assert loss.item() == pytest.approx(math.log(V), rel=1e-6)
    assert metrics["loss"] == pytest.approx(math.log(V), rel=1e-6)
    assert metrics["nll"] == pytest.approx(math.log(V), rel=1e-6)
    assert metrics["tokens"] == 4.0
    explicit, _ = weighted_nll(logp, mask, torch.ones(2))
    assert explicit.item() == loss.item()


def test_weight_one_equals_token_mean_nll_by_hand():
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-4.0, -5.0, -6.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    loss, metrics = weighted_nll(logp, mask)
    # (1 + 2 + 5 + 6) / 4 tokens
    assert loss.item() == pytest.approx(14 / 4)
    assert metrics == pytest.approx({"loss": 3.5, "nll": 3.5, "tokens": 4.0})
    # the same as cross-entropy's mean over the unmasked positions
    assert loss.item() == pytest.approx(-logp[mask.bool()].mean().item())


def test_weights_scale_each_sequence_by_hand():
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-4.0, -5.0, -6.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    # -(w1 * (-3) + w2 * (-11)) / 4
    for w, expected in [((1.0, 1.0), 3.5), ((2.0, 0.0), 1.5), ((0.0, 1.0), 2.75), ((0.5, -1.0), -2.375),
                        ((0.0, 0.0), 0.0), ((3.0, 2.0), 31 / 4)]:
        loss, metrics = weighted_nll(logp, mask, torch.tensor(w))
        assert loss.item() == pytest.approx(expected), w
        assert metrics["loss"] == pytest.approx(expected)
        assert metrics["nll"] == pytest.approx(3.5)  # the unweighted NLL is reported beside the loss
        assert metrics["tokens"] == 4.0  # the denominator counts every unmasked token, whatever its weight


@settings(max_examples=30, deadline=None)
@given(B=st.integers(1, 4), T=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_weighted_nll_matches_the_formula(B, T, seed):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(B, T, generator=g, dtype=torch.float64) * 5
    mask = (torch.rand(B, T, generator=g) < 0.6).double()
    weight = torch.randn(B, generator=g, dtype=torch.float64)
    loss, metrics = weighted_nll(logp, mask, weight)
    n = max(mask.sum().item(), 1.0)
    per_seq = [sum(logp[i, t].item() for t in range(T) if mask[i, t]) for i in range(B)]
    expected = -sum(weight[i].item() * per_seq[i] for i in range(B)) / n
    assert loss.item() == pytest.approx(expected, abs=1e-9)
    assert metrics["tokens"] == n


def test_fully_masked_batch_is_zero_not_nan():
    logp = -torch.rand(2, 3)
    loss, metrics = weighted_nll(logp, torch.zeros(2, 3))
    assert loss.item() == 0.0 and metrics["tokens"] == 1.0


def test_gradient_is_weight_over_token_count_on_unmasked_positions():
    logp = (-torch.rand(3, 4, dtype=torch.float64)).requires_grad_(True)
    mask = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.float64)
    weight = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    loss, _ = weighted_nll(logp, mask, weight)
    loss.backward()
    expected = -weight[:, None] * mask / 7
    torch.testing.assert_close(logp.grad, expected)


def test_negative_weight_flips_the_gradient_sign_of_that_sequence():
    logits, tokens = random_case(B=2, T=5, V=8, seed=3)
    mask = torch.ones(2, 5)
    grads = []
    for w in (1.0, -1.0):
        x = logits.float().clone().requires_grad_(True)
        loss, _ = weighted_nll(token_logprobs(x, tokens, chunk=2), mask, torch.tensor([w, 1.0]))
        loss.backward()
        grads.append(x.grad)
    pos, neg = grads
    torch.testing.assert_close(neg[0], -pos[0])  # the flipped sequence
    torch.testing.assert_close(neg[1], pos[1])  # the other one is untouched
    assert pos[0].abs().sum() > 0
    # gradient descent on a positive weight raises that sequence's log-prob; a negative weight lowers it
    for sign, grad in ((1, pos), (-1, neg)):
        stepped = logits.float() - 0.1 * grad
        delta = naive_logprobs(stepped, tokens)[0].sum() - naive_logprobs(logits.float(), tokens)[0].sum()
        assert sign * delta > 0


def test_masked_positions_contribute_nothing_and_get_zero_gradient():
    logits, tokens = random_case(B=2, T=6, V=9, seed=4)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [0, 0, 1, 1, 1, 1]], dtype=torch.float32)
    x = logits.float().clone().requires_grad_(True)
    loss, _ = weighted_nll(token_logprobs(x, tokens, chunk=4), mask, torch.tensor([0.7, 1.3]))
    loss.backward()
    masked = mask == 0
    assert (x.grad[masked] == 0).all()
    assert (x.grad[~masked].abs().sum(-1) > 0).all()
    # changing the logits at masked positions arbitrarily changes nothing
    other = logits.float().clone()
    other[masked] = torch.randn(int(masked.sum()), 9) * 100
    loss2, _ = weighted_nll(token_logprobs(other, tokens, chunk=4), mask, torch.tensor([0.7, 1.3]))
    assert loss2.item() == pytest.approx(loss.item(), abs=1e-6)


@pytest.mark.parametrize("poison", [float("-inf"), float("nan"), float("inf")])
def test_masked_positions_may_hold_non_finite_logprobs(poison):
    logp = torch.tensor([[-1.0, -2.0, poison], [-3.0, poison, poison]]).requires_grad_(True)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    loss, metrics = weighted_nll(logp, mask)
    assert loss.item() == pytest.approx(2.0)
    assert math.isfinite(metrics["nll"])
    loss.backward()
    assert torch.isfinite(logp.grad).all()
    assert (logp.grad[~mask] == 0).all()


def test_bool_and_float_masks_agree():
    logp = -torch.rand(2, 5)
    mask = torch.rand(2, 5) < 0.5
    mask[0, 0] = True
    a, _ = weighted_nll(logp, mask, torch.tensor([1.0, 2.0]))
    b, _ = weighted_nll(logp, mask.float(), torch.tensor([1.0, 2.0]))
    assert a.item() == b.item()


# ----- causal_lm_logprobs on a tiny Llama -------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         bos_token_id=None, eos_token_id=None, pad_token_id=0)
    return LlamaForCausalLM(config).eval()


def test_causal_lm_logprobs_equals_a_manual_computation(tiny_llama):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 50, (3, 9), generator=g)
    attention = torch.ones_like(ids)
    with torch.no_grad():
        got = causal_lm_logprobs(tiny_llama, ids, attention)
        logits = tiny_llama(input_ids=ids, attention_mask=attention).logits.double()
    assert got.shape == (3, 8) and got.dtype == torch.float32
    manual = torch.empty(3, 8, dtype=torch.float64)
    for b in range(3):
        for t in range(8):
            row = logits[b, t]
            manual[b, t] = row[ids[b, t + 1]] - torch.log(torch.exp(row - row.max()).sum()) - row.max()
    torch.testing.assert_close(got.double(), manual, rtol=0, atol=1e-5)
    # and the model's own shifted cross-entropy is minus their mean
    with torch.no_grad():
        model_loss = tiny_llama(input_ids=ids, attention_mask=attention, labels=ids).loss
    assert model_loss.item() == pytest.approx(-got.mean().item(), abs=1e-5)


def test_causal_lm_logprobs_with_right_padding_matches_unpadded_rows(tiny_llama):
    g = torch.Generator().manual_seed(1)
    short = torch.randint(1, 50, (1, 5), generator=g)
    long = torch.randint(1, 50, (1, 8), generator=g)
    ids = torch.zeros(2, 8, dtype=torch.long)
    ids[0, :5], ids[1] = short[0], long[0]
    attention = (torch.arange(8) < torch.tensor([[5], [8]])).long()
    with torch.no_grad():
        batched = causal_lm_logprobs(tiny_llama, ids, attention)
        alone = causal_lm_logprobs(tiny_llama, short, torch.ones_like(short))
        alone_long = causal_lm_logprobs(tiny_llama, long, torch.ones_like(long))
    torch.testing.assert_close(batched[0, :4], alone[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(batched[1], alone_long[0], rtol=0, atol=1e-5)


def test_causal_lm_logprobs_gradient_flows_to_the_model(tiny_llama):
    ids = torch.randint(1, 50, (2, 6), generator=torch.Generator().manual_seed(2))
    tiny_llama.zero_grad(set_to_none=True)
    logp = causal_lm_logprobs(tiny_llama, ids, torch.ones_like(ids))
    loss, _ = weighted_nll(logp, torch.ones_like(logp))
    loss.backward()
    grads = [p.grad for p in tiny_llama.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    tiny_llama.zero_grad(set_to_none=True)
