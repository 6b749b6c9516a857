"""The ``mentor`` command: a thin layer over the library.

Errors a user can cause (a bad path, config key, task or model) print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from mentor import __version__

# mentor's own errors (ConfigError, RecordError are ValueErrors; ModelLoadError is an OSError) and the
# standard ones a bad argument raises; anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError)


def _user_errors() -> tuple[type[BaseException], ...]:
    from mentor.models import ModelLoadError

    return (*USER_ERRORS, ModelLoadError)


def _console():
    from rich.console import Console

    return Console(stderr=True)


def _progress():
    from mentor.progress import ProgressBar

    return ProgressBar()


# ----- mentor world -----------------------------------------------------------------------------------

def world_build(args) -> int:
    from mentor.config import load_config, save_config
    from mentor.world_model import WorldModelConfig, build_world_model, world_model_dir

    config = load_config(WorldModelConfig, args.config, args.overrides)
    out = Path(args.out) if args.out else world_model_dir(config)
    record = out / "mentor_world.json"
    if record.is_file() and not args.force:
        if json.loads(record.read_text()).get("key") != config.key():
            raise FileExistsError(f"{out} holds a world model built with another config; use --force or another --out")
        _console().print(f"world model already built at {out} (use --force to rebuild)")
        print(out)
        return 0
    start = time.time()
    with _progress() as bar:
        task = bar.add("training the world's base solver", total=config.sft.steps)

        def step(n: int, metrics: dict) -> None:
            bar.update(task, n, info=f"loss {metrics['loss']:.3f}")

        build_world_model(config, out, step)
    save_config(config, out / "world_config.yaml")
    _console().print(f"built in {time.time() - start:.0f}s -> {out}")
    print(out)
    return 0


def world_show(args) -> int:
    from mentor.tasks import load_task
    from mentor.tasks.world import WorldProblem, canonical_solution

    task = load_task(args.task)
    for problem in task.problems(args.split, n=args.n, seed=args.seed):
        print(f"# {problem.id}\n{problem.question}\n-- canonical --\n"
              f"{canonical_solution(WorldProblem.from_meta(problem.meta))}\n-- reference --\n{problem.solution}\n")
    return 0


# ----- mentor eval ------------------------------------------------------------------------------------

def load_model(spec: str):
    from mentor.models import load_policy

    with _console().status(f"loading model {spec}"):
        return load_policy(spec)


def run_eval(config, out: str | None, title: str = "evaluation", loaded=None) -> dict:
    """Evaluate (loading model and task unless ``loaded`` = (model, tokenizer) is given), print the table
    and write the results; returns the summaries."""
    from rich.table import Table

    from mentor.evaluate import check_contexts, evaluate, table_header, table_rows, write_results
    from mentor.tasks import load_task

    task = load_task(config.task)
    problems = task.problems(config.split, n=config.n_problems, seed=config.problem_seed)
    check_contexts(task, problems, config.contexts)  # before the model loads, not after sampling
    model, tokenizer = loaded or load_model(config.model)
    with _progress() as bar:
        ids = {}

        def progress(kind: str, total: int, done: int) -> None:
            if kind not in ids:
                ids[kind] = bar.add(f"sampling [{kind}]", total=total, info=f"k={config.k}")
            bar.update(ids[kind], done, info=f"k={config.k}")

        summaries, rollouts = evaluate(model, tokenizer, task, problems, config, progress)
    table = Table(title=f"{title}: {task.name}, {len(problems)} problems, k={config.k}, "
                        f"T={config.temperature}, top_p={config.top_p}, seed={config.seed}")
    for column in table_header(summaries):
        table.add_column(column, justify="right")
    for row in table_rows(summaries):
        table.add_row(*row)
    from rich.console import Console

    Console().print(table)
    if out:
        checkpoint = {"spec": config.model, "path": str(getattr(model, "name_or_path", config.model))}
        path = write_results(out, config, summaries, rollouts, checkpoint)
        _console().print(f"results -> {path}")
    return summaries


def eval_command(args) -> int:
    import dataclasses

    from mentor.config import load_config
    from mentor.evaluate import EvalConfig

    config = load_config(EvalConfig, args.config, args.overrides)
    flags = {"model": args.model, "task": args.data or args.task, "k": args.k, "n_problems": args.n,
             "temperature": args.temperature, "top_p": args.top_p, "max_new_tokens": args.max_new_tokens,
             "seed": args.seed, "problem_seed": args.problem_seed, "split": args.split,
             "batch_size": args.batch_size,
             "contexts": [c.strip() for c in args.context.split(",")] if args.context else None}
    config = dataclasses.replace(config, **{k: v for k, v in flags.items() if v is not None})
    run_eval(config, args.out)
    return 0


# ----- mentor demo ------------------------------------------------------------------------------------

def demo(args) -> int:
    from rich.console import Console
    from rich.panel import Panel

    from mentor.evaluate import EvalConfig
    from mentor.models import render_prompt
    from mentor.sampling import SamplingParams
    from mentor.sampling.local import LocalSampler
    from mentor.tasks import load_task
    from mentor.world_model import WorldModelConfig, find_world_model, load_world_model

    config = WorldModelConfig()
    if find_world_model(config) is None:
        _console().print("building the world's base solver (first run only; cached afterwards)")
        with _progress() as bar:
            task_id = bar.add("training", total=config.sft.steps)
            load_world_model(config, progress=lambda n, m: bar.update(task_id, n, info=f"loss {m['loss']:.3f}"))
    model, tokenizer = load_world_model(config)
    task = load_task("world")
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
    eval_config = EvalConfig(model="world", task="world", n_problems=args.n, k=args.k, seed=args.seed,
                             contexts=["none", "reference", "critique"])
    run_eval(eval_config, args.out, "the world's base solver with and without context", (model, tokenizer))
    return 0


# ----- parser -----------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mentor", description=__doc__.splitlines()[0] + " Teach small "
                                     "language models to reason from feedback.")
    parser.add_argument("--version", action="version", version=f"mentor {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = commands.add_parser("demo", help="build or load the world's base solver, show examples and the "
                            "evaluation table with and without context")
    p.add_argument("-n", type=int, default=50, help="held-out problems to evaluate (default 50)")
    p.add_argument("-k", type=int, default=8, help="samples per problem (default 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/demo", help="where to write results (default runs/demo)")
    p.set_defaults(func=demo)

    world = commands.add_parser("world", help="the model organism: build its base solver, show problems")
    world_commands = world.add_subparsers(dest="world_command", metavar="WORLD_COMMAND", required=True)
    p = world_commands.add_parser("build", help="train the world's tiny base solver from scratch (cached)")
    p.add_argument("--config", help="YAML file with WorldModelConfig fields")
    p.add_argument("--out", help="output folder (default: the cache, keyed by the config)")
    p.add_argument("--force", action="store_true", help="rebuild even when a cached build exists")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides, e.g. sft.steps=200 world.steps=5")
    p.set_defaults(func=world_build)
    p = world_commands.add_parser("show", help="print world problems with canonical and reference solutions")
    p.add_argument("--task", default="world", help="world spec, e.g. world:steps=5,modulus=10")
    p.add_argument("-n", type=int, default=3)
    p.add_argument("--split", default="test")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=world_show)

    p = commands.add_parser("eval", help="Avg@k, Pass@k, Maj@k of a model on a task or data file")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--task", help="world[:opts], gym:NAME, hf:NAME (default world)")
    source.add_argument("--data", help="a local file or folder (GSM8K, MATH, prompt/completion, messages)")
    p.add_argument("--model", help="world, smollm2, a local folder, a .gguf file or a Hugging Face id")
    p.add_argument("-k", type=int, help="samples per problem (default 8)")
    p.add_argument("-n", type=int, help="number of problems (default 50)")
    p.add_argument("--split", help="split to evaluate (default test)")
    p.add_argument("--temperature", type=float, help="sampling temperature (default 1.0; 0 = greedy)")
    p.add_argument("--top-p", dest="top_p", type=float, help="nucleus sampling (default 1.0)")
    p.add_argument("--max-new-tokens", dest="max_new_tokens", type=int, help="default 160")
    p.add_argument("--seed", type=int, help="sampling seed (default 0)")
    p.add_argument("--problem-seed", dest="problem_seed", type=int,
                   help="which problems of the split (generated tasks; default 0)")
    p.add_argument("--batch-size", dest="batch_size", type=int, help="prompts per generation batch")
    p.add_argument("--context", help="comma list of none,reference,critique (default none)")
    p.add_argument("--config", help="YAML file with EvalConfig fields")
    p.add_argument("--out", help="folder for results.json and the rollouts")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="EvalConfig overrides")
    p.set_defaults(func=eval_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("mentor: interrupted", file=sys.stderr)
        return 130
    except _user_errors() as err:
        if os.environ.get("MENTOR_DEBUG"):
            raise
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"mentor: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
