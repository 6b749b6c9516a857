"""The on-policy loop (first version): every method runs, learns something, and is deterministic."""

from __future__ import annotations

import math

import pytest
import torch

from mentor.tasks import load_task
from mentor.train.onpolicy import OnPolicyConfig, train_onpolicy
from mentor.world_model import SHIPPED_DIR, load_world_folder


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_config_defaults_and_errors():
    assert OnPolicyConfig(method="grpo").rollouts_per_prompt == 8
    assert OnPolicyConfig(method="sd-critique").rollouts_per_prompt == 1
    with pytest.raises(ValueError, match="unknown method 'ppo'"):
        OnPolicyConfig(method="ppo")
    with pytest.raises(ValueError, match="divergence"):
        OnPolicyConfig(divergence="l2")


@pytest.mark.parametrize(
    "overrides",
    [{"method": "grpo", "rollouts_per_prompt": 4}, {"method": "sd-reference"}, {"method": "sd-critique"},
     {"method": "sd-critique", "divergence": "sampled"}],
    ids=["grpo", "sd-reference", "sd-critique", "sd-critique-sampled"],
)
def test_every_method_takes_steps_on_the_world(overrides, tmp_path):
    model, tokenizer = load_world_folder(SHIPPED_DIR)
    before = weights(model)
    config = OnPolicyConfig(steps=2, prompts_per_step=4, max_new_tokens=120, lr=1e-3, **overrides)
    history = train_onpolicy(model, tokenizer, load_task("world"), config, log_path=tmp_path / "log.jsonl")
    assert len(history) == 2 and len((tmp_path / "log.jsonl").read_text().splitlines()) == 2
    for metrics in history:
        assert math.isfinite(metrics["loss"]) and 0.0 <= metrics["reward"] <= 1.0
        assert metrics["rollouts"] == 4 * config.rollouts_per_prompt
        assert metrics["signal_fraction"] == 1.0  # the world's exact critic never gives an unusable critique
    changed = any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    # GRPO moves nothing when every group has one reward (zero advantages); the others always move
    assert changed or overrides["method"] == "grpo" and all(m["zero_var_frac"] == 1.0 for m in history)


def test_same_seed_same_weights():
    runs = []
    for _ in range(2):
        model, tokenizer = load_world_folder(SHIPPED_DIR)
        train_onpolicy(model, tokenizer, load_task("world"), OnPolicyConfig(steps=2, prompts_per_step=3, lr=1e-3))
        runs.append(weights(model))
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_completion_logits_align_rows_of_different_prompt_lengths():
    from mentor.train.onpolicy import _batch, completion_logits

    model, tokenizer = load_world_folder(SHIPPED_DIR)
    rows = [([5, 6, 7, 8, 9], [10, 11, 12]), ([5, 6], [13, 14, 15, 16, 17])]
    batch = _batch(rows, tokenizer.pad_token_id, "cpu")
    with torch.no_grad():
        logits_BTV, mask_BT = completion_logits(model, batch)
        for row, (prompt, completion) in enumerate(rows):
            alone = model(input_ids=torch.tensor([prompt + completion])).logits[0]
            expected = alone[len(prompt) - 1 : len(prompt) - 1 + len(completion)]
            assert torch.allclose(logits_BTV[row, : len(completion)], expected, atol=1e-5)
            assert mask_BT[row].sum() == len(completion)
