"""The map of which feedback teaches when: one comparison run at several difficulty levels of a task,
with carry-over to problems beyond the training distribution, in one report and one figure (issue 19).

A ``mentor compare`` config with ``levels`` (label -> task spec) runs the whole comparison (methods x
seeds, the same search for every method) at each level in ``OUT/LABEL``, where each level gets its own
report. ``carry_over`` (label -> task spec) scores the base model and every run's chosen checkpoint on
tasks the runs never trained on. ``OUT/report.md`` puts the levels side by side: the base's success
rate, each method's test gain over the base with its standard error, which method leads where, the
carry-over, and ``map.png`` (gain against the base's success rate, one line per method).

Standard errors are conservative. A method's mean over seeds gets ``sqrt(std^2 / n + se_run^2)``: the
spread of its seeds (training and sampling), plus the standard error over test problems of one run's
number, not divided by n since every seed is scored on the same problems. A gain or a difference
combines two such errors as if independent (scores on the same problems are correlated, which would
make them smaller).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import statistics
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from mentor.experiments import CompareConfig, _die_with_parent, chosen_run_dirs, run_compare, write_report

BASE = "base"


def level_config(config: CompareConfig, label: str) -> CompareConfig:
    """The comparison at one level: the level's task, no levels of its own (label "": a comparison without
    levels, its own task, in OUT itself)."""
    return dataclasses.replace(config, task=config.levels[label] if label else config.task, levels={})


def level_labels(config: CompareConfig) -> list[str]:
    return list(config.levels) or [""]


def _score(model: str, task: str, n: int, k: int, temperature: float, max_new_tokens: int, threads: int,
           device: str = "auto", dtype: str = "auto") -> dict:
    """Avg@k and the fully correct trace rate (with standard errors) of one model on a task's test split."""
    import torch

    from mentor.evaluate import EvalConfig, evaluate
    from mentor.loading import load_placed
    from mentor.tasks import load_task

    if threads:
        torch.set_num_threads(threads)
    policy, tokenizer = load_placed(model, device, dtype)
    spec = load_task(task)
    summary, _ = evaluate(policy, tokenizer, spec, spec.problems("test", n=n), EvalConfig(
        n_problems=n, k=k, temperature=temperature, max_new_tokens=max_new_tokens, seed=0))
    return summary["none"]


def scores(config: CompareConfig, jobs: list[tuple[Path, str, str, int, int, int]],
           progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """Each job ``(cache file, model, task, n, k, max_new_tokens)`` scored once: a cache file that holds
    the same job is read back, so an interrupted map picks up where it stopped; ``progress(done, total)``
    as each job finishes."""
    from mentor.loading import weights_fingerprint

    temperature = float(config.shared.get("temperature", 1.0))
    out: list[dict | None] = []
    todo = []
    for cache, *job in jobs:
        key = [*job, temperature, weights_fingerprint(job[0])]  # a rebuilt or retrained model is scored anew
        if config.dtype != "auto":
            key.append(config.dtype)
        cached = json.loads(cache.read_text()) if cache.is_file() else {}
        out.append(cached.get("summary") if cached.get("job") == key else None)
        if out[-1] is None:
            todo.append((len(out) - 1, cache, key))
    threads = 1 if config.workers > 1 else 0
    calls = [(model, task, n, k, temperature, max_new, threads, config.device, config.dtype)
             for _, _, (model, task, n, k, max_new, *_) in todo]
    with contextlib.ExitStack() as stack:
        if config.workers > 1 and len(calls) > 1:
            pool = stack.enter_context(ProcessPoolExecutor(config.workers, mp_context=get_context("spawn"),
                                                           initializer=_die_with_parent, initargs=(os.getpid(),)))
            results = pool.map(_score, *zip(*calls))
        else:
            results = (_score(*call) for call in calls)
        for done, ((index, cache, key), summary) in enumerate(zip(todo, results), start=1):
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps({"job": key, "summary": summary}, indent=1) + "\n")  # kept at once
            out[index] = summary
            if progress:
                progress(done, len(todo))
    return out  # type: ignore[return-value]


