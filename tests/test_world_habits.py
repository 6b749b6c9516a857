"""The world's v2 properties in closed form: answers depend on every step, the solver's habits, the
critic on both wordings, and the self-teacher's training examples."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mentor.tasks.world import (
    WorldConfig,
    WorldProblem,
    WorldTask,
    answer_depends_on_every_step,
    canonical_solution,
    match_step,
    parse_trace,
)
from mentor.tasks.world_critic import critique
from mentor.tasks.world_habits import HABITS, Habits, first_departure, habit_trace, swap_steps
from mentor.world_model import WorldModelConfig, fact_drill, train_problems, training_texts

TASK = WorldTask()


def problem(seed: int):
    return TASK.problems("validation", n=1, seed=seed)[0]


def test_default_world_has_a_prime_modulus_and_no_dead_steps():
    problems = TASK.problems("test", n=300)
    assert TASK.config.modulus == 17 and TASK.config.ops == ("+", "-")
    assert all(answer_depends_on_every_step(WorldProblem.from_meta(p.meta)) for p in problems)
    top = max(sum(p.answer == a for p in problems) for a in {p.answer for p in problems})
    assert top / len(problems) < 0.12  # no constant answer is worth much (1/17 = 5.9% on average)


def test_a_dead_step_is_detected():
    # e = d + a, f = e - d: f = a whatever d is, so d's step is dead
    wp = WorldProblem(13, {"a": 1, "b": 2}, [("d", "a", "+", "b"), ("e", "d", "+", "a"), ("f", "e", "-", "d")])
    assert not answer_depends_on_every_step(wp)
    wp = WorldProblem(13, {"a": 1, "b": 2}, [("d", "a", "+", "b"), ("e", "d", "+", "a"), ("f", "e", "+", "d")])
    assert answer_depends_on_every_step(wp)


def test_no_habits_is_the_canonical_trace():
    for seed in range(20):
        wp = WorldProblem.from_meta(problem(seed).meta)
        assert habit_trace(wp, Habits(0, 0, 0, 0, 0), random.Random(seed)) == canonical_solution(wp)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 5000), data=st.data())
def test_each_habit_is_found_by_the_critic_and_one_error_always_changes_the_answer(seed, data):
    p = problem(seed)
    wp = WorldProblem.from_meta(p.meta)
    n = len(wp.defs)
    kind = data.draw(st.sampled_from([h for h in HABITS if h != "reword"]))
    if kind == "swap":
        if not swap_steps(wp):
            return
        step = data.draw(st.sampled_from(swap_steps(wp)))
    else:
        step = data.draw(st.integers(0, n - 2 if kind == "skip" else n - 1))
    trace = habit_trace(wp, Habits(), random.Random(seed), forced=(kind, step))
    feedback = critique(p, trace)
    expected = {"swap": "incorrect", "slip": "incorrect", "skip": "missing_step", "truncate": "incomplete"}[kind]
    assert feedback.case == expected
    if kind in ("swap", "slip"):
        assert feedback.first_error_step == step + 1
        assert not TASK.verify(p, trace).correct  # the answer depends on every step: no luck
    if kind == "swap":
        _, left, _, right = wp.defs[step]
        x, y = wp.values[left], wp.values[right]
        found = match_step(trace.splitlines()[step].split("> ", 1)[1])  # in whichever wording it was written
        assert found is not None and (int(found[1]["x"]), int(found[1]["y"])) == (y, x)
        assert (int(found[1]["lv"]), int(found[1]["rv"]), int(found[1]["z"])) == (x, y, (y - x) % wp.modulus)


def test_habit_rates_show_in_many_traces():
    rng = random.Random(0)
    habits = Habits(swap=1.0, slip=0.0, skip=0.0, truncate=0.0, reword=0.0)
    swapped = eligible = 0
    for seed in range(200):
        wp = WorldProblem.from_meta(problem(seed).meta)
        eligible += bool(swap_steps(wp))
        swapped += habit_trace(wp, habits, rng) != canonical_solution(wp)
    assert swapped == eligible  # the misconception strikes whenever x - y has x < y on a correct page
    truncating = Habits(swap=0.0, slip=0.0, skip=0.0, truncate=1.0, reword=0.0)
    wp = WorldProblem.from_meta(problem(0).meta)
    assert all("<answer>" not in habit_trace(wp, truncating, rng) for _ in range(20))


def test_reworded_steps_are_correct_steps_in_the_reference_wordings():
    rng = random.Random(0)
    wordings, total = [0, 0, 0], 0
    for seed in range(200):
        p = problem(seed)
        wp = WorldProblem.from_meta(p.meta)
        always = habit_trace(wp, Habits(0, 0, 0, 0, reword=1.0), rng)
        assert critique(p, always).case == "correct"
        assert all(match_step(line.split("> ", 1)[1])[0] > 0 for line in always.splitlines()[:-1])
        for line in habit_trace(wp, Habits(0, 0, 0, 0, reword=0.25), rng).splitlines()[:-1]:
            wordings[match_step(line.split("> ", 1)[1])[0]] += 1
            total += 1
    share = (wordings[1] + wordings[2]) / total  # 800 steps: se 0.015
    assert 0.19 < share < 0.31 and min(wordings[1:]) > 0.3 * (wordings[1] + wordings[2])
    with pytest.raises(ValueError, match="cannot force"):
        habit_trace(WorldProblem.from_meta(problem(0).meta), Habits(), rng, forced=("reword", 0))


def test_habits_are_validated():
    with pytest.raises(ValueError, match="habit swap"):
        Habits(swap=1.5)
    wp = WorldProblem.from_meta(problem(0).meta)
    with pytest.raises(ValueError, match="cannot force"):
        habit_trace(wp, Habits(), random.Random(0), forced=("typo", 0))


def test_first_departure():
    assert first_departure("a b c", "a b c d") is None
    assert first_departure("a b x d", "a b c d") == len("a b x")
    assert first_departure("a bb", "a b") == len("a bb")
    assert first_departure("a b c", "a b") == len("a b c")


def test_reference_wordings_are_read_and_checked():
    for seed in range(30):
        p = problem(seed)
        steps, answer = parse_trace(p.solution)
        assert all(s.parsed for s in steps) and answer == p.answer
        assert critique(p, p.solution).case == "correct"
        wrong = p.solution.replace("gives", "gives 1 +", 1) if "gives" in p.solution else p.solution.replace(
            "makes", "makes 1 +", 1)
        assert critique(p, wrong).case == "incorrect"


def test_teacher_examples_continue_consistently_from_the_page():
    config = WorldModelConfig(train_problems=300, mix={"critique": 1.0}, continue_rate=1.0)
    problems = train_problems(config)
    by_question = {p.question: p for p in problems}
    continued = 0
    for user, page, completion in training_texts(config, problems):
        if not page:
            continue
        continued += 1
        p = by_question[user.split("\n\n")[0]]
        text = page + completion
        steps, answer = parse_trace(text)
        values = dict(WorldProblem.from_meta(p.meta).inputs)
        values.update({name: int(z) for name, z in re.findall(r"(?:so|hence|reduced) ([a-z]) = (\d+)", text)})  # as the page says
        # after the departure every step computes correctly from the values on the page
        page_steps = page.count("<step_")
        for s in steps[page_steps:]:
            assert s.parsed
            wp = WorldProblem.from_meta(p.meta)
            _, left, op, right = wp.definition(s.name)
            assert (s.x, s.y) == (values.get(left, wp.values[left]), values.get(right, wp.values[right]))
            assert s.result == wp.apply(op, s.x, s.y)
    assert continued > 200


def test_reference_examples_follow_the_reference():
    config = WorldModelConfig(train_problems=100, mix={"reference": 1.0}, continue_rate=0.5)
    problems = train_problems(config)
    texts = training_texts(config, problems)
    by_question = {p.question: p for p in problems}
    for user, page, completion in texts:
        p = by_question[user.split("\n\n")[0]]
        if not page:
            assert completion == p.solution
        else:  # the page's step finished as written, then the reference's wording
            full = page + completion
            assert TASK.verify(p, full).correct and critique(p, full).case == "correct"
            assert full.splitlines()[-1] == p.solution.splitlines()[-1]
            style = match_step(parse_trace(p.solution)[0][0].body)[0]
            after = parse_trace(full)[0][page.count("<step_"):]
            assert all(match_step(s.body)[0] == style for s in after)


def test_fact_drill_states_true_facts():
    config = WorldModelConfig()
    wp = WorldProblem.from_meta(problem(0).meta)
    for line in fact_drill(wp, config, random.Random(0)).splitlines():
        x, op, y, _, integer, _, z = line.split()
        assert (int(integer) % wp.modulus, wp.apply(op, int(x), int(y))) == (int(z), int(z))


def test_world_config_other_moduli_still_generate():
    task = WorldTask(WorldConfig(modulus=2, steps=3))  # too small for every step to matter: keeps the last
    assert len(task.problems("test", n=5)) == 5
