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


# ----- mentor generate --------------------------------------------------------------------------------

def generate_command(args) -> int:
    import dataclasses

    from mentor.config import load_config
    from mentor.offline.generate import GenerateConfig, run_generate
    from mentor.sampling.openai_compatible import SamplerError

    config = load_config(GenerateConfig, args.config, args.overrides)
    flags = {"task": args.data or args.task, "n_problems": args.n, "group_size": args.group_size,
             "split": args.split, "seed": args.seed}
    config = dataclasses.replace(config, **{k: v for k, v in flags.items() if v is not None})
    out = Path(args.out)
    with _progress() as bar:
        ids = []

        def progress(done: int, total: int) -> None:
            if not ids:
                ids.append(bar.add(f"prompts answered ({config.group_size} responses each)", total=total))
            bar.update(ids[0], done)

        try:
            summary = run_generate(config, out, progress=progress)
        except SamplerError as err:
            rows = out / "responses.jsonl"
            kept = len(rows.read_text().splitlines()) if rows.is_file() else 0
            print(f"mentor: error: teacher request failed: {str(err).splitlines()[0]} ({kept} rows kept in "
                  f"{rows}; run the same command again to resume)", file=sys.stderr)
            return 1
    run = summary["this_run"]
    _console().print(
        f"{summary['prompts']} prompts x {summary['group_size']} = {summary['responses']} responses from "
        f"{summary['teacher']}: {summary['correct']} correct ({100 * summary['accuracy']:.1f}%), "
        f"{summary['format_failures']} format failures, {summary['empty']} empty, {summary['truncated']} "
        f"truncated, {summary['zero_variance_groups']} zero-variance groups ({summary['dropped_groups']} "
        f"dropped); this run wrote {run['rows_written']} rows in {run['seconds']:.1f}s "
        f"({run['rows_found']} found, {run['retries']} retries)")
    _console().print(f"dataset -> {out} (responses.jsonl, dataset/, summary.json)")
    print(out)
    return 0


# ----- mentor mapd ------------------------------------------------------------------------------------

def _mapd_config(args):
    from mentor.config import load_config
    from mentor.offline.mapd import MapdConfig

    overrides = list(args.overrides)
    if getattr(args, "data", None):
        overrides.append(f"task={args.data}")
    return load_config(MapdConfig, args.config, overrides)


