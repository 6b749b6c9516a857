"""GRPO step, mentor against TRL's GRPOTrainer, in one interleaved run: tokens per CPU-second of the whole
step (generation + update) and of the update alone, and their ratios (mentor / TRL: above 1, mentor is
faster).

    python benchmarks/grpo_step_vs_trl.py [--vocab 49152|151936] [--prompts 4] [--rollouts 4] [--tokens 128]
        [--repeats 3] [--threads 1]

The default run takes about 2 minutes on two shared cores.

Both sides train the same tiny random-init Llama (hidden 256, 4 layers; ``benchmarks/vs_trl.py``) from one
saved folder, with the SmolLM2 tokenizer and chat template, one torch thread, float32, AdamW (lr 1e-5,
gradient norm clipped at 1), and the same objective: the clipped policy gradient (epsilon 0.2) with the
group-normalised advantage, averaged over every completion token, no KL term (mentor ``method=grpo``,
``aggregation=token-mean``; TRL ``loss_type="dapo"``, which for one step without accumulation is that
token mean, ``beta=0``; TRL's gradient checkpointing and bf16 autocast, on by default, are turned off so
both sides do the same float32 work). The reward is a coin flip by a hash of the completion text
(``vs_trl.coin``) on both sides, so groups have advantages to compute. Times are CPU seconds of this
process (``time.process_time``), since the cores are shared; the sides alternate within each repetition
(and swap order every repetition), and the table gives each side's median over the repetitions. CPU time
still moves with the other load on the machine: compare ratios within one run, and repeat a run before
trusting a ratio to better than ~20%. The fixed-batch updates print both sides' loss and gradient norm,
which agree.

- **whole step**: ``--prompts`` word problems x ``--rollouts`` samples of up to ``--tokens`` new tokens
  (temperature 1), rewards, advantages, the update. mentor: ``train_step``; TRL: ``GRPOTrainer.train()`` of
  one step, timed from ``on_step_begin`` to ``on_step_end`` (trainer set-up excluded). Generation (mentor's
  local loop against TRL's ``_generate``, i.e. HF ``generate`` and decoding) is timed on its own inside
  the step; "rest" is the step without it. tok/CPU-s = generated tokens / CPU-s.
- **update**: one update on a fixed batch (the same prompts, completions of exactly ``--tokens`` random ids
  and the same advantages on both sides): forward, loss, backward, clip, optimizer step. mentor:
  ``mentor.train.onpolicy.micro_losses`` and ``clip_and_step``, as in ``train_step``; TRL:
  ``GRPOTrainer.compute_loss`` on the prepared batch (TRL also computes the entropy there, as it always
  does), backward, clip, step. One untimed warm-up update per side first. tok/CPU-s = rows x tokens / CPU-s.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
import vs_trl
from vs_trl import CpuTimer, cpu_seconds, median, print_table

from mentor.losses import group_advantages, token_logprobs
from mentor.models import encode_prompt, render_prompt
from mentor.sampling import Sample
from mentor.sampling.local import LocalSampler
from mentor.train.common import clip_and_step
from mentor.train.completions import completion_logits
from mentor.train.onpolicy import OnPolicyConfig, Row, micro_losses, train_step

LR = 1e-5


def mentor_config(prompts: int, rollouts: int, tokens: int) -> OnPolicyConfig:
    return OnPolicyConfig(method="grpo", steps=1, prompts_per_step=prompts, rollouts_per_prompt=rollouts,
                          max_new_tokens=tokens, temperature=1.0, lr=LR, max_grad_norm=1.0, clip=0.2,
                          scale_by_std=True, aggregation="token-mean")


LAST_REWARDS: list[float] = []


def coin_rewards(completions, **kwargs) -> list[float]:
    """TRL's reward function: :func:`vs_trl.coin` of each completion's text (conversational or plain)."""
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    LAST_REWARDS[:] = [vs_trl.coin(text) for text in texts]
    return list(LAST_REWARDS)


def fixed_batch(model, task, tokenizer, prompts: int, rollouts: int, tokens: int, vocab: int):
    """mentor's rows and advantages and TRL's batch dict for the same prompts, completions and advantages;
    the rows' sampling log-probs are the model's own (so the first update is exactly on-policy, as TRL's)."""
    problems = task.problems("train", n=prompts)
    completions = vs_trl.random_completions(prompts * rollouts, tokens, vocab)
    texts = [render_prompt(tokenizer, task.prompt(p)) for p in problems for _ in range(rollouts)]
    prompt_ids = [encode_prompt(tokenizer, t) for t in texts]
    rewards_BG = torch.tensor([float(i % 2) for i in range(prompts * rollouts)]).view(prompts, rollouts)
    adv_B = group_advantages(rewards_BG, scale_by_std=True)[0].reshape(-1)
    rows = [Row(problems[i // rollouts], texts[i],
                Sample(text="", token_ids=c, logprobs=[0.0] * len(c), finish_reason="length"),
                reward=float(rewards_BG.view(-1)[i])) for i, c in enumerate(completions)]
    on_policy(model, tokenizer, rows)
    ids, mask = vs_trl.left_padded(prompt_ids, tokenizer.pad_token_id)
    completion_ids = torch.tensor(completions)
    batch = {"prompt_ids": ids, "prompt_mask": mask, "completion_ids": completion_ids,
             "completion_mask": torch.ones_like(completion_ids), "advantages": adv_B.clone(),
             "num_items_in_batch": torch.tensor(completion_ids.numel())}
    return rows, adv_B, batch


@torch.no_grad()
def on_policy(model, tokenizer, rows: list[Row]) -> None:
    """Set the rows' sampling log-probs to the model's current ones (untimed, before each mentor update), so
    the update is exactly on-policy, as TRL's is when it has no old log-probs (it uses its own, detached)."""
    completions = [r.sample.token_ids for r in rows]
    logits_BTV, _ = completion_logits(model, [encode_prompt(tokenizer, r.prompt) for r in rows], completions)
    logp_BT = token_logprobs(logits_BTV, torch.tensor(completions))
    for row, logp_T in zip(rows, logp_BT):
        row.sample.logprobs = logp_T.tolist()


def mentor_update(model, tokenizer, rows, adv_B, optimizer, config) -> float:
    """The update region of ``train_step`` on fixed rows: one micro-batch, backward, clip, step."""
    times = dict.fromkeys(("generate", "critic", "teacher", "update"), 0.0)
    model.train()
    optimizer.zero_grad(set_to_none=True)
    pg, _, _ = micro_losses(model, None, tokenizer, rows, adv_B, config, times)
    pg.backward()
    grad_norm = clip_and_step(model, optimizer, config.max_grad_norm)
    model.eval()
    return float(pg.detach()), grad_norm


def trl_trainer(folder: Path, tokenizer, task, prompts: int, rollouts: int, tokens: int, output_dir: Path):
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import GRPOConfig, GRPOTrainer

    data = Dataset.from_list([{"prompt": [{"role": "user", "content": task.prompt(p)}]}
                              for p in task.problems("train", n=prompts)])
    args = GRPOConfig(output_dir=str(output_dir), per_device_train_batch_size=prompts * rollouts,
                      num_generations=rollouts, max_completion_length=tokens, temperature=1.0, top_p=1.0,
                      learning_rate=LR, lr_scheduler_type="constant", max_grad_norm=1.0, max_steps=1,
                      beta=0.0, epsilon=0.2, loss_type="dapo", scale_rewards="group", logging_steps=10**6,
                      save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True, seed=0,
                      bf16=False, gradient_checkpointing=False)
    trainer = GRPOTrainer(model=vs_trl.load_model(folder), reward_funcs=coin_rewards, args=args, train_dataset=data,
                          processing_class=tokenizer)
    trainer.remove_callback(PrinterCallback)
    trainer.current_gradient_accumulation_steps = 1  # set by train(); the loss normaliser reads it
    return trainer


def mentor_whole(model, tokenizer, task, optimizer, config, generate: CpuTimer, step: int):
    problems = task.problems("train", n=config.prompts_per_step)
    generate.take()
    seconds, metrics = cpu_seconds(lambda: train_step(model, None, tokenizer, task, problems, optimizer, config,
                                                      step, None))
    return seconds, generate.take(), metrics["generated_tokens"], metrics["pg_loss"], metrics["reward"]


def trl_whole(trainer, clock, generate: CpuTimer):
    clock.seconds.clear()
    generate.take()
    trainer.train()
    completions = generate.last[1]
    logs = trainer.state.log_history[-1]
    reward = sum(LAST_REWARDS) / max(len(LAST_REWARDS), 1)
    return clock.seconds[-1], generate.take(), sum(len(c) for c in completions), logs.get("train_loss", 0.0), reward


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="mentor-vs-trl-") as workdir:
        run(parse_args(), Path(workdir))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--rollouts", type=int, default=4, help="samples per prompt (the group)")
    parser.add_argument("--tokens", type=int, default=128, help="new tokens per sample at most")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args()


def run(args: argparse.Namespace, workdir: Path) -> None:
    """The benchmark; its model folders and task files live in ``workdir``."""
    vs_trl.setup(args.threads)

    folder = vs_trl.build_model_folder(args.vocab, workdir / "model")
    tokenizer = vs_trl.smollm2_tokenizer()
    task = vs_trl.word_task(args.prompts, workdir)
    config = mentor_config(args.prompts, args.rollouts, args.tokens)
    print(f"GRPO step, mentor vs TRL GRPOTrainer: random-init Llama hidden 256, 4 layers, vocab {args.vocab:,}; "
          f"{args.prompts} prompts x {args.rollouts} rollouts x up to {args.tokens} tokens; clipped policy "
          f"gradient, token mean, no KL; torch threads {torch.get_num_threads()}; CPU seconds")

    model = vs_trl.load_model(folder)
    mentor_opt = torch.optim.AdamW(model.parameters(), lr=LR)
    trainer = trl_trainer(folder, tokenizer, task, args.prompts, args.rollouts, args.tokens, workdir / "trl")
    trl_opt = torch.optim.AdamW(trainer.model.parameters(), lr=LR)
    rows, adv_B, batch = fixed_batch(model, task, tokenizer, args.prompts, args.rollouts, args.tokens, args.vocab)
    tokens = args.prompts * args.rollouts * args.tokens

    sides = {"mentor": lambda: mentor_update(model, tokenizer, rows, adv_B, mentor_opt, config),
             "trl": lambda: vs_trl.trl_update(trainer, batch, trl_opt)}
    warm = {side: run() for side, run in sides.items()}  # warm-up, untimed
    update = {"mentor": [], "trl": []}
    for rep in range(args.repeats):
        for side in ("mentor", "trl") if rep % 2 == 0 else ("trl", "mentor"):
            if side == "mentor":
                on_policy(model, tokenizer, rows)
            seconds, (loss, grad_norm) = cpu_seconds(sides[side])
            update[side].append((tokens / seconds, loss, grad_norm))
    pairs = list(zip(update["mentor"], update["trl"]))
    print("update, per repetition (tok/CPU-s mentor/TRL): " + "  ".join(f"{m[0]:.0f}/{t[0]:.0f}" for m, t in pairs))
    print(f"update loss and gradient norm (mentor/TRL; on-policy, so the loss is minus the mean advantage, 0): "
          f"warm-up {warm['mentor'][0]:+.5f}/{warm['trl'][0]:+.5f}, |g| {warm['mentor'][1]:.4f}/{warm['trl'][1]:.4f}; "
          + "  ".join(f"{m[1]:+.5f}/{t[1]:+.5f}, |g| {m[2]:.4f}/{t[2]:.4f}" for m, t in pairs))

    gen_mentor = CpuTimer(LocalSampler, "generate")
    gen_trl = CpuTimer(trainer, "_generate")
    clock = vs_trl.step_clock()
    trainer.add_callback(clock)
    whole = {"mentor": [], "trl": []}
    try:
        for rep in range(args.repeats):
            for side in ("mentor", "trl") if rep % 2 == 0 else ("trl", "mentor"):
                if side == "mentor":
                    whole[side].append(mentor_whole(model, tokenizer, task, mentor_opt, config, gen_mentor, rep))
                else:
                    whole[side].append(trl_whole(trainer, clock, gen_trl))
    finally:
        gen_mentor.restore()
    for side, runs in whole.items():
        print(f"whole step {side}: " + "  ".join(
            f"{n} tokens in {s:.1f} CPU-s (generation {g:.1f}), loss {loss:+.5f}, reward {r:.2f}"
            for s, g, n, loss, r in runs))

    m_up, t_up = median([u[0] for u in update["mentor"]]), median([u[0] for u in update["trl"]])
    figures = {side: [median([n / s for s, g, n, *_ in runs]), median([n / g for s, g, n, *_ in runs]),
                      median([n / (s - g) for s, g, n, *_ in runs])] for side, runs in whole.items()}
    table = []
    for i, name in enumerate(("whole step", "  generation (local loop / HF generate)", "  rest of the step")):
        m, t = figures["mentor"][i], figures["trl"][i]
        table.append([name, m, t, f"{m / t:.2f}x"])
    table.append(["update (fixed batch)", m_up, t_up, f"{m_up / t_up:.2f}x"])
    print_table(f"GRPO step, vocab {args.vocab:,}, {args.prompts} x {args.rollouts} x {args.tokens} tokens: "
                f"tok/CPU-s, median of {args.repeats}", ["", "mentor", "TRL", "mentor / TRL"], table)


if __name__ == "__main__":
    sys.exit(main())
