"""mentor.offline.distill: AdvDistill, SFT and rejection-sampling SFT examples from generated teacher data,
all for the same train_sft loop."""

from __future__ import annotations

import math

import pytest
import torch

from mentor.losses import causal_lm_logprobs, weighted_nll
from mentor.offline.distill import distillation_examples
from mentor.offline.generate import GenerateConfig, load_responses, run_generate
from mentor.rewards import WeightingConfig
from mentor.teachers import TeacherConfig
from mentor.train.sft import SFTConfig, collate, tokenize, train_sft
from tiny import tiny_llama


def generate(folder, error_rate: float, n: int = 6, group_size: int = 4, **weighting):
    config = GenerateConfig(n_problems=n, group_size=group_size, teacher=TeacherConfig(error_rate=error_rate),
                            weighting=WeightingConfig(**weighting))
    run_generate(config, folder)
    return load_responses(folder)


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("noisy"), error_rate=0.4, n=10, group_size=8)


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<end>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(["<step_1> d is a + b with a = 7 and b = 4, 7 + 4 = 1 so d = 1\n<answer> 1",
                              "Work modulo 10. Let a = 5, b = 1, c = 9. What is f?"], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<end>")


def test_sft_takes_every_nonempty_response_with_weight_one(noisy):
    examples, counts = distillation_examples(noisy, "sft")
    nonempty = [r for r in noisy if r.completion.strip()]
    assert [(e.prompt, e.completion, e.weight) for e in examples] == [(r.prompt, r.completion, 1.0) for r in nonempty]
    assert counts["rows"] == 80 and counts["examples"] == len(nonempty) and counts.get("empty", 0) == 80 - len(nonempty)


def test_rft_drops_the_incorrect_responses(noisy):
    examples, counts = distillation_examples(noisy, "rft")
    correct = [r for r in noisy if r.verdict.correct]
    assert 0 < len(correct) < len(noisy)
    assert [e.completion for e in examples] == [r.completion for r in correct]
    assert all(e.weight == 1.0 for e in examples)
    assert counts["examples"] + counts["incorrect"] + counts.get("empty", 0) == 80


def test_advdistill_uses_the_chosen_normalisation_and_leaves_out_dropped_groups(noisy):
    examples, counts = distillation_examples(noisy, "advdistill")
    kept = [r for r in noisy if r.completion.strip() and r.weights["zscore"] not in (None, 0)]
    assert [e.weight for e in examples] == [r.weights["zscore"] for r in kept]
    assert counts.get("dropped_group", 0) == sum(r.weights["zscore"] is None for r in noisy if r.completion.strip())
    assert counts["negative"] == sum(e.weight < 0 for e in examples) > 0
    softmax, _ = distillation_examples(noisy, "advdistill", normalisation="softmax")
    assert all(e.weight > 0 for e in softmax)
    clipped, counts = distillation_examples(noisy, "advdistill", normalisation="zscore_clipped")
    assert all(e.weight > 0 for e in clipped) and counts["zero_weight"] > 0  # weighted rejection sampling
    with pytest.raises(ValueError, match="unknown distillation mode"):
        distillation_examples(noisy, "dpo")


def test_negative_weights_are_bounded(noisy):
    unbounded, _ = distillation_examples(noisy, "advdistill", weighting=WeightingConfig(min_weight=None))
    assert min(e.weight for e in unbounded) < -1.0  # e.g. the one wrong answer of 8: -sqrt(7)
    stored, _ = distillation_examples(noisy, "advdistill")  # generated with the default bound, -1
    assert min(e.weight for e in stored) == -1.0
    tight, _ = distillation_examples(noisy, "advdistill", weighting=WeightingConfig(min_weight=-0.3, max_weight=2.0))
    assert min(e.weight for e in tight) == -0.3 and max(e.weight for e in tight) <= 2.0
    # re-weighting re-computes from the rewards: the unbounded positive weights are unchanged
    assert [e.weight for e in unbounded if e.weight > 0] == [e.weight for e in stored if e.weight > 0]


def test_weight_one_everywhere_gives_plain_sft_loss_and_training(tmp_path, tokenizer):
    # a perfect teacher: every group is all correct, and with correct_weight_one every weight is 1
    rows = generate(tmp_path / "clean", error_rate=0.0, n=4, group_size=2, zero_variance="correct_weight_one")
    adv, _ = distillation_examples(rows, "advdistill", tokenizer=tokenizer)
    sft, _ = distillation_examples(rows, "sft", tokenizer=tokenizer)
    assert adv == sft and all(e.weight == 1.0 for e in adv)
    model = tiny_llama(len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    batch = collate(tokenize(tokenizer, adv, 256), tokenizer.pad_token_id)
    with torch.no_grad():
        logp = causal_lm_logprobs(model, batch["input_ids"], batch["attention_mask"])
    weighted, _ = weighted_nll(logp, batch["loss_mask"], batch["weight"])
    plain, _ = weighted_nll(logp, batch["loss_mask"])
    assert float(weighted) == float(plain)
    token_mean = -(logp * batch["loss_mask"]).sum() / batch["loss_mask"].sum()
    assert float(plain) == pytest.approx(float(token_mean), rel=1e-6)
    # and one step of the shared loop lands on the same weights
    config = SFTConfig(steps=2, batch_size=4, lr=1e-2, warmup_steps=0, log_every=1)
    a, b = tiny_llama(len(tokenizer), seed=1), tiny_llama(len(tokenizer), seed=1)
    train_sft(a, tokenizer, adv, config)
    train_sft(b, tokenizer, sft, config)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_advdistill_loss_is_the_weighted_sum_over_all_tokens(noisy, tokenizer):
    examples, _ = distillation_examples(noisy[:16], "advdistill", tokenizer=tokenizer)
    assert examples
    model = tiny_llama(len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    batch = collate(tokenize(tokenizer, examples, 256), tokenizer.pad_token_id)
    with torch.no_grad():
        logp = causal_lm_logprobs(model, batch["input_ids"], batch["attention_mask"])
    loss, _ = weighted_nll(logp, batch["loss_mask"], batch["weight"])
    per_seq = (logp * batch["loss_mask"]).sum(1)
    expected = -sum(e.weight * float(s) for e, s in zip(examples, per_seq)) / float(batch["loss_mask"].sum())
    assert math.isclose(float(loss), expected, rel_tol=1e-5)


def test_a_tokenizer_renders_prompts_and_ends_finished_responses(noisy, tokenizer):
    from dataclasses import replace

    rows = [replace(noisy[0], finish_reason="length"), noisy[1]]
    tokenizer.chat_template = "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}[assistant] "
    try:
        examples, _ = distillation_examples(rows, "sft", tokenizer=tokenizer)
    finally:
        tokenizer.chat_template = None
    assert examples[0].prompt == f"[user] {noisy[0].prompt}\n[assistant] "
    assert examples[0].completion == noisy[0].completion  # cut short: no end-of-sequence to learn
    assert examples[1].completion == noisy[1].completion + "<end>"
    plain, _ = distillation_examples(rows, "sft")
    assert plain[1].prompt == noisy[1].prompt and plain[1].completion == noisy[1].completion


@pytest.mark.parametrize("oracle_problems", [0, 10])
def test_the_oracle_trains_on_the_gold_traces_of_the_teachers_prompts(tmp_path, noisy, oracle_problems):
    from mentor.offline.train import DistillConfig, oracle_examples
    from mentor.tasks import load_task

    sft = SFTConfig(steps=3, batch_size=4)
    config = DistillConfig(mode="oracle", sft=sft, seed=5, oracle_problems=oracle_problems)
    examples, counts = oracle_examples(config, tokenizer=None)
    task = load_task("world")
    expected = (task.problems("train", n=10, seed=0) if oracle_problems
                else task.problems("train", n=12, seed=5))
    assert counts == {"problems": len(expected), "examples": len(expected)}
    assert [e.completion for e in examples] == [task.gold_trace(p) for p in expected]
    assert all(task.verify(p, e.completion).correct for p, e in zip(expected, examples))
    if oracle_problems:  # the same prompts `mentor generate` drew (n_problems=10, problem seed 0)
        assert {p.id for p in expected} == {row.problem_id for row in noisy}
