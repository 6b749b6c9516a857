"""Where the world's solver goes wrong: the first failing part of each sampled trace.

    mentor eval --model world -n 100 -k 8 --out runs/eval
    python benchmarks/world_failures.py runs/eval/rollouts_none.jsonl

Counts, per rollout, the first step part that is wrong: the expression copied from the question, a value
looked up for an operand, the copy of those values, the arithmetic, or the restated result; ``ok_steps``
when every written step is right (the answer line may still be missing or wrong).
"""

from __future__ import annotations

import collections
import sys

from mentor.records import Rollout, read_jsonl
from mentor.tasks.world import CANONICAL_STEP_RE, WorldProblem, WorldTask, parse_trace


def first_failure(wp: WorldProblem, completion: str) -> str:
    steps, _ = parse_trace(completion)
    for step in steps:
        m = CANONICAL_STEP_RE.match(step.body)
        if not m:
            return "unparsed"
        definition = wp.definition(m["name"])
        if definition is None or definition[1:] != (m["left"], m["op"], m["right"]):
            return "wrong_expression"
        if (int(m["lv"]), int(m["rv"])) != (wp.values[m["left"]], wp.values[m["right"]]):
            return "wrong_lookup"
        if (m["x"], m["y"], m["op2"]) != (m["lv"], m["rv"], m["op"]):
            return "wrong_copy"
        if int(m["z"]) != wp.apply(m["op"], int(m["x"]), int(m["y"])):
            return "wrong_arithmetic"
        if (m["name2"], m["z2"]) != (m["name"], m["z"]):
            return "wrong_restatement"
    return "ok_steps"


def main() -> None:
    rollouts = read_jsonl(sys.argv[1], Rollout)
    task = WorldTask()
    problems = {p.id: p for p in task.problems("test", n=1000)}
    missing = {r.problem_id for r in rollouts} - set(problems)
    if missing:
        raise SystemExit(f"not problems of the default world's test split: {sorted(missing)[:3]}")
    cases, failures = collections.Counter(), collections.Counter()
    for r in rollouts:
        problem = problems[r.problem_id]
        cases[task.critique(problem, r.completion).case] += 1
        failures[first_failure(WorldProblem.from_meta(problem.meta), r.completion)] += 1
    print(f"{len(rollouts)} rollouts")
    print("critic cases:", dict(cases.most_common()))
    print("first failure:", dict(failures.most_common()))


if __name__ == "__main__":
    main()
