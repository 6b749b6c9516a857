"""Throughput of on-policy training in 2 processes (``accelerate launch``, DDP or FSDP over gloo) against 1.

    python benchmarks/ddp_scaling.py [--hidden 512] [--layers 8] [--method sd-critique] [--prompts 4]
        [--steps 4] [--repeats 2] [--max-new-tokens 160] [--parallel ddp fsdp]

A random-init Llama of the given size (big enough that compute, not the all-reduce, dominates; the world's
tokenizer, so the world task and its critic run as they are) is saved to a temporary folder, then
``mentor train`` runs on it in 1 process and in 2, each process on one torch thread (one core each), one
after the other ``--repeats`` times (interleaved, so a change of machine load hits both alike):
- *weak scaling*: every process draws ``--prompts`` prompts a step, so 2 processes do twice the work a step;
- *strong scaling*: the 2 processes share the 1-process run's global batch (``--prompts`` must be even);
each for every ``--parallel`` config shipped in examples/accelerate (data parallel, FSDP2 sharding).
Throughput is generated tokens per second of step time (sampling, critic, teacher and update, the slowest
process's, from the run's metrics.jsonl), median over the steps after the first; the ratio is 2-process
throughput over 1-process. Memory is the peak resident set of the largest process of a run (the kernel's
maximum over the run's processes; the launcher is smaller than any training process). Needs 2 free cores: on a busy machine the 2-process figure is the first to fall.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from mentor.world.solver import SHIPPED_DIR, load_world_folder


def build_model(folder: Path, hidden: int, layers: int) -> int:
    _, tokenizer = load_world_folder(SHIPPED_DIR)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 8 // 3,
                         num_hidden_layers=layers, num_attention_heads=hidden // 64, num_key_value_heads=hidden // 64,
                         max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         tie_word_embeddings=True)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


CONFIGS = Path(__file__).parents[1] / "examples" / "accelerate"
# runs a command and prints, last, the peak resident set (KiB) of the largest process under it
PEAK_RSS = ("import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(code)")


def run(folder: Path, out: Path, processes: int, prompts: int, args, parallel: str = "ddp") -> tuple[float, float]:
    """Median generated tokens per second of step time over the steps after the first, and the peak resident
    set of the run's largest process in MiB."""
    mentor = ["-m", "mentor", "--threads", "1", "train", "--out", str(out), f"model={folder}",
              f"onpolicy.method={args.method}", f"onpolicy.steps={args.steps}", f"onpolicy.prompts_per_step={prompts}",
              f"onpolicy.max_new_tokens={args.max_new_tokens}", "onpolicy.eval_problems=1", "onpolicy.eval_k=1",
              f"onpolicy.save_every={args.steps}"]
    if args.method == "grpo":
        mentor.append("onpolicy.rollouts_per_prompt=4")
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / f"{parallel}.yaml"),
              "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    command = [*launch, *mentor] if processes == 2 else [sys.executable, *mentor]
    done = subprocess.run([sys.executable, "-c", PEAK_RSS, *command], env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stdout[-2000:] + done.stderr[-2000:])
    speeds = []
    for line in (out / "metrics.jsonl").read_text().splitlines()[1:]:
        m = json.loads(line)
        seconds = sum(m[f"time_{k}"] for k in ("generate", "critic", "teacher", "update"))
        speeds.append(m["generated_tokens"] / seconds)
    return statistics.median(speeds), int(done.stderr.strip().splitlines()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--method", default="sd-critique", choices=["sd-critique", "grpo"])
    parser.add_argument("--prompts", type=int, default=4, help="prompts per step per process (weak scaling)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--parallel", nargs="+", default=["ddp"], choices=["ddp", "fsdp"])
    args = parser.parse_args()
    if args.prompts % 2 or args.steps < 2:
        raise SystemExit("--prompts must be even and --steps at least 2")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        n = build_model(folder, args.hidden, args.layers)
        print(f"random-init Llama, hidden {args.hidden}, {args.layers} layers, {n / 1e6:.1f}M parameters; "
              f"{args.method}, {args.prompts} prompts a step a process, {args.steps} steps, one thread a process")
        cases = {"1 process": (1, args.prompts, "ddp")}
        for parallel in args.parallel:
            cases[f"2 processes, {parallel}, weak (2x batch)"] = (2, 2 * args.prompts, parallel)
            cases[f"2 processes, {parallel}, strong (same batch)"] = (2, args.prompts, parallel)
        speeds: dict[str, list[float]] = {name: [] for name in cases}
        peaks: dict[str, list[float]] = {name: [] for name in cases}
        for repeat in range(args.repeats):
            for name, (processes, prompts, parallel) in cases.items():
                speed, peak = run(folder, Path(tmp) / f"run-{repeat}-{processes}-{prompts}-{parallel}", processes,
                                  prompts, args, parallel)
                speeds[name].append(speed)
                peaks[name].append(peak)
        base = statistics.median(speeds["1 process"])
        print("| run | tok/s per repeat | median | vs 1 process | peak RSS of a process (MiB) |\n|---|---|---|---|---|")
        for name, values in speeds.items():
            middle = statistics.median(values)
            print(f"| {name} | {', '.join(f'{v:.1f}' for v in values)} | {middle:.1f} | {middle / base:.2f}x | "
                  f"{max(peaks[name]):,.0f} |")


if __name__ == "__main__":
    main()
