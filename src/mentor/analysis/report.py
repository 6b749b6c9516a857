"""The per-token advantage report: A_t of each context on a set of rollouts, as JSON, HTML and plots.

For every rollout and every context kind (reference solution, step-aligned critique) the self-teacher
scores the rollout's own tokens with the context and the student scores them without it (docs/methods.md
section 1). Tokens are split by where they stand relative to the rollout's first wrong step, as the
critic locates it; the same split is used for every context so their aggregates compare like for like.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from mentor.analysis.render import aggregate_table, trace_verdict, write_html, write_plots  # noqa: F401 (API)
from mentor.analysis.token_advantage import (
    StepAggregate,
    aggregate_by_error,
    completion_logprobs,
    pooled_mean_sem,
    prefix_texts,
    steps_from_starts,
    token_advantages,
    token_steps,
)
from mentor.contexts import build_context_prompt
from mentor.models import render_prompt
from mentor.records import Feedback, Problem, Rollout

REPORT_CONTEXTS = ("reference", "critique")
Critic = Callable[[Problem, str], Feedback | None]


@dataclass
class TokenAdvantages:
    """A_t of one rollout under one context, token by token.

    ``located`` is False when the first wrong step is unknown (no usable critique of a wrong rollout):
    such a rollout is shown but left out of the aggregates.
    """

    problem_id: str
    sample_index: int
    tokens: list[str]
    advantages: list[float]
    steps: list[int]
    first_error_step: int | None
    case: str | None
    context: str
    correct: bool
    located: bool = True
    error_at_answer: bool = False  # the first wrong "step" is the answer line (missing or wrong), not a step


@dataclass
class PositionMean:
    """Mean A_t of the tokens at one position (a step index, or a step offset from the first error), the
    rollouts they come from and its standard error over those rollouts (NaN with one rollout; reports
    written before these were recorded load as 0 and NaN)."""

    position: int
    mean: float
    tokens: int
    rollouts: int = 0
    sem: float = math.nan


@dataclass
class ContextAnalysis:
    """All rollouts of one context kind with their aggregates and the rollouts left out, by reason."""

    kind: str
    rollouts: list[TokenAdvantages]
    aggregate: StepAggregate
    by_error_offset: list[PositionMean]  # step - first wrong step, over rollouts with an error
    by_step: list[PositionMean]  # absolute step index, over every located rollout
    skipped: dict[str, int]
    unlocated: int = 0


@dataclass
class AnalysisResult:
    """The report's data: one :class:`ContextAnalysis` per context kind, and the question of each problem."""

    contexts: dict[str, ContextAnalysis]
    questions: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(_nan_to_none(asdict(self)), ensure_ascii=False)

    def write_json(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json() + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_json(cls, text: str) -> AnalysisResult:
        data, contexts = json.loads(text), {}
        for kind, row in data["contexts"].items():
            agg = row["aggregate"]
            means = [math.nan if agg[k] is None else agg[k] for k in ("prefix", "first_error", "after")]
            contexts[kind] = ContextAnalysis(
                kind=row["kind"],
                rollouts=[TokenAdvantages(**r) for r in row["rollouts"]],
                aggregate=StepAggregate(*means, tuple(agg["tokens"])),
                by_error_offset=[_position_mean(p) for p in row["by_error_offset"]],
                by_step=[_position_mean(p) for p in row["by_step"]],
                skipped=dict(row["skipped"]),
                unlocated=row.get("unlocated", 0),
            )
        return cls(contexts, dict(data.get("questions", {})))


def _position_mean(row: dict) -> PositionMean:
    return PositionMean(**{**row, "sem": math.nan if row.get("sem") is None else row["sem"]})


def _nan_to_none(value: Any) -> Any:
    """NaN (an empty group's mean) is not JSON; it is written as null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    return value


def token_pieces(tokenizer, ids: Sequence[int], texts: Sequence[str] | None = None) -> list[str]:
    """The text each token adds to the decoded completion (pieces join to the full text where decoding
    is incremental; otherwise a token's own decoding). ``texts``: :func:`prefix_texts`, when decoded."""
    pieces, before = [], ""
    for i, text in enumerate(texts if texts is not None else prefix_texts(tokenizer, ids)):
        incremental = text.startswith(before)
        pieces.append(text[len(before) :] if incremental else tokenizer.decode([ids[i]], skip_special_tokens=False))
        before = text
    return pieces


def _position_means(rows: Iterable[tuple[int, int, float]]) -> list[PositionMean]:
    """Per position, from (rollout index, position, A_t) rows: the pooled mean, counts and standard error."""
    groups: dict[int, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for rollout, position, a in rows:
        groups[position][rollout].append(a)
    means = []
    for position, by_rollout in sorted(groups.items()):
        mean, sem = pooled_mean_sem(list(by_rollout.values()))
        means.append(PositionMean(position, mean, sum(map(len, by_rollout.values())), len(by_rollout), sem))
    return means


def summarize_context(kind: str, rollouts: list[TokenAdvantages], skipped: dict[str, int]) -> ContextAnalysis:
    """Aggregates of one context's rollouts: prefix / first wrong step / after, and means by position."""
    located = [r for r in rollouts if r.located]
    aggregate = aggregate_by_error([torch.tensor(r.advantages) for r in located], [r.steps for r in located],
                                   [r.first_error_step for r in located])
    offsets = ((i, s - r.first_error_step, a) for i, r in enumerate(located) if r.first_error_step is not None
               for s, a in zip(r.steps, r.advantages))
    by_step = ((i, s, a) for i, r in enumerate(located) for s, a in zip(r.steps, r.advantages))
    return ContextAnalysis(kind, rollouts, aggregate, _position_means(offsets), _position_means(by_step),
                           dict(skipped), len(rollouts) - len(located))


def analyze_rollouts(model, tokenizer, task, problems_by_id: Mapping[str, Problem], rollouts: Sequence[Rollout],
                     contexts: Sequence[str] = REPORT_CONTEXTS, critic: Critic | None = None, *,
                     progress: Callable[[int, int], None] | None = None) -> AnalysisResult:
    """A_t of every rollout under every context kind (``reference`` and/or ``critique``).

    Student and teacher both see ``render_prompt(tokenizer, task.prompt(problem))``, the teacher with the
    context added, so the context is the only difference. ``critic(problem, completion)`` (default
    ``task.critique``) gives the critique and locates the first wrong step for every context; a rollout
    without a usable critique is skipped for ``critique`` and counted, never given a placeholder.
    """
    unknown = [k for k in contexts if k not in REPORT_CONTEXTS]
    if unknown:
        raise ValueError(f"unknown context kind {unknown[0]!r}; choose from {', '.join(REPORT_CONTEXTS)}")
    critic = critic or task.critique
    entries: dict[str, list[TokenAdvantages]] = {k: [] for k in contexts}
    skipped: dict[str, dict[str, int]] = {k: defaultdict(int) for k in contexts}
    questions: dict[str, str] = {}
    for done, rollout in enumerate(rollouts, start=1):
        problem = problems_by_id.get(rollout.problem_id)
        ids = list(rollout.token_ids) or tokenizer(rollout.completion, add_special_tokens=False)["input_ids"]
        reason = "unknown_problem" if problem is None else ("empty" if not ids else None)
        if reason:
            for kind in contexts:
                skipped[kind][reason] += 1
            if progress:
                progress(done, len(rollouts))
            continue
        questions[problem.id] = problem.question
        feedback = critic(problem, rollout.completion)
        usable = feedback is not None and feedback.case != "unusable"
        correct = rollout.verdict.correct if rollout.verdict else task.verify(problem, rollout.completion).correct
        if usable:
            first_error = None if feedback.case == "correct" else feedback.first_error_step
            located = feedback.case == "correct" or first_error is not None
        else:
            first_error, located = None, correct  # a verified-correct rollout has no wrong step
        starts = feedback.step_starts if usable else []  # a free-form critic's steps, else the <step_k> tags
        # the step after the last is the answer's part: an error there is no step's
        last = len(starts) if starts else (feedback.corrected.count("<step_") + 1 if feedback is not None else 0)
        at_answer = bool(first_error and feedback is not None and (starts or feedback.corrected)
                         and first_error == last)
        student = render_prompt(tokenizer, task.prompt(problem))
        texts = prefix_texts(tokenizer, ids)  # decoded once for both the steps and the pieces
        steps = steps_from_starts(texts, starts) if starts else token_steps(tokenizer, ids, texts)
        pieces = token_pieces(tokenizer, ids, texts)
        student_logp = None  # one student pass serves every context
        for kind in contexts:
            if kind == "critique" and not usable:
                skipped[kind]["no_critique" if feedback is None else "unusable"] += 1
                continue
            if kind == "reference" and not problem.solution:
                skipped[kind]["no_reference"] += 1
                continue
            user = build_context_prompt(kind, task.prompt(problem), problem=problem,
                                        critique=feedback.critique if usable else None)
            context = problem.solution if kind == "reference" else feedback.critique
            if student_logp is None:
                student_logp = completion_logprobs(model, tokenizer, student, ids)
            adv_T = token_advantages(model, tokenizer, student, render_prompt(tokenizer, user), ids, student_logp)
            entries[kind].append(TokenAdvantages(
                rollout.problem_id, rollout.sample_index, pieces, adv_T.tolist(), steps, first_error,
                feedback.case if feedback else None, context, bool(correct), located, at_answer))
        if progress:
            progress(done, len(rollouts))
    return AnalysisResult({k: summarize_context(k, entries[k], skipped[k]) for k in contexts}, questions)


def sample_rollouts(model, tokenizer, task, problems, *, seed: int = 0, temperature: float = 1.0,
                    max_new_tokens: int = 160, progress: Callable[[int, int], None] | None = None) -> list[Rollout]:
    """The model's own attempts to analyse: one context-free rollout per problem, sampled as mentor eval
    samples them; ``progress(done, total)``."""
    from mentor.evaluate import EvalConfig, evaluate

    _, rollouts = evaluate(model, tokenizer, task, problems, EvalConfig(
        n_problems=len(problems), k=1, seed=seed, temperature=temperature, max_new_tokens=max_new_tokens),
        (lambda kind, done, total: progress(done, total)) if progress else None)
    return rollouts["none"]


def run_analysis(model, tokenizer, task, problems: Iterable[Problem], rollouts: Sequence[Rollout],
                 out_dir: str | os.PathLike, contexts: Sequence[str] = REPORT_CONTEXTS,
                 critic: Critic | None = None, max_html: int = 50, *,
                 progress: Callable[[int, int], None] | None = None) -> AnalysisResult:
    """Analyse ``rollouts`` and write ``analysis.json``, ``analysis.html`` and the PNG plots to ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = analyze_rollouts(model, tokenizer, task, {p.id: p for p in problems}, rollouts, contexts, critic,
                              progress=progress)
    result.write_json(out_dir / "analysis.json")
    plots = write_plots(result, out_dir)
    write_html(result, out_dir / "analysis.html", max_rollouts=max_html, plots=plots)
    return result
