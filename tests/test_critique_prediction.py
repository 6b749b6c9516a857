"""sd-critique's auxiliary loss (issue 22, part 5; RLTF's feedback modelling): the student also learns to
write the critic's critique of its own attempt, asked for after it."""

from __future__ import annotations

import json

import pytest
import torch

from mentor.losses import token_logprobs
from mentor.models import encode_prompt
from mentor.tasks import load_task
from mentor.train.completions import completion_logits
from mentor.train.distributed import CompletionForward
from mentor.train.onpolicy import OnPolicyConfig, attach_contexts, task_critic, train_onpolicy
from mentor.train.onpolicy_loss import critique_prediction_loss
from mentor.train.rollouts import CRITIQUE_REQUEST
from mentor.world.solver import SHIPPED_DIR, load_world_folder
from test_onpolicy import _right, _rows, _wrong


def test_the_loss_is_the_mean_nll_of_the_critique_after_the_attempt():
    task = load_task("world")
    model, tokenizer = load_world_folder(SHIPPED_DIR)
    rows = _rows(task, tokenizer, [_right, _wrong, _wrong])
    attach_contexts(rows, task, tokenizer, OnPolicyConfig(method="sd-critique", critique_prediction=0.5),
                    task_critic(task), 1)
    for row in rows:
        assert row.critique_prompt.endswith(f"{CRITIQUE_REQUEST}<|end|>\n<|assistant|>\n")
        assert row.sample.text in row.critique_prompt and row.critique_ids[-1] == tokenizer.eos_token_id
    loss, n, metrics = critique_prediction_loss(CompletionForward(model), tokenizer, rows)
    # by hand: each critique's log-probs after its own conversation, one row at a time
    total, count = 0.0, 0
    for row in rows:
        with torch.no_grad():
            logits, _ = completion_logits(model, [encode_prompt(tokenizer, row.critique_prompt)], [row.critique_ids])
        total -= float(token_logprobs(logits, torch.tensor([row.critique_ids])).sum())
        count += len(row.critique_ids)
    assert n == count == metrics["critique_tokens"]
    assert float(loss) == pytest.approx(total / count, rel=1e-5)
    loss.backward()
    assert model.lm_head.weight.grad is not None
    none = OnPolicyConfig(method="sd-critique")
    fresh = _rows(task, tokenizer, [_wrong])
    attach_contexts(fresh, task, tokenizer, none, task_critic(task), 1)
    assert fresh[0].critique_ids is None  # off by default: nothing extra is tokenised or run
    assert critique_prediction_loss(CompletionForward(model), tokenizer, fresh) == (None, 0, {})


def test_training_with_it_lowers_the_critique_nll_and_logs_it(tmp_path):
    model, tokenizer = load_world_folder(SHIPPED_DIR)
    config = OnPolicyConfig(method="sd-critique", critique_prediction=1.0, steps=6, prompts_per_step=4, lr=1e-3,
                            eval_problems=2, eval_k=1, max_new_tokens=100)
    train_onpolicy(model, tokenizer, load_task("world:steps=2"), config, run_dir=tmp_path)
    steps = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    nll = [s["critique_nll"] for s in steps]
    assert all(s["critique_tokens"] > 0 for s in steps)
    assert sum(nll[-2:]) / 2 < 0.7 * sum(nll[:2]) / 2  # the student learns to write the critique


def test_it_is_an_option_of_sd_critique_only():
    with pytest.raises(ValueError, match="critique_prediction is a weight >= 0 of sd-critique"):
        OnPolicyConfig(method="sd-reference", critique_prediction=0.5)
    with pytest.raises(ValueError, match="critique_prediction is a weight >= 0"):
        OnPolicyConfig(method="sd-critique", critique_prediction=-1.0)
