"""``mix:SPEC;SPEC``: several tasks as one, each problem handled by the task it came from."""

from __future__ import annotations

import pytest

from mentor.records import Problem
from mentor.tasks import load_task
from mentor.train.teacher_panel import route_value

SPEC = "mix:world:steps=2;world:steps=4,inputs=2"


def test_problems_alternate_between_the_tasks_and_each_is_its_own_tasks_problem():
    mix, short, long = load_task(SPEC), load_task("world:steps=2"), load_task("world:steps=4,inputs=2")
    problems = mix.problems("validation", n=5)
    assert [p.meta["steps"] for p in problems] == [2, 4, 2, 4, 2]
    assert [p.id for p in problems[0::2]] == [p.id for p in short.problems("validation", n=3)]
    assert [p.id for p in problems[1::2]] == [p.id for p in long.problems("validation", n=2)]
    assert [p.id for p in mix.problems("validation", n=9)][:5] == [p.id for p in problems]  # stable in n
    assert [route_value(p, "source") for p in problems[:2]] == [short.name, long.name]
    assert [route_value(p, "meta.steps") for p in problems[:2]] == ["2", "4"]


def test_each_problem_is_verified_and_critiqued_by_its_own_task():
    mix = load_task(SPEC)
    own = {task.name: task for task in (load_task("world:steps=2"), load_task("world:steps=4,inputs=2"))}
    short_problem, long_problem = mix.problems("validation", n=2)
    for problem in (short_problem, long_problem):
        assert mix.verify(problem, problem.solution).correct
        assert mix.gold_trace(problem) == own[problem.source].gold_trace(problem)
        assert mix.prompt(problem) == own[problem.source].prompt(problem)
        wrong = problem.solution.replace(f"<answer> {problem.answer}", "<answer> 999")
        assert not mix.verify(problem, wrong).correct
        assert mix.critique(problem, wrong) is not None
    # the 4-step problem's own critic, not the 2-step task's, reads its four steps
    assert "<step_4>" in long_problem.solution and "<step_4>" not in short_problem.solution


@pytest.mark.parametrize(("spec", "match"), [
    ("mix:world:steps=2", "at least two tasks"),
    ("mix:world:steps=2;world:steps=2", "must differ"),
    ("mix:world:steps=2;;world:steps=3", "separated by ';'"),
    ("mix:world:steps=2;mix:world:steps=3;world", "none a mixture"),
    ("mix:world:steps=2;nosuchtask", "nosuchtask"),
])
def test_bad_mixtures_are_refused(spec, match):
    with pytest.raises(ValueError, match=match):
        load_task(spec)


def test_a_problem_from_elsewhere_is_refused_by_name():
    stranger = Problem(id="x-1", question="q", answer="1", source="elsewhere")
    with pytest.raises(ValueError, match="comes from 'elsewhere'"):
        load_task(SPEC).verify(stranger, "<answer> 1")
