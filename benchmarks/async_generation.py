"""Generation that overlaps training, against the synchronous loop, in one interleaved run: generated tokens
per second of wall time over whole GRPO steps (generation, reward, update) on the shipped world model.

    python benchmarks/async_generation.py [--steps 12] [--repeats 2] [--task world:steps=3]
        [--prompts 2] [--rollouts 8] [--max-new-tokens 256]

Three settings, each a fresh GRPO run of ``--steps`` steps from the same weights (no evaluation), in turn
within every repetition (the order rotates each time):

- **sync, 1 thread**: mentor's loop draws and trains in one process with one torch thread;
- **sync, 2 threads**: the same with two threads (the whole machine, one process);
- **async, 1 + 1**: ``async_generation=true max_staleness=1``, the trainer on one thread and the generator
  process on another (one core each), the rollouts of step n+1 drawn while step n trains.

A step's wall time is the wall clock between the ends of consecutive steps (the trainer's progress callback),
so it holds everything the loop does between them: the wait for the rollouts, the update, and under async the
push of the weights to the generator. The first step of every run is left out (it fills the pipeline, and
warms every setting up). The machine must be otherwise idle: run it alone.
The table gives each setting's median tokens/s over the repetitions and its ratio to "sync, 1 thread".
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mentor.tasks import load_task
from mentor.train.onpolicy import OnPolicyConfig, train_onpolicy
from mentor.world.solver import SHIPPED_DIR, load_world_folder

SETTINGS = {
    "sync, 1 thread": {"threads": 1, "async": False},
    "sync, 2 threads": {"threads": 2, "async": False},
    "async, 1 + 1": {"threads": 1, "async": True},
}


def run(setting: dict, args) -> tuple[float, int]:
    """(seconds, generated tokens) of the GRPO steps after the first under ``setting``."""
    torch.set_num_threads(setting["threads"])
    model, tokenizer = load_world_folder(SHIPPED_DIR)
    config = OnPolicyConfig(method="grpo", steps=args.steps, prompts_per_step=args.prompts,
                            rollouts_per_prompt=args.rollouts, max_new_tokens=args.max_new_tokens, lr=1e-4,
                            eval_every=0, eval_problems=1, eval_k=1, test_problems=0, async_generation=setting["async"],
                            max_staleness=1, generator_threads=1)
    ends: list[float] = []
    history = train_onpolicy(model, tokenizer, load_task(args.task), config,
                             progress=lambda step, metrics: ends.append(time.perf_counter())).history
    return ends[-1] - ends[0], sum(m["generated_tokens"] for m in history[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--task", default="world:steps=3")
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--rollouts", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {name: [] for name in SETTINGS}
    names = list(SETTINGS)
    for repeat in range(args.repeats):
        for name in names[repeat % len(names):] + names[: repeat % len(names)]:
            seconds, tokens = run(SETTINGS[name], args)
            rates[name].append(tokens / max(seconds, 1e-9))
            print(f"repeat {repeat}: {name}: {tokens} tokens in {seconds:.1f} s of steps "
                  f"({tokens / max(seconds, 1e-9):.0f} tok/s)", flush=True)
    base = statistics.median(rates["sync, 1 thread"])
    print(f"\nGRPO on {args.task}, {args.prompts} prompts x {args.rollouts} rollouts, {args.steps} steps, "
          f"{args.repeats} repeats; median generated tokens per second of the steps after the first")
    print("| setting | tok/s | vs sync, 1 thread |\n|---|---|---|")
    for name, values in rates.items():
        print(f"| {name} | {statistics.median(values):.0f} | {statistics.median(values) / base:.2f}x |")


if __name__ == "__main__":
    main()
