"""A quick on-policy run on the world: train the shipped base solver with one method, then Avg@8.

    python benchmarks/onpolicy_world.py METHOD STEPS LR     # e.g. sd-critique 60 1e-3

8 prompts a step for self-distillation (1 rollout each), 2 prompts x 8 rollouts for grpo; evaluation on
100 held-out problems, k=8, T=1.0, seed 0. The base solver's own Avg@8 is 25.12 (docs/world.md).
"""

from __future__ import annotations

import sys
import time

from mentor.evaluate import EvalConfig, evaluate
from mentor.tasks import load_task
from mentor.train.onpolicy import OnPolicyConfig, train_onpolicy
from mentor.world_model import SHIPPED_DIR, load_world_folder


def main() -> None:
    method, steps, lr = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    task = load_task("world")
    model, tokenizer = load_world_folder(SHIPPED_DIR)
    config = OnPolicyConfig(method=method, steps=steps, prompts_per_step=2 if method == "grpo" else 8, lr=lr)
    start = time.time()
    history = train_onpolicy(model, tokenizer, task, config)
    seconds = time.time() - start
    summary, _ = evaluate(model, tokenizer, task, task.problems("test", n=100), EvalConfig(n_problems=100, k=8))
    first = sum(m["reward"] for m in history[:5]) / min(5, len(history))
    last = sum(m["reward"] for m in history[-5:]) / min(5, len(history))
    s = summary["none"]
    print(f"{method}: {steps} steps in {seconds:.0f} s, train reward {first:.3f} -> {last:.3f}; "
          f"avg@8 {100 * s['avg@8']:.2f} pass@8 {100 * s['pass@8']:.2f} maj@8 {100 * s['maj@8']:.2f}")


if __name__ == "__main__":
    main()
