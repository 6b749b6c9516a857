"""An LLM critic with the step-aligned "faithful scribe" prompt of docs/methods.md, section 1, and its parser.

The critic reads the question, a reference solution (or the gold answer) and the solver's step-tagged
trace, and answers with two header lines and a corrected trace aligned to the solver's::

    CASE: incorrect
    FIRST_ERROR: 2
    <step_1> (the solver's step 1, copied verbatim)
    <step_2> (step 2, rewritten correctly in the same notation)
    <answer> 7

:func:`parse_critique` turns that into a :class:`~mentor.records.Feedback` laid out like the world's exact
critic (one header sentence, a newline, the trace). A reply that cannot be used is case ``unusable`` with
an empty critique, never agreement: no case, no step-tagged trace, no ``<answer>`` line, or one that
quotes the solver's wrong step verbatim (such critiques spread the signal over every token).
"""

from __future__ import annotations

import re
from collections import Counter

from mentor.records import Feedback, Problem
from mentor.sampling import SamplingParams

CRITIC_INSTRUCTIONS = """\
You are a faithful scribe checking a student's step-by-step solution. You are given the question, a \
{reference_kind} and the student's trace, whose steps are tagged <step_1>, <step_2>, ... and which ends \
with an <answer> line.

Write feedback aligned to the student's trace:
- copy the student's correct steps verbatim, in the student's order, up to the first error;
- rewrite the first wrong step correctly, in the same notation as the student;
- continue correctly, in the same notation, to the final answer.
Decide which case applies:
- correct: every step and the answer are right; reproduce the trace unchanged;
- missing_step: a step relies on something never justified; insert the missing step where it belongs;
- incomplete: the trace stops before the answer; finish it;
- incorrect: fix the earliest error and recompute everything after it.
Never quote the wrong step or the wrong value; give only its correction.

Reply in exactly this format and nothing else:
CASE: <correct|missing_step|incomplete|incorrect>
FIRST_ERROR: <number of the first step you changed or inserted, or none>
<step_1> ...
<step_2> ...
<answer> final answer

<question>
{question}
</question>

<reference>
{reference}
</reference>

<student_trace>
{trace}
</student_trace>
"""
"""The critic's prompt, a ``str.format`` template with ``{question}``, ``{reference_kind}``,
``{reference}`` and ``{trace}``; pass your own as ``instructions=`` (double any literal braces)."""

CASES = ("correct", "missing_step", "incomplete", "incorrect")
UNUSABLE_REASONS = ("no_case", "no_trace", "no_answer", "quotes_error")

_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.S | re.I)
_THINK_END = re.compile(r"</think>", re.I)
_THINK_OPEN = re.compile(r"<think>.*\Z", re.S | re.I)
_FENCE = re.compile(r"^[ \t]*```[\w-]*[ \t]*$", re.M)
_CASE = re.compile(
    r"\bcase\b[\s*_`]*[:=][\s*_`\"']*(incorrect|incomplete|missing[\s_-]*step|correct)\b", re.I
)
_FIRST_ERROR = re.compile(
    r"\bfirst[\s_-]*error(?:[\s_-]*step)?\b[\s*_`]*[:=][\s*_`\"']*(?:step[\s_-]*)?(\d+|none)\b", re.I
)
_STEP_TAG = re.compile(r"<\s*step[\s_-]*(\d+)\s*>", re.I)
_STEP_CLOSE = re.compile(r"<\s*/\s*step[\s_-]*\d*\s*>", re.I)
_ANSWER = re.compile(r"<\s*answer\s*>[ \t]*([^\n]*)", re.I)
_HEADERS = {
    "correct": "All steps are correct.",
    "missing_step": "Step {k} is missing; it is inserted below and the rest is checked.",
    "incomplete": "The steps so far are correct but the solution is incomplete; it is finished below.",
    "incorrect": "Step {k} is wrong; it is fixed below and the rest is recomputed.",
}


def build_critic_messages(
    problem: Problem, trace: str, *, instructions: str = CRITIC_INSTRUCTIONS
) -> list[dict]:
    """One user message asking for the step-aligned critique of ``trace``."""
    if problem.solution:
        kind, reference = "reference solution", problem.solution
    else:
        kind, reference = "gold answer", problem.answer
    content = instructions.format(
        question=problem.question, reference_kind=kind, reference=reference, trace=trace.strip()
    )
    return [{"role": "user", "content": content}]


def strip_thinking(text: str) -> str:
    """The reply without reasoning: ``<think>...</think>`` blocks removed, everything before a stray
    ``</think>`` (the opening tag was in the prompt, as with QwQ) dropped, and an unterminated ``<think>``
    dropped to the end (the model never finished thinking, so there is no critique)."""
    text = _THINK_BLOCK.sub("", text)
    ends = list(_THINK_END.finditer(text))
    if ends:
        text = text[ends[-1].end():]
    return _THINK_OPEN.sub("", text).strip()


