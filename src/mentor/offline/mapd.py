"""MAPD / FAIR: mistake-aware peer-review distillation from a committee of teachers (docs/methods.md, section 3).

Five stages, each a library function reading the previous stage's rows and writing its own folder:

- :func:`mine`: the student answers the training questions (T=0.3, top_p 0.9); ``answers.jsonl`` holds every
  answer, ``mined.jsonl`` the wrong ones with the student's rationale and extracted answer;
- :func:`explain`: every teacher explains every mined mistake (gold answer as a hint): ``explanations.jsonl``;
- :func:`rationales`: every teacher answers every question step by step (T=0.8), verified: ``rationales.jsonl``;
- :func:`review`: every rationale is scored 1-5 by every *other* teacher (``reviews.jsonl``, one row per
  review, the score parsed by :func:`~mentor.feedback.committee.parse_score`); ``reviewed.jsonl`` holds each
  rationale with its reviews, mean valid score and acceptance;
- :func:`build`: the two-task instruction dataset (``dataset.jsonl`` and a ``datasets`` folder), with the
  ablations ``committee`` (all teachers + review), ``single`` (one teacher, no review) and
  ``no-explanation`` (rationales only); :func:`mapd_examples` turns its rows into weighted SFT examples.

**Resuming.** Every stage that asks a model writes one row per unit of work (a problem for ``mine``, a
(problem, teacher) pair for ``explain`` and ``rationales``, a (problem, author, reviewer) triple for
``review``) appended, flushed and fsynced as soon as it is answered, through :class:`RowFile`. Run the same
stage again after a kill: a half-written last line is cut off (the helper ``mentor generate`` uses), the
keys on disk are skipped, and only the rest is asked for (OpenAI-compatible teachers also have their request
cache in the stage folder; simulated and local teachers are deterministic). The files are rewritten in
canonical order at the end, so a resumed stage's output equals an uninterrupted one's. ``stage.json`` records
what decides the rows; a folder holding rows made with another configuration is refused.

Every stage writes ``summary.json``: counts (items mined, explanations, rationales, reviews, unparseable
reviews by reason, the score histogram, acceptance per teacher), the teachers' request statistics and the
stage's wall time.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mentor.feedback.committee import (
    accept,
    explain_prompt,
    parse_score,
    rationale_prompt,
    review_prompt,
    student_explain_prompt,
)
from mentor.offline.mapd_dataset import (  # noqa: F401 - the dataset's readers are imported from here too
    _save_dataset,
    load_dataset_rows,
    mapd_examples,
)
from mentor.offline.mapd_records import (  # noqa: F401 - the rows are imported from here too
    Explanation,
    Rationale,
    ReviewedRationale,
    ReviewRow,
    StudentAnswer,
    _require_gold,
    digest,
    read_rows,
)
from mentor.records import Problem, to_dict, write_jsonl
from mentor.rows import RowFile, check_record
from mentor.sampling import SamplingParams
from mentor.sampling.backends import check_backend, open_sampler
from mentor.teachers import Teacher, user_messages

ABLATIONS = ("committee", "single", "no-explanation")
SUMMARY = "summary.json"


# ----- what every stage shares ---------------------------------------------------------------------------


def _identities(teachers: Sequence[Teacher]) -> list[Any]:
    return [t.identity() if hasattr(t, "identity") else {"name": t.name} for t in teachers]


def _write_summary(out: Path, summary: dict[str, Any]) -> dict[str, Any]:
    (out / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def teacher_params(index: int, temperature: float = 0.8, max_new_tokens: int = 512, seed: int = 0,
                   top_p: float = 1.0) -> SamplingParams:
    """The sampling parameters of the ``index``-th teacher: its own seed, so two teachers served by the same
    model still write different samples."""
    return SamplingParams(n=1, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                          seed=seed + 1000 * index)


def _ask(teachers: Sequence[Teacher], jobs: list[tuple[int, tuple, str, Any]], rows: RowFile,
         make_row: Callable[[Teacher, Any, str, Any], Any], *, temperature: float, max_new_tokens: int, seed: int,
         prompts_per_call: int, progress: Callable[[int, int], None] | None) -> tuple[list[Any], float]:
    """Send the jobs (teacher index, row key, user message, context) whose key is not on disk yet, a call of
    up to ``prompts_per_call`` per teacher at a time (each teacher with :func:`teacher_params`), and append
    each answer's row. Returns every job's row in job order and the seconds spent waiting for teachers."""

    def params(index: int) -> SamplingParams:
        return teacher_params(index, temperature, max_new_tokens, seed)

    todo = [j for j in jobs if j[1] not in rows]
    done, seconds = len(jobs) - len(todo), 0.0
    if progress is not None:
        progress(done, len(jobs))
    by_teacher: dict[int, list] = defaultdict(list)
    for job in todo:
        by_teacher[job[0]].append(job)
    for index, work in sorted(by_teacher.items()):
        teacher = teachers[index]
        for begin in range(0, len(work), prompts_per_call):
            chunk = work[begin : begin + prompts_per_call]
            start = time.time()
            answers = teacher.chat([user_messages(job[2]) for job in chunk], params(index))
            seconds += time.time() - start
            if len(answers) != len(chunk) or any(len(a) != 1 for a in answers):
                raise RuntimeError(f"teacher {teacher.name!r} returned {[len(a) for a in answers]} samples for "
                                   f"{len(chunk)} prompts x 1")
            for job, (sample,) in zip(chunk, answers):
                rows.add(make_row(teacher, job[3], job[2], sample))
            done += len(chunk)
            if progress is not None:
                progress(done, len(jobs))
    return rows.finish([job[1] for job in jobs]), seconds


def _teacher_names(teachers: Sequence[Teacher]) -> list[str]:
    names = [t.name for t in teachers]
    if not names:
        raise ValueError("the committee has no teacher")
    if len(set(names)) != len(names):
        raise ValueError(f"teacher names must be distinct, got {names}")
    return names


def _this_run(rows: RowFile, start: float, asked: float, teachers: Sequence[Teacher]) -> dict[str, Any]:
    """What this invocation of a teacher stage did: rows found and written, seconds, teacher requests."""
    return {**rows.run_stats(), "seconds": round(time.time() - start, 3), "teacher_seconds": round(asked, 3),
            "teachers": _teacher_stats(teachers)}


def _teacher_stats(teachers: Sequence[Teacher]) -> dict[str, dict[str, int]]:
    return {t.name: dict(t.stats()) for t in teachers}


def check_problems(problems: Sequence[Problem]) -> None:
    seen = set()
    for problem in problems:
        if problem.id in seen:
            raise ValueError(f"two problems share the id {problem.id!r}; ids must be unique to resume")
        if not problem.answer.strip():
            raise ValueError(f"problem {problem.id!r} has no gold answer")
        seen.add(problem.id)


# ----- 1. mine ------------------------------------------------------------------------------------------


def _mine_batches(sampler, tokenizer, task, problems: Sequence[Problem], rows: RowFile, params: SamplingParams,
                  batch_size: int, progress: Callable[[int, int], None] | None) -> None:
    """Sample and score the batches whose answers ``rows`` does not hold yet, each added as it is drawn."""
    from mentor.models import render_prompt

    done = sum((p.id,) in rows for p in problems)
    if progress is not None:
        progress(done, len(problems))
    for begin in range(0, len(problems), batch_size):
        batch = problems[begin : begin + batch_size]
        if all((p.id,) in rows for p in batch):
            continue
        prompts = [render_prompt(tokenizer, task.prompt(p)) for p in batch]
        samples = sampler.generate(prompts, params)
        for problem, (sample,) in zip(batch, samples):
            if (problem.id,) in rows:
                continue
            verdict = task.verify(problem, sample.text)
            rows.add(StudentAnswer(problem.id, task.prompt(problem), problem.question, problem.answer, sample.text,
                                   verdict.correct, verdict.extracted, verdict.reason, sample.finish_reason,
                                   params.to_dict()))
            done += 1
        if progress is not None:
            progress(done, len(problems))


def mine(model, tokenizer, task, problems: Sequence[Problem], out: str | os.PathLike, *, temperature: float = 0.3,
         top_p: float = 0.9, max_new_tokens: int = 160, seed: int = 0, batch_size: int = 16,
         progress: Callable[[int, int], None] | None = None, backend: str = "local") -> dict[str, Any]:
    """The student answers every problem once (docs/methods.md: T=0.3, top_p 0.9); the wrong answers are mined.

    Problems are sampled in fixed batches (problem ``i`` is in batch ``i // batch_size``, sampled with
    ``seed``), so a batch sampled again after a kill gets the same answers. Writes ``answers.jsonl`` (every
    answer, the resumable file), ``mined.jsonl`` (the wrong ones) and ``summary.json``. ``backend``: the
    student is sampled by mentor's decode loop (``local``) or a vLLM engine in this process (``vllm``).
    """

    start = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    check_problems(problems)
    check_backend(backend)
    params = SamplingParams(n=1, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed)
    check_record(out, {"stage": "mine", "task": getattr(task, "name", ""), "problems": [p.id for p in problems],
                        "inputs": digest([[p.id, task.prompt(p), p.answer] for p in problems]),
                        "student": getattr(model, "name_or_path", "") or type(model).__name__,
                        "sampling": params.to_dict(), "batch_size": batch_size,
                        **({"backend": backend} if backend != "local" else {})}, "answers.jsonl")
    rows = RowFile(out / "answers.jsonl", StudentAnswer, lambda r: (r.problem_id,))
    with open_sampler(backend, model, tokenizer, seed=seed, batch_size=batch_size) as sampler:
        _mine_batches(sampler, tokenizer, task, problems, rows, params, batch_size, progress)
    answers = rows.finish([(p.id,) for p in problems])
    mined = [a for a in answers if not a.correct]
    write_jsonl(out / "mined.jsonl", mined)
    return _write_summary(out, {
        "stage": "mine", "problems": len(answers), "correct": len(answers) - len(mined), "mined": len(mined),
        "student_accuracy": (len(answers) - len(mined)) / len(answers) if answers else None,
        "reasons": dict(sorted(Counter(a.reason for a in mined).items())),
        "truncated": sum(a.finish_reason == "length" for a in answers),
        "sampling": params.to_dict(), "this_run": {**rows.run_stats(), "seconds": round(time.time() - start, 3)},
    })


# ----- 2. explain ---------------------------------------------------------------------------------------


def explain(teachers: Sequence[Teacher], mined: str | os.PathLike | Sequence[StudentAnswer], out: str | os.PathLike,
            *, temperature: float = 0.8, max_new_tokens: int = 512, seed: int = 0, prompts_per_call: int = 8,
            progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Every teacher explains every mined mistake, given the question, the student's answer and the gold
    answer as a hint (:data:`~mentor.feedback.committee.EXPLAIN_TEMPLATE`). Writes ``explanations.jsonl``."""
    start = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = _teacher_names(teachers)
    items = [m for m in read_rows(mined, StudentAnswer, "mined.jsonl") if not m.correct]
    jobs = [(t, (m.problem_id, names[t]), explain_prompt(m.question, m.completion, m.answer), m)
            for m in items for t in range(len(teachers))]
    check_record(out, {"stage": "explain", "teachers": _identities(teachers), "items": [m.problem_id for m in items],
                        "inputs": digest([j[2] for j in jobs]), "temperature": temperature,
                        "max_new_tokens": max_new_tokens, "seed": seed}, "explanations.jsonl")
    rows = RowFile(out / "explanations.jsonl", Explanation, lambda r: (r.problem_id, r.teacher))

    def make_row(teacher, item, prompt, sample):
        return Explanation(item.problem_id, teacher.name, prompt, item.completion, sample.text, sample.finish_reason)

    found, asked = _ask(teachers, jobs, rows, make_row, temperature=temperature, max_new_tokens=max_new_tokens,
                        seed=seed, prompts_per_call=prompts_per_call, progress=progress)
    return _write_summary(out, {
        "stage": "explain", "items": len(items), "explanations": len(found),
        "per_teacher": {n: {"explanations": sum(r.teacher == n for r in found),
                            "empty": sum(r.teacher == n and not r.text.strip() for r in found),
                            "truncated": sum(r.teacher == n and r.finish_reason == "length" for r in found)}
                        for n in names},
        "empty": sum(not r.text.strip() for r in found),
        "this_run": _this_run(rows, start, asked, teachers),
    })


