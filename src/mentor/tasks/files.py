"""Problems from local files and Hugging Face datasets in GSM8K, MATH, prompt/completion and chat formats.

Sources: ``.jsonl``, ``.json``, ``.parquet`` and ``.csv`` files, a folder written by
``datasets.save_to_disk``, an in-memory ``datasets.Dataset``, or a Hugging Face dataset name.

Formats (detected from the columns unless ``format=`` is given), with the columns each one reads:

- ``gsm8k``: ``question``, ``answer`` = worked solution ending in ``#### N``; gold = N. The reference
  solution keeps GSM8K's own ``#### N`` line (so it states its answer) without the ``<<48/2=24>>``
  calculator annotations. An ``answer`` that is a bare final answer (no ``####``, one line of at most 64
  characters that does not end a sentence: ``{"question": ..., "answer": "2"}``) is the gold answer
  itself, with no solution.
- ``math``: ``problem``, ``solution``; gold = an ``answer`` column when present, else the last
  ``\\boxed{}`` of the solution.
- ``prompt_completion``: ``prompt``, ``completion`` (plain text or TRL-style message lists); gold = an
  ``answer`` column when present, else the answer extracted from the completion.
- ``messages``: a chat list; question = last user message, solution = last assistant message, gold as for
  ``prompt_completion``.
- ``qa`` (never detected, ask for it): ``question`` and ``answer`` = the gold answer itself, no solution.

Other columns holding plain values (text, numbers, booleans), such as MATH's ``level`` and ``type``, are
kept in ``Problem.meta``. Ids are the dataset's own id column (``id``, ``unique_id``, ``problem_id``,
``uid``) when present, else ``<source>-<row index>`` (0-based, in file order).

A row that cannot become a Problem raises RecordError naming the file, the row (``path:line`` with a
1-based line for ``.jsonl``, ``path: row N`` with a 1-based row otherwise) and the field. No row is ever
skipped.
"""

from __future__ import annotations

import csv
import inspect
import json
import math
import os
import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mentor.records import TOO_DEEP, Problem, RecordError
from mentor.tasks.base import Task

BARE_ANSWER_CHARS = 64
FORMATS = ("gsm8k", "math", "prompt_completion", "messages", "qa")
FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
ID_COLUMNS = ("id", "unique_id", "problem_id", "uid")

_CALCULATOR = re.compile(r"<<[^<>]*>>")
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")


@dataclass(frozen=True)
class _Columns:
    question: str
    solution: str | None  # a worked solution the gold answer is derived from when there is no answer column
    answer: str | None  # the gold answer as is; optional unless it is the only source of the gold


_DEFAULT_COLUMNS = {
    "gsm8k": _Columns("question", "answer", None),
    "math": _Columns("problem", "solution", "answer"),
    "prompt_completion": _Columns("prompt", "completion", "answer"),
    "messages": _Columns("messages", "messages", "answer"),  # the last user and the last assistant turn
    "qa": _Columns("question", None, "answer"),
}


# Checked in order: the first format whose columns are all present wins ("qa" is never detected).
_DETECT = {
    "messages": {"messages"},
    "prompt_completion": {"prompt", "completion"},
    "math": {"problem", "solution"},
    "gsm8k": {"question", "answer"},
}


def detect_format(columns: Iterable[str]) -> str:
    """The format implied by a set of column names (see the module docstring)."""
    cols = set(columns)
    found = next((fmt for fmt, needed in _DETECT.items() if needed <= cols), None)
    if found is None:
        raise RecordError(
            f"cannot tell the format from the columns {sorted(cols)}; pass format= one of {', '.join(FORMATS)} "
            "and, if the names differ, question_column= / answer_column= / solution_column="
        )
    return found


# Reading rows: each source yields (where, row), ``where`` naming the file and row for error messages.

Rows = Iterator[tuple[str, Any]]


def _jsonl_rows(path: Path, text: str) -> Rows:
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                yield f"{path}:{number}", json.loads(line)
            except json.JSONDecodeError as err:
                raise RecordError(f"{path}:{number}: not valid JSON ({err.msg})") from None
            except RecursionError:
                raise RecordError(f"{path}:{number}: not valid JSON ({TOO_DEEP})") from None


