"""Per-token advantage of a reference vs a step-aligned critique on the world (docs/methods.md, section 1).

    python benchmarks/token_advantage_world.py [--problems 100] [--samples 2]

Samples the shipped base solver's own attempts (T=1.0, seed 0, as ``mentor eval`` samples), keeps those the
exact critic calls correct or incorrect, and prints mean A_t = log p(y_t | x, c) - log p(y_t | x) on the
correct prefix, on the first wrong step and after it, for c = the reference solution and c = the critique of
that attempt (``mentor analyze`` on those rollouts).
"""

from __future__ import annotations

import argparse
import time

from mentor.analysis.report import aggregate_table, analyze_rollouts
from mentor.evaluate import EvalConfig, evaluate
from mentor.tasks import load_task
from mentor.world.solver import load_world_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=100)
    parser.add_argument("--samples", type=int, default=2)
    args = parser.parse_args()
    model, tokenizer = load_world_model()
    task = load_task("world")
    problems = task.problems("test", n=args.problems)
    start = time.time()
    _, sampled = evaluate(model, tokenizer, task, problems, EvalConfig(n_problems=args.problems, k=args.samples))
    by_id = {p.id: p for p in problems}
    rollouts = [r for r in sampled["none"]
                if task.critique(by_id[r.problem_id], r.completion).case in ("correct", "incorrect")]
    result = analyze_rollouts(model, tokenizer, task, by_id, rollouts)
    print(f"{len(rollouts)} rollouts, {time.time() - start:.0f} s")
    print(aggregate_table(result))


if __name__ == "__main__":
    main()
