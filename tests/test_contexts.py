"""The self-teacher's prompt templates."""

from __future__ import annotations

import pytest

from mentor.contexts import CONTEXT_KINDS, TEMPLATES, build_context_prompt
from mentor.records import Problem

PROBLEM = Problem(id="p1", question="What is 2 + 3?", answer="5", solution="2 + 3 = 5, so the answer is 5.")


def test_every_kind_puts_the_question_first_and_its_context_in():
    assert set(CONTEXT_KINDS) == {"none", "reference", "critique", "success"}
    assert build_context_prompt("none", PROBLEM.question) == PROBLEM.question
    reference = build_context_prompt("reference", PROBLEM.question, problem=PROBLEM)
    critique = build_context_prompt("critique", PROBLEM.question, critique="Step 1 is wrong; fixed: 5")
    success = build_context_prompt("success", PROBLEM.question, success="<step_1> 2 + 3 = 5\n<answer> 5")
    for prompt, context in ((reference, PROBLEM.solution), (critique, "Step 1 is wrong"), (success, "<answer> 5")):
        assert prompt.startswith(PROBLEM.question) and context in prompt


def test_missing_context_is_a_clear_error():
    with pytest.raises(ValueError, match="needs a reference solution"):
        build_context_prompt("reference", "q", problem=Problem(id="x", question="q", answer="1"))
    with pytest.raises(ValueError, match="needs a critique"):
        build_context_prompt("critique", "q")
    with pytest.raises(ValueError, match="successful sibling"):
        build_context_prompt("success", "q")
    with pytest.raises(ValueError, match="unknown context kind 'gossip'"):
        build_context_prompt("gossip", "q")


def test_templates_can_be_overridden():
    prompt = build_context_prompt("critique", "Q?", critique="C.", templates={"critique": "{critique} then {question}"})
    assert prompt == "C. then Q?"
    assert TEMPLATES["critique"] != "{critique} then {question}"  # the defaults are untouched


def test_completion_tokenisation_check_on_the_world_tokenizer():
    from transformers import AutoTokenizer

    from mentor.contexts import completion_token_mismatch
    from mentor.models import render_prompt
    from mentor.world.solver import SHIPPED_DIR

    tokenizer = AutoTokenizer.from_pretrained(SHIPPED_DIR)
    student = render_prompt(tokenizer, PROBLEM.question)
    teacher = render_prompt(tokenizer, build_context_prompt("reference", PROBLEM.question, problem=PROBLEM))
    assert completion_token_mismatch(tokenizer, student, teacher, "<step_1> d is a + b\n<answer> 5") is None
    # a prompt that ends in the middle of a word: the completion's first token merges across the boundary
    problem = completion_token_mismatch(tokenizer, student + "Work modu", teacher, "lo 10")
    assert problem is not None and "student prompt" in problem
