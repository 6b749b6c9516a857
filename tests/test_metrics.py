from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mentor.metrics import avg_at_k, maj_at_k, majority_index, pass_at_k, standard_error, summarize
from mentor.records import Verdict
from mentor.verify import verify


def brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    """The fraction of k-subsets of n samples (the first c correct) that hold at least one correct sample."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in subset) for subset in subsets) / len(subsets)


@pytest.mark.parametrize("n", range(1, 9))
def test_pass_at_k_matches_brute_force(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(n, c, k), abs=1e-12)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 300).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))))
def test_pass_at_k_properties(args):
    n, c, k = args
    value = pass_at_k(n, c, k)
    assert 0.0 <= value <= 1.0
    assert pass_at_k(n, c, 1) == pytest.approx(c / n)
    if k < n:
        assert pass_at_k(n, c, k + 1) >= value - 1e-12
    if c < n:
        assert pass_at_k(n, c + 1, k) >= value - 1e-12


def test_pass_at_k_is_stable_for_large_n():
    assert pass_at_k(100_000, 1, 1) == pytest.approx(1e-5)
    assert pass_at_k(100_000, 50_000, 1000) == pytest.approx(1.0)
    assert pass_at_k(1000, 10, 100) == pytest.approx(1 - math.comb(990, 100) / math.comb(1000, 100))
    assert pass_at_k(10_000, 0, 10) == 0.0


@pytest.mark.parametrize(
    ("n", "c", "k"), [(4, 1, 5), (4, 5, 2), (0, 0, 1), (4, 1, 0), (4, -1, 1), (4.0, 1, 1), (True, 1, 1)]
)
def test_pass_at_k_rejects_bad_inputs(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_avg_at_k():
    assert avg_at_k([[True, False], [True, True]]) == 0.75
    assert avg_at_k([[True, False, False, False], [True]]) == 0.625  # per problem, then over problems
    with pytest.raises(ValueError):
        avg_at_k([])
    with pytest.raises(ValueError):
        avg_at_k([[True], []])


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        (["0.5", "1/2", "0.25"], 0),
        (["0.25", "0.5", "\\frac{1}{2}"], 1),  # the plurality group, not the first answer
        (["1,000", "7", "1000", "$1000"], 0),
        (["3", "4"], 0),  # ties go to the group seen first
        (["4", "3", "3", "4"], 0),
        ([None, None, "5"], 2),  # None never wins
        ([None, None], None),
        (["1.4", "\\sqrt{2}", "2^{1/2}"], 1),  # grouped by math-verify, not by spelling
    ],
)
def test_majority_index(answers, expected):
    assert majority_index(answers) == expected


def test_maj_at_k():
    answers = [["0.5", "1/2", "0.25"], ["0.25", "0.5", "1/2"], ["3", "4", "4"], [None, None, None]]
    correct = [[True, True, False], [False, True, True], [True, False, False], [False, False, False]]
    assert maj_at_k(answers, correct) == 0.5
    with pytest.raises(ValueError):
        maj_at_k([["1"]], [[True, False]])
    with pytest.raises(ValueError):
        maj_at_k([["1"]], [])


def test_summarize():
    gold = ["12", "\\frac{1}{2}"]
    completions = [
        ["#### 12", "12 apples", "#### 13", "I give up"],
        ["\\boxed{0.5}", "\\boxed{1/2}", "\\boxed{2}", "\\boxed{2}"],
    ]
    verdicts = [[verify(text, g) for text in row] for row, g in zip(completions, gold, strict=True)]
    finish = [["stop", "stop", "stop", "length"], ["stop"] * 4]
    summary = summarize(verdicts, finish)
    assert summary["n_problems"] == 2 and summary["n"] == 4 and summary["k"] == 4
    assert summary["avg@4"] == pytest.approx(0.5)
    assert summary["pass@1"] == pytest.approx(0.5)
    assert summary["pass@4"] == 1.0
    assert summary["maj@4"] == 1.0  # problem 1: 12 wins (2 vs 1); problem 2: tie 0.5 vs 2, first seen wins
    assert summary["format_rate"] == pytest.approx(6 / 8)
    assert summary["truncation_rate"] == pytest.approx(1 / 8)
    assert summary["timeouts"] == 0

    # standard errors over the 2 problems: per-problem avg 0.5 and 0.5 (se 0); maj 1 and 1 (se 0)
    assert summary["se"] == {"avg@4": 0.0, "pass@4": 0.0, "maj@4": 0.0}

    two = summarize(verdicts, k=2)
    assert two["pass@2"] == pytest.approx(pass_at_k(4, 2, 2)) == pytest.approx(5 / 6)
    assert two["maj@2"] == 1.0 and two["avg@4"] == summary["avg@4"]
    assert two["truncation_rate"] is None


def test_standard_error_closed_form():
    assert standard_error([1.0]) == 0.0 and standard_error([]) == 0.0
    # values 0, 1, 1, 0: sample variance 1/3, se sqrt(1/3 / 4)
    assert standard_error([0, 1, 1, 0]) == pytest.approx(math.sqrt(1 / 12))
    # a Bernoulli p over n problems: close to sqrt(p (1 - p) / n)
    values = [1.0] * 30 + [0.0] * 70
    assert standard_error(values) == pytest.approx(math.sqrt(0.3 * 0.7 / 100), rel=0.01)


def test_summarize_gives_the_standard_error_over_problems():
    right, wrong = verify("1", "1"), verify("2", "1")
    summary = summarize([[right, right], [wrong, wrong], [right, wrong]])
    assert summary["avg@2"] == pytest.approx(0.5)
    assert summary["se"]["avg@2"] == pytest.approx(standard_error([1.0, 0.0, 0.5]))
    assert summary["se"]["pass@2"] == pytest.approx(standard_error([1.0, 0.0, 1.0]))


def test_summarize_counts_timeouts_as_incorrect():
    timeout = Verdict(reward=0.0, correct=False, extracted="x", format_ok=True, reason="timeout")
    ok = Verdict(reward=1.0, correct=True, extracted="y", format_ok=True, reason="ok")
    summary = summarize([[timeout, ok]])
    assert summary["timeouts"] == 1
    assert summary["avg@2"] == 0.5


@pytest.mark.parametrize(
    ("verdicts", "kwargs"),
    [
        ([], {}),
        ([[verify("1", "1")], [verify("1", "1"), verify("1", "1")]], {}),
        ([[verify("1", "1")]], {"k": 2}),
        ([[verify("1", "1")]], {"finish_reasons": [["stop", "stop"]]}),
    ],
)
def test_summarize_rejects_bad_shapes(verdicts, kwargs):
    with pytest.raises(ValueError):
        summarize(verdicts, **kwargs)


def test_maj_at_k_counts_a_group_correct_when_any_member_verified_correct():
    # the first "0.5" was a timed-out check (not correct); its equivalent "1/2" was verified correct
    assert maj_at_k([["0.5", "1/2", "3"]], [[False, True, False]]) == 1.0
    assert maj_at_k([["3", "0.5", "3"]], [[False, True, False]]) == 0.0