def parse_critique(problem: Problem, text: str, *, author: str, trace: str | None = None) -> Feedback:
    """The critic's reply as a Feedback (case ``unusable`` with an empty critique when it cannot be used).

    ``trace`` is the solver's trace that was critiqued: with it, a reply that quotes the solver's wrong
    step verbatim is unusable, and a missing ``FIRST_ERROR`` line is recovered by comparing the traces.
    """
    return _parse(problem, text, author, trace)[0]


def _parse(problem: Problem, text: str, author: str, trace: str | None) -> tuple[Feedback, str]:
    """The Feedback and ``"ok"`` or the reason the reply is unusable."""
    text = _FENCE.sub("", strip_thinking(text))
    case_match, first = _CASE.search(text), _STEP_TAG.search(text)
    if case_match is None:
        return _unusable(problem, author), "no_case"
    if first is None:
        return _unusable(problem, author), "no_trace"
    answer = _ANSWER.search(text, first.start())
    value = answer and re.sub(r"<\s*/\s*answer\s*>", "", answer.group(1), flags=re.I).strip().strip("*`")
    if not value:
        return _unusable(problem, author), "no_answer"
    bodies = _step_bodies(text[first.start() : answer.start()])
    if not all(bodies):
        return _unusable(problem, author), "no_trace"

    case = re.sub(r"[\s-]+", "_", case_match.group(1).lower())
    solver = _step_bodies(trace) if trace is not None else []
    error_step = None
    if case != "correct":
        stated = _FIRST_ERROR.search(text)
        if stated and stated.group(1).isdigit() and 1 <= int(stated.group(1)) <= len(bodies) + 1:
            error_step = int(stated.group(1))
        elif trace is not None:  # the first step where the corrected trace leaves the solver's
            error_step = next((i for i, (a, b) in enumerate(zip(bodies, solver), 1) if a != b), None)
            error_step = error_step or min(len(bodies), len(solver)) + 1
    if case == "incorrect" and error_step is not None and error_step <= len(solver):
        wrong = solver[error_step - 1]
        if wrong and (wrong in bodies or (len(wrong) >= 12 and wrong in _squash(text))):
            return _unusable(problem, author), "quotes_error"

    verdicts = ["correct"] * len(solver)
    if case in ("incorrect", "missing_step") and error_step is not None and error_step <= len(solver):
        verdicts = verdicts[: error_step - 1] + ["wrong" if case == "incorrect" else "missing"]
    lines = [f"<step_{i}> {body}" for i, body in enumerate(bodies, start=1)] + [f"<answer> {value}"]
    header = _HEADERS[case].format(k=error_step if error_step is not None else "?")
    corrected = "\n".join(lines)
    return Feedback(problem.id, header + "\n" + corrected, case, author, error_step, verdicts, corrected=corrected), "ok"


def _step_bodies(text: str) -> list[str]:
    """The bodies of the step-tagged steps before the ``<answer>`` line, whitespace squashed."""
    answer = _ANSWER.search(text)
    region = _STEP_CLOSE.sub("", text[: answer.start()] if answer else text)
    return [_squash(body) for body in _STEP_TAG.split(region)[2::2]]


def _squash(text: str) -> str:
    return " ".join(text.split())


def _unusable(problem: Problem, author: str) -> Feedback:
    return Feedback(problem_id=problem.id, critique="", case="unusable", author=author)


class LLMCritic:
    """Step-aligned critiques from a chat model behind a sampler with ``chat(messages_list, params)``
    (e.g. :class:`~mentor.sampling.openai_compatible.OpenAISampler`), decoded greedily.

    ``stats`` counts ``usable``, ``unusable`` and each unusable reason (``no_case``, ``no_trace``,
    ``no_answer``, ``quotes_error``), and ``truncated`` for unusable replies cut at ``max_new_tokens``.
    """

    def __init__(
        self, sampler, *, instructions: str = CRITIC_INSTRUCTIONS, max_new_tokens: int = 1024,
        name: str = "llm-critic",
    ) -> None:
        self.sampler = sampler
        self.instructions = instructions
        self.max_new_tokens = max_new_tokens
        self.name = name
        self.stats: Counter[str] = Counter()

    def critique_many(self, problems: list[Problem], traces: list[str]) -> list[Feedback]:
        """One greedy chat request per (problem, trace); Feedback in the same order."""
        if len(problems) != len(traces):
            raise ValueError(f"{len(problems)} problems but {len(traces)} traces")
        messages = [
            build_critic_messages(p, t, instructions=self.instructions) for p, t in zip(problems, traces)
        ]
        params = SamplingParams(n=1, temperature=0.0, max_new_tokens=self.max_new_tokens)
        replies = self.sampler.chat(messages, params) if messages else []
        out = []
        for problem, trace, (sample, *_) in zip(problems, traces, replies):
            feedback, reason = _parse(problem, sample.text, self.name, trace)
            if reason == "ok":
                self.stats["usable"] += 1
            else:
                self.stats.update(["unusable", reason])
                if sample.finish_reason == "length":
                    self.stats["truncated"] += 1
            out.append(feedback)
        return out

    def critique(self, problem: Problem, trace: str) -> Feedback:
        return self.critique_many([problem], [trace])[0]
