"""Rule-based rewards and group-normalised sample weights for reward-weighted distillation (AdvDistill,
docs/methods.md, section 2). Pure functions on plain numbers, tested against closed forms.

**Reward components** (each a float; the reward is their weighted sum, weights from a config dict):

- ``correctness``: 1 when the task's verifier says the answer is right, else 0;
- ``format``: 1 when an answer marker is present and what it marks could be read (the verifier's
  ``format_ok``, an extracted answer that is not empty, a reason other than ``no_answer`` / ``unparseable``);
- ``length``: a penalty in [-1, 0]: 0 up to ``length_free`` words, then falling linearly to -1 at
  ``length_limit`` words and staying there. Lengths are counted in whitespace-separated words, because an
  OpenAI-compatible server returns no token ids and every teacher must be measured the same way;
- ``repetition``: a penalty in [-1, 0]: minus the fraction of the response's word n-grams that repeat an
  earlier one (``1 - distinct / total``); 0 for a response shorter than n words.

**Group normalisations** of the G rewards ``r`` of one prompt (population statistics):

- ``zscore`` (default): ``(r - mean) / (std + eps)``;
- ``minmax``: ``(r - min) / (max - min)``, in [0, 1];
- ``softmax``: ``G * softmax(r / temperature)``: non-negative, mean weight 1 (as in SFT), so the loss
  keeps the scale of plain SFT whatever G is;
- ``zscore_clipped``: ``max(0, zscore)``: weighted rejection sampling (below-average responses get 0).

**Zero-variance groups** (every response has the same reward: nothing to compare) are ``drop``-ped
(default; weight None, not trained on) or, with ``correct_weight_one``, given weight 1 when correct and 0
otherwise.

**Bound.** Every weight is finally clipped to ``[min_weight, max_weight]`` (default ``[-1, +inf)``):
negative weights push probability away from bad responses, and the bound keeps one bad response in an
otherwise good group (z-score about ``-sqrt(G - 1)``) from dominating the loss.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from mentor.records import Verdict

REWARD_COMPONENTS = ("correctness", "format", "length", "repetition")
NORMALISATIONS = ("zscore", "minmax", "softmax", "zscore_clipped")
ZERO_VARIANCE_POLICIES = ("drop", "correct_weight_one")
#: rewards whose range is at most this are a zero-variance group
ZERO_RANGE = 1e-12


# ----- components ---------------------------------------------------------------------------------------


def count_words(text: str) -> int:
    return len(text.split())


def correctness(verdict: Verdict) -> float:
    return 1.0 if verdict.correct else 0.0


def format_score(verdict: Verdict) -> float:
    """1 when the answer marker is present and its content was read, else 0."""
    readable = verdict.extracted is not None and verdict.extracted.strip() != ""
    return 1.0 if verdict.format_ok and readable and verdict.reason not in ("no_answer", "unparseable") else 0.0


def length_penalty(num_words: int, free: int, limit: int) -> float:
    """0 up to ``free`` words, then linear down to -1 at ``limit`` words, -1 beyond."""
    if not 0 <= free < limit:
        raise ValueError(f"length penalty needs 0 <= free < limit, got free={free}, limit={limit}")
    return 0.0 - min(1.0, max(0, num_words - free) / (limit - free))  # 0.0 - x: never -0.0


def repetition_penalty(text: str, n: int = 4) -> float:
    """Minus the fraction of word n-grams that repeat an earlier one: ``-(1 - distinct / total)``."""
    if n < 1:
        raise ValueError(f"repetition n-gram size must be >= 1, got {n}")
    words = text.split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    return 0.0 - (1.0 - len(set(grams)) / len(grams))


def default_reward_weights() -> dict[str, float]:
    return {"correctness": 1.0, "format": 0.0, "length": 0.0, "repetition": 0.0}


@dataclass
class RewardConfig:
    """Which components make the reward, and the penalties' parameters."""

    weights: dict[str, float] = field(default_factory=default_reward_weights)
    """Weight of each component in the reward (keys: correctness, format, length, repetition)."""
    length_free: int = 256
    """Words a response may use before the length penalty starts."""
    length_limit: int = 1024
    """Words at which the length penalty reaches -1."""
    repetition_ngram: int = 4
    """n of the word n-grams the repetition penalty counts."""

    def __post_init__(self) -> None:
        check_reward_weights(self.weights)
        self.weights = {**{k: 0.0 for k in REWARD_COMPONENTS}, **{k: float(v) for k, v in self.weights.items()}}
        if not 0 <= self.length_free < self.length_limit:
            raise ValueError(f"rewards need 0 <= length_free < length_limit, got {self.length_free}, "
                             f"{self.length_limit}")
        if self.repetition_ngram < 1:
            raise ValueError(f"rewards repetition_ngram must be >= 1, got {self.repetition_ngram}")


