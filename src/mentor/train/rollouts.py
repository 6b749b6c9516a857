"""One step's rollouts (:class:`Row`) and the context each gets: the self-teacher's prompt (reference,
critique or a successful sibling, or none), and how many of its tokens carry the teacher's signal."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from mentor.contexts import build_context_prompt
from mentor.models import render_conversation, render_prompt
from mentor.records import Feedback, Problem
from mentor.sampling import Sample
from mentor.tasks import Task
from mentor.train.guards import copy_overlap
from mentor.train.onpolicy_config import OnPolicyConfig

#: a batch critic: the feedback on each (problem, trace)
Critic = Callable[[list[Problem], list[str]], list[Feedback]]


@dataclass
class Row:
    """One rollout and everything the step derives from it."""

    problem: Problem
    prompt: str
    sample: Sample
    reward: float
    teacher_prompt: str | None = None  # None: no teacher signal for this rollout
    keep_tokens: int | None = None  # signal_span: how many leading tokens carry the teacher signal
    overlap: float | None = None
    # critique_prediction: the conversation in which the student is asked to critique its own attempt, and
    # the critic's critique it learns to write there (its tokens and EOS)
    critique_prompt: str | None = None
    critique_ids: list[int] | None = None


#: what the student is asked after its attempt when it learns to predict the critique (RLTF's feedback modelling)
CRITIQUE_REQUEST = ("Check your solution step by step: say which step is wrong, if any, fix it and recompute "
                    "the rest.")


def _padded(values: Sequence[Sequence], width: int, dtype, device) -> torch.Tensor:
    out = torch.zeros((len(values), width), dtype=dtype)
    for row, row_values in enumerate(values):
        out[row, : len(row_values)] = torch.tensor(list(row_values), dtype=dtype)
    return out.to(device)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def attach_contexts(rows: list[Row], task: Task, tokenizer, config: OnPolicyConfig, critic: Critic,
                    rollouts_per_prompt: int) -> dict[str, float]:
    """Give each row its teacher prompt (or none), its signal span and its copy overlap; returns counts."""
    counts = {"critic_unusable": 0, "no_success": 0, "no_corrected_trace": 0}
    if config.blend == "by-group":  # a group with a success is GRPO's: only the others get a context
        groups = [rows[i : i + rollouts_per_prompt] for i in range(0, len(rows), rollouts_per_prompt)]
        rows = [r for group in groups if not any(r.reward > 0 for r in group) for r in group]
        counts["routed_to_grpo"] = sum(len(g) for g in groups) - len(rows)
    feedback: list[Feedback | None] = [None] * len(rows)
    if config.context == "critique" and rows:
        feedback = critic([r.problem for r in rows], [r.sample.text for r in rows])
    for i, row in enumerate(rows):
        context = {}
        if config.context == "critique":
            if feedback[i] is None or feedback[i].case == "unusable":
                counts["critic_unusable"] += 1
                continue
            context["critique"] = feedback[i].critique
            if config.critique_prediction > 0:
                eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
                row.critique_ids = tokenizer.encode(feedback[i].critique, add_special_tokens=False) + eos
                row.critique_prompt = render_conversation(tokenizer, [
                    {"role": "user", "content": task.prompt(row.problem)},
                    {"role": "assistant", "content": row.sample.text},
                    {"role": "user", "content": CRITIQUE_REQUEST}])
        elif config.context == "success":
            group = rows[i - i % rollouts_per_prompt : i - i % rollouts_per_prompt + rollouts_per_prompt]
            winners = [r for r in group if r is not row and r.reward > 0]
            if not winners:
                counts["no_success"] += 1
                continue
            context["success"] = winners[0].sample.text
        question = task.prompt(row.problem)
        user = build_context_prompt(config.context, question, problem=row.problem, **context)
        row.teacher_prompt = render_prompt(tokenizer, user)
        privileged = user[len(question):] if user.startswith(question) else user
        row.overlap = copy_overlap(row.sample.text, privileged, question, config.copy_ngram)
        if config.signal_span == "to-divergence" and config.context == "critique" and feedback[i].case != "correct":
            if not feedback[i].corrected:  # a critic that writes no corrected trace: no span to cut
                counts["no_corrected_trace"] += 1
                continue
            target = tokenizer.encode(feedback[i].corrected, add_special_tokens=False)
            row.keep_tokens = common_prefix(row.sample.token_ids, target) + 1  # through the first departure
    return counts


def signal_tokens(row: Row) -> int:
    """How many of the row's tokens carry the teacher signal."""
    if row.teacher_prompt is None:
        return 0
    n = len(row.sample.token_ids)
    return n if row.keep_tokens is None else min(n, row.keep_tokens)
