"""``mentor generate``: G scored teacher responses per prompt, the AdvDistill dataset (docs/methods.md, section 2).

For every problem of a task (or data file) a teacher writes ``group_size`` responses (default 8). Each is
scored by the task's verifier and the rule-based reward components of :mod:`mentor.rewards` (all of them
stored, whatever their weight), and each row carries its group's statistics (mean, std, n correct, ...) and
its weight under *every* normalisation, so the data can be inspected, filtered and re-weighted without
asking the teacher again. The output folder holds:

- ``responses.jsonl``: one :class:`~mentor.records.TeacherResponse` per (problem, sample index), in problem
  order then sample order;
- ``dataset/``: the same rows, flat (one column per component, statistic and weight), as a Hugging Face
  ``datasets`` folder (``datasets.load_from_disk``), written at the end;
- ``summary.json``: counts (prompts, responses, correct, format failures, empty and truncated responses,
  zero-variance and dropped groups, verdict reasons) and this run's timing and teacher statistics (requests,
  cache hits, retries by cause, bad bodies);
- ``generate.json``: the configuration; ``teacher_cache.sqlite``: an OpenAI-compatible teacher's requests.

**Resuming.** A group's rows are appended (flushed and fsynced, one line each) as soon as the teacher has
answered the whole group. Run the same command again after a kill: a last line cut short by the kill is
found (the file does not end with a newline) and cut off; the (problem id, sample index) pairs already on
disk are skipped, and a group found partly written gets only its missing rows. The rows skipped are never
asked for again: an OpenAI-compatible teacher's completed requests are in its SQLite cache (a partly
written group's requests are answered from it), the simulated and local teachers are deterministic. At the
end every group's statistics and weights are recomputed from the rows on disk, so a resumed run's files
equal an uninterrupted run's. The reward and weighting options are not part of what must match to resume:
run the command on a finished folder with other ``rewards.*`` or ``weighting.*`` values and the rewards,
statistics and weights are recomputed from the stored verdicts and texts, with no teacher request.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mentor.config import check_at_most, differences
from mentor.records import (
    Problem,
    RecordError,
    TeacherResponse,
    Verdict,
    append_jsonl,
    from_dict,
    read_json,
    to_dict,
    write_jsonl,
)
from mentor.rewards import (
    NORMALISATIONS,
    REWARD_COMPONENTS,
    RewardConfig,
    WeightingConfig,
    all_group_weights,
    count_words,
    group_stats,
    reward_components,
    total_reward,
)
from mentor.rows import cut_partial_line, parse_keyed_rows
from mentor.sampling import Sample, SamplingParams
from mentor.teachers import (
    OPERATIONAL_FIELDS,
    REVIEW_FIELDS,
    Teacher,
    TeacherConfig,
    build_teacher,
    user_messages,
)

RESPONSES = "responses.jsonl"
DATASET = "dataset"
SUMMARY = "summary.json"
RECORD = "generate.json"


@dataclass
class GenerateConfig:
    """What ``mentor generate`` asks of which teacher, and how it scores and weights the answers."""

    task: str = "world"
    """world[:opts], gym:NAME, hf:NAME, or a local data file or folder."""
    split: str = "train"
    n_problems: int | None = 100
    """Problems of the split (None: all of a data file)."""
    problem_seed: int = 0
    """Which problems of a generated task's split."""
    group_size: int = 8
    """Responses per prompt (G)."""
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 1024
    seed: int = 0
    """Sampling seed: sample j of a prompt is drawn with seed + j (OpenAI-compatible teachers)."""
    system_prompt: str = ""
    """A system turn before each prompt (the teacher's only; the student is trained on the bare prompt)."""
    prompts_per_call: int = 8
    """Prompts sent to the teacher at once (their G samples run concurrently on a server); rows are
    written after each call."""
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    rewards: RewardConfig = field(default_factory=RewardConfig)
    weighting: WeightingConfig = field(default_factory=WeightingConfig)

    def __post_init__(self) -> None:
        if self.group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {self.group_size}")
        if self.prompts_per_call < 1:
            raise ValueError(f"prompts_per_call must be >= 1, got {self.prompts_per_call}")
        if self.n_problems is not None and self.n_problems < 1:
            raise ValueError(f"n_problems must be >= 1 (or null for all), got {self.n_problems}")
        self.sampling()  # checks temperature, top_p, max_new_tokens
        check_at_most(self, "n_problems", "group_size", "prompts_per_call", "max_new_tokens")

    def sampling(self) -> SamplingParams:
        return SamplingParams(n=self.group_size, temperature=self.temperature, top_p=self.top_p,
                              max_new_tokens=self.max_new_tokens, seed=self.seed)

    def key(self) -> dict[str, Any]:
        """What decides the rows: a folder is resumed only with the same key."""
        out = asdict(self)
        for name in ("rewards", "weighting", "prompts_per_call"):
            out.pop(name)
        out["teacher"] = _answer_fields(out["teacher"])
        return json.loads(json.dumps(out))


