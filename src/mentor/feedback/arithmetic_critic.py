"""A programmatic step critic for arithmetic in free-form text (issue 21): the study's step-aligned
critique (docs/methods.md, section 1) for solutions a real model writes, not only the world's traces.

It finds every claimed equation (:func:`~mentor.feedback.arithmetic.find_steps`), checks each exactly, and
writes which step is wrong, the step fixed, and the rest recomputed:

- ``correct``: every step is right and the marked final answer is the gold one;
- ``incorrect`` at a step: the first step whose claimed value is wrong (an *arithmetic* error), or, when the
  problem's operands are known (an expression task such as reasoning-gym's chain_sum), the first step that
  uses a number neither in the question nor found by an earlier step (an *operand* error); at the answer:
  every step is right but the marked answer is not the gold one;
- ``incomplete``: every step is right but no answer is marked.

The corrected solution copies the right steps verbatim, fixes the wrong one (same left side, right value),
and recomputes the steps after it with the right value in place of the wrong one. When that does not reach
the gold answer (an operand error, a route that was wrong anyway, a solution that stopped early), the rest
comes from the reference solution, from the first reference step past what the right steps already found.
A missing step cannot be told apart from a step done in the head in free text, so that case is not used.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fractions import Fraction

from mentor.feedback.arithmetic import (
    ExpressionError,
    Step,
    as_number,
    evaluate,
    find_steps,
    operands,
    parse_expression,
    render,
    solve_steps,
    substitute,
    write,
)
from mentor.feedback.function_critic import TraceByTraceCritic
from mentor.feedback.headers import critique_header
from mentor.records import Feedback, Problem

AUTHOR = "arithmetic-step-critic"
ERROR_KINDS = ("arithmetic", "operand", "answer", "incomplete")


def answer_line(value: str) -> str:
    return f"The answer is \\boxed{{{value}}}."


def reference_steps(problem: Problem) -> list[tuple[str, Fraction]]:
    """The reference solution as ``(expression, value)`` steps: solved from the problem's expression
    (``meta["expression"]``) when it has one, else read from its written solution."""
    expression = (problem.meta or {}).get("expression")
    if expression:
        try:
            return solve_steps(expression)
        except ExpressionError:
            pass
    return [(step.expressions[0], step.value) for step in find_steps(problem.solution or "")]


def reference_solution(expression: str) -> str:
    """A worked solution of an arithmetic expression, one operation a line, ending in a boxed answer."""
    lines = [f"{text} = {render(value)}" for text, value in solve_steps(expression)]
    value = evaluate(parse_expression(expression))
    if lines and render(value) != lines[-1].rsplit(" = ", 1)[1]:  # a negated bracket: -(9 - -5)
        lines.append(f"-({lines[-1].rsplit(' = ', 1)[1]}) = {render(value)}")
    return "\n".join([*lines, answer_line(render(value))])


def question_operands(problem: Problem) -> set[Fraction] | None:
    """The magnitudes of the numbers in the problem's expression, or None when it has none."""
    expression = (problem.meta or {}).get("expression")
    if not expression:
        return None
    try:
        return {abs(v) for v in operands(parse_expression(expression))}
    except ExpressionError:
        return None


def _check(step: Step, allowed: set[Fraction] | None) -> str:
    """``ok``, ``operand`` (a number from nowhere) or ``arithmetic`` (a wrong claimed value)."""
    if allowed is not None and not {abs(v) for v in operands(parse_expression(step.expressions[0]))} <= allowed:
        return "operand"
    return "ok" if step.right else "arithmetic"


def _recompute(steps: Sequence[Step], wrong: Step) -> tuple[list[str], Fraction]:
    """The steps after a fixed arithmetic error with the right values carried in: their lines and the last
    value."""
    carried = {wrong.claimed: wrong.value}
    lines, last = [wrong.fixed()], wrong.value
    for step in steps:
        tree = substitute(parse_expression(step.expressions[0]), carried)
        try:
            last = evaluate(tree)
        except ExpressionError:  # the carried value makes a divisor zero: this route cannot go on
            break
        if last != step.claimed:
            carried[step.claimed] = last
        lines.append(f"{write(tree)} = {render(last)}")
    return lines, last