def _json_rows(path: Path, text: str) -> Rows:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data":  # JSON lines saved as .json, as Hugging Face datasets often are
            yield from _jsonl_rows(path, text)
            return
        raise RecordError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
    except RecursionError:
        raise RecordError(f"{path}: not valid JSON ({TOO_DEEP})") from None
    if isinstance(data, dict) and len(data) == 1:  # {"data": [...]} and similar wrappers
        data = next(iter(data.values()))
    if not isinstance(data, list):
        raise RecordError(f"{path}: expected a JSON list of rows (or JSON lines)")
    yield from _numbered(str(path), data)


def _numbered(label: str, rows: Iterable[Any]) -> Rows:
    for index, row in enumerate(rows):
        yield f"{label}: row {index + 1}", row


def _file_rows(path: Path) -> Rows:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as err:  # pyarrow raises several types for unreadable files
            raise RecordError(f"{path}: not a readable parquet file ({err})") from None
        return _numbered(str(path), table.to_pylist())
    if suffix not in FILE_SUFFIXES:
        raise RecordError(
            f"{path}: unsupported file type {suffix!r}; use {', '.join(FILE_SUFFIXES)} or a save_to_disk folder"
        )
    try:
        if suffix == ".csv":
            with path.open(encoding="utf-8", newline="") as handle:  # newline="": cells may hold line breaks
                return _numbered(str(path), list(csv.DictReader(handle)))
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise RecordError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    return _jsonl_rows(path, text) if suffix == ".jsonl" else _json_rows(path, text)


def _pick_split(dataset: Any, split: str, label: str) -> Any:
    """The split of a DatasetDict (a dict subclass); a plain Dataset or list of rows is a single split."""
    if not isinstance(dataset, dict):
        return dataset
    if split not in dataset:
        raise RecordError(f"{label}: no split {split!r}; it has {', '.join(dataset)}")
    return dataset[split]


def _looks_local(source: str) -> bool:
    return source.startswith((".", "/", "~")) or source.lower().endswith(FILE_SUFFIXES)


def read_rows(source: Any, *, split: str = "test", config: str | None = None) -> tuple[str, Rows]:
    """``(label, rows)`` for a file, a save_to_disk folder, a ``datasets.Dataset`` or a Hub dataset name.

    ``split`` (and ``config``) only matter for Hub names and saved DatasetDicts; a file is one split.
    """
    if not isinstance(source, (str, os.PathLike)):  # a datasets.Dataset / DatasetDict or a list of rows
        label = f"dataset split {split}"
        return label, _numbered(label, _pick_split(source, split, "dataset"))
    path = Path(source).expanduser()
    if path.is_file():
        return str(path), _file_rows(path)
    import datasets

    if path.is_dir():
        try:
            saved = datasets.load_from_disk(str(path))
        except FileNotFoundError:
            raise RecordError(f"{path}: a folder, but not one written by datasets' save_to_disk") from None
        except (ValueError, KeyError, TypeError, OSError) as err:  # a corrupt dataset_info.json or state.json
            raise RecordError(f"{path}: not a readable save_to_disk folder ({type(err).__name__}: "
                              f"{' '.join(str(err).split())[:200]})") from None
        return f"{path}[{split}]", _numbered(f"{path}[{split}]", _pick_split(saved, split, str(path)))
    if isinstance(source, os.PathLike) or _looks_local(str(source)):
        raise RecordError(f"{path}: no such file or folder")
    label = f"{source}[{config + ', ' if config else ''}{split}]"
    try:
        dataset = datasets.load_dataset(str(source), config, split=split)
    except Exception as err:  # the Hub raises many types (ConnectionError, DatasetNotFoundError, ...)
        raise RecordError(
            f"{label}: could not load the Hugging Face dataset ({type(err).__name__}: {err}); "
            f"there is no local file or folder named {str(source)!r} either. Offline, download it elsewhere "
            "and pass a local file or a save_to_disk folder."
        ) from err
    return label, _numbered(label, dataset)


# Turning rows into Problems


#: the longest prompt or answer a data file may hold: a tokenizer given a 50 MB line takes the machine's
#: memory before any model could read it (no small model's context is within a thousandth of this)
MAX_TEXT_CHARS = 1_000_000


def _checked_text(value: str, column: str) -> str:
    """A cell's text, refused when no tokenizer or file could take it: too long, a NUL, a lone surrogate."""
    if len(value) > MAX_TEXT_CHARS:
        raise RecordError(f"field {column!r}: {len(value):,} characters, over the {MAX_TEXT_CHARS:,} a prompt or "
                          "answer may have")
    if "\x00" in value:
        raise RecordError(f"field {column!r}: holds a NUL character (\\u0000), not text")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise RecordError(f"field {column!r}: holds a lone surrogate ({value[err.start]!a}), not text") from None
    return value


