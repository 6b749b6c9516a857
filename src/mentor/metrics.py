"""Evaluation metrics over k samples per problem: Avg@k, unbiased Pass@k, Maj@k and rates.

Pure functions over answers, correctness flags and :class:`~mentor.records.Verdict` records; no model code.
Every rate is a fraction in [0, 1]; formatting as percentages is left to the caller.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from mentor.records import Verdict
from mentor.verify import answer_key, is_equivalent

__all__ = ["avg_at_k", "maj_at_k", "majority_index", "pass_at_k", "plurality_group", "standard_error", "summarize"]


def _count(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of pass@k from ``n`` samples of which ``c`` are correct (Chen et al. 2021).

    ``1 - C(n-c, k) / C(n, k)``, computed as the product ``prod_{i=n-c+1}^{n} (1 - k/i)`` so that large
    ``n`` neither overflows nor loses precision. Raises ValueError unless ``0 <= c <= n`` and ``1 <= k <= n``.
    """
    _count(n, "n", 1)
    _count(c, "c", 0)
    _count(k, "k", 1)
    if c > n:
        raise ValueError(f"c={c} correct samples is more than n={n} samples")
    if k > n:
        raise ValueError(f"pass@{k} needs at least k={k} samples per problem, got n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def _check_rows(rows: Sequence[Sequence[object]], name: str) -> None:
    if not rows:
        raise ValueError(f"{name}: no problems")
    for index, row in enumerate(rows):
        if not row:
            raise ValueError(f"{name}: problem {index} has no samples")


def standard_error(per_problem: Sequence[float]) -> float:
    """Standard error of the mean of per-problem scores: sample std / sqrt(n) (0 for one problem).

    Problems are the independent units of an evaluation, so every mean over problems (Avg@k, Pass@k,
    Maj@k) gets its error bar from the spread of its per-problem values."""
    n = len(per_problem)
    if n < 2:
        return 0.0
    mean = sum(per_problem) / n
    return math.sqrt(sum((x - mean) ** 2 for x in per_problem) / (n - 1) / n)


def avg_at_k(correct: Sequence[Sequence[bool]]) -> float:
    """Mean over problems of the fraction of that problem's samples that are correct."""
    _check_rows(correct, "avg_at_k")
    return sum(sum(map(bool, row)) / len(row) for row in correct) / len(correct)


def majority_index(answers: Sequence[str | None], *, timeout: float | None = 5.0) -> int | None:
    """Index of the first member of the plurality group of one problem's answers; None if all are None."""
    group = plurality_group(answers, timeout=timeout)
    return None if group is None else group[0]


def plurality_group(answers: Sequence[str | None], *, timeout: float | None = 5.0) -> list[int] | None:
    """Indices of the plurality group of one problem's answers; None if all are None.

    Answers are grouped by math equivalence: an equal :func:`~mentor.verify.answer_key` (exact number or
    tidied text) joins a group at once; otherwise :func:`~mentor.verify.is_equivalent` is asked against each
    group's first member (results are cached; plain numbers never leave the process). A timed-out check
    counts as "not equivalent". None answers never join or win. Ties go to the group seen first.
    """
    groups: list[list[int]] = []  # member indices; the first member represents the group
    keys: dict[str, int] = {}  # answer_key -> group number
    for index, answer in enumerate(answers):
        if answer is None:
            continue
        key = answer_key(answer)
        group = keys.get(key)
        if group is None:  # plain numbers are decided in-process, so this is cheap for them
            group = next(
                (
                    g
                    for g, members in enumerate(groups)
                    if is_equivalent(answer, answers[members[0]], timeout=timeout)
                ),
                None,
            )
        if group is None:
            group = len(groups)
            groups.append([])
        keys[key] = group
        groups[group].append(index)
    if not groups:
        return None
    best = max(range(len(groups)), key=lambda g: (len(groups[g]), -g))
    return groups[best]


def maj_at_k(
    answers: Sequence[Sequence[str | None]],
    correct: Sequence[Sequence[bool]],
    *,
    timeout: float | None = 5.0,
) -> float:
    """Fraction of problems whose plurality answer is correct.

    ``answers[i][j]`` is the extracted answer of sample j of problem i (None when nothing was extracted) and
    ``correct[i][j]`` whether that sample was verified correct. The plurality group (see
    :func:`plurality_group`) is correct when any member was verified correct (its members are equivalent,
    so they differ only where a check timed out), so the verifier's decision is reused rather than
    re-derived. A problem whose answers are all None counts as wrong.
    """
    wins = majority_wins(answers, correct, timeout=timeout)
    return sum(wins) / len(wins)


def majority_wins(
    answers: Sequence[Sequence[str | None]],
    correct: Sequence[Sequence[bool]],
    *,
    timeout: float | None = 5.0,
) -> list[bool]:
    """Per problem, whether its plurality answer is correct (see :func:`maj_at_k`)."""
    _check_rows(answers, "maj_at_k")
    if len(answers) != len(correct):
        raise ValueError(f"maj_at_k: {len(answers)} rows of answers but {len(correct)} rows of correct")
    wins = []
    for row_answers, row_correct in zip(answers, correct, strict=True):
        if len(row_answers) != len(row_correct):
            raise ValueError("maj_at_k: answers and correct must have the same shape")
        group = plurality_group(row_answers, timeout=timeout)
        wins.append(group is not None and any(row_correct[i] for i in group))
    return wins


def summarize(
    verdicts: Sequence[Sequence[Verdict]],
    finish_reasons: Sequence[Sequence[str]] | None = None,
    *,
    k: int | None = None,
    timeout: float | None = 5.0,
) -> dict[str, float | int | None]:
    """The evaluation table row for ``n`` samples per problem (the same ``n`` for every problem).

    Keys (rates are fractions in [0, 1], not percentages):

    - ``n_problems``, ``n`` (samples per problem), ``k`` (defaults to ``n``);
    - ``avg@{n}``: mean fraction correct over all n samples;
    - ``pass@{k}`` and ``pass@1``: unbiased estimates from the n samples;
    - ``maj@{k}``: plurality vote over the first k samples of each problem;
    - ``format_rate``: fraction of samples whose answer had an explicit marker;
    - ``fallback_rate``: fraction of samples counted correct without an answer marker (a task's fall-back,
      such as reasoning-gym's last number with ``fallback=true``: luck more than an answer);
    - ``truncation_rate``: fraction of samples with finish reason ``length`` (None without finish reasons);
    - ``timeouts``: number of samples whose check timed out (counted as incorrect everywhere above);
    - ``se``: the standard error over problems of ``avg@{n}``, ``pass@{k}`` and ``maj@{k}``.
    """
    _check_rows(verdicts, "summarize")
    n = len(verdicts[0])
    if any(len(row) != n for row in verdicts):
        raise ValueError("summarize: every problem needs the same number of samples")
    k = n if k is None else _count(k, "k", 1)
    if k > n:
        raise ValueError(f"summarize: k={k} is more than the n={n} samples per problem")
    if finish_reasons is not None and (
        len(finish_reasons) != len(verdicts) or any(len(row) != n for row in finish_reasons)
    ):
        raise ValueError("summarize: finish_reasons must have the same shape as verdicts")

    correct = [[v.correct for v in row] for row in verdicts]
    total = len(verdicts) * n
    counts = [sum(row) for row in correct]
    summary: dict = {"n_problems": len(verdicts), "n": n, "k": k}
    per_avg = [c / n for c in counts]
    per_pass = [pass_at_k(n, c, k) for c in counts]
    per_maj = [float(w) for w in majority_wins(
        [[v.extracted for v in row[:k]] for row in verdicts], [row[:k] for row in correct], timeout=timeout)]
    summary[f"avg@{n}"] = avg_at_k(correct)
    summary["pass@1"] = sum(pass_at_k(n, c, 1) for c in counts) / len(counts)
    summary[f"pass@{k}"] = sum(per_pass) / len(per_pass)
    summary[f"maj@{k}"] = sum(per_maj) / len(per_maj)
    summary["format_rate"] = sum(v.format_ok for row in verdicts for v in row) / total
    summary["fallback_rate"] = sum(v.correct and not v.format_ok for row in verdicts for v in row) / total
    summary["truncation_rate"] = (
        None
        if finish_reasons is None
        else sum(reason == "length" for row in finish_reasons for reason in row) / total
    )
    summary["timeouts"] = sum(v.reason == "timeout" for row in verdicts for v in row)
    summary["se"] = {f"avg@{n}": standard_error(per_avg), f"pass@{k}": standard_error(per_pass),
                     f"maj@{k}": standard_error(per_maj)}
    return summary
