"""``mentor compare``: several on-policy methods over several seeds under one budget, one markdown report.

Every run shares ``shared`` (steps, learning rate, evaluation, ...) and differs only in its method's
entry of ``methods``; runs are resumable folders (``OUT/METHOD/seedS``), so a killed comparison picks up
where it stopped. The report has the docs/methods.md-style table (best checkpoint per metric, and final;
mean and spread over seeds), the budget each method spent, learning curves, the per-token advantage of
the reference and critique contexts on the base model, and the exact configuration.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import re
import signal
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

from mentor.config import checked_values, dump_yaml, load_config
from mentor.train.onpolicy import OnPolicyConfig

DEFAULT_CONFIG = Path(__file__).parent / "assets" / "compare_world.yaml"
METRICS = ("pass", "maj", "avg")
LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
RESERVED = {"data", "mapd", "analysis", "carry_over", "warm_start"}  # folders of OUT that are not runs


@dataclass
class CompareConfig:
    """Methods x seeds under one budget. ``methods`` maps a label to OnPolicyConfig overrides."""

    model: str = "world"
    task: str = "world"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    methods: dict[str, dict] = field(default_factory=lambda: {
        "GRPO": {"method": "grpo"}, "RefSol": {"method": "sd-reference"}, "StepAlignFB": {"method": "sd-critique"}})
    shared: dict = field(default_factory=dict)
    # offline methods: a method entry with a ``mode`` (advdistill | sft | rft) trains on teacher data that
    # ``generate`` (GenerateConfig overrides) writes once into OUT/data, with ``distill`` (DistillConfig
    # overrides) shared by every offline run; a local teacher without a model is the comparison's own model
    # (after any warm start): RFT on the student's own samples
    generate: dict = field(default_factory=dict)
    distill: dict = field(default_factory=dict)
    # MAPD methods (``mode: mapd`` with an ``ablation``) train on the build folders of one MAPD pipeline
    # run (MapdConfig overrides) into OUT/mapd
    mapd: dict = field(default_factory=dict)
    workers: int = 1  # runs in parallel, one torch thread each
    analysis_problems: int = 50  # base-model rollouts for the token-advantage figures (0: none)
    # The hyperparameter search every method gets: each combination of these values (e.g. {lr: [1e-4,
    # 3e-4, 1e-3]}) is run on the first seed, the one whose best checkpoint scores the highest Avg@k on the
    # evaluation (validation) split is kept, and the other seeds run with it (the first seed's run is the
    # search run). ``lr`` of an offline method is its ``sft.lr``. A method's own ``search`` entry replaces
    # this grid for that method; keep the number of candidates equal so every method gets the same budget.
    search: dict[str, list] = field(default_factory=dict)
    # The map (mentor.feedback_map): the whole comparison at each of these levels (label -> task spec, in
    # OUT/LABEL, ``task`` then unused), side by side in OUT/report.md with map.png
    levels: dict[str, str] = field(default_factory=dict)
    # tasks beyond the training distribution (label -> task spec) on which the base model and every run's
    # chosen checkpoint are scored too: test split, this many problems and samples, this many new tokens
    carry_over: dict[str, str] = field(default_factory=dict)
    carry_over_problems: int = 150
    carry_over_k: int = 4
    carry_over_max_new_tokens: int = 320
    # a warm start every run begins from (DistillConfig overrides; mode oracle by default: SFT on the task's
    # reference solutions), trained once into OUT/warm_start; its best checkpoint on validation is then the
    # comparison's model, so the report's base is the warm-started model (say so where it is quoted)
    warm_start: dict = field(default_factory=dict)
    device: str = "auto"  # every run, warm start and evaluation: auto (the accelerator when there is one) | cpu | cuda[:N]
    dtype: str = "auto"  # auto (float32 to train; bfloat16 to score on a GPU that supports it) | float32 | bfloat16

    def __post_init__(self) -> None:
        from mentor.devices import check_placement

        check_placement(self.device, self.dtype, training=True)
        if not self.seeds or not self.methods:
            raise ValueError("compare needs at least one seed and one method")
        if len(set(self.seeds)) != len(self.seeds) or not all(isinstance(s, int) and s >= 0 for s in self.seeds):
            raise ValueError(f"seeds must be distinct whole numbers >= 0, got {self.seeds}")
        for where, specs in (("levels", self.levels), ("carry_over", self.carry_over)):
            if not isinstance(specs, dict):
                raise ValueError(f"{where} must map a label to a task spec, got {specs!r}")
            for label, spec in specs.items():
                if not isinstance(label, str) or not LABEL.fullmatch(label) or label in RESERVED | set(self.methods):
                    raise ValueError(f"{where} label {label!r} must be a plain name (letters, digits, '.', '_', '+', "
                                     "'-') and no method's: it names a folder")
                if not isinstance(spec, str) or not spec:
                    raise ValueError(f"{where}.{label} must be a task spec such as world:steps=6, got {spec!r}")
        if min(self.carry_over_problems, self.carry_over_k, self.carry_over_max_new_tokens) < 1:
            raise ValueError("carry_over_problems, carry_over_k and carry_over_max_new_tokens must be >= 1")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if not isinstance(self.warm_start, dict):
            raise ValueError(f"warm_start must be a mapping of distill options, got {self.warm_start!r}")
        if self.warm_start:
            self.warm_start_config()  # a bad option is named before any run starts
        if self.generate:
            self.generate_config()
        for label in self.methods:
            if not isinstance(label, str) or not LABEL.fullmatch(label) or label in RESERVED:
                raise ValueError(f"method label {label!r} must be a plain name (letters, digits, '.', '_', '+', "
                                 f"'-'; not {sorted(RESERVED)}): it names the run's folder")
            if not isinstance(self.methods[label], dict):
                raise ValueError(f"method {label!r} must be a mapping of options")
            for choice in self.candidates(label):
                self.run_config(label, self.seeds[0], choice=choice)  # every combination must be a valid config

    def warm_start_config(self):
        """The DistillConfig of the warm start (on this comparison's model and task)."""
        from mentor.offline.train import DistillConfig

        try:
            return load_config(DistillConfig, None, _overrides(
                {"mode": "oracle", "device": self.device, "dtype": self.dtype, **self.warm_start, "model": self.model,
                 "task": self.task}))
        except (TypeError, ValueError) as err:
            raise ValueError(f"warm_start: {err}") from None

    def generate_config(self):
        """The GenerateConfig of the offline methods' teacher data (``generate`` on this task)."""
        from mentor.offline.generate import GenerateConfig

        try:
            return load_config(GenerateConfig, None, _overrides({"task": self.task, **generate_with_own_model(self)}))
        except (TypeError, ValueError) as err:
            raise ValueError(f"generate: {err}") from None

    def is_offline(self, label: str) -> bool:
        return "mode" in self.methods[label]

    def candidates(self, label: str) -> list[dict]:
        """The search's combinations for one method ([{}] when nothing is searched)."""
        grid = self.methods[label].get("search", self.search)
        if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
            raise ValueError(f"search of method {label!r} must map option names to non-empty lists, got {grid!r}")
        clash = set(grid) & (set(self.methods[label]) | (set(self.shared) if not self.is_offline(label) else set()))
        if clash:
            raise ValueError(f"method {label!r} sets {sorted(clash)}, which the search varies")
        return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]

    def searched(self, label: str) -> bool:
        return len(self.candidates(label)) > 1

    def n_runs(self) -> int:
        """Training runs in all: every candidate on the first seed, the chosen one on the others (at every
        level of a map)."""
        per_level = sum(len(self.seeds) + len(self.candidates(label)) - 1 for label in self.methods)
        return per_level * max(len(self.levels), 1)

    def run_config(self, label: str, seed: int, out: str = "OUT", choice: dict | None = None):
        """The OnPolicyConfig of an on-policy method, or the DistillConfig of an offline one; ``choice``:
        one combination of the search."""
        method = {k: v for k, v in self.methods[label].items() if k != "search"}
        choice = choice or {}
        try:
            if self.is_offline(label):
                from mentor.offline.train import DistillConfig

                ablation = method.pop("ablation", "committee")
                data = f"{out}/mapd/build-{ablation}" if method["mode"] == "mapd" else f"{out}/data"
                searched = {("sft.lr" if key == "lr" else key): value for key, value in choice.items()}
                return load_config(DistillConfig, None, _overrides(self.distill) + _overrides(
                    {"device": self.device, "dtype": self.dtype, **method, **searched, "model": self.model,
                     "task": self.task, "data": data, "seed": seed}))
            # checked and coerced as a config file's keys are: an unknown key or a value of the wrong type is
            # named, as methods.LABEL.KEY, before any run starts
            return OnPolicyConfig(**checked_values(OnPolicyConfig, {**self.shared, **method, **choice, "seed": seed},
                                                   f"methods.{label}."))
        except TypeError as err:
            raise ValueError(f"method {label!r}: {err}") from None


