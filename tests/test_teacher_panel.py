"""Several separate teachers (issue 22, part 3): routed by a problem field, or mixed with weights."""

from __future__ import annotations

import json

import pytest

from mentor.records import Problem
from mentor.tasks import load_task
from mentor.train.onpolicy import OnPolicyConfig, train_onpolicy
from mentor.train.teacher_panel import route_value
from mentor.world.solver import SHIPPED_DIR, load_world_folder
from test_separate_teacher import FAST, teachers, world  # noqa: F401  (fixtures)

EVEN = {str(v): "a" for v in range(0, 40, 2)}
ODD = {str(v): "b" for v in range(1, 40, 2)}


def _first(tmp_path, name, **overrides) -> dict:
    model, tokenizer = load_world_folder(SHIPPED_DIR)
    config = OnPolicyConfig(**{"method": "sd-none", "lr": 1e-4, **FAST, **overrides})
    train_onpolicy(model, tokenizer, load_task("world:steps=3"), config, run_dir=tmp_path / name)
    return json.loads((tmp_path / name / "metrics.jsonl").read_text().splitlines()[0])


def test_route_values():
    problem = Problem(id="p1", question="q", answer="7", source="gsm8k", meta={"level": 3})
    assert [route_value(problem, f) for f in ("source", "id", "answer", "meta.level", "meta.none")] == [
        "gsm8k", "p1", "7", "3", None]
    with pytest.raises(ValueError, match="teacher_route must be"):
        route_value(problem, "question")


def test_world_problems_carry_their_length_for_routing():
    problems = load_task("world:steps=2-4,inputs=2-3").problems("train", n=40)
    for problem in problems:
        assert route_value(problem, "meta.steps") == str(len(problem.meta["defs"]))
        assert route_value(problem, "meta.n_inputs") == str(len(problem.meta["inputs"]))
    assert {route_value(p, "meta.steps") for p in problems} == {"2", "3", "4"}


def test_routing_between_two_copies_of_one_teacher_is_that_teacher(teachers, tmp_path):  # noqa: F811
    one = _first(tmp_path, "one", teacher_model=teachers["moved"])
    routed = _first(tmp_path, "routed", teachers={"a": teachers["moved"], "b": teachers["moved"]},
                    teacher_route="answer", teacher_routes={**EVEN, **ODD})
    assert routed["generated_tokens"] == one["generated_tokens"]
    assert routed["loss"] == pytest.approx(one["loss"], rel=1e-5)
    assert routed["teacher_unrouted_tokens"] == 0


def test_a_prompt_no_teacher_is_routed_to_gets_no_signal(teachers, tmp_path):  # noqa: F811
    nobody = _first(tmp_path, "nobody", teachers={"a": teachers["moved"], "b": teachers["moved"]},
                    teacher_route="answer")  # an answer such as "7" names no teacher
    assert nobody["teacher_unrouted_tokens"] > 0 and nobody["loss"] == 0 and nobody["grad_norm"] == 0


def test_a_mixture_of_a_teacher_with_the_student_itself_halves_the_divergence_at_most(teachers, tmp_path):  # noqa: F811
    # KL is jointly convex: KL(w T + (1 - w) S0 || S0) <= w KL(T || S0) at the first step, where S = S0
    one = _first(tmp_path, "one", teacher_model=teachers["moved"], divergence="full")
    same = _first(tmp_path, "same", teachers={"a": teachers["moved"], "b": teachers["moved"]},
                  teacher_mix={"a": 1.0, "b": 3.0})
    assert same["loss"] == pytest.approx(one["loss"], rel=1e-4)  # a mixture of one distribution is itself
    half = _first(tmp_path, "half", teachers={"t": teachers["moved"], "s": str(SHIPPED_DIR)},
                  teacher_mix={"t": 1.0, "s": 1.0})
    assert 0 < half["loss"] <= 0.5 * one["loss"] + 1e-7


def test_bad_panels_are_refused(teachers):  # noqa: F811
    two = {"a": teachers["moved"], "b": teachers["moved"]}
    for overrides, message in [
        ({"teachers": {"a": teachers["moved"]}, "teacher_route": "source"}, "names two or more"),
        ({"teachers": two}, "exactly one of teacher_route"),
        ({"teachers": two, "teacher_route": "source", "teacher_mix": {"a": 1.0}}, "exactly one of teacher_route"),
        ({"teachers": two, "teacher_route": "question"}, "teacher_route must be"),
        ({"teachers": two, "teacher_mix": {"a": 1.0, "c": 1.0}}, "not in teachers: \\['c'\\]"),
        ({"teachers": two, "teacher_mix": {"a": 0.0, "b": 1.0}}, "weights must be > 0"),
        ({"teachers": two, "teacher_route": "source", "teacher_model": teachers["moved"]}, "in place of"),
    ]:
        with pytest.raises(ValueError, match=message):
            OnPolicyConfig(method="sd-none", **overrides)