# ----- 3. rationales ------------------------------------------------------------------------------------


def rationales(teachers: Sequence[Teacher], task, problems: Sequence[Problem], out: str | os.PathLike, *,
               temperature: float = 0.8, max_new_tokens: int = 512, seed: int = 0, prompts_per_call: int = 8,
               progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Every teacher answers every question step by step; each rationale is verified by ``task``.
    Writes ``rationales.jsonl``."""
    start = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = _teacher_names(teachers)
    check_problems(problems)
    check_record(out, {"stage": "rationales", "teachers": _identities(teachers), "problems": [p.id for p in problems],
                        "inputs": digest([[p.id, task.prompt(p), p.answer] for p in problems]),
                        "temperature": temperature, "max_new_tokens": max_new_tokens, "seed": seed},
                  "rationales.jsonl")
    rows = RowFile(out / "rationales.jsonl", Rationale, lambda r: (r.problem_id, r.teacher))
    jobs = [(t, (p.id, names[t]), rationale_prompt(task.prompt(p)), p) for p in problems for t in range(len(teachers))]

    def make_row(teacher, problem, prompt, sample):
        try:
            verdict = task.verify(problem, sample.text)
        except ValueError as err:
            raise ValueError(f"problem {problem.id}: the verifier cannot score it: {err}") from None
        return Rationale(problem.id, teacher.name, task.prompt(problem), problem.question, problem.answer,
                         sample.text, verdict.correct, verdict.extracted, verdict.reason, sample.finish_reason)

    found, asked = _ask(teachers, jobs, rows, make_row, temperature=temperature, max_new_tokens=max_new_tokens,
                        seed=seed, prompts_per_call=prompts_per_call, progress=progress)
    return _write_summary(out, {
        "stage": "rationales", "problems": len(problems), "rationales": len(found),
        "per_teacher": {n: {"rationales": sum(r.teacher == n for r in found),
                            "correct": sum(r.teacher == n and r.correct for r in found),
                            "empty": sum(r.teacher == n and not r.text.strip() for r in found),
                            "truncated": sum(r.teacher == n and r.finish_reason == "length" for r in found)}
                        for n in names},
        "verdict_reasons": dict(sorted(Counter(r.reason for r in found).items())),
        "this_run": _this_run(rows, start, asked, teachers),
    })


# ----- 4. review ----------------------------------------------------------------------------------------


def review(teachers: Sequence[Teacher], rationales: str | os.PathLike | Sequence[Rationale], out: str | os.PathLike,
           *, threshold: float = 3.0, require_verified: bool = True, require_review: bool = True,
           temperature: float = 0.8, max_new_tokens: int = 256, seed: int = 0, prompts_per_call: int = 8,
           progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Peer review: every rationale is scored 1-5 by every teacher but its author (gold answer as a hint).

    The score is the last bracketed number of the review (:func:`~mentor.feedback.committee.parse_score`);
    unparseable reviews are kept in ``reviews.jsonl`` with their reason, left out of the mean and counted.
    A rationale is accepted when the mean valid score is above ``threshold`` and (``require_verified``) its
    answer passed the verifier (:func:`~mentor.feedback.committee.accept`). The acceptance rule is applied
    after the reviews, so changing ``threshold`` or the switches on a finished folder asks nothing again.
    """
    start = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = _teacher_names(teachers)
    if require_review and len(teachers) < 2:
        raise ValueError("peer review needs at least two teachers (nobody reviews their own rationale)")
    found_rationales = read_rows(rationales, Rationale, "rationales.jsonl")
    check_record(out, {"stage": "review", "teachers": _identities(teachers),
                        "rationales": [[r.problem_id, r.teacher] for r in found_rationales],
                        "inputs": digest([[r.question, r.text, r.answer] for r in found_rationales]),
                        "temperature": temperature, "max_new_tokens": max_new_tokens, "seed": seed},
                  "reviews.jsonl")
    rows = RowFile(out / "reviews.jsonl", ReviewRow, lambda r: (r.problem_id, r.author, r.reviewer))
    jobs = [(t, (r.problem_id, r.teacher, names[t]), review_prompt(r.question, r.text, r.answer), r)
            for r in found_rationales for t in range(len(teachers)) if names[t] != r.teacher]

    def make_row(teacher, rationale, prompt, sample):
        score, reason = parse_score(sample.text)
        return ReviewRow(rationale.problem_id, rationale.teacher, teacher.name, sample.text, score, reason)

    found, asked = _ask(teachers, jobs, rows, make_row, temperature=temperature, max_new_tokens=max_new_tokens,
                        seed=seed, prompts_per_call=prompts_per_call, progress=progress) if require_review else ([], 0.0)
    by_rationale: dict[tuple, list[ReviewRow]] = defaultdict(list)
    for row in found:
        by_rationale[(row.problem_id, row.author)].append(row)
    reviewed = []
    for r in found_rationales:
        reviews = by_rationale[(r.problem_id, r.teacher)]
        scores = [x.score for x in reviews if x.score is not None]
        reviewed.append(ReviewedRationale(
            r, [to_dict(x) for x in reviews], sum(scores) / len(scores) if scores else None, len(scores),
            accept(scores, r.correct, threshold, require_review=require_review, require_verified=require_verified)))
    write_jsonl(out / "reviewed.jsonl", reviewed)
    return _write_summary(out, {
        "stage": "review", **review_stats(reviewed, found, names),
        "threshold": threshold, "require_verified": require_verified, "require_review": require_review,
        "this_run": _this_run(rows, start, asked, teachers),
    })


def review_stats(reviewed: Sequence[ReviewedRationale], reviews: Sequence[ReviewRow],
                 names: Sequence[str]) -> dict[str, Any]:
    """Counts of a review stage: reviews by parse outcome, the score histogram, acceptance per teacher."""
    reasons = Counter(r.reason for r in reviews)
    histogram = Counter(str(round(r.score)) for r in reviews if r.score is not None)
    per_teacher = {}
    for name in names:
        own = [x for x in reviewed if x.rationale.teacher == name]
        means = [x.mean_score for x in own if x.mean_score is not None]
        per_teacher[name] = {
            "rationales": len(own), "accepted": sum(x.accepted for x in own),
            "acceptance": sum(x.accepted for x in own) / len(own) if own else None,
            "verified": sum(x.rationale.correct for x in own),
            "mean_score": sum(means) / len(means) if means else None,
            "reviews_written": sum(r.reviewer == name for r in reviews),
            "unparseable_written": sum(r.reviewer == name and r.score is None for r in reviews),
        }
    return {
        "rationales": len(reviewed), "accepted": sum(x.accepted for x in reviewed),
        "acceptance": sum(x.accepted for x in reviewed) / len(reviewed) if reviewed else None,
        "without_valid_score": sum(x.n_valid == 0 for x in reviewed),
        "reviews": len(reviews), "valid_reviews": reasons.get("ok", 0),
        "unparseable_reviews": len(reviews) - reasons.get("ok", 0),
        "unparseable_by_reason": {k: v for k, v in sorted(reasons.items()) if k != "ok"},
        "score_histogram": {str(s): histogram.get(str(s), 0) for s in range(1, 6)},
        "per_teacher": per_teacher,
    }


# ----- 5. build -----------------------------------------------------------------------------------------


def _pick(problem_id: str, options: list[str]) -> str:
    """A deterministic, evenly spread choice among ``options`` for one problem."""
    digest = hashlib.sha256(problem_id.encode()).digest()
    return options[int.from_bytes(digest[:4], "little") % len(options)]


def build(mined: str | os.PathLike | Sequence[StudentAnswer],
          explanations: str | os.PathLike | Sequence[Explanation] | None,
          reviewed: str | os.PathLike | Sequence[ReviewedRationale], out: str | os.PathLike, *,
          ablation: str = "committee", single_teacher: str = "", rationale_instruction: bool = True) -> dict[str, Any]:
    """The two-task instruction dataset: per mined (wrong) item one teacher's mistake explanation (task
    ``explanation``, instruction: point out the mistakes in this answer) and one accepted rationale (task
    ``rationale``, instruction: answer step by step).

    - ``committee``: the explanation of a teacher chosen per item (deterministically, spread over the
      teachers); the accepted rationale with the best mean review score (ties: teacher order);
    - ``single``: only ``single_teacher``'s (default: the first teacher) explanation and rationale, no
      review (its rationale is used when it passes the verifier, whatever its review scores);
    - ``no-explanation``: the committee's rationales only.

    ``rationale_instruction=False`` trains the rationale on the bare task prompt (e.g. the world's model).
    Writes ``dataset.jsonl``, a ``datasets`` folder ``dataset/`` and ``summary.json``.
    """
    if ablation not in ABLATIONS:
        raise ValueError(f"unknown MAPD ablation {ablation!r}; choose from {', '.join(ABLATIONS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    items = [m for m in read_rows(mined, StudentAnswer, "mined.jsonl") if not m.correct]
    found = read_rows(reviewed, ReviewedRationale, "reviewed.jsonl")
    names = list(dict.fromkeys(r.rationale.teacher for r in found))
    notes = []
    if ablation == "single":
        teacher = single_teacher or (names[0] if names else "")
        if teacher not in names:
            raise ValueError(f"single_teacher {teacher!r} wrote no rationale; teachers: {', '.join(names)}")
        names = [teacher]
    by_problem: dict[str, list[ReviewedRationale]] = defaultdict(list)
    for r in found:
        if r.rationale.teacher in names:
            by_problem[r.rationale.problem_id].append(r)
    expl: dict[str, dict[str, Explanation]] = defaultdict(dict)
    if ablation != "no-explanation":
        if explanations is None:
            raise ValueError(f"the {ablation!r} ablation needs the explain stage's output")
        answers = {item.problem_id: item.completion for item in items}
        for e in read_rows(explanations, Explanation, "explanations.jsonl"):
            if e.problem_id in answers and e.student_answer != answers[e.problem_id]:
                raise ValueError(f"the explanation of problem {e.problem_id!r} by {e.teacher!r} explains another "
                                 "student answer than the mined one; run explain again into a new folder")
            if e.teacher in names and e.text.strip():
                expl[e.problem_id][e.teacher] = e
    rows = []
    counts = Counter()
    for item in items:
        if ablation != "no-explanation":
            options = [n for n in names if n in expl[item.problem_id]]
            if options:
                e = expl[item.problem_id][_pick(item.problem_id, options)]
                rows.append({"task": "explanation", "problem_id": item.problem_id, "teacher": e.teacher,
                             "prompt": student_explain_prompt(item.prompt, item.completion), "completion": e.text,
                             "finish_reason": e.finish_reason})
                counts[f"explanation:{e.teacher}"] += 1
            else:
                counts["items_without_explanation"] += 1
        candidates = by_problem.get(item.problem_id, [])
        if ablation != "single":
            candidates = [r for r in candidates if r.accepted]
        else:  # no review, but the verifier still applies: the ablation removes the review only
            candidates = [r for r in candidates if r.rationale.correct]
        candidates = [r for r in candidates if r.rationale.text.strip()]
        if candidates:
            best = max(candidates, key=lambda r: (r.mean_score or 0.0, -names.index(r.rationale.teacher)))
            prompt = rationale_prompt(item.prompt) if rationale_instruction else item.prompt
            rows.append({"task": "rationale", "problem_id": item.problem_id, "teacher": best.rationale.teacher,
                         "prompt": prompt, "completion": best.rationale.text,
                         "finish_reason": best.rationale.finish_reason})
            counts[f"rationale:{best.rationale.teacher}"] += 1
        else:
            counts["items_without_rationale"] += 1
    if not rows:
        notes.append("no training row: nothing mined, explained or accepted")
    write_jsonl(out / "dataset.jsonl", rows)
    _save_dataset(rows, out / "dataset")
    return _write_summary(out, {
        "stage": "build", "ablation": ablation, "teachers": names, "items": len(items), "rows": len(rows),
        "explanation_rows": sum(r["task"] == "explanation" for r in rows),
        "rationale_rows": sum(r["task"] == "rationale" for r in rows),
        "items_without_explanation": counts.pop("items_without_explanation", 0),
        "items_without_rationale": counts.pop("items_without_rationale", 0),
        "rows_per_teacher": dict(sorted(counts.items())), "notes": notes,
    })
