"""A separate teacher model scores the student's tokens (issue 22, part 1): tokenizers checked, padded
vocabularies aligned exactly, every context available, refusals in one line."""

from __future__ import annotations

import json

import pytest
import torch

from mentor.tasks import load_task
from mentor.train.onpolicy import OnPolicyConfig, train_onpolicy
from mentor.train.separate_teacher import (
    align_rows,
    embedding_rows,
    load_separate_teacher,
    tokenizer_difference,
)
from mentor.world.solver import SHIPPED_DIR, load_world_folder

FAST = {"eval_problems": 2, "eval_k": 1, "max_new_tokens": 100, "prompts_per_step": 2, "steps": 2}


def _save(model, tokenizer, folder):
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def world():
    return load_world_folder(SHIPPED_DIR)


@pytest.fixture(scope="module")
def teachers(world, tmp_path_factory):
    """A teacher unlike the student (its weights moved), the same with 64 padded vocabulary rows, and one
    with a different tokenizer."""
    model, tokenizer = world
    root = tmp_path_factory.mktemp("teachers")
    other, _ = load_world_folder(SHIPPED_DIR)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn_like(p))
    moved = _save(other, tokenizer, root / "moved")
    other.resize_token_embeddings(embedding_rows(model) + 64, mean_resizing=False)
    padded = _save(other, tokenizer, root / "padded")
    alien, alien_tokenizer = load_world_folder(SHIPPED_DIR)
    alien_tokenizer.add_tokens(["<alien>"])
    alien.resize_token_embeddings(len(alien_tokenizer) + 8, mean_resizing=False)
    return {"moved": moved, "padded": padded, "alien": _save(alien, alien_tokenizer, root / "alien")}


def test_tokenizers_are_compared_by_their_ids(world, tmp_path):
    _, tokenizer = world
    assert tokenizer_difference(tokenizer, tokenizer) is None
    _, other = load_world_folder(SHIPPED_DIR)
    other.add_tokens(["<extra>"])
    assert "tokens, the teacher's" in tokenizer_difference(tokenizer, other)


def test_padded_rows_are_cut_exactly_and_missing_ones_added_with_zero_weight(world):
    model, tokenizer = world
    rows = embedding_rows(model)
    ids = torch.tensor([tokenizer.encode("<step_1> a = 3 + 4")])
    before = model(ids).logits
    wide, _ = load_world_folder(SHIPPED_DIR)
    wide.resize_token_embeddings(rows + 64, mean_resizing=False)
    align_rows(wide, rows, len(tokenizer))
    assert embedding_rows(wide) == rows
    torch.testing.assert_close(wide(ids).logits, before, rtol=0, atol=0)  # the cut rows were padding
    narrow, _ = load_world_folder(SHIPPED_DIR)
    align_rows(narrow, rows + 16, len(tokenizer))
    logits = narrow(ids).logits
    torch.testing.assert_close(logits[..., :rows], before, rtol=0, atol=0)
    assert torch.equal(logits[..., rows:], torch.zeros_like(logits[..., rows:]))
    with pytest.raises(ValueError, match="but the tokenizer has"):
        align_rows(narrow, len(tokenizer) - 1, len(tokenizer))


def _first_loss(world, tmp_path, name, **overrides) -> dict:
    model, tokenizer = load_world_folder(SHIPPED_DIR)  # a fresh student for every run
    config = OnPolicyConfig(**{"method": "sd-none", "lr": 1e-4, **FAST, **overrides})
    train_onpolicy(model, tokenizer, load_task("world:steps=3"), config, run_dir=tmp_path / name)
    return json.loads((tmp_path / name / "metrics.jsonl").read_text().splitlines()[0])


def test_the_student_as_its_own_separate_teacher_gives_no_signal(world, tmp_path):
    # closed form: KL(T || S) = 0 when the teacher is the student's own starting weights
    first = _first_loss(world, tmp_path, "self", teacher_model=str(SHIPPED_DIR))
    assert abs(first["loss"]) < 1e-6 and first["grad_norm"] < 1e-6