def _overrides(values: dict, prefix: str = "") -> list[str]:
    """A nested dict as key=value overrides (for the typed config loader)."""
    out = []
    for key, value in values.items():
        if isinstance(value, dict):
            out += _overrides(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}={json.dumps(value) if not isinstance(value, str) else value}")
    return out


def _run_one(model: str, task: str, config: dict, run_dir: str, threads: int, device: str = "auto",
             dtype: str = "auto") -> dict:
    """One training run in its own process (or inline); returns its summary. ``threads``: torch threads
    (0: leave as they are)."""
    import torch

    from mentor.loading import load_placed
    from mentor.tasks import load_task
    from mentor.train.onpolicy import run_summary, train_onpolicy

    if threads:
        torch.set_num_threads(threads)
    start = time.time()
    policy, tokenizer = load_placed(model, device, dtype, training=True)
    onpolicy = OnPolicyConfig(**config)
    result = train_onpolicy(policy, tokenizer, load_task(task), onpolicy, run_dir=run_dir)
    summary = run_summary(onpolicy, result)
    summary.update(evals=result.evals, seconds=round(time.time() - start, 1))
    return summary


def _run_offline(config: dict, run_dir: str, threads: int) -> dict:
    """One offline distillation run (a DistillConfig as a dict); returns its summary."""
    import torch

    from mentor.offline.train import DistillConfig, run_distill

    if threads:
        torch.set_num_threads(threads)
    return run_distill(load_config(DistillConfig, None, _overrides(config)), run_dir)


