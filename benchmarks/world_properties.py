"""The properties that make the world a test bed in which feedback can teach (issues 8 and 19), printed
for every length: the lengths the base solver was trained on (2 to 6 derived steps, 2 to 4 inputs) and
two beyond them (7 and 8 steps, with 2 inputs: more inputs would name variables the solver never saw).

    python benchmarks/world_properties.py [--model world] [--problems 300] [--k 8] [--analysis 100]
                                          [--lengths 2 3 4 5 6 7 8]

0. The solver reads the question: the share of its greedy traces with as many steps as the problem has,
   and the difficulty dial: Avg@k and the fully correct trace rate (T=1) with standard errors over problems.
1. An answer means a trace: the best constant answer's share of the test answers, the share of problems
   whose answer depends on every derived step, and the share of the base solver's correct answers that
   come from fully correct traces.
2. The base knows its facts and fails through habits: P(correct slot) at look-up, integer result and reduced
   result slots with the canonical trace fed in after the bare question; P(correct) at the misconception's
   slot (the first operand written for ``x - y`` with ``x < y``); where the sampled traces first go wrong.
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

from mentor.analysis.report import analyze_rollouts
from mentor.contexts import build_context_prompt
from mentor.evaluate import EvalConfig, evaluate
from mentor.loading import load_model
from mentor.losses import causal_lm_logprobs
from mentor.models import encode_prompt, render_prompt
from mentor.sampling import SamplingParams
from mentor.sampling.backends import open_sampler
from mentor.tasks import load_task
from mentor.train.onpolicy import common_prefix
from mentor.world.problems import (
    WorldProblem,
    answer_depends_on_every_step,
    canonical_solution,
    match_step,
    names_consistent,
    parse_trace,
)

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


def length_task(steps: int, trained: tuple[int, int]):
    """The world at one length: the trained range of inputs, or 2 inputs beyond the trained lengths."""
    inputs = "2-4" if steps <= trained[1] else "2"
    return load_task(f"world:steps={steps},inputs={inputs}")


def right_step_counts(model, tokenizer, task, problems, max_new_tokens: int) -> list[float]:
    """1.0 for each problem whose greedy trace has exactly as many steps as the problem derives."""
    with open_sampler("local", model, tokenizer, seed=0, batch_size=64) as sampler:
        groups = sampler.generate([render_prompt(tokenizer, task.prompt(p)) for p in problems],
                                  SamplingParams(n=1, temperature=0.0, max_new_tokens=max_new_tokens))
    return [float(len(parse_trace(g[0].text)[0]) == len(WorldProblem.from_meta(p.meta).defs))
            for p, g in zip(problems, groups)]


def measure(model, tokenizer, task, n: int, k: int, analysis: int) -> dict:
    """Every property of the world at one task (one length)."""
    problems = task.problems("test", n=n)
    by_id = {p.id: p for p in problems}
    steps = len(WorldProblem.from_meta(problems[0].meta).defs)
    budget = 40 * steps + 40
    out = {"steps": steps, "n": n, "start": time.time()}
    counts = collections.Counter(p.answer for p in problems)
    out["constant"] = counts.most_common(1)[0][1] / n
    out["on_path"] = sum(answer_depends_on_every_step(WorldProblem.from_meta(p.meta)) for p in problems) / n
    out["reads"] = right_step_counts(model, tokenizer, task, problems, budget)
    summary, rollouts = evaluate(model, tokenizer, task, problems,
                                 EvalConfig(n_problems=n, k=k, max_new_tokens=budget))
    summary = summary["none"]
    out["avg"], out["avg_se"] = summary[f"avg@{k}"], summary["se"][f"avg@{k}"]
    out["fc"], out["fc_se"] = summary["trace_rate"], summary["se"]["trace_rate"]
    failures = collections.Counter()
    correct = lucky = 0
    for r in rollouts["none"]:
        kind = first_failure(by_id[r.problem_id], r.completion, task)
        failures[kind] += 1
        if r.verdict.correct:
            correct += 1
            lucky += kind != "fully correct"
    out["failures"] = {kind: count / len(rollouts["none"]) for kind, count in failures.most_common()}
    out["from_traces"], out["correct"] = (correct - lucky) / max(correct, 1), correct
    out["slots"] = slot_probabilities(model, tokenizer, problems[: max(analysis, 1)])
    analysed = [r for r in rollouts["none"] if r.sample_index == 0][:analysis]
    out["analysis"] = analyze_rollouts(model, tokenizer, task, by_id, analysed) if analysed else None
    out["departures"] = departure_probabilities(model, tokenizer, task, by_id, analysed)
    out["seconds"] = time.time() - out.pop("start")
    return out


def mean(values) -> float:
    return sum(values) / len(values) if values else math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="world")
    parser.add_argument("--problems", type=int, default=300, help="test problems a length")
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--analysis", type=int, default=100,
                        help="problems a length for the slot probabilities and the token-advantage aggregates")
    parser.add_argument("--lengths", type=int, nargs="+", default=list(range(2, 9)))
    parser.add_argument("--trained", default="2-6", help="the lengths the solver was trained on")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model, tokenizer = load_model(args.model)
    trained = tuple(int(v) for v in args.trained.split("-"))
    rows, tasks = [], []
    for steps in args.lengths:
        task = length_task(steps, trained)
        tasks.append(task)
        rows.append(measure(model, tokenizer, task, args.problems, args.k, args.analysis))
        print(f"   measured {task.name} ({rows[-1]['seconds']:.0f} s)", flush=True)
    modulus = tasks[0].config.modulus
    k = args.k
    print(f"\nworld: {args.problems} test problems a length, modulus {modulus}, k={k} at T=1, greedy step counts "
          f"at T=0; lengths {trained[0]}-{trained[1]} trained (2-4 inputs), beyond them 2 inputs; ± one standard "
          "error over problems")
    print("\n0. reads the question, and the difficulty dial")
    print(f"| steps | greedy traces with the right number of steps | Avg@{k} | fully correct traces | "
          "correct answers from fully correct traces |")
    print("|---|---|---|---|---|")
    for r in rows:
        reads = mean(r["reads"])
        tag = "" if r["steps"] <= trained[1] else " (beyond training)"
        print(f"| {r['steps']}{tag} | {reads:.3f} ± {se(reads, len(r['reads'])):.3f} | {100 * r['avg']:.2f} ± "
              f"{100 * r['avg_se']:.2f} | {100 * r['fc']:.2f} ± {100 * r['fc_se']:.2f} | "
              f"{100 * r['from_traces']:.1f}% of {r['correct']} |")
    print(f"\n1. an answer means a trace (1/m = {100 / modulus:.2f}%)")
    print("| steps | best constant answer | answer depends on every step and input |")
    print("|---|---|---|")
    for r in rows:
        print(f"| {r['steps']} | {100 * r['constant']:.2f}% | {100 * r['on_path']:.1f}% |")
    print(f"\n2. P(correct token) with the canonical trace fed in (mean over slots, {args.analysis} problems a "
          "length), and where the sampled traces first go wrong")
    slot_kinds = ("look-up", "result", "reduced", "misconception slot (x - y, x < y)")
    print("| steps | " + " | ".join(slot_kinds) + " | first failure of the sampled traces |")
    print("|---|" + "---|" * (len(slot_kinds) + 1))
    for r in rows:
        slots = " | ".join(f"{mean(r['slots'].get(kind, [])):.3f}" for kind in slot_kinds)
        failures = ", ".join(f"{kind} {100 * v:.1f}%" for kind, v in r["failures"].items())
        print(f"| {r['steps']} | {slots} | {failures} |")
    print(f"\n3. mean A_t on the solver's attempts (one a problem, {args.analysis} problems a length); at the first "
          "token where a wrong attempt leaves the critique, the mean probability of the student's own token and "
          "of the corrected one")
    print("| steps | reference: prefix / first error / after | critique: prefix / first error / after | "
          "student P(own) | teacher P(own) | student P(corrected) | teacher P(corrected) | attempts |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        cells = []
        for kind in ("reference", "critique"):
            agg = r["analysis"].contexts[kind].aggregate if r["analysis"] else None
            cells.append(" / ".join(f"{v:+.3f}" for v in (agg.prefix, agg.first_error, agg.after)) if agg else "-")
        dep = r["departures"]
        probs = " | ".join(f"{mean(dep.get(key, [])):.3f}" for key in (
            "student P(own token)", "teacher P(own token)", "student P(corrected token)", "teacher P(corrected token)"))
        print(f"| {r['steps']} | {cells[0]} | {cells[1]} | {probs} | {len(dep.get('student P(own token)', []))} |")


if __name__ == "__main__":
    main()