def test_a_padded_teacher_gives_the_unpadded_teachers_loss(world, teachers, tmp_path):
    plain = _first_loss(world, tmp_path, "plain", teacher_model=teachers["moved"])
    padded = _first_loss(world, tmp_path, "padded", teacher_model=teachers["padded"])
    assert plain["loss"] > 1e-3  # a teacher that differs teaches
    assert padded["generated_tokens"] == plain["generated_tokens"]  # the same rollouts (seeded)
    assert padded["loss"] == pytest.approx(plain["loss"], rel=1e-5)


@pytest.mark.parametrize("method", ["sd-reference", "sd-critique"])
def test_a_separate_teacher_reads_every_context(world, teachers, tmp_path, method):
    first = _first_loss(world, tmp_path, method, method=method, teacher_model=teachers["moved"])
    assert first["loss"] != 0 and first["signal_fraction"] > 0


def test_refusals(world, teachers):
    model, tokenizer = world
    with pytest.raises(ValueError, match="does not share the student's tokenizer: the student's tokenizer has"):
        load_separate_teacher(teachers["alien"], model, tokenizer)
    with pytest.raises(ValueError, match="sd-none needs onpolicy.teacher_model"):
        OnPolicyConfig(method="sd-none")
    with pytest.raises(ValueError, match="a separate teacher_model is frozen"):
        OnPolicyConfig(method="sd-reference", teacher_model=teachers["moved"], teacher="ema")


# ----- a served teacher (its loss against the local teacher's: tests/test_sampling_vllm.py, on `vllm serve`) ---


def test_prompt_logprobs_are_read_at_the_completion_positions():
    from mentor.train.served_teacher import prompt_logprobs_body, read_prompt_logprobs

    assert prompt_logprobs_body("m", [1, 2, 3], 2) == {"model": "m", "prompt": [1, 2, 3], "max_tokens": 1,
                                                       "temperature": 0.0, "prompt_logprobs": 2}
    # vLLM's answer: no entry for the first prompt token, then the top k of each position plus its own token
    answer = {"choices": [{"prompt_logprobs": [
        None,
        {"7": {"logprob": -0.1, "rank": 1}, "8": {"logprob": -2.5, "rank": 2}},
        {"9": {"logprob": -0.2, "rank": 1}, "4": {"logprob": -1.9, "rank": 2}, "5": {"logprob": -6.0, "rank": 40}},
    ]}]}
    own, ids, logps = read_prompt_logprobs(answer, start=1, tokens=[8, 5], k=2)
    assert own == [-2.5, -6.0] and ids == [[7, 8], [9, 4]] and logps == [[-0.1, -2.5], [-0.2, -1.9]]
    from mentor.sampling.openai_compatible import SamplerError

    # an answer that does not fit what was asked is not retried: it would not change
    with pytest.raises(SamplerError, match="lacks token 3"):
        read_prompt_logprobs(answer, start=1, tokens=[3], k=2)
    with pytest.raises(SamplerError, match="positions"):
        read_prompt_logprobs(answer, start=2, tokens=[9, 9], k=2)
    with pytest.raises(SamplerError, match="gives 2 ids"):
        read_prompt_logprobs(answer, start=1, tokens=[8], k=3)


@pytest.mark.parametrize(("extra", "match"), [
    ({"teacher_model": "", "method": "sd-reference"}, "a served teacher needs onpolicy.teacher_model"),
    ({"divergence": "full"}, "top-k log-probs, not its logits"),
    ({"top_k_source": "student"}, "top-k log-probs, not its logits"),
    ({"temperature": 0.7}, "temperature 1"),
    ({"teacher_timeout_s": 0}, "teacher_timeout_s"),
])
def test_a_served_teacher_is_refused_where_its_numbers_cannot_serve(extra, match):
    settings = {"method": "sd-none", "teacher_base_url": "http://127.0.0.1:9", "teacher_model": "t",
                "divergence": "top-k", **extra}
    with pytest.raises(ValueError, match=match):
        OnPolicyConfig(**settings)


def test_a_served_teacher_that_is_down_is_one_line_before_the_first_step(world):
    from mentor.sampling.openai_compatible import SamplerError

    model, tokenizer = world
    config = OnPolicyConfig(method="sd-none", teacher_base_url="http://127.0.0.1:9", teacher_model="t",
                            divergence="top-k", **FAST)
    with pytest.raises(SamplerError, match="cannot reach http://127.0.0.1:9"):
        train_onpolicy(model, tokenizer, load_task("world"), config)
