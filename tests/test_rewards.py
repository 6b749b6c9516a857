"""mentor.rewards: reward components, group normalisations, zero-variance policies and bounds against
closed forms."""

from __future__ import annotations

import math

import pytest

from mentor.records import Verdict
from mentor.rewards import (
    NORMALISATIONS,
    RewardConfig,
    WeightingConfig,
    all_group_weights,
    bound_weights,
    format_score,
    group_stats,
    group_weights,
    length_penalty,
    minmax,
    repetition_penalty,
    reward_components,
    softmax,
    total_reward,
    zscore,
    zscore_clipped,
)


def verdict(correct: bool, extracted: str | None = "5", format_ok: bool = True, reason: str | None = None) -> Verdict:
    reason = reason or ("ok" if correct else "wrong")
    return Verdict(float(correct), correct, extracted, format_ok, reason)


def test_format_needs_a_marker_and_a_readable_answer():
    assert format_score(verdict(True)) == 1.0
    assert format_score(verdict(False)) == 1.0  # wrong but well-formed
    assert format_score(verdict(False, None, False, "no_answer")) == 0.0
    assert format_score(verdict(False, "x^^", True, "unparseable")) == 0.0
    assert format_score(verdict(False, "", True, "wrong")) == 0.0  # "<answer>" with nothing after it
    assert format_score(verdict(False, "7", False, "wrong")) == 0.0  # last number, no marker


@pytest.mark.parametrize(("words", "expected"), [(0, 0.0), (10, 0.0), (15, -0.5), (20, -1.0), (99, -1.0)])
def test_length_penalty_is_linear_between_free_and_limit(words, expected):
    value = length_penalty(words, free=10, limit=20)
    assert value == pytest.approx(expected) and math.copysign(1, value) == math.copysign(1, expected)


def test_repetition_penalty_counts_repeated_ngrams():
    assert repetition_penalty("a b c d e f", n=2) == 0.0
    # bigrams of "a b a b a b": ab ba ab ba ab -> 2 distinct of 5
    assert repetition_penalty("a b a b a b", n=2) == pytest.approx(-(1 - 2 / 5))
    assert repetition_penalty("x x x x", n=1) == pytest.approx(-(1 - 1 / 4))
    assert repetition_penalty("too short", n=4) == 0.0
    with pytest.raises(ValueError):
        repetition_penalty("a", n=0)


def test_components_and_weighted_sum():
    config = RewardConfig(weights={"correctness": 1.0, "format": 0.5, "length": 2.0, "repetition": 0.25},
                          length_free=2, length_limit=6, repetition_ngram=1)
    text = "a a b c"  # 4 words: length -0.5; unigrams 3 distinct of 4: repetition -0.25
    parts = reward_components(verdict(True), text, config)
    assert parts == pytest.approx({"correctness": 1.0, "format": 1.0, "length": -0.5, "repetition": -0.25})
    assert total_reward(parts, config.weights) == pytest.approx(1.0 + 0.5 - 1.0 - 0.0625)
    assert total_reward(parts, {"correctness": 1.0}) == 1.0
    with pytest.raises(ValueError, match="unknown reward component 'style'"):
        total_reward(parts, {"style": 1.0})
    with pytest.raises(ValueError, match="has a weight but no value"):
        total_reward({"correctness": 1.0}, {"format": 1.0})


def test_reward_config_is_validated_and_filled():
    assert RewardConfig(weights={"format": 1.0}).weights == {"correctness": 0.0, "format": 1.0, "length": 0.0,
                                                             "repetition": 0.0}
    for bad in ({"correctness": 0.0}, {"speed": 1.0}, {"correctness": float("nan")}, {"correctness": True}):
        with pytest.raises(ValueError):
            RewardConfig(weights=bad)
    with pytest.raises(ValueError, match="length_free < length_limit"):
        RewardConfig(length_free=10, length_limit=10)


REWARDS = [1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0]  # 3 of 8 correct


def test_group_stats_use_the_population_std():
    stats = group_stats(REWARDS, [r == 1 for r in REWARDS])
    p = 3 / 8
    assert stats["mean"] == pytest.approx(p) and stats["std"] == pytest.approx(math.sqrt(p * (1 - p)))
    assert stats == {**stats, "size": 8, "min": 0.0, "max": 1.0, "n_correct": 3, "zero_variance": False}
    assert group_stats([0.5] * 4, [False] * 4)["zero_variance"]


