"""Per-token advantage of a context: A_t = log pi(y_t | x, c, y_<t) - log pi(y_t | x, y_<t).

For each sampled token of a rollout, how much more (A_t > 0) or less (A_t < 0) likely the self-teacher,
who sees the context c, finds it than the student, who does not. docs/methods.md, section 1: with a
step-aligned critique A_t should be near zero on the correct prefix and sharply negative at the first
error; with a reference solution, negative almost everywhere.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mentor.losses import causal_lm_logprobs
from mentor.models import encode_prompt, teacher_mode

STEP_TAG = re.compile(r"<step_(\d+)>|<answer>")


@torch.no_grad()
def completion_logprobs(model, tokenizer, prompt: str, completion_ids: Sequence[int]) -> torch.Tensor:
    """log p of each completion token after the rendered ``prompt`` (one unpadded forward pass)."""
    prompt_ids = encode_prompt(tokenizer, prompt)
    device = next(model.parameters()).device
    ids_1L = torch.tensor([prompt_ids + list(completion_ids)], device=device)
    logp_1L = causal_lm_logprobs(model, ids_1L, torch.ones_like(ids_1L))
    return logp_1L[0, len(prompt_ids) - 1 :].cpu()


def token_advantages(model, tokenizer, student_prompt: str, teacher_prompt: str, completion_ids: Sequence[int],
                     student_logp: torch.Tensor | None = None) -> torch.Tensor:
    """A_t for every completion token; the teacher is the frozen model (LoRA adapter disabled).
    ``student_logp``: the student's log-probs of the same tokens when already computed (several contexts)."""
    student = student_logp if student_logp is not None else completion_logprobs(
        model, tokenizer, student_prompt, completion_ids)
    with teacher_mode(model):
        teacher = completion_logprobs(model, tokenizer, teacher_prompt, completion_ids)
    return teacher - student


def prefix_texts(tokenizer, completion_ids: Sequence[int]) -> list[str]:
    """The decoded text of every prefix of the completion (token i's entry ends with token i), decoded as the
    samplers decode a completion (no clean-up of spaces), so a critic's character offsets fit."""
    return [tokenizer.decode(list(completion_ids[: i + 1]), skip_special_tokens=False,
                             clean_up_tokenization_spaces=False) for i in range(len(completion_ids))]


def token_steps(tokenizer, completion_ids: Sequence[int], texts: Sequence[str] | None = None) -> list[int]:
    """The step each token belongs to in a step-tagged trace: k for ``<step_k>`` text, 0 before the first
    tag, and one more than the last step for the ``<answer>`` line. A tag spread over several tokens
    (``<step_``, ``7``, ``>``) belongs to its step from its first token on. ``texts``: :func:`prefix_texts`,
    when already decoded."""
    steps, ends, current, last_step = [], [], 0, 0
    text_before = ""
    for text in texts if texts is not None else prefix_texts(tokenizer, completion_ids):
        steps.append(current)
        ends.append(len(text))
        for match in STEP_TAG.finditer(text, max(0, len(text_before) - 12)):
            if match.end() > len(text_before):  # a tag completed by this token
                last_step = int(match.group(1)) if match.group(1) else last_step + 1
                current = last_step
                for i in range(len(steps) - 1, -1, -1):  # this token and the earlier ones the tag began in
                    if i < len(steps) - 1 and ends[i] <= match.start():
                        break
                    steps[i] = current
        text_before = text
    return steps


def steps_from_starts(texts: Sequence[str], starts: Sequence[int]) -> list[int]:
    """The step each token belongs to in free-form text whose k-th step begins at character ``starts[k-1]``
    (a critic's ``Feedback.step_starts``): 0 before the first; a token belongs to the step whose start it
    reaches (its text ends past the start). ``texts``: :func:`prefix_texts`."""
    import bisect

    return [bisect.bisect_left(starts, len(text)) for text in texts]


@dataclass
class StepAggregate:
    """Mean A_t over tokens on the correct prefix, on the first wrong step, and after it."""

    prefix: float
    first_error: float
    after: float
    tokens: tuple[int, int, int]


def aggregate_by_error(advantages: Sequence[torch.Tensor], steps: Sequence[Sequence[int]],
                       first_error: Sequence[int | None]) -> StepAggregate:
    """Pool tokens of many rollouts by where they stand relative to each rollout's first wrong step
    (``None``: a correct rollout, all prefix)."""
    by_rollout = region_groups(advantages, steps, first_error)
    groups = [[a for rollout in region for a in rollout] for region in by_rollout]

    def mean(values: list[float]) -> float:
        return sum(values) / len(values) if values else float("nan")

    return StepAggregate(*(mean(g) for g in groups), tuple(len(g) for g in groups))


def region_groups(advantages: Sequence[torch.Tensor], steps: Sequence[Sequence[int]],
                  first_error: Sequence[int | None]) -> tuple[list[list[float]], ...]:
    """Each rollout's A_t on the correct prefix, on the first wrong step and after it (one list per rollout
    that has tokens there, in each of the three regions): the clusters of :func:`pooled_mean_sem`."""
    regions: tuple[list[list[float]], ...] = ([], [], [])
    for adv_T, steps_T, error in zip(advantages, steps, first_error):
        mine: tuple[list[float], ...] = ([], [], [])
        for a, step in zip(adv_T.tolist(), steps_T):
            mine[0 if error is None or step < error else (1 if step == error else 2)].append(a)
        for region, values in zip(regions, mine):
            if values:
                region.append(values)
    return regions


def pooled_mean_sem(groups: Sequence[Sequence[float]]) -> tuple[float, float]:
    """Mean of all values pooled, and its standard error with each group (a rollout) as one cluster: the
    tokens of one rollout are not independent, so treating them as such would understate the error.
    For m = sum S_r / sum n_r over R groups, se^2 = R / (R - 1) * sum_r (S_r - m n_r)^2 / (sum n_r)^2,
    which is the usual s / sqrt(R) when every group holds one value; NaN below two groups."""
    totals = [(sum(g), len(g)) for g in groups if g]
    n = sum(k for _, k in totals)
    if not n:
        return math.nan, math.nan
    mean, r = sum(s for s, _ in totals) / n, len(totals)
    if r < 2:
        return mean, math.nan
    return mean, math.sqrt(r / (r - 1) * sum((s - mean * k) ** 2 for s, k in totals)) / n