def check_reward_weights(weights: Mapping[str, float]) -> None:
    if not isinstance(weights, Mapping):
        raise ValueError(f"reward weights must be a mapping of component -> weight, got {weights!r}")
    for name, value in weights.items():
        if name not in REWARD_COMPONENTS:
            raise ValueError(f"unknown reward component {name!r}; choose from {', '.join(REWARD_COMPONENTS)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"reward weight {name!r} must be a finite number, got {value!r}")
    if not any(weights.values()):
        raise ValueError("reward weights: at least one component needs a non-zero weight")


def reward_components(verdict: Verdict, text: str, config: RewardConfig) -> dict[str, float]:
    """Every component, whatever its weight (so the data can be re-weighted later)."""
    return {
        "correctness": correctness(verdict),
        "format": format_score(verdict),
        "length": length_penalty(count_words(text), config.length_free, config.length_limit),
        "repetition": repetition_penalty(text, config.repetition_ngram),
    }


def total_reward(components: Mapping[str, float], weights: Mapping[str, float]) -> float:
    """``sum_k weights[k] * components[k]``; a weighted component that is missing is an error."""
    check_reward_weights(weights)
    missing = [k for k, w in weights.items() if w and k not in components]
    if missing:
        raise ValueError(f"reward component {missing[0]!r} has a weight but no value")
    return float(sum(w * components[k] for k, w in weights.items() if w))


# ----- group statistics and normalisations -------------------------------------------------------------


def group_stats(rewards: Sequence[float], correct: Sequence[bool]) -> dict:
    """Size, mean, population std, min, max, number correct and whether the group has zero variance."""
    _check_group(rewards, correct)
    mean, std = _mean_std(rewards)
    return {"size": len(rewards), "mean": mean, "std": std, "min": min(rewards), "max": max(rewards),
            "n_correct": int(sum(bool(c) for c in correct)), "zero_variance": zero_variance(rewards)}


def _check_group(rewards: Sequence[float], correct: Sequence[bool]) -> None:
    if not rewards:
        raise ValueError("a group needs at least one reward")
    if len(correct) != len(rewards):
        raise ValueError(f"{len(rewards)} rewards but {len(correct)} correctness flags")


def _mean_std(rewards: Sequence[float]) -> tuple[float, float]:
    """Mean and population standard deviation."""
    mean = sum(rewards) / len(rewards)
    return mean, math.sqrt(sum((r - mean) ** 2 for r in rewards) / len(rewards))


def zero_variance(rewards: Sequence[float]) -> bool:
    """Whether a group's rewards are all equal (within ``ZERO_RANGE``): it carries no relative signal."""
    return max(rewards) - min(rewards) <= ZERO_RANGE


def zscore(rewards: Sequence[float], eps: float = 1e-6) -> list[float]:
    """``(r - mean) / (std + eps)`` with the population std."""
    mean, std = _mean_std(rewards)
    return [(r - mean) / (std + eps) for r in rewards]


def minmax(rewards: Sequence[float]) -> list[float]:
    """``(r - min) / (max - min)``; all zeros when the range is zero."""
    low, high = min(rewards), max(rewards)
    if zero_variance(rewards):
        return [0.0] * len(rewards)
    return [(r - low) / (high - low) for r in rewards]


def softmax(rewards: Sequence[float], temperature: float = 1.0) -> list[float]:
    """``G * softmax(r / temperature)``: mean weight 1."""
    if temperature <= 0:
        raise ValueError(f"softmax temperature must be > 0, got {temperature}")
    top = max(rewards)
    exps = [math.exp((r - top) / temperature) for r in rewards]
    total = sum(exps)
    return [len(rewards) * e / total for e in exps]


def zscore_clipped(rewards: Sequence[float], eps: float = 1e-6) -> list[float]:
    """``max(0, zscore)``: weighted rejection sampling."""
    return [max(0.0, z) for z in zscore(rewards, eps)]


def bound_weights(weights: Sequence[float], min_weight: float | None, max_weight: float | None) -> list[float]:
    """Clip every weight to ``[min_weight, max_weight]`` (None: unbounded on that side)."""
    low = -math.inf if min_weight is None else min_weight
    high = math.inf if max_weight is None else max_weight
    return [min(high, max(low, w)) for w in weights]


@dataclass
class WeightingConfig:
    """How group rewards become sample weights."""

    normalisation: str = "zscore"
    """The weight used for training: zscore, minmax, softmax or zscore_clipped (all are stored)."""
    zero_variance: str = "drop"
    """Groups whose rewards are all equal: drop (weight None) or correct_weight_one (1 correct, 0 not)."""
    softmax_temperature: float = 1.0
    eps: float = 1e-6
    """Added to the std of the z-score normalisations."""
    min_weight: float | None = -1.0
    """Lower bound of every weight (None: unbounded); bounds the push away from bad responses."""
    max_weight: float | None = None
    """Upper bound of every weight (None: unbounded)."""

    def __post_init__(self) -> None:
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(f"unknown normalisation {self.normalisation!r}; choose from {', '.join(NORMALISATIONS)}")
        if self.zero_variance not in ZERO_VARIANCE_POLICIES:
            raise ValueError(f"unknown zero_variance policy {self.zero_variance!r}; choose from "
                             f"{', '.join(ZERO_VARIANCE_POLICIES)}")
        if self.softmax_temperature <= 0:
            raise ValueError(f"softmax_temperature must be > 0, got {self.softmax_temperature}")
        if self.eps < 0:
            raise ValueError(f"eps must be >= 0, got {self.eps}")
        if self.min_weight is not None and self.min_weight > 0:
            raise ValueError(f"min_weight must be <= 0 (None: unbounded), got {self.min_weight}")
        if self.max_weight is not None and self.max_weight <= 0:
            raise ValueError(f"max_weight must be > 0 (None: unbounded), got {self.max_weight}")


def normalise(rewards: Sequence[float], method: str, config: WeightingConfig) -> list[float]:
    """The group's rewards under one normalisation (before the zero-variance policy and the bound)."""
    if method == "zscore":
        return zscore(rewards, config.eps)
    if method == "minmax":
        return minmax(rewards)
    if method == "softmax":
        return softmax(rewards, config.softmax_temperature)
    if method == "zscore_clipped":
        return zscore_clipped(rewards, config.eps)
    raise ValueError(f"unknown normalisation {method!r}; choose from {', '.join(NORMALISATIONS)}")


def group_weights(rewards: Sequence[float], correct: Sequence[bool], config: WeightingConfig,
                  method: str | None = None) -> list[float | None]:
    """Weights of one group under ``method`` (default: the config's), with the zero-variance policy and the
    bound applied; None for every response of a dropped group."""
    method = method or config.normalisation
    _check_group(rewards, correct)
    if zero_variance(rewards):
        if config.zero_variance == "drop":
            return [None] * len(rewards)
        raw = [1.0 if c else 0.0 for c in correct]
    else:
        raw = normalise(rewards, method, config)
    return bound_weights(raw, config.min_weight, config.max_weight)


def all_group_weights(rewards: Sequence[float], correct: Sequence[bool],
                      config: WeightingConfig) -> dict[str, list[float | None]]:
    """``{normalisation: weights}`` for every normalisation, so a dataset can be re-weighted later."""
    return {method: group_weights(rewards, correct, config, method) for method in NORMALISATIONS}
