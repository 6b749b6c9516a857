"""Teacher responses as weighted SFT examples: AdvDistill, plain SFT and rejection-sampling SFT (docs/methods.md
section 2) differ only in the weights, and all train on the same ``train_sft`` loop, whose loss is
``-sum_i w_i sum_t log p(y_i,t) / sum_i |y_i|`` (:func:`mentor.losses.weighted_nll`).

- ``advdistill``: the weight of the chosen group normalisation (z-score by default). Responses of dropped
  zero-variance groups (weight None) and responses of weight exactly 0 are left out: they carry no
  gradient, and leaving them in would only add their length to the denominator. Negative weights are kept,
  bounded below by the weighting's ``min_weight`` (:mod:`mentor.rewards`).
- ``sft``: weight 1 on every response (plain SFT on all teacher responses).
- ``rft``: weight 1 on the responses the verifier accepted, the others left out (rejection-sampling SFT).

An empty response is always left out (there is nothing to train on). Every count is returned.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from mentor.records import RecordError, TeacherResponse
from mentor.rewards import NORMALISATIONS, RewardConfig, WeightingConfig
from mentor.train.sft import SFTExample

DISTILL_MODES = ("advdistill", "sft", "rft")


def distillation_examples(
    rows: Sequence[TeacherResponse],
    mode: str = "advdistill",
    *,
    normalisation: str | None = None,
    weighting: WeightingConfig | None = None,
    rewards: RewardConfig | None = None,
    tokenizer: Any | None = None,
) -> tuple[list[SFTExample], dict[str, float]]:
    """``(examples, counts)`` for ``mode`` (advdistill, sft or rft).

    With ``weighting`` (and optionally ``rewards``) the rows are re-scored and re-weighted from their stored
    verdicts and texts first (no teacher request); otherwise the weights stored in the rows are used.
    ``normalisation`` picks the weight (default: the weighting's, else zscore).

    With a ``tokenizer`` the prompt is rendered with its chat template (as the student will see it) and a
    response that ended by itself gets the tokenizer's EOS text appended, so the student learns to stop; a
    truncated response (finish_reason "length") gets none. Without a tokenizer, prompt and completion are
    the row's text as is.
    """
    if mode not in DISTILL_MODES:
        raise ValueError(f"unknown distillation mode {mode!r}; choose from {', '.join(DISTILL_MODES)}")
    normalisation = normalisation or (weighting.normalisation if weighting else "zscore")
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"unknown normalisation {normalisation!r}; choose from {', '.join(NORMALISATIONS)}")
    if mode == "advdistill" and (weighting is not None or rewards is not None):
        from mentor.offline.generate import reweight

        rows = reweight(list(rows), rewards, weighting)
    render, eos = renderer(tokenizer)
    counts: Counter[str] = Counter(rows=len(rows))
    examples = []
    for row in rows:
        if not row.completion.strip():
            counts["empty"] += 1
            continue
        if mode == "sft":
            weight = 1.0
        elif mode == "rft":
            if not row.verdict.correct:
                counts["incorrect"] += 1
                continue
            weight = 1.0
        else:
            if not row.weights:
                raise RecordError(f"row for problem {row.problem_id!r} sample {row.sample_index} has no weights "
                                 "(not written by mentor generate?)")
            if normalisation not in row.weights:
                raise RecordError(f"row for problem {row.problem_id!r} sample {row.sample_index} has no "
                                  f"{normalisation!r} weight (it has {', '.join(row.weights)})")
            weight = row.weights[normalisation]
            if weight is None:
                counts["dropped_group"] += 1
                continue
            if weight == 0:
                counts["zero_weight"] += 1
                continue
        completion = row.completion + (eos if row.finish_reason == "stop" else "")
        examples.append(SFTExample(render(row.prompt), completion, float(weight)))
        counts["negative"] += weight < 0
        counts["weight_sum"] += weight
    counts["examples"] = len(examples)
    return examples, dict(counts)


def renderer(tokenizer: Any | None):
    """``(render, eos)``: a prompt as the student sees it (its chat template) and its end-of-sequence text."""
    if tokenizer is None:
        return (lambda prompt: prompt), ""
    from mentor.models import render_prompt

    return (lambda prompt: render_prompt(tokenizer, prompt)), (getattr(tokenizer, "eos_token", None) or "")