def _answer_fields(teacher: dict) -> dict:
    """The teacher fields that can change a solve answer (not how requests are sent, not reviews)."""
    skip = (*OPERATIONAL_FIELDS, *REVIEW_FIELDS)
    if teacher.get("kind") != "local" or teacher.get("backend", "local") == "local":
        skip += ("backend",)  # folders made before the field existed resume as they are
    return {k: v for k, v in teacher.items() if k not in skip}


# ----- scoring ------------------------------------------------------------------------------------------


def score_response(task, problem: Problem, sample_index: int, sample: Sample, teacher: str,
                   params: SamplingParams, rewards: RewardConfig) -> TeacherResponse:
    """One response as a row: the verifier's verdict and every reward component (group fields empty)."""
    try:
        verdict = task.verify(problem, sample.text)
    except ValueError as err:
        raise ValueError(f"problem {problem.id}: the verifier cannot score it: {err}") from None
    if verdict.reason == "bad_gold" and sample_index == 0:
        logging.getLogger("mentor").warning(f"problem {problem.id}: the verifier cannot read its gold answer "
                                            f"{problem.answer!r}; its responses count as bad_gold, never correct")
    components = reward_components(verdict, sample.text, rewards)
    return TeacherResponse(
        problem_id=problem.id, sample_index=sample_index, teacher=teacher, prompt=task.prompt(problem),
        completion=sample.text, answer=problem.answer, verdict=verdict, finish_reason=sample.finish_reason,
        num_words=count_words(sample.text), components=components,
        reward=total_reward(components, rewards.weights),
        sampling={**params.to_dict(), "n": 1, "seed": params.seed + sample_index},
    )


def fill_group(rows: list[TeacherResponse], rewards: RewardConfig, weighting: WeightingConfig) -> None:
    """Recompute, in place, the components and reward of each row of one group (from its stored verdict and
    text), the group's statistics and every normalisation's weight."""
    for row in rows:
        row.components = reward_components(row.verdict, row.completion, rewards)
        row.reward = total_reward(row.components, rewards.weights)
    rewards_G = [row.reward for row in rows]
    correct_G = [row.verdict.correct for row in rows]
    stats = group_stats(rewards_G, correct_G)
    weights = all_group_weights(rewards_G, correct_G, weighting)
    for i, row in enumerate(rows):
        row.group = dict(stats)
        row.weights = {method: weights[method][i] for method in NORMALISATIONS}


def reweight(rows: list[TeacherResponse], rewards: RewardConfig | None = None,
             weighting: WeightingConfig | None = None) -> list[TeacherResponse]:
    """Copies of ``rows`` re-scored and re-weighted with other options, without any teacher request (rows
    are grouped by problem id)."""
    rewards, weighting = rewards or RewardConfig(), weighting or WeightingConfig()
    copies = [dataclasses.replace(r, verdict=dataclasses.replace(r.verdict)) for r in rows]
    groups: dict[str, list[TeacherResponse]] = defaultdict(list)
    for row in copies:
        groups[row.problem_id].append(row)
    for group in groups.values():
        fill_group(sorted(group, key=lambda r: r.sample_index), rewards, weighting)
    return copies


# ----- the responses file -------------------------------------------------------------------------------


