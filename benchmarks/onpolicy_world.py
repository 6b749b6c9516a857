"""A quick on-policy run on the world: train the shipped base solver with one configuration, then Avg@8.

    python benchmarks/onpolicy_world.py method=sd-critique steps=100 lr=1e-4 [any OnPolicyConfig field=value]

Evaluation after training on 100 held-out problems, k=8, T=1.0, seed 0 (the base solver's own Avg@8 is
25.12, docs/world.md); it also prints the exact-trace rate (the critic calls the whole trace correct),
which a lucky mod-10 answer cannot inflate, and the tokens/s and peak memory (RSS) of the run.
"""

from __future__ import annotations

import resource
import sys
import time

from mentor.config import load_config
from mentor.evaluate import EvalConfig, evaluate
from mentor.tasks import load_task
from mentor.train.onpolicy import OnPolicyConfig, train_onpolicy
from mentor.world_model import SHIPPED_DIR, load_world_folder


def main() -> None:
    task = load_task("world")
    model, tokenizer = load_world_folder(SHIPPED_DIR)
    config = load_config(OnPolicyConfig, None, sys.argv[1:])
    start = time.time()
    result = train_onpolicy(model, tokenizer, task, config)
    seconds = time.time() - start
    problems = task.problems("test", n=100)
    summary, rollouts = evaluate(model, tokenizer, task, problems, EvalConfig(n_problems=100, k=8))
    by_id = {p.id: p for p in problems}
    exact = sum(task.critique(by_id[r.problem_id], r.completion).case == "correct" for r in rollouts["none"])
    first = sum(m["reward"] for m in result.history[:10]) / min(10, len(result.history))
    last = sum(m["reward"] for m in result.history[-10:]) / min(10, len(result.history))
    s = summary["none"]
    print(f"{' '.join(sys.argv[1:])}: {len(result.history)} steps in {seconds:.0f} s, "
          f"train reward {first:.3f} -> {last:.3f}; avg@8 {100 * s['avg@8']:.2f} pass@8 {100 * s['pass@8']:.2f} "
          f"maj@8 {100 * s['maj@8']:.2f} exact {100 * exact / len(rollouts['none']):.2f}")
    step = result.history[-1]
    print(f"last step: {step['generated_tokens']} tokens generated at {step['tokens_per_s']:.0f} tokens/s; "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
