"""The on-policy loop: every method runs, micro-batches add up, a killed run resumes bit for bit,
evaluation keeps the best weights and stops early, the guards fire, trackers receive the metrics."""

from __future__ import annotations

import importlib.util
import json
import math
import random

import pytest
import torch
from accelerate.tracking import GeneralTracker

from mentor.models import LoraSpec, apply_lora, render_prompt
from mentor.sampling import Sample
from mentor.tasks import load_task
from mentor.train.completions import completion_logits
from mentor.train.onpolicy import (
    OnPolicyConfig,
    Row,
    attach_contexts,
    signal_tokens,
    task_critic,
    train_onpolicy,
    train_step,
)
from mentor.train.teacher import SelfTeacher
from mentor.world.problems import WorldProblem, canonical_solution, corrupt_trace
from mentor.world.solver import SHIPPED_DIR, load_world_folder

FAST = {"eval_problems": 4, "eval_k": 2, "max_new_tokens": 120}


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_config_defaults_and_errors():
    assert OnPolicyConfig(method="grpo").rollouts_per_prompt == 8
    assert OnPolicyConfig(method="sd-critique").rollouts_per_prompt == 1
    assert OnPolicyConfig(method="sd-critique", grpo_weight=0.5).rollouts_per_prompt == 8  # a blend has groups
    assert OnPolicyConfig(method="grpo").grpo_weight == 1.0 and OnPolicyConfig().grpo_weight == 0.0
    with pytest.raises(ValueError, match="method must be one of .* got 'ppo'"):
        OnPolicyConfig(method="ppo")
    with pytest.raises(ValueError, match="divergence"):
        OnPolicyConfig(divergence="l2")
    with pytest.raises(ValueError, match="grpo_weight"):
        OnPolicyConfig(method="grpo", grpo_weight=0.5)
    with pytest.raises(ValueError, match="rollouts_per_prompt >= 2"):
        OnPolicyConfig(method="sd-success", rollouts_per_prompt=1)
    with pytest.raises(ValueError, match="teacher"):
        OnPolicyConfig(teacher="oracle")
    with pytest.raises(ValueError, match="generation_backend must be one of local, vllm"):
        OnPolicyConfig(generation_backend="sglang")
    if importlib.util.find_spec("vllm") is None:  # refused at once, before any model loads
        with pytest.raises(ValueError, match="needs vLLM in this environment"):
            OnPolicyConfig(generation_backend="vllm")


@pytest.mark.parametrize(
    "overrides",
    [{"method": "grpo", "rollouts_per_prompt": 4}, {"method": "sd-reference"}, {"method": "sd-critique"},
     {"method": "sd-critique", "divergence": "sampled"}, {"method": "sd-critique", "divergence": "top-k", "top_k": 5},
     {"method": "sd-critique", "signal_span": "to-divergence", "teacher": "ema"},
     {"method": "sd-success", "rollouts_per_prompt": 4, "teacher": "live"},
     {"method": "sd-critique", "grpo_weight": 0.5, "rollouts_per_prompt": 4},
     {"method": "sd-critique", "grpo_weight": 0.5, "rollouts_per_prompt": 4, "blend": "by-group"},
     {"method": "sd-critique", "divergence_clip": 0.05, "divergence_clip_mode": "position"}],
    ids=["grpo", "sd-reference", "sd-critique", "sampled", "top-k", "to-divergence-ema", "sd-success-live", "blend",
         "hybrid-by-group", "position-clip"],
)
def test_every_method_takes_steps_on_the_world(overrides):
    model, tokenizer = load_world_folder(SHIPPED_DIR)
    before = weights(model)
    config = OnPolicyConfig(steps=2, prompts_per_step=4, lr=1e-3, **FAST, **overrides)
    result = train_onpolicy(model, tokenizer, load_task("world"), config)
    assert len(result.history) == 2 and [e["step"] for e in result.evals] == [0, 2]
    for metrics in result.history:
        assert math.isfinite(metrics["loss"]) and 0.0 <= metrics["reward"] <= 1.0
        assert metrics["rollouts"] == 4 * config.rollouts_per_prompt
        assert metrics["generated_tokens"] > 0 and metrics["tokens_per_s"] > 0
        assert {"time_generate", "time_critic", "time_teacher", "time_update"} <= set(metrics)
        if config.grpo_weight < 1 and config.method != "sd-success":
            assert metrics["signal_fraction"] == 1.0  # the world's exact critic is always usable
        if config.grpo_weight > 0:  # the sampler's log-probs are the trainer's, to float rounding
            assert 0.0 <= metrics["pg_logp_mismatch"] < 1e-4
    moved = not same(before, weights(model))
    no_signal = all(m.get("zero_var_frac", 0) == 1.0 for m in result.history) and (
        config.method == "grpo" or all(m.get("signal_fraction", 1) == 0 for m in result.history))
    assert moved or no_signal


