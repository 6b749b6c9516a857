"""Generation that overlaps training (issue 22, part 4): a step's rollouts drawn in another process while the
step before trains, from weights at most ``max_staleness`` updates old."""

from __future__ import annotations

import math

import pytest
import torch

from mentor.losses import clipped_policy_gradient, truncated_importance_weights
from mentor.tasks import load_task
from mentor.train.onpolicy import OnPolicyConfig, train_onpolicy
from mentor.world.solver import SHIPPED_DIR, load_world_folder

FAST = {"steps": 3, "prompts_per_step": 2, "rollouts_per_prompt": 4, "lr": 1e-3, "eval_problems": 2, "eval_k": 1,
        "max_new_tokens": 100, "eval_every": 0, "test_problems": 0}


def _run(method: str, **extra):
    model, tokenizer = load_world_folder(SHIPPED_DIR)
    result = train_onpolicy(model, tokenizer, load_task("world:steps=2"), OnPolicyConfig(method=method, **FAST, **extra))
    return {n: p.detach().clone() for n, p in model.named_parameters()}, result.history


@pytest.mark.parametrize("method", ["grpo", "sd-critique"])
def test_staleness_zero_is_the_synchronous_run_in_another_process(method):
    weights, history = _run(method)
    # the generator at the trainer's thread count, and the trainer keeping all of its own: bit for bit
    async_weights, async_history = _run(method, async_generation=True, max_staleness=0,
                                        generator_threads=torch.get_num_threads())
    assert [m["generated_tokens"] for m in async_history] == [m["generated_tokens"] for m in history]
    assert [m["reward"] for m in async_history] == [m["reward"] for m in history]
    assert all(m["staleness"] == 0 for m in async_history)
    assert all(torch.equal(weights[n], async_weights[n]) for n in weights)


def test_staleness_one_draws_each_step_but_the_first_from_the_weights_one_update_old():
    _, history = _run("grpo", async_generation=True, max_staleness=1)
    assert [m["staleness"] for m in history] == [0, 1, 1]
    assert history[0]["time_generate"] > 0.01  # the first step waits for its rollouts: the wait is its generation
    # GRPO weighs the stale tokens by the truncated importance weight, logged
    assert all(0 < m["pg_is_weight_mean"] <= 2.0 for m in history)


def test_truncated_importance_weights_are_capped_ratios_and_weight_the_surrogate():
    trainer = torch.tensor([[0.0, -1.0, -2.0]])
    behaviour = torch.tensor([[-1.0, -1.0, -0.5]])
    mask = torch.tensor([[True, True, False]])
    weights, metrics = truncated_importance_weights(trainer, behaviour, mask, cap=2.0)
    assert weights[0].tolist() == pytest.approx([2.0, 1.0, 1.0])  # e^1 capped at 2; the masked position 1
    assert metrics == pytest.approx({"is_weight_mean": 1.5, "is_truncated_frac": 0.5})
    logp = torch.tensor([[-0.5, -1.0, -2.0]], requires_grad=True)
    plain, _ = clipped_policy_gradient(logp, logp.detach(), torch.tensor([1.0]), mask)
    weighted, _ = clipped_policy_gradient(logp, logp.detach(), torch.tensor([1.0]), mask, weight_BT=weights)
    assert float(plain.detach()) == pytest.approx(-1.0) and float(weighted.detach()) == pytest.approx(-1.5)
    with pytest.raises(ValueError, match="cap must be > 0"):
        truncated_importance_weights(trainer, behaviour, mask, cap=0.0)
    assert math.isfinite(float(truncated_importance_weights(trainer + 1e4, behaviour, mask, 2.0)[0].max()))


@pytest.mark.parametrize(("extra", "match"), [
    ({"generation_backend": "vllm"}, "async_generation draws with mentor's loop"),
    ({"max_staleness": -1}, "max_staleness"),
    ({"tis_cap": 0.0}, "tis_cap"),
])
def test_bad_async_settings_are_refused(extra, match):
    with pytest.raises(ValueError, match=match):
        OnPolicyConfig(async_generation=True, **extra)


def test_a_run_stopped_and_resumed_draws_from_the_restored_weights_and_leaves_no_generator(tmp_path):
    import multiprocessing
    import time

    config = OnPolicyConfig(method="grpo", async_generation=True, max_staleness=1,
                            **{**FAST, "steps": 4, "save_every": 1})
    task = load_task("world:steps=2")
    model, tokenizer = load_world_folder(SHIPPED_DIR)
    start = time.monotonic()
    train_onpolicy(model, tokenizer, task, config, run_dir=tmp_path / "run", stop_after=2)
    assert time.monotonic() - start < 60 and not multiprocessing.active_children()  # stopped, not waited out
    model, tokenizer = load_world_folder(SHIPPED_DIR)
    resumed = train_onpolicy(model, tokenizer, task, config, run_dir=tmp_path / "run")
    # after the resume the first step is drawn from the restored weights, the next one update behind again
    assert [m["staleness"] for m in resumed.history] == [0, 1, 0, 1]
    assert not multiprocessing.active_children()


def test_by_default_the_generator_and_the_trainer_split_the_threads_and_the_trainer_gets_them_back():
    from mentor.sampling import SamplingParams
    from mentor.train.async_rollouts import AsyncRollouts

    model, tokenizer = load_world_folder(SHIPPED_DIR)
    before = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        prompts = ["<q> a = 3 </q>"]
        params = SamplingParams(n=1, temperature=1.0, max_new_tokens=4, seed=0)
        with AsyncRollouts(model, tokenizer, lambda step: (prompts, params, range(1)), 0) as rollouts:
            assert rollouts.threads == 2 and torch.get_num_threads() == 2
            samples, staleness = rollouts.take(0)
            assert len(samples) == 1 and staleness == 0
        assert torch.get_num_threads() == 4
    finally:
        torch.set_num_threads(before)


def test_a_generator_that_cannot_start_leaves_no_process_and_the_threads_as_they_were():
    import multiprocessing

    from mentor.train.async_rollouts import AsyncRollouts

    model, tokenizer = load_world_folder(SHIPPED_DIR)
    before = torch.get_num_threads()

    def schedule(step):
        raise RuntimeError("no prompts today")

    torch.set_num_threads(4)
    try:
        with pytest.raises(RuntimeError, match="no prompts today"):
            AsyncRollouts(model, tokenizer, schedule, 3)
        assert torch.get_num_threads() == 4 and not multiprocessing.active_children()
    finally:
        torch.set_num_threads(before)
