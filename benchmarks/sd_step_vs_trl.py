"""Self-distillation step, mentor against TRL's SDFTTrainer, in one interleaved run: tokens per CPU-second
of the update and of the whole step, their ratios (mentor / TRL: above 1, mentor is faster), and the peak
memory of one update against one plain SFT step of the same tokens.

    python benchmarks/sd_step_vs_trl.py [--vocab 49152|151936] [--prompts 8] [--tokens 128] [--repeats 3]
        [--memory-vocab 151936] [--memory-prompts 4] [--memory-tokens 512] [--no-memory] [--no-whole]
        [--threads 1]

The default run (about 3.5 minutes on two shared cores) measures speed at vocab 49,152 and memory at
151,936; ``--vocab 151936 --no-memory`` gives the speed at the larger vocabulary.

Both sides train the same tiny random-init Llama (hidden 256, 4 layers; ``benchmarks/vs_trl.py``) from
one saved folder, with the SmolLM2 tokenizer and chat template, one torch thread, AdamW (lr 1e-5, gradient
norm clipped at 1), and the same objective: forward KL(teacher || student) over the full vocabulary on
every completion token (mentor ``method=sd-reference``, ``divergence=full``, ``beta=0``; TRL
``distillation_mode="full_logits"``, ``distillation_alpha=0``, no importance-sampling clip), the teacher
being the frozen initial weights (mentor ``teacher=initial``, TRL ``teacher_model_kind="base"``) reading
the reference solution in mentor's reference template (TRL's ``teacher_prompt_template`` set to it).
TRL's gradient checkpointing and bf16 autocast, on by default, are turned off, so both sides do the same
float32 work; the printed losses and gradient norms of the fixed-batch updates agree to every printed digit.
Times are CPU seconds of this process (``time.process_time``), since the cores are shared; the sides
alternate within each repetition (and swap order every repetition), and the tables give each side's
median over the repetitions. CPU time still moves with the other load on the machine (the memory-bound
parts most): compare ratios within one run, and repeat a run before trusting a ratio to better than ~20%.

- **update**: one update on a fixed batch of ``--prompts`` word problems, each with a completion of exactly
  ``--tokens`` random token ids drawn from the whole vocabulary (the same ids on both sides, so per-token
  and per-sequence means agree and the printed losses are comparable): student forward, teacher forward,
  loss, backward, clip, optimizer step. mentor: ``mentor.train.onpolicy.micro_losses`` and
  ``clip_and_step``, as in ``train_step``; TRL: ``SDFTTrainer.compute_loss`` on the prepared batch,
  backward, clip, step. One untimed warm-up update per side first. tok/CPU-s = prompts x tokens / CPU-s.
- **whole step**: generation (up to ``--tokens`` new tokens per prompt, temperature 1) plus the update.
  mentor: ``train_step``; TRL: ``SDFTTrainer.train()`` of one step, timed from ``on_step_begin`` to
  ``on_step_end`` (trainer set-up excluded). Generation (mentor's local loop against TRL's call to HF
  ``generate``) is timed on its own inside the step; "rest" is the step without it.
  tok/CPU-s = generated tokens / CPU-s.
- **memory**: peak RSS (``VmHWM``; ``ru_maxrss`` would carry over the parent's peak) of a fresh subprocess
  each that loads the model (vocab ``--memory-vocab``, by default the issue's 151,936 whatever ``--vocab``
  is), builds what the step needs
  (SD: the frozen teacher copy) and runs one step on ``--memory-prompts`` x ``--memory-tokens`` completion
  tokens: plain SFT (token-mean NLL of the completion after its prompt, HF ``labels``), mentor's SD update
  (full forward KL, and top-20 with the tail bucket), TRL's SD update. Every subprocess imports the same libraries, so the RSS before the step is comparable;
  the table gives it and the peak, and the ratios are SD / SFT.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import vs_trl
from vs_trl import CpuTimer, cpu_seconds, median, print_table

from mentor.contexts import TEMPLATES, build_context_prompt
from mentor.models import encode_prompt, render_prompt
from mentor.sampling import Sample
from mentor.sampling.local import LocalSampler
from mentor.train.common import clip_and_step
from mentor.train.onpolicy import OnPolicyConfig, Row, micro_losses, train_step
from mentor.train.teacher import SelfTeacher

LR = 1e-5


# ----- one fixed batch, seen by both sides --------------------------------------------------------------


def fixed_batch(task, tokenizer, prompts: int, tokens: int, vocab: int):
    """mentor's rows and TRL's batch dict for the same prompts, teacher prompts and completion ids."""
    problems = task.problems("train", n=prompts)
    completions = vs_trl.random_completions(prompts, tokens, vocab)
    rows = []
    for problem, completion in zip(problems, completions):
        question = task.prompt(problem)
        rows.append(vs_trl_row(problem, render_prompt(tokenizer, question), completion,
                               render_prompt(tokenizer, build_context_prompt("reference", question, problem=problem))))
    pad = tokenizer.pad_token_id
    student = [encode_prompt(tokenizer, r.prompt) for r in rows]
    teacher = [encode_prompt(tokenizer, r.teacher_prompt) for r in rows]
    prompt_ids, prompt_mask = vs_trl.left_padded(student, pad)
    teacher_ids, teacher_mask = vs_trl.left_padded(teacher, pad)
    completion_ids = torch.tensor(completions)
    completion_mask = torch.ones_like(completion_ids)
    batch = {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": completion_ids,
             "completion_mask": completion_mask,
             "teacher_input_ids": torch.cat([teacher_ids, completion_ids], dim=1),
             "teacher_attention_mask": torch.cat([teacher_mask, completion_mask], dim=1)}
    return rows, batch


def vs_trl_row(problem, prompt: str, completion: list[int], teacher_prompt: str) -> Row:
    sample = Sample(text="", token_ids=completion, logprobs=[0.0] * len(completion), finish_reason="length")
    return Row(problem, prompt, sample, reward=0.0, teacher_prompt=teacher_prompt)


# ----- the two updates -----------------------------------------------------------------------------------


def mentor_config(prompts: int, tokens: int, top_k: int | None = None) -> OnPolicyConfig:
    """Forward KL over the full vocabulary, or (``top_k``) over the teacher's top k ids plus the tail bucket."""
    return OnPolicyConfig(method="sd-reference", divergence="full" if top_k is None else "top-k", top_k=top_k or 20,
                          tail=True, beta=0.0, teacher="initial", steps=1, prompts_per_step=prompts,
                          max_new_tokens=tokens, temperature=1.0, lr=LR, max_grad_norm=1.0)


