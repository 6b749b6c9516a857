"""Plain dataclass records that travel between the stages of mentor, and their JSON-lines I/O.

Every stage reads and writes these records. A malformed input row is a :class:`RecordError` that names
the file, the line number and the field; rows are never silently dropped.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

VERDICT_REASONS = ("ok", "no_answer", "unparseable", "wrong", "timeout", "bad_gold")
FEEDBACK_CASES = ("correct", "missing_step", "incomplete", "incorrect", "unusable")


TOO_DEEP = "nested too deeply"


class RecordError(ValueError):
    """A record (or a row of a file) is malformed. The message names where and which field."""


@dataclass
class Problem:
    """One question with its gold answer and, where known, a reference solution."""

    id: str
    question: str
    answer: str
    solution: str | None = None
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _require_text(self, "id", "question")
        if not isinstance(self.answer, str) or not self.answer.strip():
            raise RecordError("field 'answer': a gold answer is required (a non-empty string)")


@dataclass
class Verdict:
    """What a verifier said about one completion.

    ``reason`` is one of ``ok`` (correct), ``no_answer`` (nothing could be extracted), ``unparseable``
    (extracted but not understood), ``wrong``, ``timeout`` (the equivalence check ran out of time:
    never silently counted as wrong) and ``bad_gold`` (the gold answer itself cannot be read).
    """

    reward: float
    correct: bool
    extracted: str | None
    format_ok: bool
    reason: str
    components: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.reason not in VERDICT_REASONS:
            raise RecordError(f"field 'reason': {self.reason!r} is not one of {', '.join(VERDICT_REASONS)}")


def _nested_verdict(value: Any) -> Verdict | None:
    """A verdict field read from JSON; its errors name ``verdict.FIELD``."""
    if not isinstance(value, dict):
        return value
    try:
        return _from_dict(Verdict, value)
    except RecordError as err:
        raise RecordError(str(err).replace("field '", "field 'verdict.", 1)) from None


def _check_finish_reason(value: str) -> None:
    if value not in ("stop", "length"):
        raise RecordError(f"field 'finish_reason': {value!r} is not 'stop' or 'length'")


@dataclass
class Rollout:
    """One sampled completion of one prompt, with what is needed to score and train on it."""

    problem_id: str
    prompt: str
    completion: str
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish_reason: str = "stop"
    sample_index: int = 0
    sampling: dict[str, Any] = field(default_factory=dict)
    verdict: Verdict | None = None

    def __post_init__(self) -> None:
        self.verdict = _nested_verdict(self.verdict)
        if self.logprobs and len(self.logprobs) != len(self.token_ids):
            raise RecordError(
                f"field 'logprobs': {len(self.logprobs)} values for {len(self.token_ids)} token ids"
            )
        _check_finish_reason(self.finish_reason)


@dataclass
class Feedback:
    """A critique of one rollout. ``case`` is one of correct, missing_step, incomplete, incorrect, unusable.

    ``step_verdicts`` has one entry per step the solver wrote, up to the first wrong one (correct, missing
    (it needed a step that was never written) or wrong); ``first_error_step`` counts steps of the
    critique's corrected trace, which is ``corrected`` (empty when the critic writes none, e.g. a free-text
    explanation).
    """

    problem_id: str
    critique: str
    case: str
    author: str = ""
    first_error_step: int | None = None
    step_verdicts: list[str] = field(default_factory=list)
    sample_index: int = 0
    corrected: str = ""  # the corrected solution inside the critique, when the critic writes one
    error_kind: str = ""  # what the first error is, where the critic says (the arithmetic critic's kinds)
    # where each step of ``first_error_step``'s count begins in the rollout (character offsets), the last the
    # text after the last step; empty where the steps are tags in the text (the world's <step_k>)
    step_starts: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.case not in FEEDBACK_CASES:
            raise RecordError(f"field 'case': {self.case!r} is not one of {', '.join(FEEDBACK_CASES)}")


@dataclass
class TeacherResponse:
    """One teacher response to one problem, scored: a row of ``mentor generate``'s ``responses.jsonl``.

    ``components`` holds every reward component (see :mod:`mentor.rewards`) and ``reward`` their weighted
    sum; ``group`` the statistics of the problem's group of responses (``size``, ``mean``, ``std``, ``min``,
    ``max``, ``n_correct``, ``zero_variance``); ``weights`` the response's weight under every group
    normalisation (None where its group was dropped for having zero variance). ``prompt`` is the user
    message the teacher answered (the task's prompt), ``answer`` the gold answer.
    """

    problem_id: str
    sample_index: int
    teacher: str
    prompt: str
    completion: str
    answer: str
    verdict: Verdict
    finish_reason: str = "stop"
    num_words: int = 0
    components: dict[str, float] = field(default_factory=dict)
    reward: float = 0.0
    group: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, float | None] = field(default_factory=dict)
    sampling: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _require_text(self, "problem_id", "teacher")
        self.verdict = _nested_verdict(self.verdict)
        if self.sample_index < 0:
            raise RecordError(f"field 'sample_index': must be >= 0, got {self.sample_index}")
        _check_finish_reason(self.finish_reason)
        for name, nullable in (("components", False), ("weights", True)):
            for key, value in getattr(self, name).items():
                if not (_is_number(value) or (nullable and value is None)):
                    raise RecordError(f"field '{name}.{key}': expected a number{' or null' if nullable else ''}, "
                                      f"got {value!r:.80}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class Review:
    """One reviewer's score of one rationale (peer review). ``score`` is None when unparseable."""

    reviewer: str
    author: str
    problem_id: str
    score: float | None
    text: str = ""


R = TypeVar("R")


def _require_text(record: object, *names: str) -> None:
    for name in names:
        value = getattr(record, name)
        if not isinstance(value, str) or not value:
            raise RecordError(f"field {name!r}: expected a non-empty string, got {value!r}")


def _check_type(name: str, value: Any, hint: Any) -> None:
    """A shallow runtime check of a JSON value against a dataclass field's type hint."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(hint):
            try:
                _check_type(name, value, option)
                return
            except RecordError as err:
                errors.append(err)
        raise errors[-1]
    if hint is Any:
        return
    if hint is type(None):
        if value is not None:
            raise RecordError(f"field {name!r}: expected null, got {type(value).__name__}")
        return
    expected = origin or hint
    if expected is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif expected is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif dataclasses.is_dataclass(expected):
        ok = isinstance(value, (dict, expected))
    else:
        ok = isinstance(value, expected)
    if not ok:
        raise RecordError(f"field {name!r}: expected {getattr(expected, '__name__', expected)}, got {type(value).__name__}")


def _from_dict(cls: type[R], row: Any) -> R:
    if not isinstance(row, dict):
        raise RecordError(f"expected a JSON object, got {type(row).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(row) - set(fields))
    if unknown:
        raise RecordError(f"field {unknown[0]!r}: not a field of {cls.__name__}")
    for f in fields.values():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if f.name not in row:
            if required:
                raise RecordError(f"field {f.name!r}: missing")
            continue
        _check_type(f.name, row[f.name], hints[f.name])
    try:
        return cls(**row)
    except TypeError as err:  # pragma: no cover - guarded by the checks above
        raise RecordError(str(err)) from err


def from_dict(cls: type[R], row: Any) -> R:
    """Build a record from a JSON-like dict, checking field names and types."""
    return _from_dict(cls, row)


def to_dict(record: Any) -> dict[str, Any]:
    return dataclasses.asdict(record)


def read_jsonl(path: str | os.PathLike, cls: type[R]) -> list[R]:
    """Read every row of a JSON-lines file as ``cls``; a bad row raises RecordError naming file and line."""
    return list(iter_jsonl(path, cls))


def iter_jsonl(path: str | os.PathLike, cls: type[R]) -> Iterator[R]:
    path = Path(path)
    if not path.is_file():
        raise RecordError(f"{path}: no such file")
    with path.open("rb") as handle:
        yield from (row for _, row in numbered_rows(handle, path, cls))


def numbered_rows(lines: Iterable[bytes], path: str | os.PathLike, cls: type[R]) -> Iterator[tuple[int, R]]:
    """``(line number, row of cls)`` from the raw lines of a JSON-lines file; a bad line (not UTF-8, not
    JSON, not a ``cls``) raises RecordError naming ``path`` and its line number."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line.decode("utf-8"))
        except json.JSONDecodeError as err:
            raise RecordError(f"{path}:{number}: not valid JSON ({err.msg})") from None
        except UnicodeDecodeError as err:
            raise RecordError(f"{path}:{number}: not valid JSON (not UTF-8: {err.reason})") from None
        except RecursionError:
            raise RecordError(f"{path}:{number}: not valid JSON ({TOO_DEEP})") from None
        try:
            yield number, _from_dict(cls, row)
        except RecordError as err:
            raise RecordError(f"{path}:{number}: {err}") from None


def read_json(path: str | os.PathLike, what: str = "a JSON object") -> dict[str, Any]:
    """A JSON object file (a run folder's record); anything else is a RecordError naming the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise RecordError(f"{path}:{err.lineno}: not valid JSON ({err.msg}); expected {what}") from None
    except UnicodeDecodeError as err:
        raise RecordError(f"{path}: not valid JSON (not UTF-8: {err.reason}); expected {what}") from None
    except RecursionError:
        raise RecordError(f"{path}: not valid JSON ({TOO_DEEP}); expected {what}") from None
    if not isinstance(data, dict):
        raise RecordError(f"{path}: expected {what}, got a JSON {type(data).__name__}")
    return data


def write_jsonl(path: str | os.PathLike, records: Iterable[Any]) -> Path:
    """Write records atomically: a crash mid-way leaves the previous file (or none), never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("w", encoding="utf-8") as handle:
            for record in records:
                row = record if isinstance(record, dict) else to_dict(record)
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # never leave half a file behind, not even under another name
        raise
    return path


def append_jsonl(path: str | os.PathLike, record: Any) -> None:
    """Append one record as one line, flushed and fsynced, for resumable jobs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    row = record if isinstance(record, dict) else to_dict(record)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def to_hf_dataset(records: Iterable[Any]):
    """Records as a Hugging Face ``datasets.Dataset`` (nested fields stored as JSON text)."""
    import datasets

    rows = [to_dict(r) for r in records]
    return datasets.Dataset.from_list([{k: json.dumps(v) for k, v in row.items()} for row in rows])


def from_hf_dataset(dataset, cls: type[R]) -> list[R]:
    """The inverse of :func:`to_hf_dataset`; a bad row raises RecordError naming its index."""
    out = []
    for index, row in enumerate(dataset):
        try:
            out.append(_from_dict(cls, {k: json.loads(v) for k, v in row.items()}))
        except (RecordError, json.JSONDecodeError, TypeError) as err:
            raise RecordError(f"row {index}: {err}") from None
    return out
