"""A quick on-policy run on the world: train the shipped base solver with one configuration, then score it.

    python benchmarks/onpolicy_world.py method=sd-critique steps=60 lr=1e-3 [any OnPolicyConfig field=value]

Scores after training on 300 test problems, k=8, T=1.0, seed 0: Avg@8, Pass@8, Maj@8 and the fully correct
trace rate (the critic accepts every step), each with its standard error over problems; and the tokens/s
and peak memory (RSS) of the run.
"""

from __future__ import annotations

import resource
import sys
import time

from mentor.config import load_config
from mentor.evaluate import EvalConfig, evaluate
from mentor.tasks import load_task
from mentor.train.onpolicy import OnPolicyConfig, train_onpolicy
from mentor.world.solver import SHIPPED_DIR, load_world_folder


def main() -> None:
    task = load_task("world")
    model, tokenizer = load_world_folder(SHIPPED_DIR)
    config = load_config(OnPolicyConfig, None, sys.argv[1:])
    start = time.time()
    result = train_onpolicy(model, tokenizer, task, config)
    seconds = time.time() - start
    problems = task.problems("test", n=300)
    summary, _ = evaluate(model, tokenizer, task, problems, EvalConfig(n_problems=300, k=8))
    first = sum(m["reward"] for m in result.history[:10]) / min(10, len(result.history))
    last = sum(m["reward"] for m in result.history[-10:]) / min(10, len(result.history))
    s = summary["none"]
    scores = "  ".join(f"{key} {100 * s[key]:.2f} ± {100 * s['se'][key]:.2f}"
                       for key in ("avg@8", "pass@8", "maj@8", "trace_rate"))
    print(f"{' '.join(sys.argv[1:])}: {len(result.history)} steps in {seconds:.0f} s, "
          f"train reward {first:.3f} -> {last:.3f}; {scores}")
    step = result.history[-1]
    print(f"last step: {step['generated_tokens']} tokens generated at {step['tokens_per_s']:.0f} tokens/s; "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