def mentor_update(model, teacher, tokenizer, rows, optimizer, config) -> float:
    """The update region of ``train_step`` on fixed rows: one micro-batch, backward, clip, step."""
    times = dict.fromkeys(("generate", "critic", "teacher", "update"), 0.0)
    model.train()
    optimizer.zero_grad(set_to_none=True)
    _, sd, _ = micro_losses(model, teacher, tokenizer, rows, torch.zeros(len(rows)), config, times)
    sd.backward()
    grad_norm = clip_and_step(model, optimizer, config.max_grad_norm)
    model.eval()
    return float(sd.detach()), grad_norm


def trl_trainer(folder: Path, tokenizer, task, prompts: int, tokens: int, output_dir: Path):
    """An SDFTTrainer on its own copy of the model, configured for the same objective and sampling."""
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl.experimental.sdft import SDFTConfig, SDFTTrainer

    problems = task.problems("train", n=prompts)
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": task.prompt(p)}],
                               "privileged_context": p.solution} for p in problems])
    template = TEMPLATES["reference"].replace("{question}", "{prompt}").replace("{reference}", "{privileged_context}")
    args = SDFTConfig(output_dir=str(output_dir), per_device_train_batch_size=prompts, num_generations=1,
                      max_completion_length=tokens, temperature=1.0, top_p=1.0, learning_rate=LR,
                      lr_scheduler_type="constant", max_grad_norm=1.0, max_steps=1, logging_steps=10**6,
                      save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True, seed=0,
                      bf16=False, gradient_checkpointing=False,  # float32 and no recomputation, as mentor
                      distillation_mode="full_logits", distillation_alpha=0.0, distillation_is_clip=None,
                      teacher_model_kind="base", teacher_prompt_template=template)
    trainer = SDFTTrainer(model=vs_trl.load_model(folder), args=args, train_dataset=data, processing_class=tokenizer)
    trainer.remove_callback(PrinterCallback)
    trainer.current_gradient_accumulation_steps = 1  # set by train(); compute_loss divides by it
    return trainer


# ----- whole steps ---------------------------------------------------------------------------------------


def mentor_whole(model, teacher, tokenizer, task, optimizer, config, generate: CpuTimer, step: int):
    problems = task.problems("train", n=config.prompts_per_step)
    generate.take()
    seconds, metrics = cpu_seconds(lambda: train_step(model, teacher, tokenizer, task, problems, optimizer, config,
                                                      step, None))
    return seconds, generate.take(), metrics["generated_tokens"], metrics["sd_loss"]


