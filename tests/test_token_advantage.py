"""Per-token advantage A_t = log p_teacher - log p_student, its step bookkeeping and aggregates."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoTokenizer

from mentor.analysis.token_advantage import (
    aggregate_by_error,
    completion_logprobs,
    token_advantages,
    token_steps,
)
from mentor.models import render_prompt
from mentor.world.problems import WorldProblem, WorldTask, canonical_solution
from mentor.world.solver import SHIPPED_DIR, load_world_folder


@pytest.fixture(scope="module")
def world():
    return load_world_folder(SHIPPED_DIR)


def test_advantage_is_teacher_minus_student_and_zero_without_context(world):
    model, tokenizer = world
    problem = WorldTask().problems("test", n=1)[0]
    ids = tokenizer(canonical_solution(WorldProblem.from_meta(problem.meta)), add_special_tokens=False)["input_ids"]
    student = render_prompt(tokenizer, problem.question)
    teacher = render_prompt(tokenizer, problem.question + "\n\nHere is a reference solution:\n" + problem.solution)
    assert torch.equal(token_advantages(model, tokenizer, student, student, ids), torch.zeros(len(ids)))
    manual = completion_logprobs(model, tokenizer, teacher, ids) - completion_logprobs(model, tokenizer, student, ids)
    assert torch.allclose(token_advantages(model, tokenizer, student, teacher, ids), manual)
    # and completion_logprobs is the plain forward pass's log-softmax at each completion token
    prompt_ids = tokenizer(student, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt_ids + ids])).logits[0].float()
    expected = torch.log_softmax(logits, -1)[len(prompt_ids) - 1 : -1].gather(-1, torch.tensor(ids)[:, None])
    assert torch.allclose(completion_logprobs(model, tokenizer, student, ids), expected.squeeze(-1), atol=1e-5)


def test_token_steps_follow_the_step_tags():
    tokenizer = AutoTokenizer.from_pretrained(SHIPPED_DIR)
    trace = "<step_1> d is a + b\n<step_2> e is d * c\n<answer> 7"
    ids = tokenizer(trace, add_special_tokens=False)["input_ids"]
    steps = token_steps(tokenizer, ids)
    pieces = {}
    for token, step in zip(ids, steps):
        pieces[step] = pieces.get(step, "") + tokenizer.decode([token])
    assert pieces == {1: "<step_1> d is a + b\n", 2: "<step_2> e is d * c\n", 3: "<answer> 7"}


def test_aggregate_by_error_pools_tokens_by_position_relative_to_the_error():
    advantages = [torch.tensor([0.0, 1.0, -2.0, -4.0]), torch.tensor([0.5, 0.5])]
    steps = [[1, 1, 2, 3], [1, 2]]
    agg = aggregate_by_error(advantages, steps, [2, None])  # second rollout is correct: all prefix
    assert agg.tokens == (4, 1, 1)
    assert agg.prefix == pytest.approx((0.0 + 1.0 + 0.5 + 0.5) / 4)
    assert (agg.first_error, agg.after) == (-2.0, -4.0)
    assert math.isnan(aggregate_by_error([], [], []).prefix)


def test_free_form_steps_follow_the_critics_step_starts_with_a_real_tokenizer():
    from mentor.analysis.token_advantage import prefix_texts, steps_from_starts
    from mentor.feedback.arithmetic_critic import critique
    from mentor.models import gguf_to_folder, smollm2_gguf_path
    from mentor.records import Problem

    tokenizer = AutoTokenizer.from_pretrained(gguf_to_folder(smollm2_gguf_path()))
    trace = "First, 12 + 7 = 19.\nThen 19 * 2 = 39, so\n39 - 5 = 34.\nThe answer is \\boxed{34}."
    problem = Problem("p", "Calculate (12 + 7) * 2 - 5.", "33", meta={"expression": "(12 + 7) * 2 - 5"})
    feedback = critique(problem, trace, correct=False, marked=True)
    assert feedback.first_error_step == 2 and len(feedback.step_starts) == 4
    ids = tokenizer(trace, add_special_tokens=False)["input_ids"]
    steps = steps_from_starts(prefix_texts(tokenizer, ids), feedback.step_starts)
    pieces: dict[int, str] = {}
    for token, step in zip(ids, steps):
        pieces[step] = pieces.get(step, "") + tokenizer.decode([token])
    # SmolLM2 writes a digit's space as a token of its own: it stays with the text before the step
    assert pieces == {0: "First, ", 1: "12 + 7 = 19.\nThen ", 2: "19 * 2 = 39, so\n",
                      3: "39 - 5 = 34", 4: ".\nThe answer is \\boxed{34}."}
