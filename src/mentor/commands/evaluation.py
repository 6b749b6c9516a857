"""``mentor eval`` and ``mentor demo``."""

from __future__ import annotations

from pathlib import Path

from mentor.commands.common import console, progress_bar, run_eval, score_table, tables, train_progress


def eval_command(args) -> int:
    import dataclasses

    from mentor.config import load_config
    from mentor.evaluate import EvalConfig

    config = load_config(EvalConfig, args.config, args.overrides)
    flags = {"model": args.model, "task": args.data or args.task, "k": args.k, "n_problems": args.n,
             "temperature": args.temperature, "top_p": args.top_p, "max_new_tokens": args.max_new_tokens,
             "seed": args.seed, "problem_seed": args.problem_seed, "split": args.split,
             "batch_size": args.batch_size, "backend": args.backend,
             "contexts": [c.strip() for c in args.context.split(",")] if args.context else None}
    config = dataclasses.replace(config, **{k: v for k, v in flags.items() if v is not None})
    run_eval(config, args.out)
    return 0




#: the demo's problems: the map's middle level (docs/world.md), where the base is right about a quarter of
#: the time and a short run has room to show
DEMO_TASK = "world:steps=3"


def demo(args) -> int:
    from rich.console import Console
    from rich.panel import Panel

    from mentor.evaluate import EvalConfig
    from mentor.models import render_prompt
    from mentor.runlock import check_out
    from mentor.sampling import SamplingParams
    from mentor.sampling.local import LocalSampler
    from mentor.tasks import load_task
    from mentor.world.solver import WorldModelConfig, find_world_model, load_world_model

    eval_config = EvalConfig(model="world", task=DEMO_TASK, n_problems=args.n, k=args.k, seed=args.seed,
                             contexts=["none", "reference", "critique"])  # checks -n and -k before any work
    if args.train_steps < 0:
        raise ValueError(f"--train-steps must be >= 0, got {args.train_steps}")
    check_out(args.out)
    config = WorldModelConfig()
    if find_world_model(config) is None:
        console().print("building the world's base solver (first run only; cached afterwards)")
        with progress_bar() as bar:
            task_id = bar.add("training", total=config.sft.steps)
            load_world_model(config, progress=lambda n, m: bar.update(task_id, n, info=f"loss {m['loss']:.3f}"))
    model, tokenizer = load_world_model(config)
    task = load_task(DEMO_TASK)
    examples = task.problems("test", n=3, seed=args.seed + 1000)
    attempts = LocalSampler(model, tokenizer).generate(
        [render_prompt(tokenizer, task.prompt(p)) for p in examples],
        SamplingParams(n=1, temperature=1.0, max_new_tokens=160, seed=args.seed),
    )
    out = Console()
    for problem, (attempt,) in zip(examples, attempts):
        verdict = task.verify(problem, attempt.text)
        feedback = task.critique(problem, attempt.text)
        mark = "correct" if verdict.correct else f"wrong ({verdict.reason})"
        out.print(Panel(problem.question, title=f"problem {problem.id}"))
        out.print(Panel(attempt.text, title=f"the model's attempt: {mark}"))
        out.print(Panel(feedback.critique, title=f"the critic's step-aligned critique: {feedback.case}"))
        out.print(Panel(problem.solution or "", title="a reference solution"))
    before = run_eval(eval_config, args.out, "the world's base solver with and without context", (model, tokenizer))
    if args.train_steps:
        demo_training(model, tokenizer, task, before["none"], args)
    return 0


DEMO_RUNS = {  # the short run of `mentor demo` (docs/world.md, "mentor demo")
    "grpo": {"method": "grpo", "prompts_per_step": 2, "rollouts_per_prompt": 8, "lr": 1e-4},
    "sd-critique": {"method": "sd-critique", "prompts_per_step": 16, "lr": 3e-4},
}


def demo_training(model, tokenizer, task, before: dict, args) -> None:
    """A short on-policy run (GRPO by default), then the same evaluation again."""

    from mentor.evaluate import EvalConfig, evaluate
    from mentor.train.onpolicy import OnPolicyConfig, train_onpolicy

    method = getattr(args, "method", "grpo")
    config = OnPolicyConfig(steps=args.train_steps, eval_problems=args.n, eval_k=args.k, seed=args.seed,
                            **DEMO_RUNS[method])
    console().print(f"{method}: {config.steps} steps x {config.prompts_per_step} prompts x "
                     f"{config.rollouts_per_prompt} rollouts, lr {config.lr}; checkpoints evaluated on "
                     "validation problems, the final weights on the test problems above")
    with progress_bar() as bar:
        phases = bar.phases(transient=True)
        train_onpolicy(model, tokenizer, task, config, run_dir=Path(args.out) / "train",
                       progress=train_progress(bar, config.steps), eval_progress=phases)
        problems = task.problems("test", n=args.n)
        after, _ = evaluate(model, tokenizer, task, problems, EvalConfig(n_problems=args.n, k=args.k, seed=args.seed),
                            lambda kind, done, total: phases(f"test evaluation after training [{kind}]", done, total))
    rows = [("base solver", {**before, "step": 0}), (f"after {method}", {**after["none"], "step": config.steps})]
    tables().print(score_table(f"no context, {args.n} held-out problems, k={args.k}", rows, args.k))
    console().print(f"run folder -> {Path(args.out) / 'train'} (best/, final/, metrics.jsonl, evals.jsonl, "
                    "summary.json)")