def _text(row: dict, column: str, role: str = "user", required: bool = True) -> str | None:
    """A non-empty text cell; a chat list (TRL conversational format) gives its last ``role`` message."""
    value = row.get(column)
    chat = isinstance(value, list)
    if chat:
        value = _last_message(value, role, column)
    if isinstance(value, str) and value.strip():
        return _checked_text(value, column)
    if not required and not value:
        return None
    if chat:
        raise RecordError(f"field {column!r}: no {role} message with text in the chat")
    if column not in row:
        raise RecordError(f"field {column!r}: missing (the row has {', '.join(map(str, row))})")
    raise RecordError(f"field {column!r}: expected a non-empty string, got {value!r:.80}")


def _last_message(messages: list, role: str, column: str) -> str | None:
    for number, message in enumerate(messages, start=1):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise RecordError(f"field {column!r}: message {number} is not a {{role, content}} object")
    return next((m["content"] for m in reversed(messages) if m.get("role") == role), None)


def _gold_cell(row: dict, column: str) -> str:
    value = row[column]
    if isinstance(value, float) and not math.isfinite(value):
        raise RecordError(f"field {column!r}: the gold answer must be a finite number or a string, got {value!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise RecordError(f"field {column!r}: the gold answer must be a non-empty string, got {value!r:.80}")
    return value.strip()


def _split_gsm8k(text: str, column: str) -> tuple[str, str | None]:
    """GSM8K's ``answer`` cell as (clean reference solution, gold answer or None without ``####``)."""
    reasoning, marker, gold = text.rpartition("####")
    if not marker:
        return _CALCULATOR.sub("", text).strip(), None
    gold = gold.strip()
    if not gold:
        raise RecordError(f"field {column!r}: empty gold answer after '####'")
    if _THOUSANDS.fullmatch(gold):
        gold = gold.replace(",", "")
    return f"{_CALCULATOR.sub('', reasoning).strip()}\n#### {gold}", gold


def _is_bare_answer(text: str) -> bool:
    """A final answer on its own (``2``, ``3/4``, ``x = 5``, ``72 clips``), not a worked solution: one short
    line that does not end a sentence (``She sold 72 clips.`` is a solution without its answer line)."""
    return (bool(text) and "\n" not in text and len(text) <= BARE_ANSWER_CHARS
            and not re.search(r"[A-Za-z]\.$", text))


def _extracted_gold(solution: str, fmt: str, column: str) -> str:
    from mentor.verify import extract_answer

    answer, kind = extract_answer(solution)
    if answer is None or not answer.strip() or (fmt == "math" and kind != "boxed"):
        wanted = "\\boxed{} answer" if fmt == "math" else "answer that can be extracted"
        raise RecordError(
            f"field {column!r}: no gold answer: no {wanted} in the solution and no answer column"
        )
    return answer.strip()


def _row_problem(
    row: Any, fmt: str, cols: _Columns, source: str, index: int, id_column: str | None
) -> Problem:
    """One row as a Problem; errors are RecordErrors naming the field (the caller adds file and row)."""
    if not isinstance(row, dict):
        raise RecordError(f"expected an object with named columns, got {type(row).__name__}")
    question = _text(row, cols.question)
    gold_in_row = cols.answer is not None and cols.answer in row
    solution = _text(row, cols.solution, "assistant", required=not gold_in_row) if cols.solution else None
    derived = None
    if fmt == "gsm8k" and solution is not None:
        solution, derived = _split_gsm8k(solution, cols.solution)
    if gold_in_row:
        gold = _gold_cell(row, cols.answer)
    elif cols.solution is None:
        raise RecordError(f"field {cols.answer!r}: missing (the row has {', '.join(map(str, row))})")
    elif fmt == "gsm8k":
        if derived is None and _is_bare_answer(solution):  # {"question": ..., "answer": "2"}: the answer itself
            solution, derived = None, solution
        if derived is None:
            raise RecordError(f"field {cols.solution!r}: neither a worked solution ending in a '####' line with "
                              f"the gold answer nor a bare answer (one short line), got {solution!r:.80}")
        gold = derived
    else:
        gold = _extracted_gold(solution, fmt, cols.solution)
    id_column = id_column or next((c for c in ID_COLUMNS if c in row), None)
    used = {cols.question, cols.solution, cols.answer, id_column}
    meta = {
        k: v for k, v in row.items() if k not in used and isinstance(v, (str, int, float, bool, type(None)))
    }
    return Problem(_problem_id(row, id_column, source, index), question, gold, solution, source, meta)


def _problem_id(row: dict, id_column: str | None, source: str, index: int) -> str:
    if id_column is None:
        return f"{source}-{index}"
    value = row.get(id_column)
    if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip():
        return str(value)
    raise RecordError(f"field {id_column!r}: expected a non-empty id, got {value!r:.80}")


def load_problems(
    source: Any,
    *,
    format: str | None = None,
    split: str = "test",
    config: str | None = None,
    question_column: str | None = None,
    answer_column: str | None = None,
    solution_column: str | None = None,
    id_column: str | None = None,
    name: str | None = None,
) -> list[Problem]:
    """Every row of a source as a Problem, in order (see the module docstring for formats and columns).

    ``name`` is the ``source`` recorded in each Problem and the prefix of generated ids; by default the file
    or folder name, or the dataset name with its split.
    """
    _check_format(format)
    label, rows = read_rows(source, split=split, config=config)
    name = name or _default_name(source, split)
    problems: list[Problem] = []
    seen: dict[str, str] = {}
    cols = None
    for index, (where, row) in enumerate(rows):
        try:
            if cols is None:
                fmt = format or detect_format(row if isinstance(row, dict) else ())
                default = _DEFAULT_COLUMNS[fmt]
                cols = _Columns(
                    question_column or default.question,
                    solution_column or default.solution,
                    answer_column or default.answer,
                )
            problem = _row_problem(row, fmt, cols, name, index, id_column)
        except RecordError as err:
            raise RecordError(f"{where}: {err}") from None
        if problem.id in seen:
            raise RecordError(
                f"{where}: field 'id': duplicate id {problem.id!r} (first at {seen[problem.id]})"
            )
        seen[problem.id] = where
        problems.append(problem)
    if not problems:
        raise RecordError(f"{label}: no rows")
    return problems


def _check_format(fmt: str | None) -> None:
    if fmt is not None and fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")


def _default_name(source: Any, split: str) -> str:
    if not isinstance(source, (str, os.PathLike)):
        return f"dataset-{split}"
    path = Path(source).expanduser()
    if path.is_file():
        return path.stem
    base = path.name if path.is_dir() else str(source).rstrip("/").split("/")[-1]
    return f"{base}-{split}"


class FileTask(Task):
    """Problems from a file, a save_to_disk folder or a Hugging Face dataset, verified by ``mentor.verify``.

    ``problems(split, n, seed)`` returns the rows in file order, the first ``n`` of them: the same subset
    anyone evaluating the first ``n`` problems gets. With ``shuffle=True`` it returns a subset drawn by a
    ``seed``-ed shuffle instead. A file is a single split, so ``split`` only picks the split of a Hub
    dataset or a saved DatasetDict; a ``split`` given here wins over the one passed to ``problems``.
    ``options`` are those of :func:`load_problems` (format, config, question/answer/solution/id column, name).
    """

    def __init__(
        self, source: Any, *, split: str | None = None, shuffle: bool = False, **options: Any
    ) -> None:
        unknown = set(options) - _LOAD_OPTIONS
        if unknown:
            raise TypeError(
                f"FileTask: unknown option(s) {sorted(unknown)}; expected {sorted(_LOAD_OPTIONS)}"
            )
        _check_format(options.get("format"))
        self.source, self.split, self.shuffle, self._options = source, split, shuffle, options
        self.name = options.get("name") or _default_name(source, split or "test")
        self._loaded: dict[str, list[Problem]] = {}

    def problems(self, split: str = "test", n: int | None = None, seed: int = 0) -> list[Problem]:
        if n is not None and n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        split = self.split or split
        if split not in self._loaded:
            self._loaded[split] = load_problems(self.source, split=split, **self._options)
        problems = self._loaded[split]
        if self.shuffle:
            problems = random.Random(seed).sample(problems, len(problems))
        return list(problems if n is None else problems[:n])


_LOAD_OPTIONS = set(inspect.signature(load_problems).parameters) - {"source", "split"}
