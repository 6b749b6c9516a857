"""Per-token advantage of a reference vs a step-aligned critique on the world (METHODS.md section 1).

    python benchmarks/token_advantage_world.py [--problems 100] [--samples 2]

Samples the shipped base solver's own attempts (T=1.0, seed 0), keeps those the exact critic calls
correct or incorrect, and prints mean A_t = log p(y_t | x, c) - log p(y_t | x) on the correct prefix, on
the first wrong step and after it, for c = the reference solution and c = the critique of that attempt.
"""

from __future__ import annotations

import argparse
import time

from mentor.analysis.token_advantage import aggregate_by_error, token_advantages, token_steps
from mentor.contexts import build_context_prompt
from mentor.models import render_prompt
from mentor.sampling import SamplingParams
from mentor.sampling.local import LocalSampler
from mentor.tasks import load_task
from mentor.world_model import load_world_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=100)
    parser.add_argument("--samples", type=int, default=2)
    args = parser.parse_args()
    model, tokenizer = load_world_model()
    task = load_task("world")
    problems = task.problems("test", n=args.problems)
    start = time.time()
    student_prompts = [render_prompt(tokenizer, task.prompt(p)) for p in problems]
    samples = LocalSampler(model, tokenizer, batch_size=64).generate(
        student_prompts, SamplingParams(n=args.samples, temperature=1.0, max_new_tokens=160, seed=0))
    pooled = {"reference": ([], [], []), "critique": ([], [], [])}
    for problem, student, group in zip(problems, student_prompts, samples):
        for sample in group:
            feedback = task.critique(problem, sample.text)
            if feedback.case not in ("correct", "incorrect"):
                continue
            steps = token_steps(tokenizer, sample.token_ids)
            for kind, (advantages, all_steps, errors) in pooled.items():
                user = build_context_prompt(kind, task.prompt(problem), problem=problem, critique=feedback.critique)
                advantages.append(token_advantages(model, tokenizer, student, render_prompt(tokenizer, user),
                                                   sample.token_ids))
                all_steps.append(steps)
                errors.append(feedback.first_error_step)
    print(f"{len(pooled['critique'][0])} rollouts, {time.time() - start:.0f} s")
    print(f"{'context':10s} {'prefix':>8s} {'1st error':>10s} {'after':>8s}   tokens (prefix, error, after)")
    for kind, (advantages, all_steps, errors) in pooled.items():
        agg = aggregate_by_error(advantages, all_steps, errors)
        print(f"{kind:10s} {agg.prefix:8.3f} {agg.first_error:10.3f} {agg.after:8.3f}   {agg.tokens}")


if __name__ == "__main__":
    main()