def test_same_seed_same_weights():
    runs = []
    for _ in range(2):
        model, tokenizer = load_world_folder(SHIPPED_DIR)
        train_onpolicy(model, tokenizer, load_task("world"), OnPolicyConfig(steps=2, prompts_per_step=3, lr=1e-3,
                                                                            **FAST))
        runs.append(weights(model))
    assert same(*runs)


@pytest.mark.parametrize("method", ["sd-critique", "grpo"])
def test_micro_batches_add_up_to_the_full_batch(method):
    task = load_task("world")
    problems = task.problems("train", n=4)
    results = []
    for micro in (None, 3):
        model, tokenizer = load_world_folder(SHIPPED_DIR)
        before = weights(model)
        config = OnPolicyConfig(method=method, prompts_per_step=4, rollouts_per_prompt=2, micro_batch_size=micro,
                                max_grad_norm=1e9, **FAST)
        teacher = SelfTeacher(model) if method != "grpo" else None
        sgd = torch.optim.SGD(model.parameters(), lr=1.0)  # the weight change is the gradient
        metrics = train_step(model, teacher, tokenizer, task, problems, sgd, config, 0, task_critic(task))
        results.append(({k: before[k] - v for k, v in weights(model).items()}, metrics))
    (g_full, m_full), (g_micro, m_micro) = results
    assert m_full["loss"] == pytest.approx(m_micro["loss"], rel=1e-5, abs=1e-8)
    assert m_full["grad_norm"] > 0 or method == "grpo"
    assert all(torch.allclose(g_full[k], g_micro[k], rtol=1e-4, atol=1e-7) for k in g_full)


FROM_STATES = {  # divergences the step computes from hidden states and the head, never materialising logits
    "forward-kl": {},  # the closed-form fused path
    "forward-kl-lora": {"lora": True},
    "top-k-tail": {"divergence": "top-k", "top_k": 5},
    "top-k-renormalised": {"divergence": "top-k", "top_k": 5, "tail": False, "top_k_source": "student"},
    "jsd-clipped": {"beta": 0.5, "divergence_clip": 0.05},
}


@pytest.mark.parametrize("case", sorted(FROM_STATES))
def test_the_step_from_hidden_states_equals_the_step_on_materialised_logits(case, monkeypatch):
    # a head that is not plain (monkeypatched away) sends the same configuration through the logits path:
    # the same loss, token advantages and gradient
    import mentor.train.onpolicy_loss as onpolicy_loss

    extra = dict(FROM_STATES[case])
    lora = extra.pop("lora", False)
    task = load_task("world")
    problems = task.problems("train", n=3)
    results = []
    for path in ("states", "logits"):
        if path == "logits":
            monkeypatch.setattr(onpolicy_loss, "plain_head", lambda model: None)
        model, tokenizer = load_world_folder(SHIPPED_DIR)
        if lora:
            model = apply_lora(model, LoraSpec(r=2))
        before = weights(model)
        config = OnPolicyConfig(method="sd-critique", prompts_per_step=3, rollouts_per_prompt=2, max_grad_norm=1e9,
                                temperature=0.9, **FAST, **extra)
        sgd = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
        metrics = train_step(model, SelfTeacher(model), tokenizer, task, problems, sgd, config, 0, task_critic(task))
        results.append(({k: before[k] - v for k, v in weights(model).items()}, metrics))
    (g_states, m_states), (g_logits, m_logits) = results
    assert m_states["sd_loss"] == pytest.approx(m_logits["sd_loss"], rel=1e-5) and m_states["sd_loss"] > 0
    assert m_states["sd_adv_t_mean"] == pytest.approx(m_logits["sd_adv_t_mean"], rel=1e-4, abs=1e-6)
    assert m_states["grad_norm"] == pytest.approx(m_logits["grad_norm"], rel=1e-4)
    assert m_states.get("sd_clip_frac") == pytest.approx(m_logits.get("sd_clip_frac"))
    assert all(torch.allclose(g_states[k], g_logits[k], rtol=1e-3, atol=1e-6) for k in g_states)


