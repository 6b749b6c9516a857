"""Progress for anything long: a rich bar with ETA on a terminal, plain lines with ETA elsewhere.

Rich draws nothing until the end when stderr is not a terminal (a log file, CI), so there a line is
printed every ``every`` percent instead.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field


@dataclass
class _Line:
    description: str
    total: int
    start: float = field(default_factory=time.time)
    printed: int = -1


class ProgressBar:
    """``with ProgressBar() as bar: t = bar.add("training", 100); bar.update(t, 5, info="loss 1.2")``"""

    def __init__(self, every: int = 10) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.every = every
        self.lines: dict[int, _Line] = {}
        self.rich = None
        if self.console.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.rich = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                console=self.console,
            )

    def __enter__(self) -> ProgressBar:
        if self.rich is not None:
            self.rich.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.rich is not None:
            self.rich.__exit__(*exc)

    def add(self, description: str, total: int, info: str = "") -> int:
        if self.rich is not None:
            return self.rich.add_task(description, total=total, info=info)
        key = len(self.lines)
        self.lines[key] = _Line(description, total)
        return key

    def tracker(self, description: str, info: str = ""):
        """A ``(done, total)`` callback for a library function that learns its total as it goes: the bar is
        added at the first call."""
        key = []

        def update(done: int, total: int) -> None:
            if not key:
                key.append(self.add(description, total=total, info=info))
            self.update(key[0], done, info=info)

        return update

    def update(self, key: int, completed: int, info: str = "") -> None:
        if self.rich is not None:
            self.rich.update(key, completed=completed, info=info)
            return
        line = self.lines[key]
        percent = int(100 * completed / max(line.total, 1))
        if percent // self.every > line.printed or completed == line.total and line.printed < 100:
            line.printed = 100 if completed == line.total else percent // self.every
            elapsed = time.time() - line.start
            eta = elapsed / completed * (line.total - completed) if completed else float("nan")
            print(f"{line.description}: {completed}/{line.total} ({percent}%) {info} "
                  f"elapsed {elapsed:.0f}s, eta {eta:.0f}s", file=sys.stderr, flush=True)
