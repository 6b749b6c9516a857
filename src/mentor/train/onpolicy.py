"""The on-policy loop: GRPO and self-distillation with a designed context are configurations of it.

One step, top to bottom (:func:`train_step`):
1. the student samples ``rollouts_per_prompt`` completions of each prompt (no context);
2. the task's verifier scores them (reward);
3. the token signal: ``grpo`` - group-normalised advantage on every token, clipped policy gradient
   against the sampling log-probs; ``sd-reference`` / ``sd-critique`` - the frozen initial model (the
   self-teacher) reads the prompt plus a context (the reference solution, or the task critic's critique
   of this very rollout) and scores the student's tokens; the student moves toward it with the
   generalised JSD over the vocabulary (``divergence="full"``) or the sampled-token form;
4. one optimizer step.

First version (issue 3 in progress): no checkpoint resume, evaluation or guards yet. The first short runs
on the world (``benchmarks/onpolicy_world.py``) lower the base solver's Avg@8 (25.12) for every method:
sd-critique 60 steps at lr 1e-3 -> 14.50, sd-reference -> 14.13, sd-critique 100 steps at 2e-4 -> 14.50,
grpo 100 steps at 2e-4 -> 17.88. Open questions: the learning rate, lucky answers in the reward (a wrong
mod-10 trace hits the answer about one time in ten), and the world teacher's behaviour after a student's
error, where it never saw training data.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from mentor.contexts import build_context_prompt
from mentor.losses import (
    clipped_policy_gradient,
    generalized_jsd,
    group_advantages,
    sampled_token_distill,
    token_logprobs,
)
from mentor.models import encode_prompt, render_prompt
from mentor.records import append_jsonl
from mentor.sampling import SamplingParams
from mentor.sampling.local import LocalSampler
from mentor.tasks import Task
from mentor.train.common import optimizer_step

METHODS = {"grpo": None, "sd-reference": "reference", "sd-critique": "critique"}


@dataclass
class OnPolicyConfig:
    """One method of METHODS.md section 1; everything but ``method`` is shared by all of them."""

    method: str = "sd-critique"
    steps: int = 20
    prompts_per_step: int = 8
    rollouts_per_prompt: int | None = None  # default: 8 for grpo, 1 for self-distillation (the study's)
    temperature: float = 1.0
    max_new_tokens: int = 160
    lr: float = 1e-4
    max_grad_norm: float = 1.0
    divergence: str = "full"  # full (generalised JSD over the vocabulary) or sampled (sampled-token form)
    beta: float = 0.0  # 0: forward KL(T||S), the study's choice
    clip: float = 0.2  # GRPO's ratio clip
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.divergence not in ("full", "sampled"):
            raise ValueError(f"divergence must be 'full' or 'sampled', got {self.divergence!r}")
        if self.rollouts_per_prompt is None:
            self.rollouts_per_prompt = 8 if self.method == "grpo" else 1
        for name in ("steps", "prompts_per_step", "rollouts_per_prompt", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.temperature <= 0 or self.lr <= 0:
            raise ValueError("temperature and lr must be > 0")

    @property
    def context(self) -> str | None:
        return METHODS[self.method]


def _batch(sequences: list[tuple[list[int], list[int]]], pad_id: int, device) -> dict[str, torch.Tensor]:
    """Right-padded prompt+completion ids, and for each row where its completion starts and its length."""
    width = max(len(p) + len(c) for p, c in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention = torch.zeros_like(ids)
    for row, (p, c) in enumerate(sequences):
        ids[row, : len(p) + len(c)] = torch.tensor(p + c)
        attention[row, : len(p) + len(c)] = 1
    return {"input_ids": ids.to(device), "attention_mask": attention.to(device),
            "starts": [len(p) for p, _ in sequences], "lengths": [len(c) for _, c in sequences]}


def _right_padded(values: list[list], shape: tuple[int, int], dtype, device) -> torch.Tensor:
    out = torch.zeros(shape, dtype=dtype)
    for row, row_values in enumerate(values):
        out[row, : len(row_values)] = torch.tensor(row_values, dtype=dtype)
    return out.to(device)


def completion_logits(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits that predict each completion token, aligned across rows: B x T x V, and the B x T mask."""
    logits_BLV = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    width = max(batch["lengths"])
    out_BTV = logits_BLV.new_zeros((logits_BLV.shape[0], width, logits_BLV.shape[-1]))
    mask_BT = torch.zeros((logits_BLV.shape[0], width), device=logits_BLV.device)
    for row, (start, length) in enumerate(zip(batch["starts"], batch["lengths"])):
        out_BTV[row, :length] = logits_BLV[row, start - 1 : start - 1 + length]
        mask_BT[row, :length] = 1.0
    return out_BTV, mask_BT


