"""Build the world's base solver from scratch and measure it: build time, peak memory, and Avg@8 on
held-out problems with and without context (the numbers quoted in docs/world.md).

    python benchmarks/world_model.py [--problems 100] [--k 8] [--out runs/bench-world]

Uses a fresh cache folder so the build really runs; prints its figures and writes results.json.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from mentor.evaluate import EvalConfig, evaluate, write_results
from mentor.tasks import load_task
from mentor.world.solver import WorldModelConfig, build_world_model, load_world_folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=100)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--out", default="runs/bench-world")
    args = parser.parse_args()

    config = WorldModelConfig()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "world"
        start = time.time()
        build_world_model(config, folder)
        build_seconds = time.time() - start
        model, tokenizer = load_world_folder(folder)
        eval_config = EvalConfig(n_problems=args.problems, k=args.k, contexts=["none", "reference", "critique"])
        task = load_task(eval_config.task)
        start = time.time()
        summaries, rollouts = evaluate(model, tokenizer, task, task.problems("test", n=args.problems),
                                       eval_config)
        eval_seconds = time.time() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"build: {build_seconds:.0f} s, peak memory {peak_mib:.0f} MiB")
    print(f"evaluation of {args.problems} problems x {args.k} samples x 3 contexts: {eval_seconds:.0f} s")
    for kind, summary in summaries.items():
        print(f"  {kind:9s} avg@{args.k} {100 * summary[f'avg@{args.k}']:.2f}  "
              f"pass@{args.k} {100 * summary[f'pass@{args.k}']:.2f}  maj@{args.k} {100 * summary[f'maj@{args.k}']:.2f}")
    path = write_results(args.out, eval_config, summaries, rollouts, {"spec": "world (fresh build)",
                                                                      "build_seconds": round(build_seconds)})
    print(f"results -> {path}")


if __name__ == "__main__":
    main()
