"""What every ``mentor`` command shares: consoles, progress bars, model loading, score tables, evaluation."""

from __future__ import annotations


def console():
    from rich.console import Console

    return Console(stderr=True)


def progress_bar():
    from mentor.progress import ProgressBar

    return ProgressBar()


# ----- mentor eval ------------------------------------------------------------------------------------

def load_model(spec: str):
    from mentor.loading import load_model as load

    with console().status(f"loading model {spec}"):
        return load(spec)


def run_eval(config, out: str | None, title: str = "evaluation", loaded=None) -> dict:
    """Evaluate (loading model and task unless ``loaded`` = (model, tokenizer) is given), print the table
    and write the results; returns the summaries."""
    from rich.table import Table

    from mentor.evaluate import check_contexts, evaluate, table_header, table_rows, write_results
    from mentor.runlock import check_out
    from mentor.tasks import load_task

    if out:
        check_out(out)  # before any sampling, not when the results are written
    task = load_task(config.task)
    problems = task.problems(config.split, n=config.n_problems, seed=config.problem_seed)
    check_contexts(task, problems, config.contexts)  # before the model loads, not after sampling
    model, tokenizer = loaded or load_model(config.model)
    with progress_bar() as bar:
        trackers = {}

        def progress(kind: str, total: int, done: int) -> None:
            trackers.setdefault(kind, bar.tracker(f"sampling [{kind}]", info=f"k={config.k}"))(done, total)

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
        console().print(f"results -> {path}")
    return summaries


def train_progress(bar, total: int):
    task_id = bar.add("training", total=total)

    def progress(step: int, metrics: dict) -> None:
        signal = f" signal {metrics['signal_fraction']:.0%}" if "signal_fraction" in metrics else ""
        bar.update(task_id, step, info=f"reward {metrics['reward']:.2f} loss {metrics['loss']:.4f}{signal} "
                                       f"{metrics['tokens_per_s']:.0f} tok/s")

    return progress


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
