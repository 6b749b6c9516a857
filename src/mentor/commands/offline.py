"""``mentor generate``, ``mentor distill`` and ``mentor mapd``: learning from teachers offline."""

from __future__ import annotations

import sys
from pathlib import Path

from mentor.commands.common import (
    console,
    load_model,
    progress_bar,
    readable,
    score_table,
    tables,
    test_table,
    train_progress,
)
from mentor.runlock import check_out, run_lock
from mentor.train.distributed import is_main_process


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
    with run_lock(out), progress_bar() as bar:
        try:
            summary = run_generate(config, out, progress=bar.tracker(
                f"prompts answered ({config.group_size} responses each)"))
        except SamplerError as err:
            rows = out / "responses.jsonl"
            kept = len(rows.read_text().splitlines()) if rows.is_file() else 0
            print(f"mentor: error: teacher request failed: {str(err).splitlines()[0]} ({kept} rows kept in "
                  f"{rows}; run the same command again to resume)", file=sys.stderr)
            return 1
    run = summary["this_run"]
    console().print(
        f"{summary['prompts']} prompts x {summary['group_size']} = {summary['responses']} responses from "
        f"{summary['teacher']}: {summary['correct']} correct ({100 * summary['accuracy']:.1f}%), "
        f"{summary['format_failures']} format failures, {summary['empty']} empty, {summary['truncated']} "
        f"truncated, {summary['zero_variance_groups']} zero-variance groups ({summary['dropped_groups']} "
        f"dropped); this run wrote {run['rows_written']} rows in {run['seconds']:.1f}s "
        f"({run['rows_found']} found, {run['retries']} retries)")
    console().print(f"dataset -> {out} (responses.jsonl, dataset/, summary.json)")
    return 0




def distill_command(args) -> int:

    from mentor.config import load_config
    from mentor.offline.train import DistillConfig, run_distill

    config = load_config(DistillConfig, args.config, args.overrides)
    out = Path(args.out or f"runs/distill-{config.mode}-seed{config.seed}")
    if not is_main_process():  # under accelerate launch: the main process locks, shows and prints
        run_distill(config, out)
        return 0
    with run_lock(out), progress_bar() as bar:
        summary = run_distill(config, out, eval_progress=bar.phases(transient=True), progress=train_progress(
            bar, config.sft.steps, f"{config.mode} on {config.data or config.task}", lambda m: f"loss {m['loss']:.4f}"))
    k = config.eval_k
    rows = [("start", summary["evals"][0]), ("best", summary["best"]), ("final", summary["final"])]
    tables().print(score_table(f"{config.mode} on {config.task}: {config.eval_split} evaluation", rows, k))
    if summary.get("test"):
        tables().print(test_table(summary["test"], k))
    console().print(f"examples: {readable(summary['examples'])}")
    console().print(f"run folder -> {out} (best/, final/, evals.jsonl, loss.jsonl, summary.json)")
    return 0




def _mapd_config(args):
    from mentor.config import load_config
    from mentor.offline.mapd_run import MapdConfig

    overrides = list(args.overrides)
    if getattr(args, "data", None):
        overrides.append(f"task={args.data}")
    return load_config(MapdConfig, args.config, overrides)


def _mapd_stage(args, label: str, run) -> int:
    """Run one teacher stage with a progress bar; a failed teacher request keeps the rows written (exit 1)."""
    config = _mapd_config(args)
    out = Path(args.out)
    with run_lock(out):
        return _run_stage(config, out, label, run)


def _run_stage(config, out: Path, label: str, run) -> int:
    from mentor.offline.mapd_run import build_teachers
    from mentor.sampling.openai_compatible import SamplerError

    teachers = build_teachers(config, out)
    try:
        with progress_bar() as bar:
            summary = run(config, teachers, out, bar.tracker(f"{label} ({len(teachers)} teachers)"))
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
    console().print(f"mapd {summary['stage']}: {readable(shown)}{extra}")
    console().print(f"stage folder -> {out} (summary.json)")


def mapd_mine(args) -> int:
    from mentor.offline.mapd import mine

    config = _mapd_config(args)
    check_out(args.out)
    task, problems = config.problems()
    model, tokenizer = load_model(config.student)
    out = Path(args.out)
    with run_lock(out), progress_bar() as bar:
        summary = mine(model, tokenizer, task, problems, out, temperature=config.student_temperature,
                       top_p=config.student_top_p, max_new_tokens=config.student_max_new_tokens, seed=config.seed,
                       batch_size=config.batch_size, backend=config.student_backend, progress=bar.tracker(
                           f"student answers (T={config.student_temperature}, top_p={config.student_top_p})"))
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
    with run_lock(out):
        summary = build(args.mined, args.explanations, args.reviewed, out, ablation=args.ablation or config.ablation,
                        single_teacher=config.single_teacher, rationale_instruction=config.rationale_instruction)
    _print_stage(summary, out)
    return 0