@pytest.mark.parametrize("teacher", ["initial", "ema"])
def test_a_killed_run_resumes_to_the_same_weights(tmp_path, teacher):
    task = load_task("world")
    config = OnPolicyConfig(steps=4, prompts_per_step=3, lr=1e-3, save_every=2, eval_every=2, teacher=teacher,
                            ema_decay=0.5, **FAST)
    model, tokenizer = load_world_folder(SHIPPED_DIR)
    straight = train_onpolicy(model, tokenizer, task, config, run_dir=tmp_path / "straight")
    expected = weights(model)

    model, tokenizer = load_world_folder(SHIPPED_DIR)
    train_onpolicy(model, tokenizer, task, config, run_dir=tmp_path / "killed", stop_after=3)  # dies after step 3
    assert len((tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()) == 3  # checkpoint is at 2
    model, tokenizer = load_world_folder(SHIPPED_DIR)  # a new process: fresh initial weights
    resumed = train_onpolicy(model, tokenizer, task, config, run_dir=tmp_path / "killed")
    assert same(expected, weights(model))
    lines = [json.loads(x) for x in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [0, 1, 2, 3]
    assert [m["reward"] for m in lines] == [m["reward"] for m in straight.history]
    def scores(evals):
        return [{k: v for k, v in e.items() if k not in ("seconds", "tokens_per_second")} for e in evals]

    assert scores(resumed.evals) == scores(straight.evals) and resumed.best["step"] == straight.best["step"]
    summary = json.loads((tmp_path / "killed" / "summary.json").read_text())
    assert summary["rollouts"] == 12 and scores([summary["final"]]) == scores([straight.final])
    # the time spent is the time of every step and evaluation, the ones before the kill included
    steps = sum(v for m in lines for k, v in m.items() if k.startswith("time_"))
    assert summary["train_seconds"] == pytest.approx(steps, abs=0.05) and summary["train_seconds"] > 0
    assert summary["eval_seconds"] >= sum(e["seconds"] for e in resumed.evals) - 0.05


def test_run_seconds_counts_steps_and_evaluations_and_the_best_weights_only_when_scored_apart():
    from mentor.train.onpolicy import run_seconds

    history = [{"time_generate": 1.0, "time_update": 2.0, "reward": 0.5}, {"time_generate": 0.5, "time_critic": 0.25}]
    evals = [{"seconds": 3.0}, {"seconds": 4.0}]
    same_step = {"final": {"step": 2, "seconds": 10.0}, "best": {"step": 2, "seconds": 10.0}}
    apart = {"final": {"step": 2, "seconds": 10.0}, "best": {"step": 1, "seconds": 9.0}}
    assert run_seconds(history, evals, same_step) == {"train_seconds": 3.8, "eval_seconds": 17.0}
    assert run_seconds(history, evals, apart) == {"train_seconds": 3.8, "eval_seconds": 26.0}
    assert run_seconds([], [], None) == {"train_seconds": 0.0, "eval_seconds": 0.0}
    # no best weights kept (best at step 1, final at 2): test_scores copies the final score, which took no time
    copied = {"final": {"step": 2, "seconds": 10.0}, "best": {"step": 1, "seconds": 0.0}}
    assert run_seconds(history, evals, copied) == {"train_seconds": 3.8, "eval_seconds": 17.0}


def test_a_best_score_copied_from_the_final_one_says_it_took_no_time():
    from mentor.evaluate import EvalConfig
    from mentor.train.common import test_scores

    model, tokenizer = load_world_folder(SHIPPED_DIR)
    config = EvalConfig(n_problems=2, k=1, max_new_tokens=8, split="test")
    scores = test_scores(model, tokenizer, load_task("world"), config, 3, {"step": 1}, None)
    assert scores["best"]["step"] == 1 and scores["best"]["seconds"] == 0.0 and scores["final"]["seconds"] > 0


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # what a crafted checkpoint does: run code when unpickled
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("content", ["crafted", "truncated", "empty", "foreign"])
def test_a_checkpoint_that_is_not_plain_data_is_refused_and_runs_nothing(tmp_path, content):
    from mentor.train.checkpoint import CheckpointError

    task = load_task("world")
    config = OnPolicyConfig(steps=2, prompts_per_step=2, save_every=1, **FAST)
    model, tokenizer = load_world_folder(SHIPPED_DIR)
    train_onpolicy(model, tokenizer, task, config, run_dir=tmp_path / "run", stop_after=1)
    path = tmp_path / "run" / "checkpoint" / "state.pt"
    marker = tmp_path / "code-ran"
    if content == "crafted":
        state = torch.load(path, weights_only=True)
        torch.save({**state, "loop": {**state["loop"], "extra": _Payload(marker)}}, path)
    elif content == "truncated":
        path.write_bytes(path.read_bytes()[:1000])
    elif content == "empty":
        path.write_bytes(b"")
    else:
        torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="state.pt: not a mentor checkpoint"):
        train_onpolicy(model, tokenizer, task, config, run_dir=tmp_path / "run")
    assert not marker.exists()


def test_a_run_folder_refuses_another_configuration(tmp_path):
    task = load_task("world")
    model, tokenizer = load_world_folder(SHIPPED_DIR)
    train_onpolicy(model, tokenizer, task, OnPolicyConfig(steps=1, prompts_per_step=2, **FAST), run_dir=tmp_path)
    with pytest.raises(ValueError, match="differs in lr"):
        train_onpolicy(model, tokenizer, task, OnPolicyConfig(steps=1, prompts_per_step=2, lr=0.1, **FAST),
                       run_dir=tmp_path)


def test_early_stopping_keeps_the_best_weights(tmp_path):
    task = load_task("world")
    model, tokenizer = load_world_folder(SHIPPED_DIR)
    before = weights(model)
    # a learning rate this large wrecks the model: the first evaluation stays the best
    config = OnPolicyConfig(steps=6, prompts_per_step=4, lr=0.5, eval_every=1, early_stopping_patience=2,
                            eval_problems=8, eval_k=2, max_new_tokens=120)
    result = train_onpolicy(model, tokenizer, task, config, run_dir=tmp_path)
    assert result.stopped_early and len(result.history) == 2
    assert result.best["step"] == 0 and result.best["avg@2"] > 0
    best, _ = load_world_folder(tmp_path / "best")
    assert same(before, weights(best))
    assert [json.loads(x)["step"] for x in (tmp_path / "evals.jsonl").read_text().splitlines()] == [0, 1, 2]


def test_the_checkpoint_chosen_on_validation_is_reported_on_test(tmp_path):
    from mentor.train.common import held_out_score
    from mentor.train.onpolicy import eval_config

    task = load_task("world")
    model, tokenizer = load_world_folder(SHIPPED_DIR)
    base, _ = load_world_folder(SHIPPED_DIR)
    # a learning rate this large wrecks the model: step 0 stays the best on validation
    config = OnPolicyConfig(steps=2, prompts_per_step=4, lr=0.5, eval_every=1, eval_problems=6, eval_k=2,
                            max_new_tokens=120, test_problems=6)
    assert eval_config(config).split == "validation" and eval_config(config, test=True).split == "test"
    result = train_onpolicy(model, tokenizer, task, config, run_dir=tmp_path)
    assert result.best["step"] == 0 and set(result.test) == {"best", "final"}
    expected = held_out_score(base, tokenizer, task, task.problems("test", n=6), eval_config(config, test=True), 0)
    timing = ("seconds", "tokens_per_second")
    got = {k: v for k, v in result.test["best"].items() if k not in timing}
    assert got == {k: v for k, v in expected.items() if k not in timing}  # the untrained weights, on test
    assert {"greedy", "trace_rate"} <= set(expected) and {"greedy", "trace_rate", "avg@2"} <= set(expected["se"])
    assert result.test["final"]["step"] == 2
    final, _ = load_world_folder(tmp_path / "final")
    assert same(weights(model), weights(final)) and not same(weights(model), weights(base))  # left at final
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["test"]["best"]["avg@2"] == expected["avg@2"] and summary["test_evaluation"]["split"] == "test"


def _rows(task, tokenizer, completions):
    problems = task.problems("train", n=len(completions))
    rows = []
    for problem, completion in zip(problems, completions):
        text = completion(problem)
        ids = tokenizer.encode(text, add_special_tokens=False)
        rows.append(Row(problem, render_prompt(tokenizer, task.prompt(problem)),
                        Sample(text=text, token_ids=ids, logprobs=[0.0] * len(ids), finish_reason="stop"),
                        task.verify(problem, text).reward))
    return rows


def _right(p):
    return canonical_solution(WorldProblem.from_meta(p.meta))


def _wrong(p):
    return corrupt_trace(WorldProblem.from_meta(p.meta), random.Random(0), "result", 1)


def test_signal_span_ends_at_the_token_where_the_rollout_leaves_the_critique():
    task = load_task("world")
    _, tokenizer = load_world_folder(SHIPPED_DIR)
    right, wrong = _right, _wrong

    rows = _rows(task, tokenizer, [right, wrong])
    config = OnPolicyConfig(method="sd-critique", signal_span="to-divergence")
    attach_contexts(rows, task, tokenizer, config, task_critic(task), 1)
    assert rows[0].keep_tokens is None and signal_tokens(rows[0]) == len(rows[0].sample.token_ids)
    ids, keep = rows[1].sample.token_ids, rows[1].keep_tokens
    assert keep < len(ids)
    wrong_prefix = tokenizer.decode(ids[:keep])
    assert right(rows[1].problem).startswith(tokenizer.decode(ids[: keep - 1]))
    assert not right(rows[1].problem).startswith(wrong_prefix)  # the last kept token is the wrong one


def test_by_group_blend_sends_groups_with_a_success_to_grpo_and_the_rest_to_the_critique():
    task = load_task("world")
    _, tokenizer = load_world_folder(SHIPPED_DIR)
    rows = _rows(task, tokenizer, [_right, _wrong, _wrong, _wrong])  # groups of two: (right, wrong), (wrong, wrong)
    rows[1].problem, rows[3].problem = rows[0].problem, rows[2].problem
    config = OnPolicyConfig(method="sd-critique", grpo_weight=0.5, rollouts_per_prompt=2, blend="by-group")
    counts = attach_contexts(rows, task, tokenizer, config, task_critic(task), 2)
    assert counts["routed_to_grpo"] == 2 and [r.teacher_prompt is None for r in rows] == [True, True, False, False]
    assert "Step 1 is wrong" in rows[2].teacher_prompt
    for bad in ({"method": "sd-critique"}, {"method": "grpo"}, {"method": "sd-success", "grpo_weight": 0.5}):
        with pytest.raises(ValueError, match="by-group"):
            OnPolicyConfig(blend="by-group", **bad)


@pytest.mark.parametrize("divergence", ["full", "top-k", "sampled"])
def test_rows_without_a_context_get_no_teacher_forward_and_change_nothing(monkeypatch, divergence):
    """Two of four rows without a context: the teacher reads the other two alone, and the loss and the
    gradient are those of the two rows with a context on their own."""
    from mentor.train import onpolicy_loss
    from mentor.train.onpolicy_loss import micro_losses

    task = load_task("world")
    model, tokenizer = load_world_folder(SHIPPED_DIR)
    rows = _rows(task, tokenizer, [_wrong, _right, _wrong, _wrong])
    config = OnPolicyConfig(method="sd-critique", divergence=divergence, top_k=5)
    attach_contexts(rows, task, tokenizer, config, task_critic(task), 1)
    rows[0].teacher_prompt = rows[3].teacher_prompt = None
    seen = []
    for name in ("completion_states", "completion_logits"):
        real = getattr(onpolicy_loss, name)
        monkeypatch.setattr(onpolicy_loss, name, lambda m, p, c, _real=real: (seen.append(len(p)), _real(m, p, c))[1])
    teacher = SelfTeacher(model)
    results = []
    for batch in (rows, rows[1:3]):
        model.zero_grad()
        _, sd, _ = micro_losses(model, teacher, tokenizer, batch, torch.zeros(len(batch)), config, {"teacher": 0.0})
        sd.backward()
        results.append((sd.detach(), [p.grad.clone() for p in model.parameters()]))
    assert seen[0] == 2 == seen[-1]  # the teacher's forward, the whole batch's and the two rows': two rows each
    torch.testing.assert_close(results[0][0], results[1][0])
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_sd_success_needs_a_successful_sibling():
    task = load_task("world")
    _, tokenizer = load_world_folder(SHIPPED_DIR)

    def right(p):
        return canonical_solution(WorldProblem.from_meta(p.meta))

    rows = _rows(task, tokenizer, [right, right])
    rows[1].problem = rows[0].problem  # one group of two: both correct
    rows[1].reward = 0.0  # now only row 0 succeeded: row 1 learns from it, row 0 has no other winner
    counts = attach_contexts(rows, task, tokenizer, OnPolicyConfig(method="sd-success", rollouts_per_prompt=2),
                             task_critic(task), 2)
    assert rows[0].teacher_prompt is None and counts["no_success"] == 1
    assert right(rows[0].problem) in rows[1].teacher_prompt


def test_unusable_critiques_give_no_signal_and_warn(caplog):
    task = load_task("world")
    model, tokenizer = load_world_folder(SHIPPED_DIR)
    before = weights(model)

    def broken_critic(problems, traces):
        return [None] * len(problems)

    with caplog.at_level("WARNING", logger="mentor"):
        result = train_onpolicy(model, tokenizer, task, OnPolicyConfig(steps=1, prompts_per_step=3, **FAST),
                                critic=broken_critic)
    metrics = result.history[0]
    assert metrics["signal_fraction"] == 0.0 and metrics["critic_unusable"] == 3
    assert same(before, weights(model))  # no signal, no update
    assert "teacher signal" in caplog.text


def test_completion_logits_align_rows_of_different_prompt_lengths():
    model, _ = load_world_folder(SHIPPED_DIR)
    prompts, completions = [[5, 6, 7, 8, 9], [5, 6], [7, 8, 9]], [[10, 11, 12], [13, 14, 15, 16, 17], []]
    with torch.no_grad():
        logits_BTV, mask_BT = completion_logits(model, prompts, completions)
        assert logits_BTV.shape[:2] == mask_BT.shape == (3, 5) and mask_BT[2].sum() == 0  # an empty completion
        for row, (prompt, completion) in enumerate(zip(prompts, completions)):
            alone = model(input_ids=torch.tensor([prompt + completion])).logits[0]
            expected = alone[len(prompt) - 1 : len(prompt) - 1 + len(completion)]
            assert torch.allclose(logits_BTV[row, : len(completion)], expected, atol=1e-5)
            assert mask_BT[row].sum() == len(completion)


class RecordingTracker(GeneralTracker):
    name = "recording"
    requires_logging_directory = False

    def __init__(self):
        super().__init__()
        self.logged, self.config = [], None

    @property
    def tracker(self):
        return self

    def store_init_configuration(self, values):
        self.config = values

    def log(self, values, step=None, **kwargs):
        self.logged.append((step, values))


def test_metrics_reach_accelerate_trackers():
    model, tokenizer = load_world_folder(SHIPPED_DIR)
    tracker = RecordingTracker()
    train_onpolicy(model, tokenizer, load_task("world"), OnPolicyConfig(steps=2, prompts_per_step=2, **FAST),
                   trackers=[tracker])
    assert tracker.config["method"] == "sd-critique"
    steps = [step for step, values in tracker.logged if "reward" in values]
    assert steps == [1, 2]
    assert any("eval/avg@2" in values for _, values in tracker.logged)


def test_a_context_the_task_cannot_give_fails_before_training():
    model, tokenizer = load_world_folder(SHIPPED_DIR)
    with pytest.raises(ValueError, match="has no critic"):
        train_onpolicy(model, tokenizer, load_task("gym:family_relationships"), OnPolicyConfig(steps=1, **FAST))


class _TwoProcesses:
    """``Ranks`` as the second of two ``accelerate launch`` processes sees it, without starting any."""

    world, rank, is_main, sharded = 2, 1, False, False

    def require_data_parallel(self) -> None:
        pass


def test_several_processes_refuse_a_sampler_passed_in(monkeypatch):
    import mentor.train.onpolicy as onpolicy

    monkeypatch.setattr(onpolicy, "Ranks", _TwoProcesses)
    with pytest.raises(ValueError, match="not from a sampler passed in"):
        onpolicy.train_onpolicy(None, None, None, OnPolicyConfig(), sampler=object())