def train_step(model, teacher, tokenizer, task: Task, problems, optimizer, config: OnPolicyConfig,
               step: int) -> dict:
    """One on-policy step on ``problems``; returns its metrics."""
    times = {}
    start = time.time()
    prompts = [render_prompt(tokenizer, task.prompt(p)) for p in problems]
    params = SamplingParams(n=config.rollouts_per_prompt, temperature=config.temperature,
                            max_new_tokens=config.max_new_tokens, seed=config.seed * 100_003 + step)
    samples = LocalSampler(model, tokenizer, batch_size=64).generate(prompts, params)
    times["generate"] = time.time() - start
    rows = [(problem, prompt, s) for problem, prompt, group in zip(problems, prompts, samples) for s in group]
    rewards = torch.tensor([task.verify(problem, s.text).reward for problem, _, s in rows])
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    student = _batch([(encode_prompt(tokenizer, prompt), s.token_ids) for _, prompt, s in rows], pad_id, device)
    metrics = {"step": step, "reward": float(rewards.mean()), "rollouts": len(rows)}
    start = time.time()
    model.train()
    logits_BTV, mask_BT = completion_logits(model, student)
    logits_BTV = logits_BTV / config.temperature
    tokens_BT = _right_padded([s.token_ids for _, _, s in rows], tuple(mask_BT.shape), torch.long, device)
    if config.context is None:
        adv_B, adv_metrics = group_advantages(rewards.view(len(problems), -1))
        old_BT = _right_padded([s.logprobs for _, _, s in rows], tuple(mask_BT.shape), torch.float32, device)
        logp_BT = token_logprobs(logits_BTV, tokens_BT)
        loss, loss_metrics = clipped_policy_gradient(logp_BT, old_BT, adv_B.reshape(-1).to(device), mask_BT,
                                                     clip_low=config.clip, clip_high=config.clip)
        metrics.update(adv_metrics)
        signal = 1.0
    else:
        critic_start = time.time()
        teacher_prompts, keep = [], []
        for problem, prompt, s in rows:
            critique = task.critique(problem, s.text) if config.context == "critique" else None
            usable = config.context != "critique" or (critique is not None and critique.case != "unusable")
            keep.append(usable)
            if usable:
                user = build_context_prompt(config.context, task.prompt(problem), problem=problem,
                                            critique=critique.critique if critique else None)
                prompt = render_prompt(tokenizer, user)
            # a rollout without a usable critique keeps its own prompt: masked out, it gives no signal
            teacher_prompts.append(encode_prompt(tokenizer, prompt))
        times["critic"] = time.time() - critic_start
        teacher_batch = _batch([(p, s.token_ids) for p, (_, _, s) in zip(teacher_prompts, rows)], pad_id, device)
        with torch.no_grad():
            teacher_BTV, _ = completion_logits(teacher, teacher_batch)
        teacher_BTV = teacher_BTV / config.temperature
        mask_BT = mask_BT * torch.tensor(keep, dtype=mask_BT.dtype, device=device)[:, None]
        if config.divergence == "full":
            loss, loss_metrics = generalized_jsd(logits_BTV, teacher_BTV, mask_BT, beta=config.beta)
        else:
            loss, loss_metrics = sampled_token_distill(token_logprobs(logits_BTV, tokens_BT),
                                                       token_logprobs(teacher_BTV, tokens_BT), mask_BT)
        signal = sum(keep) / len(keep)
    grad_norm = optimizer_step(model, optimizer, loss, config.max_grad_norm)
    model.eval()
    times["update"] = time.time() - start - times.get("critic", 0.0)
    metrics.update(loss_metrics, grad_norm=grad_norm, signal_fraction=signal,
                   generated_tokens=sum(len(s.token_ids) for _, _, s in rows),
                   **{f"time_{k}": round(v, 3) for k, v in times.items()})
    return metrics


def train_onpolicy(model, tokenizer, task: Task, config: OnPolicyConfig, *, split: str = "train",
                   log_path: str | Path | None = None,
                   progress: Callable[[int, dict], None] | None = None) -> list[dict]:
    """Run ``config.steps`` steps in place on ``model``; the self-teacher is a frozen copy of its initial
    weights. Returns the per-step metrics (also appended to ``log_path`` as JSON lines)."""
    torch.manual_seed(config.seed)
    teacher = copy.deepcopy(model).eval() if config.context else None
    if teacher is not None:
        teacher.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    pool = task.problems(split, n=config.steps * config.prompts_per_step, seed=config.seed)
    random.Random(config.seed).shuffle(pool)
    history = []
    for step in range(config.steps):
        batch = pool[step * config.prompts_per_step : (step + 1) * config.prompts_per_step]
        metrics = train_step(model, teacher, tokenizer, task, batch, optimizer, config, step)
        history.append(metrics)
        if log_path is not None:
            append_jsonl(log_path, metrics)
        if progress is not None:
            progress(step + 1, metrics)
    return history