def recover_responses(path: str | os.PathLike) -> tuple[list[TeacherResponse], bool]:
    """The rows of a responses file, after cutting off a last line left half-written by a kill.

    Returns ``(rows, repaired)``. Only the last line can be half-written (rows are appended one line at a
    time, each fsynced): a file that does not end with a newline is cut back to its last newline. Anything
    bad before that is a RecordError naming the line, as is a second row for the same (problem id, sample
    index).
    """
    path = Path(path)
    data, repaired = cut_partial_line(path)
    return _parse_rows(data, path), repaired


def _parse_rows(data: bytes, path: Path) -> list[TeacherResponse]:
    return list(parse_keyed_rows(data, path, TeacherResponse, lambda r: (r.problem_id, r.sample_index),
                                 lambda k: f"problem {k[0]!r}, sample {k[1]}").values())


def _check_folder(out: Path, config: GenerateConfig) -> None:
    record = out / RECORD
    key = config.key()
    has_rows = (out / RESPONSES).is_file() and (out / RESPONSES).stat().st_size > 0
    if record.is_file() and has_rows:  # a folder without rows (a run that failed at once) is started afresh
        saved = read_json(record, "a mentor generate record").get("key", {})
        if saved != key:
            changed = differences(key, saved)
            raise FileExistsError(f"{out} holds responses generated with another configuration "
                                  f"({', '.join(changed)} differ); use another --out")
    elif has_rows:
        raise FileExistsError(f"{out / RESPONSES} exists but {RECORD} does not: not a mentor generate folder")


def _write_record(out: Path, config: GenerateConfig) -> None:
    record = out / RECORD
    tmp = record.with_name(record.name + ".tmp")  # replaced whole: a kill never leaves half a record
    tmp.write_text(json.dumps({"key": config.key(), "config": asdict(config)}, indent=2) + "\n")
    os.replace(tmp, record)


def load_problems(task, config: GenerateConfig) -> list[Problem]:
    problems = task.problems(config.split, n=config.n_problems, seed=config.problem_seed)
    if not problems:
        raise ValueError(f"task {config.task!r} has no problems in split {config.split!r}")
    seen = set()
    for problem in problems:
        if problem.id in seen:
            raise ValueError(f"two problems share the id {problem.id!r}; ids must be unique to resume")
        if not problem.answer.strip():
            raise ValueError(f"problem {problem.id!r} has no gold answer")
        seen.add(problem.id)
    return problems


# ----- the run ------------------------------------------------------------------------------------------