def _mapd_stage(args, label: str, run) -> int:
    """Run one teacher stage with a progress bar; a failed teacher request keeps the rows written (exit 1)."""
    from mentor.offline.mapd import build_teachers
    from mentor.sampling.openai_compatible import SamplerError

    config = _mapd_config(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    teachers = build_teachers(config, out)
    try:
        with _progress() as bar:
            ids = []

            def progress(done: int, total: int) -> None:
                if not ids:
                    ids.append(bar.add(f"{label} ({len(teachers)} teachers)", total=total))
                bar.update(ids[0], done)

            summary = run(config, teachers, out, progress)
    except SamplerError as err:
        print(f"mentor: error: teacher request failed: {str(err).splitlines()[0]} (the rows written are kept in "
              f"{out}; run the same command again to resume)", file=sys.stderr)
        return 1
    finally:
        for teacher in teachers:
            teacher.close()
    _print_stage(summary, out)
    return 0


def _print_stage(summary: dict, out: Path) -> None:
    shown = {k: v for k, v in summary.items() if not isinstance(v, (dict, list)) and k != "stage"}
    run = summary.get("this_run", {})
    extra = f"; this run wrote {run['rows_written']} rows in {run['seconds']:.1f}s" if "rows_written" in run else ""
    _console().print(f"mapd {summary['stage']}: " + ", ".join(f"{k} {v}" for k, v in shown.items()) + extra)
    _console().print(f"-> {out} (summary.json)")
    print(out)


def mapd_mine(args) -> int:
    from mentor.offline.mapd import mine

    config = _mapd_config(args)
    task, problems = config.problems()
    model, tokenizer = load_model(config.student)
    out = Path(args.out)
    with _progress() as bar:
        task_id = bar.add(f"student answers (T={config.student_temperature}, top_p={config.student_top_p})",
                          total=len(problems))
        summary = mine(model, tokenizer, task, problems, out, temperature=config.student_temperature,
                       top_p=config.student_top_p, max_new_tokens=config.student_max_new_tokens, seed=config.seed,
                       batch_size=config.batch_size, progress=lambda done, total: bar.update(task_id, done))
    _print_stage(summary, out)
    return 0


def mapd_explain(args) -> int:
    from mentor.offline.mapd import explain

    return _mapd_stage(args, "mistake explanations", lambda c, teachers, out, progress: explain(
        teachers, args.mined, out, temperature=c.teacher_temperature, max_new_tokens=c.teacher_max_new_tokens,
        seed=c.seed, prompts_per_call=c.prompts_per_call, progress=progress))


def mapd_rationales(args) -> int:
    from mentor.offline.mapd import rationales

    def run(c, teachers, out, progress):
        task, problems = c.problems()
        return rationales(teachers, task, problems, out, temperature=c.teacher_temperature,
                          max_new_tokens=c.teacher_max_new_tokens, seed=c.seed, prompts_per_call=c.prompts_per_call,
                          progress=progress)

    return _mapd_stage(args, "rationales", run)


def mapd_review(args) -> int:
    from mentor.offline.mapd import review

    return _mapd_stage(args, "peer reviews", lambda c, teachers, out, progress: review(
        teachers, args.rationales, out, threshold=c.threshold, require_verified=c.require_verified,
        require_review=c.require_review, temperature=c.teacher_temperature, max_new_tokens=c.review_max_new_tokens,
        seed=c.seed, prompts_per_call=c.prompts_per_call, progress=progress))


def mapd_build(args) -> int:
    from mentor.offline.mapd import build

    config = _mapd_config(args)
    out = Path(args.out)
    summary = build(args.mined, args.explanations, args.reviewed, out, ablation=args.ablation or config.ablation,
                    single_teacher=config.single_teacher, rationale_instruction=config.rationale_instruction)
    _print_stage(summary, out)
    return 0


# ----- mentor train / analyze / compare ----------------------------------------------------------------

def _train_progress(bar, total: int):
    task_id = bar.add("training", total=total)

    def progress(step: int, metrics: dict) -> None:
        signal = f" signal {metrics['signal_fraction']:.0%}" if "signal_fraction" in metrics else ""
        bar.update(task_id, step, info=f"reward {metrics['reward']:.2f} loss {metrics['loss']:.4f}{signal} "
                                       f"{metrics['tokens_per_s']:.0f} tok/s")

    return progress


def _score_table(title: str, rows: list[tuple[str, dict]], k: int):
    from rich.table import Table

    table = Table(title=title)
    for column in ("checkpoint", "step", f"Pass@{k}", f"Maj@{k}", f"Avg@{k}"):
        table.add_column(column, justify="right")
    for name, score in rows:
        table.add_row(name, str(score["step"]), *(f"{100 * score[f'{m}@{k}']:.2f}" for m in ("pass", "maj", "avg")))
    return table


def train_command(args) -> int:
    from rich.console import Console

    from mentor.config import load_config
    from mentor.train.recipe import TrainConfig, run_training

    config = load_config(TrainConfig, args.config, args.overrides)
    out = Path(args.out or f"runs/train-{config.onpolicy.method}-seed{config.onpolicy.seed}")
    with _progress() as bar:
        result = run_training(config, out, progress=_train_progress(bar, config.onpolicy.steps))
    k = config.onpolicy.eval_k
    rows = [("start", result.evals[0]), ("best", result.best), ("final", result.final)]
    Console().print(_score_table(f"{config.onpolicy.method} on {config.task}: held-out evaluation", rows, k))
    if result.stopped_early:
        _console().print(f"stopped early at step {len(result.history)} (no better Avg@{k})")
    _console().print(f"run folder -> {out} (best/, final/, metrics.jsonl, evals.jsonl, summary.json)")
    return 0


def analyze_command(args) -> int:
    from rich.console import Console

    from mentor.analysis.report import aggregate_table, run_analysis
    from mentor.evaluate import EvalConfig, evaluate
    from mentor.records import Rollout, read_jsonl
    from mentor.tasks import load_task
    from mentor.train.recipe import CriticConfig, build_critic

    task = load_task(args.task)
    contexts = tuple(c.strip() for c in args.contexts.split(","))
    critic = build_critic(CriticConfig(base_url=args.critic_base_url or "", model=args.critic_model or "",
                                       api_key_env=args.critic_api_key_env), Path(args.out))
    critique = (lambda problem, trace: critic.critique(problem, trace)) if critic else None
    if args.rollouts:
        rollouts = read_jsonl(args.rollouts, Rollout)
        wanted = {r.problem_id for r in rollouts}
        problems = [p for p in task.problems(args.split, n=args.problems_pool) if p.id in wanted]
        if not problems:
            raise ValueError(f"no problem of {args.task} ({args.split} split) matches the rollouts in {args.rollouts}")
    model, tokenizer = load_model(args.model)
    if not args.rollouts:
        problems = task.problems(args.split, n=args.n)
        with _console().status(f"sampling {len(problems)} rollouts"):
            _, sampled = evaluate(model, tokenizer, task, problems,
                                  EvalConfig(n_problems=len(problems), k=1, seed=args.seed,
                                             temperature=args.temperature, max_new_tokens=args.max_new_tokens))
        rollouts = sampled["none"]
    with _progress() as bar:
        task_id = bar.add("token advantages", total=len(rollouts) * len(contexts))
        result = run_analysis(model, tokenizer, task, problems, rollouts, args.out, contexts=contexts,
                              critic=critique, progress=lambda done, total: bar.update(task_id, done))
    Console().print(aggregate_table(result))
    _console().print(f"report -> {Path(args.out) / 'analysis.html'} (analysis.json, PNG plots)")
    return 0


def compare_command(args) -> int:
    from mentor.config import load_config
    from mentor.experiments import (
        DEFAULT_CONFIG,
        CompareConfig,
        run_compare,
        token_advantage_section,
        write_report,
    )

    if args.config and "=" in args.config and not Path(args.config).exists():  # an override, not a file
        args.overrides, args.config = [args.config, *args.overrides], None
    config = load_config(CompareConfig, args.config or DEFAULT_CONFIG, args.overrides)
    out = Path(args.out)
    total = len(config.methods) * len(config.seeds)
    with _progress() as bar:
        task_id = bar.add(f"{total} runs ({config.workers} at a time)", total=total)
        done = []

        def on_done(label: str, seed: int, summary: dict) -> None:
            done.append(label)
            k = summary["evaluation"]["k"]
            bar.update(task_id, len(done), info=f"{label} seed {seed}: final Avg@{k} "
                                                f"{100 * summary['final'][f'avg@{k}']:.2f}")

        results = run_compare(config, out, on_done)
    with _console().status("token-advantage figures on the base model"):
        analysis = token_advantage_section(config, out)
    path = write_report(config, results, out, analysis)
    print(path.read_text().split("## Budget")[0])
    _console().print(f"report -> {path}")
    return 0


def distill_command(args) -> int:
    from rich.console import Console

    from mentor.config import load_config
    from mentor.offline.train import DistillConfig, run_distill

    config = load_config(DistillConfig, args.config, args.overrides)
    out = Path(args.out or f"runs/distill-{config.mode}-seed{config.seed}")
    with _progress() as bar:
        task_id = bar.add(f"{config.mode} on {config.data}", total=config.sft.steps)
        summary = run_distill(config, out, progress=lambda n, m: bar.update(task_id, n, info=f"loss {m['loss']:.4f}"))
    k = config.eval_k
    rows = [("start", summary["evals"][0]), ("best", summary["best"]), ("final", summary["final"])]
    Console().print(_score_table(f"{config.mode} on {config.task}: held-out evaluation", rows, k))
    _console().print(f"examples: {summary['examples']}; run folder -> {out}")
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
    before = run_eval(eval_config, args.out, "the world's base solver with and without context", (model, tokenizer))
    if args.train_steps:
        demo_training(model, tokenizer, task, before["none"], args)
    return 0


def demo_training(model, tokenizer, task, before: dict, args) -> None:
    """A short step-aligned-critique self-distillation run, then the same evaluation again."""
    from rich.console import Console

    from mentor.evaluate import EvalConfig, evaluate
    from mentor.train.onpolicy import OnPolicyConfig, train_onpolicy

    config = OnPolicyConfig(method="sd-critique", signal_span="to-divergence", steps=args.train_steps,
                            prompts_per_step=16, lr=3e-4, eval_problems=args.n, eval_k=args.k, seed=args.seed)
    _console().print(f"self-distillation with step-aligned critique: {config.steps} steps x "
                     f"{config.prompts_per_step} rollouts, lr {config.lr}, signal up to the first departure "
                     "from the critique")
    with _progress() as bar:
        train_onpolicy(model, tokenizer, task, config, run_dir=Path(args.out) / "train",
                       progress=_train_progress(bar, config.steps))
    problems = task.problems("test", n=args.n)
    after, _ = evaluate(model, tokenizer, task, problems, EvalConfig(n_problems=args.n, k=args.k, seed=args.seed))
    rows = [("base solver", {**before, "step": 0}), ("after training", {**after["none"], "step": config.steps})]
    Console().print(_score_table(f"no context, {args.n} held-out problems, k={args.k}", rows, args.k))


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
    p.add_argument("--train-steps", dest="train_steps", type=int, default=60,
                   help="steps of the short sd-critique run (default 60; 0 skips it)")
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

    p = commands.add_parser("generate", help="G scored teacher responses per prompt with group statistics and "
                            "every normalisation's weight (AdvDistill data); resumable")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--task", help="world[:opts], gym:NAME, hf:NAME (default world)")
    source.add_argument("--data", help="a local file or folder (GSM8K, MATH, prompt/completion, messages)")
    p.add_argument("-n", type=int, help="number of problems (default 100)")
    p.add_argument("-G", "--group-size", dest="group_size", type=int, help="responses per prompt (default 8)")
    p.add_argument("--split", help="split to generate for (default train)")
    p.add_argument("--seed", type=int, help="sampling seed (default 0)")
    p.add_argument("--config", help="YAML file with GenerateConfig fields (teacher, rewards, weighting, ...)")
    p.add_argument("--out", default="runs/generate", help="output folder; an existing one is resumed "
                   "(default runs/generate)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="e.g. teacher.kind=openai teacher.base_url=http://127.0.0.1:8000 teacher.model=NAME "
                   "teacher.error_rate=0.3 rewards.weights.format=0.2 weighting.normalisation=softmax")
    p.set_defaults(func=generate_command)

    mapd = commands.add_parser("mapd", help="MAPD / FAIR: mine student mistakes, committee explanations, "
                               "rationales, peer review, the two-task dataset (each stage resumable)")
    mapd_commands = mapd.add_subparsers(dest="mapd_command", metavar="MAPD_COMMAND", required=True)

    def mapd_parser(name: str, help: str, func, out: str):
        p = mapd_commands.add_parser(name, help=help)
        p.add_argument("--config", help="YAML file with MapdConfig fields (task, student, teachers, threshold...)")
        p.add_argument("--out", default=f"runs/mapd/{out}", help=f"output folder; an existing one is resumed "
                       f"(default runs/mapd/{out})")
        p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                       help="e.g. n_problems=50 teachers.sim-a.error_rate=0.3 threshold=3.5 require_verified=false")
        p.set_defaults(func=func)
        return p

    p = mapd_parser("mine", "the student answers the training questions; the wrong answers are kept", mapd_mine,
                    "mine")
    p.add_argument("--data", help="a local data file or folder instead of config key task")
    p = mapd_parser("explain", "every teacher explains every mined mistake (gold answer as a hint)", mapd_explain,
                    "explain")
    p.add_argument("--mined", default="runs/mapd/mine", help="the mine stage's folder (default runs/mapd/mine)")
    p = mapd_parser("rationales", "every teacher answers every question step by step", mapd_rationales,
                    "rationales")
    p.add_argument("--data", help="a local data file or folder instead of config key task")
    p = mapd_parser("review", "every rationale scored 1-5 by every other teacher; acceptance", mapd_review, "review")
    p.add_argument("--rationales", default="runs/mapd/rationales", help="the rationales stage's folder")
    p = mapd_parser("build", "the two-task instruction dataset (explanation, rationale)", mapd_build, "build")
    p.add_argument("--mined", default="runs/mapd/mine")
    p.add_argument("--explanations", default="runs/mapd/explain")
    p.add_argument("--reviewed", default="runs/mapd/review")
    p.add_argument("--ablation", choices=("committee", "single", "no-explanation"),
                   help="default: config key ablation (committee)")

    p = commands.add_parser("train", help="on-policy training: grpo, sd-reference, sd-critique, sd-success, blends")
    p.add_argument("--config", help="YAML file with TrainConfig fields (model, task, lora, critic, onpolicy)")
    p.add_argument("--out", help="run folder; an existing one is resumed (default runs/train-METHOD-seedS)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="e.g. onpolicy.method=sd-critique onpolicy.steps=100 onpolicy.lr=1e-4 model=world")
    p.set_defaults(func=train_command)

    p = commands.add_parser("analyze", help="per-token advantage of the reference and critique contexts: "
                            "HTML, aggregates by first wrong step, plots")
    p.add_argument("--model", default="world", help="checkpoint: world, a run's best/ or final/ folder, ...")
    p.add_argument("--task", default="world")
    p.add_argument("--rollouts", help="rollouts JSONL (e.g. mentor eval's rollouts_none.jsonl); default: sample")
    p.add_argument("-n", type=int, default=50, help="problems to sample one rollout each (default 50)")
    p.add_argument("--problems-pool", dest="problems_pool", type=int, default=1000,
                   help="with --rollouts: how many problems of the split to search for their ids")
    p.add_argument("--split", default="test")
    p.add_argument("--contexts", default="reference,critique")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--max-new-tokens", dest="max_new_tokens", type=int, default=160)
    p.add_argument("--critic-base-url", dest="critic_base_url", help="an OpenAI-compatible LLM critic")
    p.add_argument("--critic-model", dest="critic_model")
    p.add_argument("--critic-api-key-env", dest="critic_api_key_env", default="OPENAI_API_KEY")
    p.add_argument("--out", default="runs/analysis")
    p.set_defaults(func=analyze_command)

    p = commands.add_parser("distill", help="offline training on a mentor generate folder (AdvDistill, "
                            "SFT on all responses, rejection-sampling SFT) or a mentor mapd build folder (mode=mapd)")
    p.add_argument("--config", help="YAML file with DistillConfig fields")
    p.add_argument("--out", help="run folder (default runs/distill-MODE-seedS)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="e.g. data=runs/gen mode=advdistill normalisation=zscore sft.steps=200")
    p.set_defaults(func=distill_command)

    p = commands.add_parser("compare", help="several methods x seeds under one budget; a markdown report")
    p.add_argument("config", nargs="?", help="YAML with CompareConfig fields (default: the shipped world "
                   "comparison, GRPO vs sd-reference vs sd-critique, 3 seeds)")
    p.add_argument("--out", default="runs/compare")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. seeds=[0] shared.steps=20 workers=2")
    p.set_defaults(func=compare_command)
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