def test_zscore_closed_form():
    p = 3 / 8
    std = math.sqrt(p * (1 - p))
    z = zscore(REWARDS, eps=0.0)
    assert z[0] == pytest.approx((1 - p) / std) and z[1] == pytest.approx(-p / std)
    assert sum(z) == pytest.approx(0.0) and sum(v * v for v in z) / 8 == pytest.approx(1.0)
    assert zscore(REWARDS, eps=0.1)[0] == pytest.approx((1 - p) / (std + 0.1))
    assert zscore_clipped(REWARDS, eps=0.0) == [max(0.0, v) for v in z]


def test_minmax_and_softmax_closed_forms():
    assert minmax([2.0, 4.0, 3.0]) == [0.0, 1.0, 0.5]
    assert minmax([1.0, 1.0]) == [0.0, 0.0]
    w = softmax([0.0, math.log(3.0)], temperature=1.0)  # probabilities 1/4, 3/4, times G=2
    assert w == pytest.approx([0.5, 1.5])
    w = softmax([0.0, 2 * math.log(3.0)], temperature=2.0)  # the same after dividing by T
    assert w == pytest.approx([0.5, 1.5])
    assert sum(softmax([5.0, -3.0, 1000.0])) == pytest.approx(3.0)  # stable, mean weight 1
    with pytest.raises(ValueError):
        softmax([1.0], temperature=0)


def test_bounds_clip_weights():
    assert bound_weights([-3.0, -0.5, 2.0, 9.0], -1.0, None) == [-1.0, -0.5, 2.0, 9.0]
    assert bound_weights([-3.0, -0.5, 2.0, 9.0], -1.0, 2.5) == [-1.0, -0.5, 2.0, 2.5]
    assert bound_weights([-3.0], None, None) == [-3.0]


def test_group_weights_bound_the_negative_ones():
    # 7 of 8 correct: the wrong one's z-score is -sqrt(7), about -2.65
    rewards = [1.0] * 7 + [0.0]
    correct = [True] * 7 + [False]
    free = group_weights(rewards, correct, WeightingConfig(min_weight=None, eps=0.0))
    assert free[-1] == pytest.approx(-math.sqrt(7))
    bounded = group_weights(rewards, correct, WeightingConfig(min_weight=-1.0, eps=0.0))
    assert bounded[-1] == -1.0 and bounded[:7] == pytest.approx(free[:7])
    both = group_weights(rewards, correct, WeightingConfig(min_weight=-0.5, max_weight=0.2, eps=0.0))
    assert min(both) == -0.5 and max(both) == 0.2


def test_zero_variance_groups_are_dropped_or_fall_back_to_correct_weight_one():
    for method in NORMALISATIONS:
        assert group_weights([1.0] * 4, [True] * 4, WeightingConfig(), method) == [None] * 4
    fallback = WeightingConfig(zero_variance="correct_weight_one")
    assert group_weights([1.0] * 3, [True] * 3, fallback) == [1.0] * 3
    assert group_weights([0.0] * 3, [False] * 3, fallback) == [0.0] * 3
    # equal rewards but different correctness (reward from format only): 1 for the correct ones
    assert group_weights([0.5, 0.5], [True, False], fallback, "softmax") == [1.0, 0.0]


def test_all_group_weights_has_every_normalisation():
    out = all_group_weights(REWARDS, [r == 1 for r in REWARDS], WeightingConfig(eps=0.0, min_weight=None))
    assert set(out) == set(NORMALISATIONS)
    assert out["zscore"] == pytest.approx(zscore(REWARDS, 0.0))
    assert out["minmax"] == REWARDS
    assert out["softmax"] == pytest.approx(softmax(REWARDS))
    assert out["zscore_clipped"] == pytest.approx(zscore_clipped(REWARDS, 0.0))


@pytest.mark.parametrize("bad", [{"normalisation": "rank"}, {"zero_variance": "keep"}, {"min_weight": 0.5},
                                 {"max_weight": 0.0}, {"softmax_temperature": 0.0}, {"eps": -1.0}])
def test_weighting_config_is_validated(bad):
    with pytest.raises(ValueError):
        WeightingConfig(**bad)
