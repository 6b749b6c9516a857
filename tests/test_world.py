"""The world: generated problems, reference derivations, injected errors and the exact step critic."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mentor.records import Problem
from mentor.tasks import load_task
from mentor.world.critic import corrected_solution, critique
from mentor.world.problems import (
    ERROR_KINDS,
    OPS,
    WorldConfig,
    WorldProblem,
    WorldTask,
    alternative_step,
    canonical_solution,
    corrupt_trace,
    format_trace,
    match_step,
    parse_trace,
)


def make_problem(seed: int, steps: int = 4, modulus: int = 10) -> Problem:
    return WorldTask(WorldConfig(steps=steps, modulus=modulus)).problems("test", n=1, seed=seed)[0]


def test_problems_are_deterministic_and_splits_differ():
    task = WorldTask()
    first = task.problems("test", n=5)
    assert [p.question for p in first] == [p.question for p in task.problems("test", n=5)]
    assert first[0].question == task.problems("test", n=1)[0].question  # independent of n
    train = {p.question for p in task.problems("train", n=200)}
    test = {p.question for p in task.problems("test", n=50)}
    assert len(train & test) <= 1  # independent draws from a space of ~10^6 problems


def test_question_states_every_definition():
    problem = make_problem(0)
    wp = WorldProblem.from_meta(problem.meta)
    for name, left, op, right in wp.defs:
        assert f"{name} is {left} {op} {right}" in problem.question
    assert problem.question.endswith(f"What is {wp.target}?")


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), steps=st.integers(1, 8), modulus=st.integers(2, 30))
def test_generated_and_reference_solutions_verify(seed, steps, modulus):
    task = WorldTask(WorldConfig(steps=steps, modulus=modulus, inputs=min(3, 26 - steps)))
    problem = task.problems("test", n=1, seed=seed)[0]
    wp = WorldProblem.from_meta(problem.meta)
    assert task.verify(problem, canonical_solution(wp)).correct
    assert task.verify(problem, problem.solution).correct
    assert 0 <= int(problem.answer) < modulus


def test_reference_differs_from_canonical_in_wording():
    problem = make_problem(3)
    canonical = canonical_solution(WorldProblem.from_meta(problem.meta))
    assert problem.solution != canonical
    assert problem.solution.splitlines()[-1] == canonical.splitlines()[-1]  # same answer line


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 10_000), steps=st.integers(1, 7))
def test_critique_of_a_correct_trace_is_the_trace(seed, steps):
    problem = make_problem(seed, steps)
    trace = canonical_solution(WorldProblem.from_meta(problem.meta))
    feedback = critique(problem, trace)
    assert feedback.case == "correct"
    assert feedback.first_error_step is None
    assert corrected_solution(feedback) == trace


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 10_000), steps=st.integers(2, 7), data=st.data())
def test_critique_copies_prefix_and_fixes_the_first_error(seed, steps, data):
    problem = make_problem(seed, steps)
    wp = WorldProblem.from_meta(problem.meta)
    kind = data.draw(st.sampled_from(["result", "substitution"]))
    k = data.draw(st.integers(1, steps))
    trace = corrupt_trace(wp, random.Random(seed), kind, k)
    feedback = critique(problem, trace)
    assert feedback.case == "incorrect"
    assert feedback.first_error_step == k
    assert feedback.step_verdicts == ["correct"] * (k - 1) + ["wrong"]
    got = corrected_solution(feedback).splitlines()
    sent = trace.splitlines()
    canonical = canonical_solution(wp).splitlines()
    assert got[: k - 1] == sent[: k - 1]  # steps 1..k-1 copied verbatim
    assert got[k - 1] == canonical[k - 1] != sent[k - 1]  # step k fixed
    assert got == canonical  # and the rest continued correctly
    assert sent[k - 1].split("> ", 1)[1] not in feedback.critique  # the wrong span is never quoted


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 10_000), steps=st.integers(2, 7), data=st.data())
def test_missing_and_incomplete_traces(seed, steps, data):
    problem = make_problem(seed, steps)
    wp = WorldProblem.from_meta(problem.meta)
    k = data.draw(st.integers(1, steps))
    truncated = corrupt_trace(wp, random.Random(seed), "truncate", k)
    feedback = critique(problem, truncated)
    assert feedback.case == "incomplete"
    assert corrected_solution(feedback) == canonical_solution(wp)
    assert corrected_solution(feedback).startswith(truncated)

    skipped = corrupt_trace(wp, random.Random(seed), "skip", k)
    feedback = critique(problem, skipped)
    needed_later = any(wp.defs[k - 1][0] in d[1::2] for d in wp.defs[k:])
    if needed_later:
        first_use = next(i for i, d in enumerate(wp.defs) if i >= k and wp.defs[k - 1][0] in d[1::2])
        assert feedback.case == "missing_step"
        assert feedback.first_error_step == first_use  # inserted right where it is first needed
        assert len(feedback.step_verdicts) == len(parse_trace(skipped)[0])  # one verdict per solver step
        assert feedback.step_verdicts.count("missing") == 1
        bodies = [line.split("> ", 1)[1] for line in corrected_solution(feedback).splitlines()]
        assert sorted(bodies) == sorted(line.split("> ", 1)[1] for line in canonical_solution(wp).splitlines())
    elif k < steps:  # a step the target never uses may be left out
        assert feedback.case == "correct"
        assert corrected_solution(feedback) == skipped
    else:  # the target itself was skipped: the answer line stands without its step
        assert feedback.case == "incomplete"


def test_critic_handles_garbage_and_empty_traces():
    problem = make_problem(1)
    canonical = canonical_solution(WorldProblem.from_meta(problem.meta))
    for text in ["", "I do not know", "<step_1> blah blah\n<answer> 3", "<answer> 9999"]:
        feedback = critique(problem, text)
        assert feedback.case in ("incorrect", "incomplete")
        assert corrected_solution(feedback) == canonical


def test_world_verify_needs_the_answer_line():
    problem = make_problem(4)
    steps = canonical_solution(WorldProblem.from_meta(problem.meta)).splitlines()[:-1]
    ends_on_the_answer = "\n".join(steps)  # the last step's result is the answer, but no <answer> line
    verdict = WorldTask().verify(problem, ends_on_the_answer)
    assert (verdict.correct, verdict.reason, verdict.format_ok) == (False, "no_answer", False)
    verdict = WorldTask().verify(problem, ends_on_the_answer + f"\n<answer> {problem.answer}")
    assert (verdict.correct, verdict.reason, verdict.extracted) == (True, "ok", problem.answer)


def test_wrong_final_answer_after_correct_steps():
    problem = make_problem(2)
    wp = WorldProblem.from_meta(problem.meta)
    lines = canonical_solution(wp).splitlines()
    lines[-1] = f"<answer> {(wp.answer + 1) % wp.modulus}"
    feedback = critique(problem, "\n".join(lines))
    assert feedback.case == "incorrect"
    assert "final answer is wrong" in feedback.critique
    assert corrected_solution(feedback) == canonical_solution(wp)


def test_parse_trace_reads_steps_and_answer():
    good = "d is a - b with a = 1 and b = 2, 1 - 2 = -1 so d = 12"
    inconsistent = "e is d * d with d = 3 and d = 3, 3 * 4 = 12 so e = 12"  # uses 4 after naming 3
    alternative = "for f take d + a, d being 12 and a being 1: 12 + 1 makes 13, reduced f = 0"
    other = "g = f - a where f is 0 and a is 1; 0 - 1 gives -1, hence g = 12"
    swapped = "g = f - a where f is 0 and a is 1; 1 - 0 gives 1, hence g = 1"  # writes the operands it did not look up
    steps, answer = parse_trace(f"<step_1> {good}\n<step_2> {inconsistent}\n<step_3> junk\n<step_4> {alternative}"
                                f"\n<step_5> {other}\n<step_6> {swapped}\n<answer> 3")
    assert [s.parsed for s in steps] == [True, False, False, True, True, False]
    assert (steps[0].name, steps[0].x, steps[0].y, steps[0].integer, steps[0].result) == ("d", 1, 2, -1, 12)
    assert (steps[3].name, steps[3].left, steps[3].right, steps[3].integer, steps[3].result) == ("f", "d", "a", 13, 0)
    assert (steps[4].name, steps[4].op, steps[4].x, steps[4].y, steps[4].result) == ("g", "-", 0, 1, 12)
    assert answer == "3"
    assert [match_step(s.body)[0] if match_step(s.body) else None for s in steps] == [0, 0, None, 2, 1, 1]


@pytest.mark.parametrize("style", [0, 1])
def test_alternative_wordings_round_trip_and_the_critic_reads_them(style):
    wp = WorldProblem.from_meta(make_problem(3).meta)
    for name, left, op, right in wp.defs:
        x, y = wp.values[left], wp.values[right]
        body = alternative_step(name, left, op, right, x, y, OPS[op](x, y), wp.values[name], style)
        (step,), _ = parse_trace(f"<step_1> {body}")
        assert (step.name, step.left, step.op, step.right, step.x, step.y) == (name, left, op, right, x, y)
        assert match_step(body)[0] == style + 1
    problem = make_problem(3)
    reworded = format_trace([alternative_step(n, a, o, b, wp.values[a], wp.values[b], OPS[o](wp.values[a], wp.values[b]),
                                              wp.values[n], style) for n, a, o, b in wp.defs], wp.answer)
    assert critique(problem, reworded).case == "correct"


def test_corrupt_trace_rejects_bad_arguments():
    wp = WorldProblem.from_meta(make_problem(0).meta)
    with pytest.raises(ValueError, match="unknown error kind"):
        corrupt_trace(wp, random.Random(0), "typo", 1)
    with pytest.raises(ValueError, match="step must be"):
        corrupt_trace(wp, random.Random(0), "result", 99)
    assert set(ERROR_KINDS) == {"result", "substitution", "skip", "truncate"}


def test_world_config_validation_and_task_specs():
    with pytest.raises(ValueError, match="modulus"):
        WorldConfig(modulus=1)
    with pytest.raises(ValueError, match="ops"):
        WorldConfig(ops=("/",))
    task = load_task("world:steps=3,modulus=7")
    assert task.config.steps == 3 and task.config.modulus == 7
    with pytest.raises(ValueError, match="unknown task"):
        load_task("nonsense-task")
    with pytest.raises(ValueError, match="bad world option"):
        load_task("world:colour=red")