def _job(config: CompareConfig, label: str, seed: int, out: Path, choice: dict) -> tuple[Callable, tuple]:
    threads = 1 if config.workers > 1 else 0
    run_dir = str(_run_dir(config, label, seed, out, choice))
    if config.is_offline(label):
        return _run_offline, (asdict(config.run_config(label, seed, str(out), choice)), run_dir, threads)
    return _run_one, (config.model, config.task, asdict(config.run_config(label, seed, choice=choice)), run_dir,
                      threads, config.device, config.dtype)


def candidate_name(choice: dict) -> str:
    return ",".join(f"{key}={value}" for key, value in choice.items()) or "default"


def _run_dir(config: CompareConfig, label: str, seed: int, out: Path, choice: dict) -> Path:
    """OUT/METHOD/seedS; the first seed's runs of a search live in OUT/METHOD/search/CANDIDATE."""
    if config.searched(label) and seed == config.seeds[0]:
        return out / label / "search" / candidate_name(choice)
    return out / label / f"seed{seed}"


def chosen_run_dirs(config: CompareConfig, out: Path) -> dict[str, list[Path]]:
    """Each method's run folders, one a seed, with the search's chosen candidate (``search.json``)."""
    path = out / "search.json"
    search = json.loads(path.read_text()) if path.is_file() else {}
    return {label: [_run_dir(config, label, seed, out, search.get(label, {}).get("chosen", config.candidates(label)[0]))
                    for seed in config.seeds] for label in config.methods}


def validation_score(summary: dict) -> float:
    """What the search maximises: the best checkpoint's Avg@k on the evaluation (validation) split."""
    key = f"avg@{summary['evaluation']['k']}"
    return max(e[key] for e in summary["evals"])


