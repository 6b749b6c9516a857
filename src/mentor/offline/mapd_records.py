"""The rows of the MAPD stages (the student's answers, explanations, rationales, reviews) and how a stage's
rows are read back from a folder, a file or a list."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mentor.records import RecordError, from_dict, read_jsonl


def _require_gold(row: Any) -> None:
    if not isinstance(row.answer, str) or not row.answer.strip():
        raise RecordError("field 'answer': a gold answer is required (a non-empty string)")


@dataclass
class StudentAnswer:
    """A row of ``mine``: the student's answer to one question, verified (``prompt`` is the task prompt)."""

    problem_id: str
    prompt: str
    question: str
    answer: str
    completion: str
    correct: bool
    extracted: str | None
    reason: str
    finish_reason: str = "stop"
    sampling: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _require_gold(self)


@dataclass
class Explanation:
    """One teacher's explanation of the student's mistakes on one problem."""

    problem_id: str
    teacher: str
    prompt: str
    student_answer: str
    text: str
    finish_reason: str = "stop"


@dataclass
class Rationale:
    """One teacher's step-by-step answer to one question, verified. ``prompt`` is the task prompt."""

    problem_id: str
    teacher: str
    prompt: str
    question: str
    answer: str
    text: str
    correct: bool
    extracted: str | None
    reason: str
    finish_reason: str = "stop"

    def __post_init__(self) -> None:
        _require_gold(self)


@dataclass
class ReviewRow:
    """One reviewer's review of one author's rationale: the text, the parsed score (None when unusable) and
    why (:data:`~mentor.feedback.committee.SCORE_REASONS`)."""

    problem_id: str
    author: str
    reviewer: str
    text: str
    score: float | None
    reason: str


@dataclass
class ReviewedRationale:
    """A rationale with its peer reviews: the mean of the valid scores and whether it is accepted."""

    rationale: Rationale
    reviews: list[dict[str, Any]]
    mean_score: float | None
    n_valid: int
    accepted: bool

    def __post_init__(self) -> None:
        if isinstance(self.rationale, dict):
            self.rationale = from_dict(Rationale, self.rationale)


def read_rows(source: str | os.PathLike | Sequence[Any], cls: type, filename: str) -> list[Any]:
    """Rows of ``cls`` from a list (returned as is), a stage folder (its ``filename``) or a JSON-lines file."""
    if not isinstance(source, (str, os.PathLike)):
        return list(source)
    path = Path(source)
    if path.is_dir():
        path = path / filename
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (run the previous MAPD stage first)")
    return read_jsonl(path, cls)


def digest(values: Any) -> str:
    """A short hash of JSON-able inputs: a stage key holds it so changed inputs (a new student answer, an
    edited question or rationale) are noticed on resume instead of mixing old rows with new ones."""
    return hashlib.sha256(json.dumps(values, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]
