"""Append-only JSON-lines files that survive a kill at any moment, and the record that ties a stage folder
to the configuration that made its rows: the resume machinery of ``mentor generate`` and the MAPD stages.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mentor.config import differences
from mentor.records import RecordError, append_jsonl, numbered_rows, read_json, to_dict, write_jsonl

RECORD = "stage.json"


def cut_partial_line(path: str | os.PathLike) -> tuple[bytes, bool]:
    """The complete lines of an append-only JSON-lines file, after cutting off (on disk) a last line left
    half-written by a kill; ``(b"", False)`` when there is no file. Returns ``(data, repaired)``."""
    path = Path(path)
    if not path.is_file():
        return b"", False
    data = path.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep < len(data):
        with path.open("r+b") as handle:
            handle.truncate(keep)
            handle.flush()
            os.fsync(handle.fileno())
    return data[:keep], keep < len(data)


def parse_keyed_rows(data: bytes, path: Path, cls: type, key: Callable[[Any], tuple],
                     describe: Callable[[tuple], str] = str) -> dict[tuple, Any]:
    """The rows of ``cls`` in complete JSON lines, by key; a bad row or a second row for a key is a
    RecordError naming file and line."""
    rows: dict[tuple, Any] = {}
    for number, row in numbered_rows(data.split(b"\n"), path, cls):
        if key(row) in rows:
            raise RecordError(f"{path}:{number}: a second row for {describe(key(row))}")
        rows[key(row)] = row
    return rows


class RowFile:
    """An append-only JSON-lines file of rows of ``cls``, one per key, that survives a kill at any moment.

    Opening it cuts off a half-written last line (:func:`cut_partial_line`) and
    reads the rows on disk (a bad row or a second row for a key is a RecordError naming file and line);
    :meth:`add` appends one row, flushed and fsynced; :meth:`finish` rewrites the file in the given key order.
    """

    def __init__(self, path: str | os.PathLike, cls: type, key: Callable[[Any], tuple]) -> None:
        self.path, self.cls, self.key = Path(path), cls, key
        data, self.repaired = cut_partial_line(self.path)
        self.rows: dict[tuple, Any] = parse_keyed_rows(data, self.path, cls, key)
        self.found, self.written = len(self.rows), 0

    def __contains__(self, key: tuple) -> bool:
        return key in self.rows

    def add(self, row: Any) -> None:
        append_jsonl(self.path, row)
        self.rows[self.key(row)] = row
        self.written += 1

    def finish(self, order: Sequence[tuple]) -> list[Any]:
        """The rows in ``order`` (each must be there); the file rewritten in that order if it is not."""
        rows = [self.rows[k] for k in order]
        if len(rows) != len(self.rows):
            extra = sorted(set(self.rows) - set(order))[:1]
            raise RecordError(f"{self.path}: a row for {extra} that this stage does not make; use another --out")
        text = "".join(json.dumps(to_dict(r), ensure_ascii=False) + "\n" for r in rows)
        if not self.path.is_file() or self.path.read_text(encoding="utf-8") != text:
            write_jsonl(self.path, rows)
        return rows

    def run_stats(self) -> dict[str, Any]:
        return {"rows_found": self.found, "rows_written": self.written, "partial_line_repaired": self.repaired}


def check_record(out: Path, key: dict[str, Any], rows_file: str) -> None:
    """Refuse a folder whose rows were made with another configuration; record this one."""
    record = out / RECORD
    key = json.loads(json.dumps(key))
    has_rows = (out / rows_file).is_file() and (out / rows_file).stat().st_size > 0
    if record.is_file() and has_rows:
        saved = read_json(record, "a MAPD stage record").get("key", {})
        if saved != key:
            raise FileExistsError(f"{out} holds rows made with another configuration "
                                  f"({', '.join(differences(key, saved))} differ); use another --out")
    elif has_rows:
        raise FileExistsError(f"{out / rows_file} exists but {RECORD} does not: not a MAPD stage folder")
    tmp = record.with_name(record.name + ".tmp")
    tmp.write_text(json.dumps({"key": key}, indent=2) + "\n")
    os.replace(tmp, record)
