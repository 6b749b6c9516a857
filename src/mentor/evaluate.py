"""Evaluation: sample k completions per problem, verify them, and report Avg@k, Pass@k, Maj@k, format and
truncation rates, with every sampling parameter, the seed and the checkpoint recorded beside the numbers.

Besides the bare question, a model can be evaluated *with context* (a reference solution, or the critic's
critique of the model's own first attempt), which measures how much better the self-teacher is.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mentor.config import check_at_most
from mentor.contexts import build_context_prompt
from mentor.devices import check_placement
from mentor.metrics import standard_error, summarize
from mentor.models import render_prompt
from mentor.records import Problem, Rollout, read_json, write_jsonl
from mentor.rows import RowFile
from mentor.sampling import Sample, SamplingParams
from mentor.sampling.backends import check_backend, open_sampler
from mentor.tasks import Task

EVAL_CONTEXTS = ("none", "reference", "critique")  # ``success`` needs a training run's sibling rollouts


@dataclass
class EvalConfig:
    """What to evaluate and how to sample (``mentor eval`` flags map onto these fields)."""

    model: str = "world"
    task: str = "world"
    n_problems: int = 50
    split: str = "test"
    k: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 160
    seed: int = 0  # the sampling seed
    problem_seed: int = 0  # which problems a generated task draws; kept apart so seeds vary only sampling
    contexts: list[str] = field(default_factory=lambda: ["none"])
    batch_size: int = 64
    thinking: bool | None = None
    greedy: bool = False  # also one greedy (temperature 0) answer per problem: ``greedy`` accuracy
    backend: str = "local"  # local (mentor's decode loop) | vllm (an engine in this process, from the model's folder)
    device: str = "auto"  # auto (the accelerator when there is one, else cpu) | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto (bfloat16 on a GPU that supports it, else float32) | float32 | bfloat16 | float16

    def __post_init__(self) -> None:
        if self.n_problems < 1 or self.k < 1:
            raise ValueError(f"n_problems and k must be >= 1, got {self.n_problems} and {self.k}")
        bad = [c for c in self.contexts if c not in EVAL_CONTEXTS]
        if bad or not self.contexts:
            raise ValueError(f"unknown context {bad}; choose from {', '.join(EVAL_CONTEXTS)}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        check_backend(self.backend)
        check_placement(self.device, self.dtype)
        check_at_most(self, "n_problems", "k", "max_new_tokens", "batch_size")
        self.sampling()  # checks temperature, top_p, max_new_tokens

    def sampling(self) -> SamplingParams:
        return SamplingParams(
            n=self.k, temperature=self.temperature, top_p=self.top_p,
            max_new_tokens=self.max_new_tokens, seed=self.seed,
        )


RUN_DECIDES = ("model", "task", "device", "dtype")


def sampling_record(config: EvalConfig) -> dict:
    """An evaluation inside a training run, as its summary records it: the EvalConfig without the fields the
    run itself decides (its config.json holds the model, task and placement; here they would be defaults)."""
    return {key: value for key, value in asdict(config).items() if key not in RUN_DECIDES}


def check_contexts(task: Task, problems: Sequence[Problem], contexts: Sequence[str]) -> None:
    """Fail before any sampling when a context cannot be built for this task."""
    if "reference" in contexts and not all(p.solution for p in problems):
        raise ValueError(f"context 'reference' needs reference solutions; task {task.name!r} lacks some")
    if "critique" in contexts and problems and not has_critic(task, problems):
        raise ValueError(f"task {task.name!r} has no critic (for some of its problems); evaluate with contexts "
                         "none or reference")


def has_critic(task: Task, problems: Sequence[Problem]) -> bool:
    """Whether the task critiques these problems: asked of one problem from each source (a mixture's tasks)."""
    firsts = {p.source: p for p in reversed(problems)}
    return all(task.critique(p, "") is not None for p in firsts.values())


def context_prompts(task: Task, problems: Sequence[Problem], kind: str,
                    attempts: Sequence[str] | None = None) -> list[str]:
    """User messages for one context kind; ``critique`` critiques each problem's first attempt."""
    if kind != "critique":
        return [build_context_prompt(kind, task.prompt(p), problem=p) for p in problems]
    if attempts is None:
        raise ValueError("context 'critique' needs the model's own attempts to critique")
    prompts = []
    for problem, attempt in zip(problems, attempts):
        feedback = task.critique(problem, attempt)
        if feedback is None:
            raise ValueError(f"task {task.name!r} has no critic; evaluate with contexts none or reference")
        prompts.append(build_context_prompt("critique", task.prompt(problem), critique=feedback.critique))
    return prompts


def evaluate(
    model,
    tokenizer,
    task: Task,
    problems: Sequence[Problem],
    config: EvalConfig,
    progress: Callable[[str, int, int], None] | None = None,  # (context kind or "greedy", done, total)
    saved: Mapping[str, RowFile] | None = None,
    *,
    sampler=None,
) -> tuple[dict[str, dict], dict[str, list[Rollout]]]:
    """Summaries and rollouts per context kind. ``none`` always runs first (critique needs its attempts).

    ``saved`` (:func:`open_rollouts`): per context kind, the file each problem's rollouts are appended to as
    soon as they are drawn; the problems it holds already (an interrupted evaluation) are not drawn again.
    ``sampler``: an open sampler that already holds ``model``'s weights (a training run's vLLM engine),
    used instead of opening the one ``config.backend`` names.
    """
    check_contexts(task, problems, config.contexts)
    opened = (contextlib.nullcontext(sampler) if sampler is not None else
              open_sampler(config.backend, model, tokenizer, seed=config.seed, batch_size=config.batch_size))
    with opened as sampler:
        return _evaluate(sampler, tokenizer, task, problems, config, progress, saved)


def _evaluate(sampler, tokenizer, task: Task, problems: Sequence[Problem], config: EvalConfig, progress, saved):
    params = config.sampling()
    kinds = ["none"] + [c for c in config.contexts if c != "none"]
    summaries, rollouts = {}, {}
    attempts = None
    for kind in kinds:
        users = context_prompts(task, problems, kind, attempts)
        prompts = [render_prompt(tokenizer, u, thinking=config.thinking) for u in users]
        start = time.time()
        report = functools.partial(progress, kind) if progress else None
        groups, tokens = _draw(sampler, task, problems, prompts, params, saved.get(kind) if saved else None, report)
        seconds = time.time() - start
        summary = summarize([[r.verdict for r in g] for g in groups], [[r.finish_reason for r in g] for g in groups],
                            k=config.k)
        rates = trace_rate(task, problems, [[r.completion for r in g] for g in groups])
        if rates is not None:
            summary["trace_rate"], summary["se"]["trace_rate"] = rates
        summary.update(seconds=round(seconds, 2), tokens_per_second=round(tokens / max(seconds, 1e-9), 1))
        summaries[kind], rollouts[kind] = summary, [r for g in groups for r in g]
        if kind == "none":
            attempts, student_prompts = [g[0].completion for g in groups], prompts
    if config.greedy:
        if progress:
            progress("greedy", 0, len(problems))
        greedy = sampler.generate(student_prompts,
                                  SamplingParams(n=1, temperature=0.0, max_new_tokens=config.max_new_tokens),
                                  progress=(lambda done: progress("greedy", done, len(problems))) if progress else None)
        right = [float(task.verify(p, group[0].text).correct) for p, group in zip(problems, greedy)]
        summaries["none"]["greedy"] = sum(right) / len(right)
        summaries["none"]["se"]["greedy"] = standard_error(right)
    return {k: summaries[k] for k in kinds if k in config.contexts or k == "none"}, rollouts


def _draw(sampler, task: Task, problems: Sequence[Problem], prompts: Sequence[str],
          params: SamplingParams, saved: RowFile | None,
          report: Callable[[int, int], None] | None) -> tuple[list[list[Rollout]], int]:
    """Each problem's ``params.n`` verified rollouts (read back from ``saved`` when it holds them all, drawn
    otherwise and appended to it as each problem finishes), and the number of tokens drawn."""

    def rollouts_of(i: int, group: Sequence[Sample]) -> list[Rollout]:
        return [Rollout(problems[i].id, prompts[i], s.text, s.token_ids, s.logprobs, s.finish_reason, j,
                        params.to_dict(), task.verify(problems[i], s.text)) for j, s in enumerate(group)]

    groups: list[list[Rollout] | None] = [None] * len(problems)
    if saved is not None:
        for i, problem in enumerate(problems):
            if all((problem.id, j) in saved for j in range(params.n)):
                groups[i] = [saved.rows[(problem.id, j)] for j in range(params.n)]
    todo = [i for i, group in enumerate(groups) if group is None]
    found = len(problems) - len(todo)

    def keep(position: int, group: list[Sample]) -> None:
        i = todo[position]
        groups[i] = rollouts_of(i, group)
        if saved is not None:
            for row in groups[i]:
                if (row.problem_id, row.sample_index) not in saved:  # a sample kept from a problem left unfinished
                    saved.add(row)

    if report is not None:
        report(found, len(problems))
    sampler.generate([prompts[i] for i in todo], params, indices=todo, on_prompt=keep,
                     progress=(lambda done: report(found + done, len(problems))) if report else None)
    tokens = sum(len(r.token_ids) for i in todo for r in groups[i])
    return groups, tokens  # type: ignore[return-value]


def trace_rate(task: Task, problems: Sequence[Problem],
               completions: Sequence[Sequence[str]]) -> tuple[float, float] | None:
    """The fraction of samples whose every step the task's critic accepts (a fully correct trace, not just
    a right answer) and its standard error over problems; None for a task without a step critic."""
    if not problems or not has_critic(task, problems):
        return None
    per_problem = [sum(task.critique(p, c).case == "correct" for c in row) / max(len(row), 1)
                   for p, row in zip(problems, completions)]
    return sum(per_problem) / len(per_problem), standard_error(per_problem)


UNFINISHED = "unfinished.json"  # the configuration of an evaluation whose rollouts files are still growing


def open_rollouts(out_dir: str | Path, config: EvalConfig, checkpoint: dict,
                  problems: Sequence[Problem]) -> dict[str, RowFile] | None:
    """The rollouts files of ``out_dir`` (``rollouts_KIND.jsonl``) for :func:`evaluate` to append to as
    problems finish: kept from an interrupted evaluation of the same configuration and checkpoint, emptied
    otherwise (a finished evaluation's files are replaced, as its ``results.json`` is). None when problem
    ids repeat (rows could not be told apart): the rollouts are then written at the end only."""
    if len({p.id for p in problems}) < len(problems):
        return None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    key = json.loads(json.dumps({"config": {k: v for k, v in asdict(config).items() if k != "batch_size"},
                                 "checkpoint": checkpoint}))
    record = out_dir / UNFINISHED
    if not (record.is_file() and read_json(record, "an unfinished evaluation's record") == key):
        for name in ("results.json", *(f"rollouts_{kind}.jsonl" for kind in EVAL_CONTEXTS)):
            (out_dir / name).unlink(missing_ok=True)
        tmp = record.with_name(record.name + ".tmp")
        tmp.write_text(json.dumps(key, indent=2) + "\n")
        os.replace(tmp, record)
    kinds = ["none"] + [c for c in config.contexts if c != "none"]
    return {kind: RowFile(out_dir / f"rollouts_{kind}.jsonl", Rollout, lambda r: (r.problem_id, r.sample_index))
            for kind in kinds}


def write_results(out_dir: str | Path, config: EvalConfig, summaries: dict, rollouts: dict,
                  checkpoint: dict) -> Path:
    """``results.json`` (numbers with every sampling parameter) and one rollouts file per context (in
    problem order); the evaluation is then finished (:func:`open_rollouts` starts the next one afresh)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {"config": asdict(config), "sampling": config.sampling().to_dict(), "checkpoint": checkpoint,
              "results": summaries}
    (out_dir / "results.json").write_text(json.dumps(record, indent=2))
    for kind, rows in rollouts.items():
        write_jsonl(out_dir / f"rollouts_{kind}.jsonl", rows)
    (out_dir / UNFINISHED).unlink(missing_ok=True)
    return out_dir / "results.json"


METRIC_COLUMNS = ("pass@{k}", "maj@{k}", "avg@{n}", "pass@1", "trace_rate", "format_rate", "fallback_rate",
                  "truncation_rate")


def table_rows(summaries: dict[str, dict]) -> list[list[str]]:
    """Rows for the on-screen table: percentages with two decimals, as in the papers."""
    rows = []
    for kind, s in summaries.items():
        cells = [kind]
        for column in METRIC_COLUMNS:
            value = s.get(column.format(k=s["k"], n=s["n"]))
            cells.append("-" if value is None else f"{100 * value:.2f}")
        rows.append(cells)
    return rows


#: the table's words for the rates (the summary keys stay as they are)
COLUMN_NAMES = {"trace_rate": "fully correct", "format_rate": "answer format ok",
                "fallback_rate": "correct, no marker", "truncation_rate": "cut off"}


def table_header(summaries: dict[str, dict]) -> list[str]:
    first = next(iter(summaries.values()))
    return ["context"] + [COLUMN_NAMES.get(c, c).format(k=first["k"], n=first["n"]) for c in METRIC_COLUMNS]