def trl_whole(trainer, clock, generate: CpuTimer):
    clock.seconds.clear()
    generate.take()
    trainer.train()
    _, completions = generate.last
    loss = trainer.state.log_history[-1].get("train_loss", float("nan"))
    return clock.seconds[-1], generate.take(), sum(len(c) for c in completions), loss


# ----- memory, each in a fresh subprocess ----------------------------------------------------------------


def memory_child(kind: str, folder: Path, prompts: int, tokens: int, workdir: Path) -> None:
    """One step of ``kind`` (sft, mentor, trl) in this fresh process; prints the RSS before it and the peak."""
    import trl.experimental.sdft  # noqa: F401  every child imports the same libraries

    tokenizer = vs_trl.smollm2_tokenizer()
    vocab = json.loads((folder / "config.json").read_text())["vocab_size"]
    task = vs_trl.word_task(prompts, workdir)
    rows, batch = fixed_batch(task, tokenizer, prompts, tokens, vocab)
    if kind == "trl":
        trainer = trl_trainer(folder, tokenizer, task, prompts, tokens, workdir / "trl")
        model = trainer.model
    else:
        model = vs_trl.load_model(folder)
    teacher = SelfTeacher(model, "initial") if kind.startswith("mentor") else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    before = vs_trl.peak_rss_mib()
    if kind == "sft":
        loss = sft_step(model, batch, optimizer)
    elif kind.startswith("mentor"):
        config = mentor_config(prompts, tokens, top_k=20 if kind == "mentor-top-k" else None)
        loss, _ = mentor_update(model, teacher, tokenizer, rows, optimizer, config)
    else:
        loss, _ = vs_trl.trl_update(trainer, batch, optimizer)
    print(json.dumps({"before": before, "peak": vs_trl.peak_rss_mib(), "loss": loss}))


def sft_step(model, batch, optimizer) -> float:
    """Plain SFT of the same tokens: token-mean NLL of each completion after its prompt (right-padded rows,
    HF ``labels``), backward, clip, step."""
    prompts = [ids[mask.bool()].tolist() for ids, mask in zip(batch["prompt_ids"], batch["prompt_mask"])]
    completions = batch["completion_ids"].tolist()
    width = max(len(p) + len(c) for p, c in zip(prompts, completions))
    ids, attention, labels = [], [], []
    for p, c in zip(prompts, completions):
        right = width - len(p) - len(c)
        ids.append(p + c + [0] * right)
        attention.append([1] * (len(p) + len(c)) + [0] * right)
        labels.append([-100] * len(p) + c + [-100] * right)
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(attention), labels=torch.tensor(labels)).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return float(loss.detach())


def memory(args, workdir: Path) -> None:
    folder = vs_trl.build_model_folder(args.memory_vocab, workdir / f"model-{args.memory_vocab}")
    results = {}
    for kind in ("sft", "mentor", "mentor-top-k", "trl"):
        command = [sys.executable, __file__, "--child", kind, "--folder", str(folder), "--threads", str(args.threads),
                   "--prompts", str(args.memory_prompts), "--tokens", str(args.memory_tokens)]
        out = subprocess.run(command, capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"memory subprocess {kind} failed:\n{out.stderr[-3000:]}")
        results[kind] = json.loads(out.stdout.strip().splitlines()[-1])
    sft = results["sft"]
    sft_own = max(sft["peak"] - sft["before"], 1e-9)
    names = {"sft": "SFT step (token-mean NLL)", "mentor": "mentor SD update",
             "mentor-top-k": "mentor SD update, top-20 + tail", "trl": "TRL SDFTTrainer SD update"}
    rows = [[names[k], r["before"], r["peak"], r["peak"] - r["before"], f"{r['loss']:.4f}",
             "" if k == "sft" else f"{r['peak'] / sft['peak']:.2f}x",
             "" if k == "sft" else f"{(r['peak'] - r['before']) / sft_own:.2f}x"]
            for k, r in results.items()]
    print_table(f"Peak RSS, one step, vocab {args.memory_vocab:,}, {args.memory_prompts} x {args.memory_tokens} "
                f"completion tokens (fresh process each; MiB)",
                ["step", "RSS before", "peak RSS", "step's own", "loss", "peak / SFT", "own / SFT"], rows)


# ----- the run -------------------------------------------------------------------------------------------


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="mentor-vs-trl-") as workdir:
        run(parse_args(), Path(workdir))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=128, help="completion tokens per prompt")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-vocab", type=int, default=151936)
    parser.add_argument("--memory-prompts", type=int, default=4)
    parser.add_argument("--memory-tokens", type=int, default=512)
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--no-whole", action="store_true", help="skip the whole steps")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", choices=("sft", "mentor", "mentor-top-k", "trl"), help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


