"""The properties that make the world a test bed in which feedback can teach (issue 8), printed.

    python benchmarks/world_properties.py [--model world] [--problems 300] [--k 8] [--analysis 150]

1. An answer means a trace: the best constant answer's share of the test answers, the share of problems
   whose answer depends on every derived step, and the share of the base solver's correct answers that
   come from fully correct traces (T=1, k samples per problem).
2. The base knows its facts and fails through habits: P(correct slot) at look-up, integer result and reduced
   result slots with the canonical trace fed in after the bare question, by operation; P(correct) at the
   misconception's slot (the first operand written for ``x - y`` with ``x < y``); the fully correct trace
   rate at T=1 and where the sampled traces first go wrong.
3. A self-teacher that behaves like an instruction-tuned LLM: mean A_t on the correct prefix, the first
   wrong step and after it, for the reference and the critique contexts, on the solver's own attempts;
   and at the first token where an attempt leaves the critique, the student's and the critique-teacher's
   probability of the student's token and of the corrected one.
"""

from __future__ import annotations

import argparse
import collections
import math
import re
import time

import torch

from mentor.analysis.report import aggregate_table, analyze_rollouts
from mentor.contexts import build_context_prompt
from mentor.evaluate import EvalConfig, evaluate
from mentor.loading import load_model
from mentor.losses import causal_lm_logprobs
from mentor.models import encode_prompt, render_prompt
from mentor.tasks import load_task
from mentor.tasks.world import (
    WorldProblem,
    answer_depends_on_every_step,
    canonical_solution,
    match_step,
    names_consistent,
    parse_trace,
)
from mentor.train.onpolicy import common_prefix

SLOT_RE = re.compile(
    r"with [a-z] = (?P<lookup1>\d+) and [a-z] = (?P<lookup2>\d+), (?P<first>\d+) (?P<op>[-+]) \d+ = "
    r"(?P<result>-?\d+) so [a-z] = (?P<reduced>\d+)"
)
SLOTS = {"lookup1": "look-up", "lookup2": "look-up", "result": "result", "reduced": "reduced"}


def se(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 0.0) / max(n, 1))