def _rest_from_reference(reference: list[tuple[str, Fraction]], found: set[Fraction]) -> list[str]:
    """The reference's steps after the last one whose value the right steps already found."""
    start = max((i + 1 for i, (_, value) in enumerate(reference) if value in found), default=0)
    return [f"{text} = {render(value)}" for text, value in reference[start:]]


def critique(problem: Problem, completion: str, *, correct: bool, marked: bool) -> Feedback:
    """The step-aligned critique of ``completion``; ``correct`` and ``marked`` are the task verifier's word
    on its final answer (right; found behind an answer marker)."""
    gold = as_number(problem.answer)
    steps = find_steps(completion)
    starts = step_starts(completion, steps)
    allowed = question_operands(problem)
    reference = reference_steps(problem)
    found: set[Fraction] = set()  # what the right steps found
    right_lines: list[str] = []
    verdicts: list[str] = []
    for index, step in enumerate(steps):
        # a number from nowhere is an error only when the answer is wrong: a right answer's number may have
        # been worked out in prose or in the head
        operands_known = None if allowed is None or (correct and marked) else allowed | {abs(v) for v in found}
        kind = _check(step, operands_known)
        if kind == "ok":
            right_lines.append(step.text())
            verdicts.append("correct")
            found.update(step.values)
            continue
        verdicts.append("wrong")
        lines, last = _recompute(steps[index + 1:], step) if kind == "arithmetic" else ([], None)
        if last is None or last != gold:
            lines = _rest_from_reference(reference, found)
        return _feedback(problem, "incorrect", index + 1, verdicts, [*right_lines, *lines], gold, kind, starts)
    if correct and marked:
        return _feedback(problem, "correct", None, verdicts, right_lines, None, "", starts)
    done = bool(steps) and steps[-1].claimed == gold
    lines = [*right_lines, *([] if done else _rest_from_reference(reference, found))]
    if not marked:
        return _feedback(problem, "incomplete", len(steps) + 1, verdicts, lines, gold, "incomplete", starts)
    return _feedback(problem, "incorrect", len(steps) + 1, verdicts, lines, gold, "answer", starts)


def step_starts(completion: str, steps: list) -> list[int]:
    """Where each step begins in ``completion``, then where the answer's part begins: the end of the last
    step's equation (all of the text when there is no step)."""
    return [s.start for s in steps] + [steps[-1].end if steps else 0]


def _feedback(problem: Problem, case: str, error_step: int | None, verdicts: list[str], lines: list[str],
              gold: Fraction | None, kind: str, starts: list[int]) -> Feedback:
    answer = render(gold) if gold is not None else problem.answer
    corrected = "\n".join([*lines, answer_line(answer)]) if case != "correct" else "\n".join(lines)
    return Feedback(
        problem_id=problem.id,
        critique=critique_header(case, error_step, at_answer=kind == "answer" and error_step > 1) + "\n" + corrected,
        corrected=corrected,
        case=case,
        author=AUTHOR,
        first_error_step=error_step,
        step_verdicts=verdicts,
        error_kind=kind,
        step_starts=starts,
    )


class ArithmeticCritic(TraceByTraceCritic):
    """``critique_many(problems, traces)`` for any task with numeric gold answers: the task's verifier says
    whether the final answer is right and marked, :func:`critique` does the rest. A problem whose gold
    answer is not a number gets an ``unusable`` Feedback (no teacher signal), counted in ``stats``."""

    name = AUTHOR

    def __init__(self, verify: Callable[[Problem, str], object]) -> None:
        super().__init__()
        self.verify = verify

    def feedback_on(self, problem: Problem, trace: str) -> Feedback | None:
        if as_number(problem.answer) is None:
            return None
        verdict = self.verify(problem, trace)
        return critique(problem, trace, correct=verdict.correct, marked=verdict.format_ok)