def _die_with_parent(parent: int) -> None:
    """Worker initializer: the kernel kills this worker when the compare process dies, however it dies
    (Linux's PR_SET_PDEATHSIG), so a killed ``mentor compare`` leaves no orphan runs behind; a worker whose
    parent died while it was still starting up exits at once."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(1)


def _run_jobs(config: CompareConfig, jobs: list[tuple[str, int, dict]], out: Path,
              on_done: Callable[[str, int, dict], None] | None) -> list[dict]:
    calls = [_job(config, label, seed, out, choice) for label, seed, choice in jobs]
    with contextlib.ExitStack() as stack:
        if config.workers > 1:
            pool = stack.enter_context(ProcessPoolExecutor(config.workers, mp_context=get_context("spawn"),
                                                           initializer=_die_with_parent,
                                                           initargs=(os.getpid(),)))
            futures = [pool.submit(function, *arguments) for function, arguments in calls]
            summaries = (future.result() for future in futures)
        else:
            summaries = (function(*arguments) for function, arguments in calls)  # one by one, as consumed
        done = []
        for (label, seed, choice), summary in zip(jobs, summaries):
            done.append(summary)
            if on_done:
                on_done(label if not choice else f"{label} [{candidate_name(choice)}]", seed, summary)
    return done


def check_inputs(config: CompareConfig) -> None:
    """The model and every task spec (the task, each level's, each carry-over's), checked before a run folder
    or any file of the comparison is written."""
    from mentor.loading import check_model
    from mentor.tasks import load_task

    check_model(config.model)
    for spec in (config.task, *config.levels.values(), *config.carry_over.values()):
        load_task(spec)


def with_warm_start(config: CompareConfig, out: str | Path) -> CompareConfig:
    """``config`` itself, or with a warm start: the warm start trained (or found finished) in OUT/warm_start,
    and ``config`` with its best checkpoint as the model."""
    if not config.warm_start:
        return config
    from mentor.offline.train import run_distill

    folder = Path(out) / "warm_start"
    run_distill(config.warm_start_config(), folder)
    return dataclasses.replace(config, model=str(folder / "best"), warm_start={})


def generate_with_own_model(config: CompareConfig) -> dict:
    """``config.generate``, with the comparison's model as a local teacher that names none."""
    teacher = config.generate.get("teacher", {})
    if teacher.get("kind") != "local" or teacher.get("model"):
        return config.generate
    return {**config.generate, "teacher": {**teacher, "model": config.model}}


def run_compare(config: CompareConfig, out: str | Path,
                on_done: Callable[[str, int, dict], None] | None = None) -> dict[str, list[dict]]:
    """Run (or resume) every method x seed; returns the summaries by method label. Offline methods first
    get their teacher data (``mentor generate``, resumable, shared by every offline run). With a search,
    every candidate runs on the first seed first; the best on validation (``search.json``) runs the rest."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.yaml").write_text(dump_yaml(asdict(config)))
    modes = {config.methods[label].get("mode") for label in config.methods if config.is_offline(label)}
    if modes - {"mapd", "oracle"}:
        from mentor.offline.generate import run_generate

        run_generate(config.generate_config(), out / "data")
    if "mapd" in modes:
        from mentor.offline.mapd_run import MapdConfig, run_pipeline

        ablations = sorted({m.get("ablation", "committee") for m in config.methods.values() if m.get("mode") == "mapd"})
        mapd = load_config(MapdConfig, None, _overrides({"task": config.task, "student": config.model, **config.mapd}))
        run_pipeline(mapd, out / "mapd", ablations)
    first = config.seeds[0]
    searched = [(label, first, choice) for label in config.methods if config.searched(label)
                for choice in config.candidates(label)]
    search: dict[str, dict] = {}
    for (label, _, choice), summary in zip(searched, _run_jobs(config, searched, out, on_done)):
        entry = search.setdefault(label, {"candidates": [], "scores": [], "summaries": []})
        entry["candidates"].append(choice)
        entry["scores"].append(validation_score(summary))
        entry["summaries"].append(summary)
    chosen = {label: config.candidates(label)[0] for label in config.methods}
    for label, entry in search.items():
        best = max(range(len(entry["scores"])), key=lambda i: (entry["scores"][i], -i))  # ties: the first
        chosen[label] = entry["candidates"][best]
        entry["chosen"] = chosen[label]
    jobs = [(label, seed, chosen[label]) for label in config.methods for seed in config.seeds
            if not (label in search and seed == first)]
    summaries = iter(_run_jobs(config, jobs, out, on_done))
    results: dict[str, list[dict]] = {label: [] for label in config.methods}
    for label in config.methods:
        for seed in config.seeds:
            if label in search and seed == first:
                results[label].append(search[label]["summaries"][search[label]["candidates"].index(chosen[label])])
            else:
                results[label].append(next(summaries))
    (out / "search.json").write_text(json.dumps(
        {label: {key: entry[key] for key in ("candidates", "scores", "chosen")} for label, entry in search.items()},
        indent=2) + "\n")
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def search_table(out: Path) -> str:
    """The search, as the report shows it: each candidate's validation score, the chosen one in bold."""
    path = out / "search.json"
    search = json.loads(path.read_text()) if path.is_file() else {}
    if not search:
        return ""
    lines = ["| method | candidate | best validation Avg@k (first seed) |", "|---|---|---|"]
    for label, entry in search.items():
        for choice, score in zip(entry["candidates"], entry["scores"]):
            name = candidate_name(choice)
            if choice == entry["chosen"]:
                name = f"**{name}** (chosen)"
            lines.append(f"| {label} | {name} | {100 * score:.2f} |")
    return "\n".join(lines)


