"""The world's exact step critic: checks every step of a trace and writes the step-aligned critique.

The critique follows docs/methods.md, section 1: correct steps are copied verbatim up to the first error, the
first wrong step is rewritten in the same notation, and the rest is continued correctly. The four cases:

- ``correct``: every step and the answer are right; the critique reproduces the trace;
- ``missing_step``: a step uses a derived variable that no earlier step computed; the missing step is
  inserted before it (the solver's step is kept when it is otherwise right);
- ``incomplete``: the trace stops before the answer; it is finished;
- ``incorrect``: the earliest wrong step (wrong expression, wrong substitution, wrong result, or not
  readable) is rewritten and everything after it is recomputed.

The wrong span itself is never quoted: the critique names the step by number and gives its fix.
"""

from __future__ import annotations

from mentor.feedback.headers import critique_header
from mentor.records import Feedback, Problem
from mentor.world.problems import OPS, ParsedStep, WorldProblem, format_trace, parse_trace, step_body

AUTHOR = "world-exact-critic"


def _check(wp: WorldProblem, step: ParsedStep, known: set[str]) -> str:
    """``ok``, ``missing`` (uses a derived variable not computed yet) or ``wrong``."""
    if not step.parsed or step.name in known:
        return "wrong"
    definition = wp.definition(step.name)
    if definition is None:
        return "wrong"
    _, def_left, def_op, def_right = definition
    if (step.left, step.op, step.right) != (def_left, def_op, def_right):
        return "wrong"
    if not {def_left, def_right} <= known:
        return "missing"
    left, right = wp.values[def_left], wp.values[def_right]
    if (step.x, step.y, step.integer, step.result) != (left, right, OPS[def_op](left, right),
                                                        wp.apply(def_op, left, right)):
        return "wrong"
    return "ok"


def _missing_before(wp: WorldProblem, name: str, known: set[str]) -> list[str]:
    """Derived variables that ``name`` needs and that are not known yet, in definition order."""
    needed: set[str] = set()
    stack = list(wp.definition(name)[1::2])
    while stack:
        var = stack.pop()
        if var in known or var in needed or var in wp.inputs:
            continue
        needed.add(var)
        stack.extend(wp.definition(var)[1::2])
    return [d[0] for d in wp.defs if d[0] in needed]


def _remaining(wp: WorldProblem, known: set[str]) -> list[str]:
    return [d[0] for d in wp.defs if d[0] not in known]


def critique(problem: Problem, completion: str) -> Feedback:
    """The exact step-aligned critique of ``completion`` for a world problem."""
    wp = WorldProblem.from_meta(problem.meta)
    steps, answer = parse_trace(completion)
    known = set(wp.inputs)
    bodies: list[str] = []
    verdicts: list[str] = []
    case, error_step, at_answer = "correct", None, False

    def add_correct(names: list[str]) -> None:
        for name in names:
            bodies.append(step_body(wp, name))
            known.add(name)

    for step in steps:
        status = verdict = _check(wp, step, known)
        if status == "missing":
            if case == "correct":
                case, error_step = "missing_step", len(bodies) + 1
            add_correct(_missing_before(wp, step.name, known))
            status = _check(wp, step, known)
        if status == "ok":
            bodies.append(step.body)  # copied verbatim
            known.add(step.name)
            verdicts.append("correct" if verdict == "ok" else "missing")  # one verdict per solver step
            continue
        if case == "correct":
            case, error_step = "incorrect", len(bodies) + 1
        verdicts.append("wrong")
        break  # everything after the first wrong step is recomputed
    else:
        if wp.target not in known or answer is None:
            if case == "correct":
                case, error_step = "incomplete", len(bodies) + 1
        elif answer != str(wp.answer) and case == "correct":
            case, error_step, at_answer = "incorrect", len(bodies) + 1, True
    if case != "correct" and not at_answer:  # a correct trace may leave out steps the target never uses
        add_correct(_remaining(wp, known))
    corrected = format_trace(bodies, wp.answer)
    return Feedback(
        problem_id=problem.id,
        critique=critique_header(case, error_step, at_answer) + "\n" + corrected,
        corrected=corrected,
        case=case,
        author=AUTHOR,
        first_error_step=error_step,
        step_verdicts=verdicts,
    )


def corrected_solution(feedback: Feedback) -> str:
    """The corrected trace inside a critique."""
    return feedback.corrected