def run_generate(config: GenerateConfig, out: str | os.PathLike, *, teacher: Teacher | None = None,
                 progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Generate (or finish generating) into ``out``; returns the summary (also written to summary.json).

    ``teacher`` replaces the one ``config.teacher`` describes (the caller keeps ownership of it);
    ``progress(groups_done, groups_total)`` is called after each teacher call.
    """
    from mentor.tasks import load_task

    start = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    task = load_task(config.task)
    problems = load_problems(task, config)
    _check_folder(out, config)
    path = out / RESPONSES
    found, repaired = recover_responses(path)
    G = config.group_size
    wanted = {p.id: p for p in problems}
    stored: dict[str, dict[int, TeacherResponse]] = defaultdict(dict)
    for row in found:
        if row.problem_id not in wanted or row.sample_index >= G:
            raise RecordError(f"{path}: a row for problem {row.problem_id!r} sample {row.sample_index} that "
                              "this configuration does not generate")
        problem = wanted[row.problem_id]
        if row.prompt != task.prompt(problem) or row.answer != problem.answer:  # the data changed, ids did not
            raise FileExistsError(f"{path}: problem {row.problem_id!r} has another question or gold answer than "
                                  "when its rows were generated; use another --out")
        stored[row.problem_id][row.sample_index] = row
    todo = [p for p in problems if len(stored[p.id]) < G]
    own_teacher = teacher is None
    teacher_stats: dict[str, int] = {}
    written, teacher_s = 0, 0.0
    if todo:
        teacher = teacher or build_teacher(config.teacher, out)
    _write_record(out, config)  # once the rows on disk and the teacher are known good
    if progress is not None:
        progress(len(problems) - len(todo), len(problems))
    if todo:
        params = config.sampling()
        try:
            for begin in range(0, len(todo), config.prompts_per_call):
                chunk = todo[begin : begin + config.prompts_per_call]
                asked = time.time()
                answers = teacher.chat([user_messages(task.prompt(p), config.system_prompt) for p in chunk], params)
                teacher_s += time.time() - asked
                if len(answers) != len(chunk) or any(len(group) != G for group in answers):
                    raise RuntimeError(f"teacher {teacher.name!r} returned {[len(g) for g in answers]} samples "
                                       f"for {len(chunk)} prompts x {G}")
                for problem, samples in zip(chunk, answers):
                    have = stored[problem.id]
                    new = [score_response(task, problem, j, samples[j], teacher.name, params, config.rewards)
                           for j in range(G) if j not in have]
                    have.update({row.sample_index: row for row in new})
                    fill_group([have[j] for j in range(G)], config.rewards, config.weighting)
                    for row in new:
                        append_jsonl(path, row)
                    written += len(new)
                if progress is not None:
                    progress(len(problems) - len(todo) + begin + len(chunk), len(problems))
        finally:
            teacher_stats = dict(teacher.stats())
            if own_teacher:
                teacher.close()
    rows = [stored[p.id][j] for p in problems for j in range(G)]
    for i in range(0, len(rows), G):
        fill_group(rows[i : i + G], config.rewards, config.weighting)
    if [json.dumps(to_dict(r), ensure_ascii=False) for r in rows] != path.read_text(encoding="utf-8").splitlines():
        write_jsonl(path, rows)  # order, or statistics recomputed after a resume or with new options
    save_dataset(rows, out / DATASET, config.weighting.normalisation)
    seconds = time.time() - start
    summary = summarize(rows, config, teacher_name=rows[0].teacher)
    summary["this_run"] = {
        "seconds": round(seconds, 3), "teacher_seconds": round(teacher_s, 3), "rows_written": written,
        "rows_found": len(found), "partial_line_repaired": repaired,
        "responses_per_s": round(written / teacher_s, 2) if teacher_s > 0 else None,
        "teacher": teacher_stats,
        "bad_bodies": teacher_stats.get("retry_bad_body", 0),
        "retries": teacher_stats.get("retries", 0),
    }
    (out / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def summarize(rows: list[TeacherResponse], config: GenerateConfig, teacher_name: str = "") -> dict[str, Any]:
    """Counts over the whole dataset (not only this run's rows)."""
    G = config.group_size
    groups = [rows[i : i + G] for i in range(0, len(rows), G)]
    zero = sum(g[0].group["zero_variance"] for g in groups)
    reasons = Counter(r.verdict.reason for r in rows)
    weights = {}
    for method in NORMALISATIONS:
        values = [r.weights[method] for r in rows if r.weights[method] is not None]
        weights[method] = {
            "mean": sum(values) / len(values) if values else None, "min": min(values, default=None),
            "max": max(values, default=None), "negative": sum(v < 0 for v in values),
            "zero": sum(v == 0 for v in values), "none": len(rows) - len(values),
        }
    return {
        "task": config.task, "split": config.split, "teacher": teacher_name, "group_size": G,
        "prompts": len(groups), "responses": len(rows),
        "correct": sum(r.verdict.correct for r in rows),
        "accuracy": sum(r.verdict.correct for r in rows) / len(rows),
        "format_failures": sum(r.components["format"] == 0 for r in rows),
        "empty": sum(not r.completion.strip() for r in rows),
        "truncated": sum(r.finish_reason == "length" for r in rows),
        "verdict_reasons": dict(sorted(reasons.items())),
        "verifier_timeouts": reasons.get("timeout", 0),
        "groups_all_correct": sum(all(r.verdict.correct for r in g) for g in groups),
        "groups_none_correct": sum(not any(r.verdict.correct for r in g) for g in groups),
        "zero_variance_groups": zero,
        "dropped_groups": zero if config.weighting.zero_variance == "drop" else 0,
        "normalisation": config.weighting.normalisation,
        "weighting": asdict(config.weighting),
        "reward_weights": dict(config.rewards.weights),
        "weights": weights,
    }


# ----- the Hugging Face dataset -------------------------------------------------------------------------


def _features():
    from datasets import Features, Value

    columns = {
        "problem_id": "string", "sample_index": "int64", "teacher": "string", "prompt": "string",
        "completion": "string", "answer": "string", "finish_reason": "string", "num_words": "int64",
        "correct": "bool", "extracted": "string", "reason": "string", "format_ok": "bool", "reward": "float64",
        **{f"component_{k}": "float64" for k in REWARD_COMPONENTS},
        "group_size": "int64", "group_mean": "float64", "group_std": "float64", "group_min": "float64",
        "group_max": "float64", "group_n_correct": "int64", "group_zero_variance": "bool",
        "weight": "float64", **{f"weight_{m}": "float64" for m in NORMALISATIONS},
        "verdict": "string", "sampling": "string",
    }
    return Features({name: Value(kind) for name, kind in columns.items()})


def flatten(row: TeacherResponse, normalisation: str = "zscore") -> dict[str, Any]:
    """One row as flat columns (JSON text for the verdict and the sampling parameters)."""
    return {
        "problem_id": row.problem_id, "sample_index": row.sample_index, "teacher": row.teacher,
        "prompt": row.prompt, "completion": row.completion, "answer": row.answer,
        "finish_reason": row.finish_reason, "num_words": row.num_words, "correct": row.verdict.correct,
        "extracted": row.verdict.extracted, "reason": row.verdict.reason, "format_ok": row.verdict.format_ok,
        "reward": row.reward, **{f"component_{k}": row.components[k] for k in REWARD_COMPONENTS},
        **{f"group_{k}": row.group[k] for k in ("size", "mean", "std", "min", "max", "n_correct", "zero_variance")},
        "weight": row.weights[normalisation], **{f"weight_{m}": row.weights[m] for m in NORMALISATIONS},
        "verdict": json.dumps(to_dict(row.verdict)), "sampling": json.dumps(row.sampling),
    }


def unflatten(flat: dict[str, Any]) -> TeacherResponse:
    """The inverse of :func:`flatten`."""
    return TeacherResponse(
        problem_id=flat["problem_id"], sample_index=flat["sample_index"], teacher=flat["teacher"],
        prompt=flat["prompt"], completion=flat["completion"], answer=flat["answer"],
        verdict=from_dict(Verdict, json.loads(flat["verdict"])), finish_reason=flat["finish_reason"],
        num_words=flat["num_words"], components={k: flat[f"component_{k}"] for k in REWARD_COMPONENTS},
        reward=flat["reward"],
        group={k: flat[f"group_{k}"] for k in ("size", "mean", "std", "min", "max", "n_correct", "zero_variance")},
        weights={m: flat[f"weight_{m}"] for m in NORMALISATIONS}, sampling=json.loads(flat["sampling"]),
    )


def save_dataset(rows: list[TeacherResponse], folder: str | os.PathLike, normalisation: str = "zscore") -> Path:
    """The rows as a flat Hugging Face dataset folder (replaced whole; ``weight`` is ``normalisation``'s)."""
    import datasets

    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    dataset = datasets.Dataset.from_list([flatten(r, normalisation) for r in rows], features=_features())
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # mentor draws its own progress; this one would interleave with it
    try:
        dataset.save_to_disk(str(tmp))
    finally:
        if bars:
            datasets.enable_progress_bars()
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return folder


def load_responses(path: str | os.PathLike) -> list[TeacherResponse]:
    """Rows from a generate folder, its ``responses.jsonl``, or a ``datasets`` folder written by it."""
    path = Path(path)
    if path.is_dir() and (path / RESPONSES).is_file():
        path = path / RESPONSES
    if path.is_file():  # read only: a half-written last line (a run still going, or killed) is skipped
        data = path.read_bytes()
        return _parse_rows(data[: data.rfind(b"\n") + 1], path)
    if path.is_dir():
        import datasets

        try:
            dataset = datasets.load_from_disk(str(path))
        except FileNotFoundError:
            raise RecordError(f"{path}: neither a generate folder nor a datasets folder") from None
        except (ValueError, KeyError, TypeError, OSError) as err:  # a corrupt dataset_info.json or state.json
            raise RecordError(f"{path}: not a readable datasets folder ({type(err).__name__}: "
                              f"{' '.join(str(err).split())[:200]})") from None
        missing = sorted(set(_features()) - set(dataset.column_names))
        if missing:
            raise RecordError(f"{path}: not a mentor generate dataset (no column {missing[0]!r})")
        return [unflatten(row) for row in dataset]
    raise RecordError(f"{path}: no such file or folder")
