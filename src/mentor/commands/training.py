"""``mentor train``, ``mentor analyze`` and ``mentor compare``: on-policy training and its reports."""

from __future__ import annotations

from pathlib import Path

from mentor.commands.common import (
    console,
    load_model,
    progress_bar,
    score_table,
    tables,
    test_table,
    train_progress,
)
from mentor.runlock import check_out, run_lock
from mentor.train.distributed import is_main_process


def train_command(args) -> int:

    from mentor.config import load_config
    from mentor.train.recipe import TrainConfig, run_training

    config = load_config(TrainConfig, args.config, args.overrides)
    out = Path(args.out or f"runs/train-{config.onpolicy.method}-seed{config.onpolicy.seed}")
    if not is_main_process():  # under accelerate launch: the main process locks, shows and prints
        run_training(config, out)
        return 0
    with run_lock(out), progress_bar() as bar:
        result = run_training(config, out, progress=train_progress(bar, config.onpolicy.steps),
                              eval_progress=bar.phases(transient=True))
    k = config.onpolicy.eval_k
    rows = [("start", result.evals[0]), ("best", result.best), ("final", result.final)]
    tables().print(score_table(f"{config.onpolicy.method} on {config.task}: {config.onpolicy.eval_split} "
                                "evaluation", rows, k))
    if result.test:
        tables().print(test_table(result.test, k))
    if result.stopped_early:
        console().print(f"stopped early at step {len(result.history)} (no better Avg@{k})")
    console().print(f"run folder -> {out} (best/, final/, metrics.jsonl, evals.jsonl, summary.json)")
    return 0


def analyze_command(args) -> int:
    from mentor.analysis.report import REPORT_CONTEXTS, aggregate_table, run_analysis, sample_rollouts
    from mentor.records import Rollout, read_jsonl
    from mentor.tasks import load_task
    from mentor.train.recipe import CriticConfig, build_critic

    check_out(args.out)
    contexts = tuple(c.strip() for c in args.contexts.split(","))
    unknown = [c for c in contexts if c not in REPORT_CONTEXTS]
    if unknown:
        raise ValueError(f"--contexts: unknown context {unknown[0]!r}; choose from {', '.join(REPORT_CONTEXTS)}")
    for flag, value in (("-n", args.n), ("--problems-pool", args.problems_pool),
                        ("--max-new-tokens", args.max_new_tokens)):
        if value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    if not 0 <= args.temperature < float("inf"):
        raise ValueError(f"--temperature must be >= 0, got {args.temperature}")
    from mentor.devices import resolve_device, resolve_dtype

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    task = load_task(args.task)
    critic = build_critic(CriticConfig(base_url=args.critic_base_url or "", model=args.critic_model or "",
                                       api_key_env=args.critic_api_key_env), Path(args.out))
    critique = critic.critique if critic else None
    if args.rollouts:
        rollouts = read_jsonl(args.rollouts, Rollout)
        wanted = {r.problem_id for r in rollouts}
        problems = [p for p in task.problems(args.split, n=args.problems_pool) if p.id in wanted]
        if not problems:
            raise ValueError(f"no problem of {args.task} ({args.split} split) matches the rollouts in {args.rollouts}")
    model, tokenizer = load_model(args.model, dtype=dtype, device=device)
    with progress_bar() as bar:
        if not args.rollouts:
            problems = task.problems(args.split, n=args.n)
            rollouts = sample_rollouts(model, tokenizer, task, problems, seed=args.seed, temperature=args.temperature,
                                       max_new_tokens=args.max_new_tokens, progress=bar.tracker("sampling rollouts"))
        result = run_analysis(model, tokenizer, task, problems, rollouts, args.out, contexts=contexts,
                              critic=critique, progress=bar.tracker(f"token advantages ({len(contexts)} contexts)"))
    print(aggregate_table(result))  # markdown: not re-wrapped to the terminal's width
    console().print(f"report -> {Path(args.out) / 'analysis.html'} (analysis.json, PNG plots)")
    return 0


def compare_command(args) -> int:
    from mentor.config import load_config
    from mentor.experiments import (
        DEFAULT_CONFIG,
        CompareConfig,
        check_inputs,
        run_compare,
        token_advantage_section,
        with_warm_start,
        write_report,
    )

    if args.config and "=" in args.config and not Path(args.config).exists():  # an override, not a file
        args.overrides, args.config = [args.config, *args.overrides], None
    config = load_config(CompareConfig, args.config or DEFAULT_CONFIG, args.overrides)
    check_inputs(config)
    out = Path(args.out)
    total = config.n_runs()
    with run_lock(out), progress_bar() as bar:
        if config.warm_start:
            with console().status(f"warm start of {config.model}: {config.warm_start_config().mode} into "
                                  f"{out / 'warm_start'}"):
                config = with_warm_start(config, out)
        task_id = bar.add(f"{total} runs ({config.workers} at a time)", total=total)
        done = []

        def on_done(label: str, seed: int, summary: dict) -> None:
            done.append(label)
            k = summary["evaluation"]["k"]
            bar.update(task_id, len(done), info=f"{label} seed {seed}: final Avg@{k} "
                                                f"{100 * summary['final'][f'avg@{k}']:.2f}")

        if config.levels or config.carry_over:
            from mentor.feedback_map import run_map

            scored: dict[str, int] = {}

            def on_score(what: str, done: int, total: int) -> None:
                if what not in scored:
                    scored[what] = bar.add(what, total=total)
                bar.update(scored[what], done)

            data = run_map(config, out, on_done, on_score)
        else:
            results = run_compare(config, out, on_done)
    with console().status("token-advantage figures on the base model"):
        if config.levels or config.carry_over:
            import itertools

            from mentor.feedback_map import write_reports

            path = write_reports(config, data, out, list(itertools.combinations(config.methods, 2)))
        else:
            path = write_report(config, results, out, token_advantage_section(config, out))
    print(path.read_text().split("## Budget")[0].split("## The levels")[0])
    console().print(f"report -> {path}")
    return 0