def run_map(config: CompareConfig, out: str | Path, on_done: Callable[[str, int, dict], None] | None = None,
            on_score: Callable[[str, int, int], None] | None = None) -> dict:
    """Run (or resume) the comparison at every level, then score the base at every level and the base
    and every run's chosen checkpoint on every carry-over task; returns what the report needs."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    levels = {}
    for label in level_labels(config):
        level = level_config(config, label)
        levels[label] = run_compare(level, out / label, (lambda method, seed, summary, _label=label: on_done(
            f"{_label}: {method}" if _label else method, seed, summary)) if on_done else None)
    first = next(iter(next(iter(levels.values())).values()))[0]
    test = first["test_evaluation"]
    n, k, max_new = test["n_problems"], test["k"], test["max_new_tokens"]
    jobs = [(out / label / "base.json", config.model, level_config(config, label).task, n, k, max_new)
            for label in levels]
    base = dict(zip(levels, scores(config, jobs, (lambda d, t: on_score("the base at each level", d, t))
                                   if on_score else None)))
    carry: dict[str, dict] = {}
    if config.carry_over:
        models = [(BASE, None, config.model, out / "carry_over")]
        for label in levels:
            for method, run_dirs in chosen_run_dirs(level_config(config, label), out / label).items():
                models += [(label, method, str(run_dir / "best"), run_dir) for run_dir in run_dirs]
        jobs = [(folder / f"carry_over-{name}.json", model, spec, config.carry_over_problems, config.carry_over_k,
                 config.carry_over_max_new_tokens)
                for _, _, model, folder in models for name, spec in config.carry_over.items()]
        found = iter(scores(config, jobs, (lambda d, t: on_score("carry-over evaluations", d, t))
                            if on_score else None))
        for label, method, _, _ in models:
            for name in config.carry_over:
                entry = carry.setdefault(label, {}).setdefault(method or BASE, {}).setdefault(name, [])
                entry.append(next(found))
    data = {"levels": levels, "base": base, "carry_over": carry}
    (out / "map.json").write_text(json.dumps(data, indent=1) + "\n")
    return data


# ----- numbers -------------------------------------------------------------------------------------------


def method_estimate(runs: list[dict], key: str) -> tuple[float, float, float]:
    """(mean over seeds, std over seeds, conservative standard error of the mean; see the module docstring)
    of the test score ``key`` of each run's chosen checkpoint."""
    values = [run["test"]["best"][key] for run in runs]
    errors = [run["test"]["best"]["se"][key] for run in runs]
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.fmean(values), std, math.sqrt(std**2 / len(values) + statistics.fmean(errors) ** 2)


