"""GymTask: reasoning-gym generators as mentor problems, scored by reasoning-gym's own checkers."""

from __future__ import annotations

import json

import pytest

from mentor.records import Problem, from_dict, to_dict
from mentor.tasks.gym import GymTask, generator_names, split_seed


@pytest.fixture(scope="module")
def arithmetic() -> GymTask:
    return GymTask("basic_arithmetic", max_terms=3, max_digits=2)


def test_basic_arithmetic_problems(arithmetic):
    problems = arithmetic.problems("train", n=5, seed=0)
    assert len(problems) == 5
    assert [p.id for p in problems] == [f"basic_arithmetic-train-0-{i}" for i in range(5)]
    for problem in problems:
        assert problem.question.startswith("Calculate ")
        assert problem.answer.lstrip("-").replace(".", "").isdigit()
        assert problem.source == "reasoning_gym/basic_arithmetic"
        json.dumps(problem.meta)  # JSON-serialisable
    assert arithmetic.problems("train", n=5, seed=0) == problems  # deterministic
    assert len(arithmetic.problems("train", seed=0)) == arithmetic.size


def test_gold_answer_is_correct_and_a_wrong_one_is_wrong(arithmetic):
    for problem in arithmetic.problems("test", n=5):
        for completion in (
            f"So the result is \\boxed{{{problem.answer}}}.",
            f"Answer: {problem.answer}",
        ):
            verdict = arithmetic.verify(problem, completion)
            assert (verdict.correct, verdict.reward, verdict.reason) == (True, 1.0, "ok"), completion
        wrong = arithmetic.verify(problem, f"\\boxed{{{int(float(problem.answer)) + 1000}}}")
        assert (wrong.correct, wrong.reason, wrong.format_ok) == (False, "wrong", True)
        assert wrong.reward < 1.0
        assert arithmetic.verify(problem, problem.answer).reason == "no_answer"  # a bare number: no marker
        empty = arithmetic.verify(problem, "   ")
        assert (empty.correct, empty.reason, empty.reward, empty.extracted) == (False, "no_answer", 0.0, None)


def test_bare_text_answer_counts_only_with_the_fall_back():
    task = GymTask("family_relationships")
    problem = task.problems("test", n=1)[0]
    assert not problem.answer.isdigit()
    assert task.verify(problem, f"Answer: {problem.answer}").correct
    assert task.verify(problem, problem.answer).reason == "no_answer"  # no marker: no answer
    lenient = GymTask("family_relationships", fallback=True)
    assert lenient.verify(problem, problem.answer).correct  # the whole text, scored whole
    assert lenient.verify(problem, "I am not sure.").reason == "no_answer"


def test_splits_and_seeds_do_not_overlap(arithmetic):
    train = {p.question for p in arithmetic.problems("train", n=50)}
    test = {p.question for p in arithmetic.problems("test", n=50)}
    assert len(train & test) < 5  # tiny expressions can coincide by chance, but the items are drawn apart
    assert split_seed("basic_arithmetic", "train", 0) != split_seed("basic_arithmetic", "test", 0)
    # reasoning-gym seeds item i with seed + i, so seeds 0 and 1 must not be neighbours.
    assert (
        abs(split_seed("basic_arithmetic", "train", 0) - split_seed("basic_arithmetic", "train", 1)) > 10**4
    )


@pytest.mark.parametrize("name, stores_entry", [("basic_arithmetic", False), ("gsm_symbolic", True)])
def test_verify_after_a_json_round_trip(name, stores_entry):
    """Entries with tuples in their metadata are regenerated from (name, seed, index); plain ones are kept."""
    problem = GymTask(name).problems("train", n=3)[2]
    assert ("entry" in problem.meta) is stores_entry
    restored = from_dict(Problem, json.loads(json.dumps(to_dict(problem))))
    fresh = GymTask(name)  # a new task, as in a later evaluation job
    assert fresh.verify(restored, f"\\boxed{{{restored.answer}}}").correct


def test_mismatched_problem_is_refused(arithmetic):
    problem = arithmetic.problems("train", n=1)[0]
    with pytest.raises(ValueError, match="not from reasoning-gym generator 'chain_sum'"):
        GymTask("chain_sum").verify(problem, "1")
    with pytest.raises(ValueError, match="different question"):
        GymTask("basic_arithmetic", min_terms=5, max_terms=6).verify(problem, "1")


def test_unknown_name_and_bad_config():
    assert "basic_arithmetic" in generator_names()
    with pytest.raises(
        ValueError, match=r"unknown reasoning-gym generator 'basic_arithmatic'.*basic_arithmetic"
    ):
        GymTask("basic_arithmatic")
    with pytest.raises(ValueError, match="bad config"):
        GymTask("basic_arithmetic", no_such_field=1)


def test_generator_without_gold_answer_is_refused():
    with pytest.raises(ValueError, match="gives no gold answer"):
        GymTask("propositional_logic").problems("test", n=1)