def run(args: argparse.Namespace, workdir: Path) -> None:
    """The benchmark; its model folders and task files live in ``workdir``."""
    vs_trl.setup(args.threads)
    if args.child:
        return memory_child(args.child, args.folder, args.prompts, args.tokens, workdir)

    folder = vs_trl.build_model_folder(args.vocab, workdir / "model")
    tokenizer = vs_trl.smollm2_tokenizer()
    task = vs_trl.word_task(args.prompts, workdir)
    config = mentor_config(args.prompts, args.tokens)
    print(f"SD step, mentor vs TRL SDFTTrainer: random-init Llama hidden 256, 4 layers, vocab {args.vocab:,}; "
          f"{args.prompts} prompts x {args.tokens} tokens; forward KL over the full vocabulary, frozen initial "
          f"teacher with the reference solution; torch threads {torch.get_num_threads()}; CPU seconds")

    model = vs_trl.load_model(folder)
    teacher = SelfTeacher(model, "initial")
    mentor_opt = torch.optim.AdamW(model.parameters(), lr=LR)
    trainer = trl_trainer(folder, tokenizer, task, args.prompts, args.tokens, workdir / "trl")
    trl_opt = torch.optim.AdamW(trainer.model.parameters(), lr=LR)
    rows, batch = fixed_batch(task, tokenizer, args.prompts, args.tokens, args.vocab)
    tokens = args.prompts * args.tokens

    sides = {"mentor": lambda: mentor_update(model, teacher, tokenizer, rows, mentor_opt, config),
             "trl": lambda: vs_trl.trl_update(trainer, batch, trl_opt)}
    warm = {side: run() for side, run in sides.items()}  # warm-up, untimed
    update = {"mentor": [], "trl": []}
    for rep in range(args.repeats):
        for side in ("mentor", "trl") if rep % 2 == 0 else ("trl", "mentor"):
            seconds, (loss, grad_norm) = cpu_seconds(sides[side])
            update[side].append((tokens / seconds, loss, grad_norm))
    pairs = list(zip(update["mentor"], update["trl"]))
    print("update, per repetition (tok/CPU-s mentor/TRL): " + "  ".join(f"{m[0]:.0f}/{t[0]:.0f}" for m, t in pairs))
    print(f"update loss (forward KL) and gradient norm, mentor/TRL: warm-up {warm['mentor'][0]:.5f}/"
          f"{warm['trl'][0]:.5f}, |g| {warm['mentor'][1]:.4f}/{warm['trl'][1]:.4f}; "
          + "  ".join(f"{m[1]:.5f}/{t[1]:.5f}, |g| {m[2]:.4f}/{t[2]:.4f}" for m, t in pairs))
    m_up, t_up = median([u[0] for u in update["mentor"]]), median([u[0] for u in update["trl"]])

    table = [["update (fixed batch)", m_up, t_up, f"{m_up / t_up:.2f}x"]]
    if not args.no_whole:
        gen_mentor = CpuTimer(LocalSampler, "generate")
        gen_trl = CpuTimer(trainer, "_generate")
        clock = vs_trl.step_clock()
        trainer.add_callback(clock)
        whole = {"mentor": [], "trl": []}
        try:
            for rep in range(args.repeats):
                for side in ("mentor", "trl") if rep % 2 == 0 else ("trl", "mentor"):
                    if side == "mentor":
                        whole[side].append(mentor_whole(model, teacher, tokenizer, task, mentor_opt, config,
                                                        gen_mentor, rep))
                    else:
                        whole[side].append(trl_whole(trainer, clock, gen_trl))
        finally:
            gen_mentor.restore()
        for side, runs in whole.items():
            print(f"whole step {side}: " + "  ".join(
                f"{n} tokens in {s:.1f} CPU-s (generation {g:.1f}), loss {loss:.5f}" for s, g, n, loss in runs))
        figures = {side: [median([n / s for s, g, n, _ in runs]), median([n / g for s, g, n, _ in runs]),
                          median([n / (s - g) for s, g, n, _ in runs])] for side, runs in whole.items()}
        for i, name in enumerate(("whole step", "  generation (local loop / HF generate)", "  rest of the step")):
            m, t = figures["mentor"][i], figures["trl"][i]
            table.append([name, m, t, f"{m / t:.2f}x"])
    print_table(f"SD step, vocab {args.vocab:,}, {args.prompts} x {args.tokens} tokens: tok/CPU-s, median of "
                f"{args.repeats}", ["", "mentor", "TRL", "mentor / TRL"], table)
    if not args.no_memory:
        memory(args, workdir)


if __name__ == "__main__":
    sys.exit(main())
