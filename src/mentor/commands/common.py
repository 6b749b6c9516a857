"""What every ``mentor`` command shares: consoles, progress bars, model loading, score tables, evaluation."""

from __future__ import annotations


def console():
    """stderr, for messages: a long line is not broken at 80 columns in a log file."""
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)


def tables():
    """stdout, for tables: at least 120 columns wide when it is not a terminal (a log file), so that no
    header is cut (``trace_r…``) and no ``±`` wraps onto a line of its own."""
    import sys

    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=max(120, Console().width))


def readable(values: dict) -> str:
    """``{"rows": 6, "acceptance": 0.6666}`` as ``rows 6, acceptance 0.667``: a summary for people, not a dict
    (floats to 3 significant digits, whole ones as they are)."""
    def shown(value):
        if isinstance(value, dict):
            return readable(value)
        if isinstance(value, float) and not value.is_integer():
            return f"{value:.3g}"
        return value

    return ", ".join(f"{key.replace('_', ' ')} {shown(value)}" for key, value in values.items())


def progress_bar():
    from mentor.progress import ProgressBar

    return ProgressBar()


# ----- mentor eval ------------------------------------------------------------------------------------

def load_model(spec: str, **placement):
    """``mentor.loading.load_model`` under a status line; ``placement``: its ``device`` and ``dtype``."""
    from mentor.loading import load_model as load

    with console().status(f"loading model {spec}"):
        return load(spec, **placement)


def run_eval(config, out: str | None, title: str = "evaluation", loaded=None) -> dict:
    """Evaluate (loading model and task unless ``loaded`` = (model, tokenizer) is given), print the table
    and write the results; returns the summaries. With ``out``, each problem's rollouts are on disk as soon
    as they are drawn: an interrupted evaluation run again on the same folder resumes."""
    import contextlib

    from rich.table import Table

    from mentor.evaluate import (
        check_contexts,
        evaluate,
        open_rollouts,
        table_header,
        table_rows,
        write_results,
    )
    from mentor.runlock import check_out, run_lock
    from mentor.tasks import load_task

    if out:
        check_out(out)  # before any sampling, not when the results are written
    task = load_task(config.task)
    problems = task.problems(config.split, n=config.n_problems, seed=config.problem_seed)
    check_contexts(task, problems, config.contexts)  # before the model loads, not after sampling
    if loaded is None:
        from mentor.devices import resolve_device, resolve_dtype

        device = resolve_device(config.device)
        loaded = load_model(config.model, dtype=resolve_dtype(config.dtype, device), device=device)
    model, tokenizer = loaded
    checkpoint = {"spec": config.model, "path": str(getattr(model, "name_or_path", config.model))}
    with run_lock(out) if out else contextlib.nullcontext(), progress_bar() as bar:
        saved = open_rollouts(out, config, checkpoint, problems) if out else None
        if saved and any(rows.found for rows in saved.values()):
            console().print(f"resuming {out}: {sum(rows.found for rows in saved.values())} rollouts found")
        phases = bar.phases()
        try:
            summaries, rollouts = evaluate(
                model, tokenizer, task, problems, config,
                lambda kind, done, total: phases(f"sampling [{kind}] k={config.k}", done, total), saved)
        except KeyboardInterrupt:
            kept = sum(len(rows.path.read_bytes().splitlines()) for rows in saved.values() if rows.path.is_file()) \
                if saved else 0
            raise KeyboardInterrupt(f"{kept} rollouts kept in {out}; run the same command again to resume"
                                    if saved else "nothing written (evaluate with --out to keep rollouts)") from None
        path = write_results(out, config, summaries, rollouts, checkpoint) if out else None
    table = Table(title=f"{title}: {task.name}, {len(problems)} problems, k={config.k}, "
                        f"T={config.temperature}, top_p={config.top_p}, seed={config.seed}")
    for column in table_header(summaries):
        table.add_column(column, justify="right")
    for row in table_rows(summaries):
        table.add_row(*row)

    tables().print(table)
    for warning in answer_warnings(summaries, config.max_new_tokens):
        console().print(warning, markup=False)  # "[none]" is no style
    if path:
        console().print(f"results -> {path}")
    return summaries


def answer_warnings(summaries: dict, max_new_tokens: int, cut_off: float = 0.5, fallback: float = 0.25) -> list[str]:
    """One line for each context whose samples were mostly cut off at ``max_new_tokens`` (their answers were
    never written, so the table's zeros measure the budget, not the model), and one for each whose correct
    answers were often found without an answer marker (read by the task's fall-back, so partly luck)."""
    lines = [f"warning [{kind}]: {rate:.0%} of the samples stopped at --max-new-tokens {max_new_tokens} before "
             "they ended; their answers were never written: raise --max-new-tokens"
             for kind, summary in summaries.items() if (rate := summary.get("truncation_rate") or 0) > cut_off]
    for kind, summary in summaries.items():
        n = summary.get("n", 1)
        right, unmarked = summary.get(f"avg@{n}") or 0, summary.get("fallback_rate") or 0
        if right and unmarked / right > fallback:
            lines.append(f"warning [{kind}]: {unmarked / right:.0%} of the correct answers had no answer marker "
                         "and were read by the task's fall-back (the text's last number): partly luck")
    return lines


def train_progress(bar, total: int, description: str = "training", info=None):
    """``progress(step, metrics)`` for a training loop. The bar starts at the first step reported: its ETA
    leaves out the model loading and first evaluation, and a resumed run's steps found done.
    ``info(metrics)``: the text beside the bar (default: an on-policy step's reward, loss and speed)."""
    key = []

    def progress(step: int, metrics: dict) -> None:
        if not key:
            key.append(bar.add(description, total=total, start=step))
        bar.update(key[0], step, info=(info or onpolicy_info)(metrics))

    return progress


def onpolicy_info(metrics: dict) -> str:
    signal = f" signal {metrics['signal_fraction']:.0%}" if "signal_fraction" in metrics else ""
    return f"reward {metrics['reward']:.2f} loss {metrics['loss']:.4f}{signal} {metrics['tokens_per_s']:.0f} tok/s"


def score_table(title: str, rows: list[tuple[str, dict]], k: int):
    from rich.table import Table

    table = Table(title=title + " (± standard error over problems)")
    columns = {f"pass@{k}": f"Pass@{k}", f"maj@{k}": f"Maj@{k}", f"avg@{k}": f"Avg@{k}",
               "greedy": "greedy", "trace_rate": "fully correct traces"}
    keys = [key for key in columns if all(key in score for _, score in rows)]
    table.add_column("checkpoint", justify="right", no_wrap=True)
    for column in ("step", *(columns[key] for key in keys)):
        table.add_column(column, justify="right")
    for name, score in rows:
        table.add_row(name, str(score["step"]), *(_with_error(score, key) for key in keys))
    return table


def test_table(test: dict, k: int):
    """The best checkpoint (chosen on validation) and the final one, scored on the test split."""
    rows = [(f"{which} (chosen on validation)" if which == "best" else which, test[which]) for which in ("best", "final")]
    return score_table("on the test split", rows, k)


def _with_error(score: dict, key: str) -> str:
    error = score.get("se", {}).get(key)
    return f"{100 * score[key]:.2f}" + (f" ± {100 * error:.2f}" if error is not None else "")
