"""Progress for anything long: a rich bar with ETA on a terminal, plain lines with ETA elsewhere.

Rich draws nothing until the end when stderr is not a terminal (a log file, CI), so there a line is
printed every ``every`` percent instead. The ETA counts only the work done since a bar was added (its
``start``), so a resumed job is not credited with the steps it found done.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass


@dataclass
class _Line:
    description: str
    total: int
    first: int  # the work already done when the bar was added
    since: float  # when it was added
    printed: int = -1


def eta_text(elapsed: float, done: int, remaining: int) -> str:
    """``eta 12s`` at the rate so far, ``eta ?`` before anything was done (never ``eta nan``)."""
    if remaining <= 0:
        return "eta 0s"
    return f"eta {elapsed / done * remaining:.0f}s" if done > 0 else "eta ?"


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

    def add(self, description: str, total: int, info: str = "", start: int = 0) -> int:
        """A new bar at ``start`` of ``total`` (``start`` > 0: work found done, left out of the ETA)."""
        if self.rich is not None:
            return self.rich.add_task(description, total=total, completed=start, info=info)
        key = len(self.lines)
        self.lines[key] = _Line(description, total, first=start, since=time.time())
        return key

    def tracker(self, description: str, info: str = "") -> Callable[[int, int], None]:
        """A ``(done, total)`` callback for a library function that learns its total as it goes: the bar is
        added at the first call, which tells what was found done (a resumed job)."""
        key = []

        def update(done: int, total: int) -> None:
            if not key:
                key.append(self.add(description, total=total, info=info, start=done))
            self.update(key[0], done, info=info)

        return update

    def phases(self, transient: bool = False) -> Callable[[str, int, int], None]:
        """A ``(label, done, total)`` callback: one bar per label, added at its first call as by
        :meth:`tracker` (an evaluation inside a training run, each context of an evaluation).
        ``transient``: a finished bar leaves the terminal display (plain lines stay in the log)."""
        keys: dict[str, int] = {}

        def update(label: str, done: int, total: int) -> None:
            if label not in keys:
                keys[label] = self.add(label, total=total, start=done)
            self.update(keys[label], done)
            if transient and done >= total and self.rich is not None:
                self.rich.remove_task(keys.pop(label))

        return update

    def update(self, key: int, completed: int, info: str = "") -> None:
        if self.rich is not None:
            self.rich.update(key, completed=completed, info=info)
            return
        line = self.lines[key]
        percent = int(100 * completed / max(line.total, 1))
        if percent // self.every > line.printed or completed == line.total and line.printed < 100:
            line.printed = 100 if completed == line.total else percent // self.every
            elapsed = time.time() - line.since
            eta = eta_text(elapsed, completed - line.first, line.total - completed)
            print(f"{line.description}: {completed}/{line.total} ({percent}%) {info + ' ' if info else ''}"
                  f"elapsed {elapsed:.0f}s, {eta}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def no_transformers_bars() -> Iterator[None]:
    """Hide transformers' tqdm bars ("Loading weights", "Writing model shards") for a quick load or save of a
    small model: noise between mentor's own progress lines."""
    from transformers.utils import logging as transformers_logging

    shown = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            transformers_logging.enable_progress_bar()