def difference(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    """(a - b, its standard error), the two (mean, se) taken as independent."""
    return a[0] - b[0], math.hypot(a[1], b[1])


def verdict(diff: float, se: float) -> str:
    """How a difference reads: beyond 2 standard errors either way, or level."""
    if se > 0 and abs(diff) > 2 * se:
        return "ahead" if diff > 0 else "behind"
    return "level"


def base_rate(results: dict[str, list[dict]]) -> float:
    """The base's fully correct trace rate on the evaluation (validation) split: any run's step-0 evaluation."""
    first = next(iter(results.values()))[0]["evals"][0]
    return first.get("trace_rate", first[f"avg@{next(iter(results.values()))[0]['evaluation']['k']}"])


# ----- the report ----------------------------------------------------------------------------------------


def _pct(value: float, se: float | None = None) -> str:
    return f"{100 * value:.2f}" + (f" ± {100 * se:.2f}" if se is not None else "")


def level_rows(data: dict, k: int) -> list[dict]:
    """Per level: the base's validation success rate, its test Avg@k, and each method's estimate and gain."""
    key = f"avg@{k}"
    rows = []
    for label, results in data["levels"].items():
        base = data["base"][label]
        base_est = (base[key], base["se"][key])
        methods = {}
        for method, runs in results.items():
            mean, std, se = method_estimate(runs, key)
            gain, gain_se = difference((mean, se), base_est)
            methods[method] = {"mean": mean, "std": std, "se": se, "gain": gain, "gain_se": gain_se,
                               "trace_rate": statistics.fmean(r["test"]["best"]["trace_rate"] for r in runs)
                               if all("trace_rate" in r["test"]["best"] for r in runs) else None}
        rows.append({"level": label or "(task)", "rate": base_rate(results), "base": base_est,
                     "base_trace_rate": base.get("trace_rate"), "methods": methods})
    return rows


def plot_map(rows: list[dict], path: Path, k: int) -> Path:
    """Gain in test Avg@k over the base against the base's success rate, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ordered = sorted(rows, key=lambda r: r["rate"])
    for method in ordered[0]["methods"]:
        xs = [100 * r["rate"] for r in ordered]
        ys = [100 * r["methods"][method]["gain"] for r in ordered]
        errors = [100 * r["methods"][method]["gain_se"] for r in ordered]
        ax.errorbar(xs, ys, yerr=errors, marker="o", capsize=3, label=method)
    levels = ax.secondary_xaxis("top")  # the levels' names over their rates, clear of the curves
    levels.set_xticks([100 * r["rate"] for r in ordered], labels=[r["level"] for r in ordered], fontsize=8)
    ax.axhline(0, color="gray", lw=0.8)
    ax.set_xlabel("base model's fully correct traces on validation (%)\nsparse reward <-        -> dense reward")
    ax.set_ylabel(f"test Avg@{k} gain over the base (points)")
    ax.set_title("Which feedback teaches when: gain over the base by difficulty\n"
                 "(mean over seeds; bars: one standard error)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")  # the legend beside the axes stays in the picture
    plt.close(fig)
    return path


def order_lines(rows: list[dict], pairs: list[tuple[str, str]]) -> list[str]:
    """For each level and each pair (a, b) of methods present: a - b, its standard error and the verdict."""
    lines = []
    for row in rows:
        methods = row["methods"]
        for a, b in pairs:
            if a in methods and b in methods:
                diff, se = difference((methods[a]["mean"], methods[a]["se"]), (methods[b]["mean"], methods[b]["se"]))
                lines.append(f"| {row['level']} | {a} - {b} | {100 * diff:+.2f} | {100 * se:.2f} | "
                             f"{diff / se if se else math.inf:+.1f} | {a} {verdict(diff, se)} |")
    return lines


def write_reports(config: CompareConfig, data: dict, out: str | Path, pairs: list[tuple[str, str]]) -> Path:
    """Each level's comparison report (with the token-advantage figures and its carry-over), and with
    several levels the map's ``OUT/report.md``; returns the top report's path."""
    from mentor.experiments import token_advantage_section

    out = Path(out)
    rows = level_rows(data, next(iter(next(iter(data["levels"].values())).values()))[0]["test_evaluation"]["k"])
    for row, (label, results) in zip(rows, data["levels"].items()):
        level = level_config(config, label)
        extra = token_advantage_section(level, out / label) if level.analysis_problems else ""
        extra += carry_over_section(config, data, [row])
        path = write_report(level, results, out / label, extra)
    if not config.levels:
        return path
    return write_map_report(config, data, out, pairs, rows)


def write_map_report(config: CompareConfig, data: dict, out: str | Path, pairs: list[tuple[str, str]],
                     rows: list[dict] | None = None) -> Path:
    """OUT/report.md: the levels side by side, who leads where, the carry-over, and map.png (``rows``:
    :func:`level_rows` when the caller has them)."""
    out = Path(out)
    first = next(iter(next(iter(data["levels"].values())).values()))[0]
    k, test = first["test_evaluation"]["k"], first["test_evaluation"]
    rows = rows or level_rows(data, k)
    methods = list(rows[0]["methods"])
    head = ["level (task)", "base: fully correct traces (validation)", f"base: test Avg@{k}"] + methods
    table = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        task = level_config(config, "" if row["level"] == "(task)" else row["level"]).task
        cells = [f"{row['level']} (`{task}`)", _pct(row["rate"]), _pct(*row["base"])]
        for method in methods:
            m = row["methods"][method]
            cells.append(f"{_pct(m['mean'])} ± {100 * m['std']:.2f} (gain {100 * m['gain']:+.2f} ± "
                         f"{100 * m['gain_se']:.2f})")
        table.append("| " + " | ".join(cells) + " |")
    figure = ""
    if len(rows) > 1:
        plot_map(rows, out / "map.png", k)
        figure = "![gain over the base against the base's success rate](map.png)\n\n"
    orders = order_lines(rows, pairs)
    order_section = "" if not orders else "\n".join([
        "## Who leads where\n",
        "Differences of test Avg@k means, in points; `ahead` / `behind`: beyond 2 standard errors of the "
        "difference, else `level`.\n",
        "| level | difference | points | se | in se | reads |", "|---|---|---|---|---|---|", *orders, ""])
    carry = carry_over_section(config, data, rows)
    links = "\n".join(f"- [{row['level']}]({row['level']}/report.md)" for row in rows)
    text = f"""# Which feedback teaches when: {config.model} across {len(rows)} difficulty level(s)

Each level runs the whole comparison ({len(config.seeds)} seeds, the same learning-rate search for every
method, chosen on validation) with training, validation and test at that level. Test: {test['n_problems']}
problems, k = {k} samples at temperature {test['temperature']}, at most {test['max_new_tokens']} new tokens;
a method's cell is the mean ± std over seeds of its chosen checkpoint's test Avg@{k}, and its gain over the
base with a conservative standard error (`mentor.feedback_map`: seed spread plus one run's standard
error over the test problems, base and method taken as independent).

{chr(10).join(table)}

{figure}{order_section}
{carry}
## The levels' own reports

{links}
"""
    path = out / "report.md"
    path.write_text(text)
    return path


def carry_over_section(config: CompareConfig, data: dict, rows: list[dict]) -> str:
    """Carry-over: the base and each level's methods on the tasks beyond training (mean over seeds)."""
    if not data["carry_over"]:
        return ""
    names = list(config.carry_over)
    k = config.carry_over_k
    head = ["trained at", "model"] + [f"{name}: Avg@{k} / fully correct" for name in names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def cells(entries: dict) -> list[str]:
        out = []
        for name in names:
            found = entries[name]
            avg = statistics.fmean(s[f"avg@{k}"] for s in found)
            se = statistics.fmean(s["se"][f"avg@{k}"] for s in found)
            trace = statistics.fmean(s.get("trace_rate", math.nan) for s in found)
            out.append(f"{_pct(avg, se)} / {_pct(trace)}")
        return out

    lines.append("| - | base | " + " | ".join(cells(data["carry_over"][BASE][BASE])) + " |")
    for row in rows:
        label = "" if row["level"] == "(task)" else row["level"]
        for method, entries in data["carry_over"].get(label, {}).items():
            lines.append(f"| {row['level']} | {method} | " + " | ".join(cells(entries)) + " |")
    specs = ", ".join(f"{name} = `{spec}`" for name, spec in config.carry_over.items())
    return f"""## Carry-over: beyond the training distribution

The base and every seed's chosen checkpoint on tasks no run trained on ({specs}): test split,
{config.carry_over_problems} problems, k = {k}, at most {config.carry_over_max_new_tokens} new tokens; mean
over seeds (± the mean standard error of one run over problems). A gain that does not carry over shows here.

{chr(10).join(lines)}

"""
