"""The world's simulated teachers: answer world problems without a model, with a configurable error rate
and style, so the offline pipelines (AdvDistill, MAPD) run end to end on the model organism without an API.
They have the interface of every teacher (:class:`mentor.teachers.Teacher`).

**How the simulated teacher knows the problem.** It reads it from the messages, as a real teacher does: a
world question (``Work modulo 31. Let a = 7, ... What is f?``) states the whole problem, so
:func:`~mentor.world.problems.parse_question` recovers it from the last user message, wherever it stands in
the prompt. No side channel carries the :class:`~mentor.records.Problem`, so a prompt template changed by a
user reaches the simulated teacher exactly as it reaches a real one. What it writes depends on the kind of
request (:meth:`SimulatedWorldTeacher.request_kind`), recognised by the MAPD committee's prompt templates
(:mod:`mentor.feedback.committee`): a ``solve`` or ``rationale`` request gets a solution, an
``explanation`` request an explanation of the student's answer quoted in it, a ``review`` request a review
of the rationale quoted in it, ending with its score in brackets. A request that states no world question
is a clear error.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections import Counter
from typing import Any

from mentor.records import Problem
from mentor.sampling import Sample, SamplingParams
from mentor.world.critic import corrected_solution, critique
from mentor.world.problems import (
    ERROR_KINDS,
    WorldProblem,
    alternative_solution,
    alternative_step,
    canonical_solution,
    corrupt_trace,
    format_trace,
    parse_question,
    parse_trace,
    question_text,
)

Messages = list[dict[str, Any]]
STYLES = ("canonical", "alternative")


class SimulatedWorldTeacher:
    """A teacher of the world that writes step-tagged solutions, some with one injected error.

    For each sample it writes the canonical solution (``style="canonical"``) or an alternative derivation in
    other words and, where one exists, another order (``style="alternative"``); with probability
    ``error_rate`` it writes instead a trace with one error of a kind drawn from ``error_kinds`` (see
    :func:`~mentor.world.problems.corrupt_trace`: a wrong result, a wrong operand, a skipped step, or a trace
    that stops early) at a uniformly drawn step, worded in the teacher's style. Everything is determined by
    (``seed``, ``params.seed``, the question, the sample index); with temperature 0 the sample index is
    ignored, as a greedy model answers the same every time.

    For the MAPD committee (:mod:`mentor.feedback.committee`) it also writes:

    - *explanations* of a student's answer: the world's exact step critic names the first wrong step and
      gives the corrected trace; with probability ``error_rate`` the explanation names another step (a
      wrong explanation);
    - *reviews* of a rationale: the critic checks it and the score follows from what it finds (5 correct,
      3 a missing step, 2 incomplete or a wrong step after the first, 1 a wrong first step), moved by one
      with probability ``review_noise``; with probability ``malformed_review_rate`` the review is malformed
      instead (no score, a score of [7], or "4/5" without brackets), so the unparseable path is exercised.

    ``params.max_new_tokens`` counts whitespace-separated words: a longer answer is cut there with
    ``finish_reason="length"``. ``delay_s`` sleeps that long per sample, to make a demo or a kill test
    slow enough to watch; it changes nothing else.
    """

    def __init__(self, name: str, error_rate: float = 0.2, style: str = "canonical", seed: int = 0, *,
                 error_kinds: tuple[str, ...] = ERROR_KINDS, delay_s: float = 0.0, review_noise: float = 0.1,
                 malformed_review_rate: float = 0.0) -> None:
        if not name:
            raise ValueError("a teacher needs a name")
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError(f"teacher error_rate must be in [0, 1], got {error_rate}")
        if style not in STYLES:
            raise ValueError(f"unknown teacher style {style!r}; choose from {', '.join(STYLES)}")
        bad = [k for k in error_kinds if k not in ERROR_KINDS]
        if bad or not error_kinds:
            raise ValueError(f"teacher error_kinds must be a non-empty subset of {list(ERROR_KINDS)}, got "
                             f"{list(error_kinds)}")
        if delay_s < 0:
            raise ValueError(f"teacher delay_s must be >= 0, got {delay_s}")
        for label, value in (("review_noise", review_noise), ("malformed_review_rate", malformed_review_rate)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"teacher {label} must be in [0, 1], got {value}")
        self.review_noise = review_noise
        self.malformed_review_rate = malformed_review_rate
        self.name = name
        self.error_rate = error_rate
        self.style = style
        self.seed = seed
        self.error_kinds = tuple(error_kinds)
        self.delay_s = delay_s
        self._stats: Counter[str] = Counter()

    def __repr__(self) -> str:
        return (f"SimulatedWorldTeacher({self.name!r}, error_rate={self.error_rate}, style={self.style!r}, "
                f"seed={self.seed})")

    def identity(self) -> dict[str, Any]:
        """What decides this teacher's answers (recorded by resumable stages)."""
        return {"name": self.name, "error_rate": self.error_rate, "style": self.style, "seed": self.seed,
                "error_kinds": list(self.error_kinds), "review_noise": self.review_noise,
                "malformed_review_rate": self.malformed_review_rate}

    @staticmethod
    def request_kind(messages: Messages) -> tuple[str, WorldProblem]:
        """What is asked (solve, rationale, explanation, review), and of which world problem (read from the
        last user message)."""
        from mentor.feedback.committee import request_kind

        text = _last_user(messages)
        problem = parse_question(text)
        if problem is None:
            raise ValueError(f"the simulated world teacher found no world question in the request "
                             f"{text[:120]!r}; it answers world problems only")
        return request_kind(text), problem

    def chat(self, messages_list: list[Messages], params: SamplingParams) -> list[list[Sample]]:
        out = []
        for messages in messages_list:
            kind, problem = self.request_kind(messages)
            text_in = _last_user(messages) if kind in ("explanation", "explanation_review", "review") else ""
            # a rationale is a solve (same key: the same answers); the other kinds also depend on the text asked about
            key = json.dumps(["solve", problem.to_meta()] if kind in ("solve", "rationale")
                             else [kind, problem.to_meta(), text_in], sort_keys=True)
            row = []
            for j in range(params.n):
                index = 0 if params.temperature == 0 else j
                rng = random.Random(f"{self.seed}/{params.seed}/{key}/{index}")
                if kind == "explanation":
                    text = self.explain(problem, text_in, rng)
                elif kind == "review":
                    text = self.review(problem, text_in, rng)
                elif kind == "explanation_review":
                    text = self.review_explanation(problem, text_in, rng)
                else:
                    text = self.solve(problem, rng)
                row.append(_cut(text, params.max_new_tokens))
                self._stats["requests"] += 1
                if self.delay_s:
                    time.sleep(self.delay_s)
            out.append(row)
        return out

    def solve(self, problem: WorldProblem, rng: random.Random) -> str:
        """One solution of ``problem``: right, or with one injected error, in the teacher's style."""
        if rng.random() < self.error_rate:
            kind = rng.choice(self.error_kinds)
            trace = corrupt_trace(problem, rng, kind, rng.randint(1, len(problem.defs)))
            return trace if self.style == "canonical" else restyle(trace, rng.randrange(2))
        if self.style == "canonical":
            return canonical_solution(problem)
        return alternative_solution(problem, rng)

    def explain(self, problem: WorldProblem, request: str, rng: random.Random) -> str:
        """An explanation of the student's answer quoted in ``request``: the exact critique, or (with
        probability ``error_rate``) one that blames another step."""
        from mentor.feedback.committee import extract_section

        feedback = critique(_as_problem(problem), extract_section(request, "Student answer") or "")
        trace = corrected_solution(feedback)
        if rng.random() < self.error_rate:  # a wrong explanation: it blames a step that is not the first wrong one
            steps = [k for k in range(1, len(problem.defs) + 1) if k != feedback.first_error_step]
            if not steps:
                return "All steps are correct.\n" + trace
            return f"Step {rng.choice(steps)} is wrong; it is fixed below and the rest is recomputed.\n{trace}"
        if feedback.case == "correct":
            return feedback.critique
        return f"The answer is wrong. {feedback.critique}"

    def review(self, problem: WorldProblem, request: str, rng: random.Random) -> str:
        """A review of the rationale quoted in ``request``, ending with its score in brackets."""
        from mentor.feedback.committee import extract_section

        if rng.random() < self.malformed_review_rate:
            return rng.choice(["The rationale looks reasonable to me.", "Every step checks out. Score: [7]",
                               "I would rate this rationale 4/5."])
        rationale = extract_section(request, "Rationale to review") or ""  # the critic reads every wording
        feedback = critique(_as_problem(problem), rationale)
        if feedback.case == "correct":
            score, verdict = 5, "Every step is correct and the final answer matches."
        elif feedback.case == "missing_step":
            score, verdict = 3, f"Step {feedback.first_error_step} is missing."
        elif feedback.case == "incomplete":
            score, verdict = 2, "The solution stops before the answer."
        else:
            first = feedback.first_error_step or 1
            score, verdict = (1 if first == 1 else 2), f"Step {first} is wrong."
        if rng.random() < self.review_noise:
            score = min(5, max(1, score + rng.choice((-1, 1))))
        return f"{verdict} Score: [{score}]"

    def review_explanation(self, problem: WorldProblem, request: str, rng: random.Random) -> str:
        """A review of another teacher's explanation of a student's answer: 5 when it blames the step the
        exact critic finds first wrong (or calls a correct answer correct), 1 otherwise; noise and
        malformed reviews as in :meth:`review`."""
        from mentor.feedback.committee import extract_section

        if rng.random() < self.malformed_review_rate:
            return rng.choice(["A fine explanation.", "Spot on. Score: [9]", "I'd give it 5/5."])
        feedback = critique(_as_problem(problem), extract_section(request, "Student answer") or "")
        explanation = extract_section(request, "Explanation to review") or ""
        blamed = re.search(r"Step (\d+) is (?:wrong|missing)", explanation)
        if feedback.case == "correct":
            right = blamed is None and "All steps are correct" in explanation
        elif feedback.case == "incomplete" or "final answer is wrong" in feedback.critique:
            right = blamed is None and ("incomplete" in explanation or "final answer is wrong" in explanation)
        else:
            right = blamed is not None and int(blamed.group(1)) == feedback.first_error_step
        score = 5 if right else 1
        if rng.random() < self.review_noise:
            score = min(5, max(1, score + rng.choice((-1, 1))))
        verdict = "It names the first wrong step." if right else "It does not name the first wrong step."
        return f"{verdict} Score: [{score}]"

    def stats(self) -> dict[str, int]:
        return dict(self._stats)

    def close(self) -> None:
        pass


def _last_user(messages: Messages) -> str:
    users = [m for m in messages if m.get("role") == "user"]
    return str(users[-1]["content"]) if users else ""


def _as_problem(problem: WorldProblem) -> Problem:
    return Problem(id="request", question=question_text(problem), answer=str(problem.answer),
                   meta=problem.to_meta())


def restyle(trace: str, style: int) -> str:
    """A canonical-notation trace reworded in one of the alternative wordings (steps it cannot read are
    kept as they are; the answer line is kept)."""
    steps, answer = parse_trace(trace)
    bodies = [
        alternative_step(s.name, s.left, s.op, s.right, s.x, s.y, s.integer, s.result, style) if s.parsed else s.body
        for s in steps
    ]
    return format_trace(bodies, answer)


def _cut(text: str, max_words: int) -> Sample:
    """The text, or its first ``max_words`` words (spacing kept) with finish_reason "length"."""
    words = list(re.finditer(r"\S+", text))
    if len(words) <= max_words:
        return Sample(text, [], [], "stop")
    return Sample(text[: words[max_words - 1].end()], [], [], "length")

