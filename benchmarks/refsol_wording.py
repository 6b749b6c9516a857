"""Which wording RefSol's student writes its steps in, and whether it still looks its operands up.

    python benchmarks/refsol_wording.py --model world --model runs/compare-world/RefSol/search/lr=0.0001/final

For each model, k samples on n validation problems (T=1): the share of steps written in the canonical
wording (`d is b + a with b = 13 and a = 6, 13 + 6 = 19 so d = 2`), in each of the reference's two
wordings (`d = b + a where b is 13 and a is 6; 13 + 6 gives 19, hence d = 2`; `for d take b + a, b being
13 and a being 6: 13 + 6 makes 19, reduced d = 2`) or in none, and the share of steps whose operands are
the values the problem's definition names, by wording; with Avg@k. The self-teacher given a reference
answers in the reference's wording, so RefSol moves the student towards it. (On world 2 the reference's
first wording named neither the definition nor the operands, and RefSol's student, writing it, lost its
look-ups: docs/world.md.)
"""

from __future__ import annotations

import argparse
import collections
import math

from mentor.evaluate import EvalConfig, evaluate
from mentor.loading import load_model
from mentor.tasks import load_task
from mentor.world.problems import STEP_WORDINGS, WorldProblem, match_step, parse_trace

WORDINGS = (*STEP_WORDINGS, "unreadable")


def wording(body: str) -> str:
    found = match_step(body)
    return WORDINGS[-1] if found is None else STEP_WORDINGS[found[0]]


def right_operands(wp: WorldProblem, step) -> bool:
    """The step's operands are the current values of the variables its target is defined from."""
    definition = wp.definition(step.name) if step.name else None
    if definition is None or step.x is None:
        return False
    _, left, _, right = definition
    return (step.x, step.y) == (wp.values[left], wp.values[right])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True)
    parser.add_argument("--problems", type=int, default=100)
    parser.add_argument("--k", type=int, default=4)
    args = parser.parse_args()
    task = load_task("world")
    problems = task.problems("validation", n=args.problems)
    by_id = {p.id: p for p in problems}
    for spec in args.model:
        model, tokenizer = load_model(spec)
        summary, rollouts = evaluate(model, tokenizer, task, problems, EvalConfig(n_problems=args.problems, k=args.k))
        counts, right = collections.Counter(), collections.Counter()
        for rollout in rollouts["none"]:
            wp = WorldProblem.from_meta(by_id[rollout.problem_id].meta)
            steps, _ = parse_trace(rollout.completion)
            for step in steps:
                kind = wording(step.body)
                counts[kind] += 1
                right[kind] += step.parsed and right_operands(wp, step)
        total = sum(counts.values())
        avg = summary["none"][f"avg@{args.k}"]
        n = len(problems)
        print(f"{spec}: Avg@{args.k} {100 * avg:.2f} (n={n} validation problems, k={args.k}, T=1), {total} steps")
        for kind in WORDINGS:
            share = counts[kind] / max(total, 1)
            ok = right[kind] / max(counts[kind], 1)
            print(f"   {kind:24s} {100 * share:6.2f}% of steps (se {100 * math.sqrt(share * (1 - share) / max(total, 1)):.2f})"
                  f"   operands right {100 * ok:6.2f}% of them")


if __name__ == "__main__":
    main()