@torch.no_grad()
def slot_probabilities(model, tokenizer, problems) -> dict[str, list[float]]:
    """P(correct token) at each slot of the canonical trace fed in after the bare question."""
    out: dict[str, list[float]] = collections.defaultdict(list)
    for problem in problems:
        wp = WorldProblem.from_meta(problem.meta)
        trace = canonical_solution(wp)
        prompt_ids = encode_prompt(tokenizer, render_prompt(tokenizer, problem.question))
        encoded = tokenizer(trace, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
        ids_1L = torch.tensor([prompt_ids + ids])
        logp = causal_lm_logprobs(model, ids_1L, torch.ones_like(ids_1L))[0, len(prompt_ids) - 1 :]
        for step, match in zip(wp.defs, SLOT_RE.finditer(trace)):
            op = match["op"]
            for slot in (*SLOTS, "first"):
                # P(the whole slot): the product over the tokens that end inside it (a sign and its number)
                tokens = [t for t, (_, end) in enumerate(offsets) if match.start(slot) < end <= match.end(slot)]
                p = math.exp(sum(logp[t].item() for t in tokens))
                if slot == "first":
                    x, y = wp.values[step[1]], wp.values[step[3]]
                    if op == "-" and x < y:
                        out["misconception slot (x - y, x < y)"].append(p)
                    continue
                out[SLOTS[slot]].append(p)
                if slot == "result":
                    out[f"result {op}"].append(p)
    return out


@torch.no_grad()
def departure_probabilities(model, tokenizer, task, problems_by_id, rollouts) -> dict[str, list[float]]:
    """At the first token where a wrong rollout leaves the critique's corrected trace: the student's and
    the critique-teacher's probability of the student's own token and of the corrected one."""
    out: dict[str, list[float]] = collections.defaultdict(list)

    def next_logp(prompt: str, ids: list[int]) -> torch.Tensor:
        x = torch.tensor([encode_prompt(tokenizer, prompt) + ids])
        return torch.log_softmax(model(x).logits[0, -1], dim=-1)

    for rollout in rollouts:
        problem = problems_by_id[rollout.problem_id]
        feedback = task.critique(problem, rollout.completion)
        if feedback.case == "correct":
            continue
        ids, target = list(rollout.token_ids), tokenizer.encode(feedback.corrected, add_special_tokens=False)
        k = common_prefix(ids, target)
        if k >= min(len(ids), len(target)):
            continue
        student = next_logp(render_prompt(tokenizer, task.prompt(problem)), ids[:k])
        teacher = next_logp(render_prompt(tokenizer, build_context_prompt(
            "critique", task.prompt(problem), critique=feedback.critique)), ids[:k])
        for who, logp in (("student", student), ("teacher", teacher)):
            out[f"{who} P(own token)"].append(math.exp(logp[ids[k]].item()))
            out[f"{who} P(corrected token)"].append(math.exp(logp[target[k]].item()))
    return out


def first_failure(problem, completion: str, task) -> str:
    """Which habit (or other error) a sampled trace first goes wrong by."""
    feedback = task.critique(problem, completion)
    if feedback.case == "correct":
        return "fully correct"
    if feedback.case == "incomplete":
        return "truncate"
    if feedback.case == "missing_step":
        return "skip"
    wp = WorldProblem.from_meta(problem.meta)
    steps, _ = parse_trace(completion)
    index = (feedback.first_error_step or 1) - 1
    if index >= len(steps):
        return "wrong answer line"
    step = steps[index]
    definition = wp.definition(step.name) if step.parsed else None
    if definition is None:
        found = match_step(step.body)
        if found and names_consistent(found[1]) and found[1]["op"] == "-" and (
                (found[1]["x"], found[1]["y"]) == (found[1]["rv"], found[1]["lv"])):
            return "swap"
        return "other (unreadable step)"
    if step.left is not None and (step.left, step.op, step.right) != definition[1:]:
        return "other (wrong definition copied)"
    x, y = wp.values[definition[1]], wp.values[definition[3]]
    if (step.x, step.y) != (x, y):
        return "other (wrong look-up)"
    return "slip"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="world")
    parser.add_argument("--problems", type=int, default=300)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--analysis", type=int, default=150, help="rollouts for the token-advantage aggregates")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model, tokenizer = load_model(args.model)
    task = load_task("world")
    problems = task.problems("test", n=args.problems)
    n = len(problems)

    print(f"world {task.name}: {n} test problems, modulus {task.config.modulus}, ops {list(task.config.ops)}")
    counts = collections.Counter(p.answer for p in problems)
    answer, top = counts.most_common(1)[0]
    print(f"1. best constant answer {answer!r}: {100 * top / n:.2f}% of test answers (1/m = "
          f"{100 / task.config.modulus:.2f}%)")
    on_path = sum(answer_depends_on_every_step(WorldProblem.from_meta(p.meta)) for p in problems)
    print(f"   answer depends on every derived step: {on_path}/{n} problems")

    start = time.time()
    _, rollouts = evaluate(model, tokenizer, task, problems, EvalConfig(n_problems=n, k=args.k))
    by_id = {p.id: p for p in problems}
    failures = collections.Counter()
    correct = lucky = 0
    for r in rollouts["none"]:
        kind = first_failure(by_id[r.problem_id], r.completion, task)
        failures[kind] += 1
        if r.verdict.correct:
            correct += 1
            lucky += kind != "fully correct"
    total = len(rollouts["none"])
    share = (correct - lucky) / max(correct, 1)
    print(f"   base solver at T=1 ({n} problems x {args.k}, {time.time() - start:.0f} s): Avg@{args.k} "
          f"{100 * correct / total:.2f} ± {100 * se(correct / total, total):.2f}; correct answers from fully "
          f"correct traces {100 * share:.2f}% ({correct - lucky} of {correct})")

    probs = slot_probabilities(model, tokenizer, problems)
    print("2. P(correct token) with the canonical trace fed in (mean over slots):")
    for kind in ("look-up", "result", "result +", "result -", "reduced", "misconception slot (x - y, x < y)"):
        values = probs.get(kind, [])
        if values:
            print(f"   {kind:36s} {sum(values) / len(values):.3f}  ({len(values)} slots)")
    fully = failures["fully correct"] / total
    print(f"   fully correct traces at T=1: {100 * fully:.2f} ± {100 * se(fully, total):.2f}%")
    print("   first failure of each sampled trace: "
          + ", ".join(f"{k} {100 * v / total:.1f}%" for k, v in failures.most_common()))

    analysed = [r for r in rollouts["none"] if r.sample_index == 0][: args.analysis]
    result = analyze_rollouts(model, tokenizer, task, by_id, analysed)
    print(f"3. mean A_t on {len(analysed)} of the solver's attempts (one per problem):")
    print(aggregate_table(result))
    departures = departure_probabilities(model, tokenizer, task, by_id, analysed)
    n_dep = len(departures.get("student P(own token)", []))
    print(f"   at the first token where a wrong attempt leaves the critique ({n_dep} attempts), mean probability:")
    for key in ("student P(own token)", "teacher P(own token)", "student P(corrected token)",
                "teacher P(corrected token)"):
        values = departures.get(key, [])
        if values:
            print(f"   {key:28s} {sum(values) / len(values):.3f}")


if __name__ == "__main__":
    main()