# ----- the report ----------------------------------------------------------------------------------------


def _spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    if len(values) < 2:
        return f"{100 * mean:.2f}"
    return f"{100 * mean:.2f} ± {100 * statistics.stdev(values):.2f}"


def metric_keys(k: int) -> dict[str, str]:
    return {"pass": f"pass@{k}", "maj": f"maj@{k}", "avg": f"avg@{k}"}


def results_table(results: dict[str, list[dict]], k: int, which: str) -> str:
    """The docs/methods.md table. ``which="best"``: for each metric, the best evaluation of each run (the
    study's "best checkpoint per metric"); ``"final"``: the last evaluation; ``"start"``: step 0."""
    keys = metric_keys(k)
    lines = [f"| method | Pass@{k} | Maj@{k} | Avg@{k} |", "|---|---|---|---|"]
    for label, runs in results.items():
        cells = []
        for metric in METRICS:
            key = keys[metric]
            if which == "best":
                values = [max(e[key] for e in run["evals"]) for run in runs]
            else:
                values = [run["evals"][-1 if which == "final" else 0][key] for run in runs]
            cells.append(_spread(values))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def test_table(results: dict[str, list[dict]], k: int) -> str:
    """Test-split scores of the checkpoint chosen on validation (Avg@k on ``eval_split``) and of the final
    one: mean ± std over seeds, and the mean standard error of one run's number (over test problems)."""
    keys = [f"avg@{k}", f"pass@{k}", f"maj@{k}", "greedy", "trace_rate"]
    names = [f"Avg@{k}", f"Pass@{k}", f"Maj@{k}", "greedy", "fully correct traces"]
    lines = ["| method | checkpoint | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for label, runs in results.items():
        tested = [run["test"] for run in runs if run.get("test")]
        if not tested:
            continue
        for which in ("best", "final"):
            cells = []
            for key in keys:
                values = [t[which][key] for t in tested if t[which].get(key) is not None]
                errors = [t[which]["se"][key] for t in tested if key in t[which].get("se", {})]
                if not values:
                    cells.append("-")
                    continue
                se = f" (se {100 * statistics.fmean(errors):.2f})" if errors else ""
                cells.append(_spread(values) + se)
            steps = ", ".join(str(t[which]["step"]) for t in tested)
            lines.append(f"| {label} | {which} (step {steps}) | " + " | ".join(cells) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


def budget_table(results: dict[str, list[dict]]) -> str:
    """Steps and what they consumed: student rollouts (on-policy) or teacher sequences trained on (offline)."""
    lines = ["| method | steps | prompts | rollouts / sequences | generated tokens | wall time per run | of which training |",
             "|---|---|---|---|---|---|---|"]
    for label, runs in results.items():
        first = runs[0]
        tokens = f"{statistics.fmean(r['generated_tokens'] for r in runs):.0f}" if "generated_tokens" in first else "-"
        used = first.get("rollouts", first.get("sequences", "-"))
        if all("train_seconds" in r for r in runs):  # summed over the sessions that ran it (on-policy runs)
            wall = statistics.fmean(r["train_seconds"] + r["eval_seconds"] for r in runs)
            training = f"{statistics.fmean(r['train_seconds'] for r in runs):.0f} s"
        else:
            wall, training = statistics.fmean(r.get("seconds", 0.0) for r in runs), "-"
        lines.append(f"| {label} | {first['steps']} | {first.get('prompts', '-')} | {used} | {tokens} | {wall:.0f} s "
                     f"| {training} |")
    return "\n".join(lines)


def plot_curves(results: dict[str, list[dict]], k: int, path: Path) -> Path:
    """Avg@k against step: the mean over seeds, and the range as a band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = metric_keys(k)["avg"]
    fig, ax = plt.subplots(figsize=(7.5, 4))
    seeds = max((len(runs) for runs in results.values()), default=0)
    for label, runs in results.items():
        steps = sorted({e["step"] for run in runs for e in run["evals"]})
        means, lows, highs = [], [], []
        for step in steps:
            values = [100 * e[key] for run in runs for e in run["evals"] if e["step"] == step]
            means.append(statistics.fmean(values))
            lows.append(min(values))
            highs.append(max(values))
        ax.plot(steps, means, marker="o", label=label)
        ax.fill_between(steps, lows, highs, alpha=0.2)
    ax.set_xlabel("training step")
    ax.set_ylabel(f"Avg@{k} (%) on the evaluation split")
    ax.set_title(f"Avg@{k} during training: mean over {seeds} seed(s), band from the lowest to the highest seed",
                 fontsize=9)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))  # beside the curves, not over them
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def token_advantage_section(config: CompareConfig, out: Path) -> str:
    """A_t of the reference and critique contexts on the base model's own rollouts (mentor analyze)."""
    if config.analysis_problems < 1:
        return ""
    from mentor.analysis.report import aggregate_table, run_analysis, sample_rollouts
    from mentor.loading import load_placed
    from mentor.tasks import load_task

    model, tokenizer = load_placed(config.model, config.device, config.dtype)
    task = load_task(config.task)
    problems = task.problems("test", n=config.analysis_problems)
    shared = config.run_config(next(iter(config.methods)), config.seeds[0], str(out))
    rollouts = sample_rollouts(model, tokenizer, task, problems, temperature=shared.temperature,
                               max_new_tokens=shared.max_new_tokens)
    result = run_analysis(model, tokenizer, task, problems, rollouts, out / "analysis")
    return ("## Where each context pushes the base model (per-token advantage)\n\n"
            f"A_t = log p(y_t | x, c) - log p(y_t | x) on {len(rollouts)} of the base model's own rollouts "
            "(one per held-out problem, seed 0), split by the critic's first wrong step "
            "(`analysis/analysis.html` shows every token).\n\n"
            f"{aggregate_table(result)}\n\n![A_t around the first wrong step](analysis/advantage_by_error_offset.png)\n")


def write_report(config: CompareConfig, results: dict[str, list[dict]], out: str | Path,
                 analysis: str = "") -> Path:
    out = Path(out)
    first = next(iter(results.values()))[0]
    k = first["evaluation"]["k"]
    evaluation = first["evaluation"]
    plot_curves(results, k, out / "curves.png")
    search = json.loads((out / "search.json").read_text()) if (out / "search.json").is_file() else {}
    configs = {label: asdict(config.run_config(label, config.seeds[0], str(out), search.get(label, {}).get(
        "chosen", config.candidates(label)[0]))) for label in config.methods}
    searched = search_table(out)
    search_section = "" if not searched else f"""## Hyperparameter search (on {evaluation['split']})

Every candidate ran on seed {config.seeds[0]}; the one whose best checkpoint scored the highest Avg@{k} on
the {evaluation['split']} split was kept (ties: the first listed) and ran on the other seeds. Seed
{config.seeds[0]}'s row in every table is its search run.

{searched}

"""
    tested = test_table(results, k)
    test_section = "" if not tested else f"""## On the test split (checkpoint chosen on {evaluation['split']})

{first['test_evaluation']['n_problems']} test problems, k = {k} samples each at temperature
{evaluation['temperature']} and one greedy answer; mean ± std over seeds, and in brackets the standard error
of one run's number over test problems. The best checkpoint is the one with the highest Avg@{k} on the
{evaluation['split']} split.

{tested}

"""
    text = f"""# mentor compare: {config.task} task, model {config.model}

{len(config.seeds)} seeds ({', '.join(map(str, config.seeds))}); mean ± standard deviation over seeds.
{test_section}During training: {evaluation['n_problems']} {evaluation['split']} problems, n = k = {k} samples each, temperature
{evaluation['temperature']}, top_p {evaluation['top_p']}, at most {evaluation['max_new_tokens']} new tokens,
sampling seed {evaluation['seed']}; checkpoints evaluated every {first['evals'][1]['step'] if len(first['evals']) > 1 else '-'} steps.

## Best checkpoint per metric ({evaluation['split']} split)

{results_table(results, k, 'best')}

## Final checkpoint ({evaluation['split']} split)

{results_table(results, k, 'final')}

## Before training (step 0)

{results_table(results, k, 'start')}

{search_section}## Budget per run

{budget_table(results)}

## Learning curves

![Avg@{k} by step](curves.png)

{analysis}
## Configuration

The comparison (`compare.yaml`):

```yaml
{dump_yaml(asdict(config)).strip()}
```

Each method's resolved configuration, with the chosen candidate (seed {config.seeds[0]}; other seeds differ only
in `seed`):

```json
{json.dumps(configs, indent=1)}
```
"""
    path = out / "report.md"
    path.write_text(text)
    return path
