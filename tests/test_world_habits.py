"""The world's v2 properties in closed form: answers depend on every step, the solver's habits, the
critic on both wordings, and the self-teacher's training examples."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mentor.tasks import load_task
from mentor.world.critic import critique
from mentor.world.habits import HABITS, Habits, first_departure, habit_trace, swap_steps
from mentor.world.problems import (
    WorldConfig,
    WorldProblem,
    WorldTask,
    answer_depends_on_every_step,
    canonical_solution,
    match_step,
    parse_trace,
)
from mentor.world.solver import WorldModelConfig, fact_drill, train_problems, training_texts

TASK = WorldTask()


def problem(seed: int):
    return TASK.problems("validation", n=1, seed=seed)[0]


@pytest.mark.parametrize("steps", [2, 3, 6, 8])
def test_default_world_has_a_prime_modulus_and_no_dead_steps(steps):
    task = WorldTask(WorldConfig(steps=steps))
    problems = task.problems("test", n=600)
    assert task.config.modulus == 31 and task.config.ops == ("+", "-")
    assert all(answer_depends_on_every_step(WorldProblem.from_meta(p.meta)) for p in problems)
    top = max(sum(p.answer == a for p in problems) for a in {p.answer for p in problems})
    assert top / len(problems) < 0.07  # no constant answer is worth much (1/31 = 3.2% on average)


def test_an_answer_that_is_a_constant_is_detected():
    # f = (a + b) - a - b is 0 whatever the inputs: every step matters, yet a guess of 0 is always right
    wp = WorldProblem(31, {"a": 1, "b": 2}, [("c", "a", "+", "b"), ("d", "c", "-", "a"), ("e", "d", "-", "b")])
    assert wp.answer == 0 and not answer_depends_on_every_step(wp)


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
    user, answer = fact_drill(wp, config, random.Random(0))
    asked = user.removeprefix(f"Facts modulo {wp.modulus}: ").removesuffix(".").split(", ")
    lines = answer.splitlines()
    assert len(lines) == len(asked) == config.facts_per_drill
    for question, line in zip(asked, lines):
        x, op, y, _, integer, _, z = line.split()
        assert (int(integer) % wp.modulus, wp.apply(op, int(x), int(y))) == (int(z), int(z))
        assert line.startswith(" ")  # the first number is the token a trace uses (see below)
        assert question == f"{x} {op} {y}"  # the operands are asked: the answer's loss falls on the results


def test_shipped_tokenizer_spells_step_tags_and_numbers_as_the_traces_do():
    """A step tag is ``<step_``, the number's digit tokens, ``>``: a tag beyond the trained lengths is made of
    trained tokens. A drill's first number is the same token as in a trace's arithmetic."""
    from transformers import AutoTokenizer

    from mentor.world.solver import SHIPPED_DIR, fact_drill

    tokenizer = AutoTokenizer.from_pretrained(SHIPPED_DIR)
    assert tokenizer.tokenize("<step_7> d") == ["<step_", "7", ">", "Ġd"]
    assert tokenizer.tokenize("<step_3>") == ["<step_", "3", ">"]
    assert tokenizer.tokenize("\n<answer> 5")[-2:] == ["<answer>", "Ġ5"]
    _, drill = fact_drill(WorldProblem.from_meta(problem(0).meta), WorldModelConfig(), random.Random(1))
    first = drill.split()[0]
    assert tokenizer.tokenize(drill)[0] == f"Ġ{first}"
    assert tokenizer.tokenize(f"with a = 1, {first} + 2 =")[-4] == f"Ġ{first}"  # the same token in a trace


def test_world_config_other_moduli_still_generate():
    task = WorldTask(WorldConfig(modulus=2, steps=3))  # too small for every step to matter: keeps the last
    assert len(task.problems("test", n=5)) == 5


def test_skips_and_stops_grow_along_the_chain():
    """P(no skip) and P(no stop) of an n-step trace are the closed-form products over its steps."""
    wp = WorldProblem.from_meta(WorldTask(WorldConfig(steps=6)).problems("test", n=1)[0].meta)
    rng, draws = random.Random(0), 4000
    skips = Habits(swap=0, slip=0, skip=0.05, truncate=0, reword=0)
    stops = Habits(swap=0, slip=0, skip=0, truncate=0.05, reword=0)
    canonical = canonical_solution(wp)
    no_skip = sum(habit_trace(wp, skips, rng) == canonical for _ in range(draws)) / draws
    no_stop = sum("<answer>" in habit_trace(wp, stops, rng) for _ in range(draws)) / draws
    expected = 1.0
    for k in range(1, 6):  # the k-th step of 6 may be left out (never the last); stops come before steps 2..6
        expected *= 1 - 0.05 * k
    se = (expected * (1 - expected) / draws) ** 0.5
    assert abs(no_skip - expected) < 4 * se and abs(no_stop - expected) < 4 * se  # 0.4464 at these rates


def test_lengths_and_inputs_are_a_range_drawn_per_problem():
    task = load_task("world:steps=2-6,inputs=2-4")
    assert task.name.startswith("world-2to6step-mod31")
    shapes = {(len(p.meta["inputs"]), len(p.meta["defs"])) for p in task.problems("train", n=400)}
    assert {s for _, s in shapes} == {2, 3, 4, 5, 6} and {i for i, _ in shapes} == {2, 3, 4}
    assert WorldConfig(steps=[3, 3]).steps == 3 and WorldConfig(steps="2-6").steps_range == (2, 6)
    for bad in ("6-2", "two", [1, 2, 3], 0, (1, 17)):
        with pytest.raises(ValueError, match="world steps"):
            WorldConfig(steps=bad)
    with pytest.raises(ValueError, match="inputs"):
        WorldConfig(steps=(2, 6), inputs=(2, 7))


def test_padded_heads_compute_the_same_function_and_stay_zero_under_training():
    """Heads of 16 dimensions (which vLLM's CPU attention refuses) widened to 32 by zero dimensions: the
    same logits, and a training step leaves the new dimensions zero."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from mentor.world.solver import pad_attention_heads

    torch.manual_seed(0)
    narrow = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                          num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64))
    narrow.eval()
    wide = pad_attention_heads(narrow)
    assert wide.config.head_dim == 32 and narrow.config.hidden_size // narrow.config.num_attention_heads == 16
    ids = torch.randint(0, 50, (2, 40))
    with torch.no_grad():
        torch.testing.assert_close(wide(ids).logits, narrow(ids).logits, rtol=1e-4, atol=1e-5)
    wide.train()
    wide(ids, labels=ids).loss.backward()
    attention = wide.model.layers[0].self_attn
    zero_rows = attention.q_proj.weight.view(4, 32, -1).abs().sum(-1) == 0
    assert zero_rows.sum() == 4 * 16  # half of every head's dimensions are the padding
    assert (attention.q_proj.weight.grad.view(4, 32, -1)[zero_rows] == 0).all()
    assert (attention.o_proj.weight.grad.view(-1, 4, 32)[:, zero_rows] == 0).all()
    assert pad_attention_heads(wide) is wide  # nothing to do
