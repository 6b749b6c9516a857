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
    # each task's own problems, in turn, their ids prefixed by the task's spec (ids of two tasks never collide)
    assert [p.id for p in problems[0::2]] == [f"world:steps=2/{p.id}" for p in short.problems("validation", n=3)]
    assert [p.question for p in problems[1::2]] == [p.question for p in long.problems("validation", n=2)]
    assert [p.id for p in mix.problems("validation", n=9)][:5] == [p.id for p in problems]  # stable in n
    assert [route_value(p, "source") for p in problems[:2]] == ["world:steps=2", "world:steps=4,inputs=2"]
    assert [route_value(p, "meta.steps") for p in problems[:2]] == ["2", "4"]


def test_each_problem_is_verified_and_critiqued_by_its_own_task():
    mix = load_task(SPEC)
    own = {spec: load_task(spec) for spec in ("world:steps=2", "world:steps=4,inputs=2")}
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
    ("mix:world:steps=2;world:steps=2", "one distinct name each"),
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


def test_tasks_of_one_name_mix_by_their_specs():
    mix = load_task("mix:gym:chain_sum:min_terms=2,max_terms=2;gym:chain_sum:min_terms=3,max_terms=3")
    problems = mix.problems("validation", n=4)
    assert len({p.id for p in problems}) == 4
    assert [p.source for p in problems[:2]] == ["gym:chain_sum:min_terms=2,max_terms=2",
                                                "gym:chain_sum:min_terms=3,max_terms=3"]
    assert [p.question.count("+") + p.question.count("-") for p in problems[:2]] == [1, 2]


def test_a_task_that_runs_short_is_refused(tmp_path):
    data = tmp_path / "two.jsonl"
    data.write_text('{"question": "1+1?", "answer": "2"}\n{"question": "2+2?", "answer": "4"}\n')
    with pytest.raises(ValueError, match="has 2 test problems, 3 asked"):
        load_task(f"mix:world:steps=2;{data}").problems("test", n=6)


def test_a_mixture_with_a_task_without_a_critic_is_refused_a_critique_context(tmp_path):
    from mentor.evaluate import check_contexts, has_critic

    data = tmp_path / "two.jsonl"
    data.write_text('{"question": "1+1?", "answer": "2"}\n{"question": "2+2?", "answer": "4"}\n')
    mix = load_task(f"mix:world:steps=2;{data}")
    problems = mix.problems("test", n=4)
    assert not has_critic(mix, problems) and has_critic(mix, problems[:1])
    with pytest.raises(ValueError, match="no critic"):
        check_contexts(mix, problems, ["critique"])
