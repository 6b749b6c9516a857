"""One run per output folder: ``with run_lock(out): ...`` refuses a second run on the same folder.

Two runs writing one folder would pay for the same teacher requests twice and interleave their rows. The
lock is an ``flock`` on ``OUT/.lock``, so the operating system releases it when its holder ends, however
it ends (a SIGKILL leaves no stale lock); the file names the holder for the refusal message. A folder the
lock created and nothing else wrote to (a run refused by a check) is removed again.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

LOCK_FILE = ".lock"


class FolderInUse(OSError):
    """Another live process holds the run folder."""


def check_out(folder: str | Path) -> Path:
    """An output folder that can be made (or is one): a clear error, before any work, for a path that is a
    file, lies under a file or under a folder this process cannot write to."""
    folder = Path(folder)
    for path in (folder, *folder.parents):
        if not path.exists():
            continue
        if not path.is_dir():
            where = "is a file" if path == folder else f"lies under {path}, a file"
            raise NotADirectoryError(f"output folder {folder} {where}, not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(f"output folder {folder}: {path} is not writable")
        return folder
    return folder


@contextlib.contextmanager
def run_lock(folder: str | Path) -> Iterator[Path]:
    folder = check_out(folder)
    created = [parent for parent in (folder, *folder.parents) if not parent.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / LOCK_FILE, "a+", encoding="utf-8")  # noqa: SIM115 - held for the whole run
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise FolderInUse(f"{folder} is in use by {holder}; wait for that run to end or choose another "
                              "--out") from None
        handle.seek(0)
        handle.truncate()
        command = " ".join(["mentor", *sys.argv[1:2]]) if sys.argv[0].endswith("mentor") else sys.argv[0]
        handle.write(f"pid {os.getpid()} ({command}, since {time.strftime('%Y-%m-%d %H:%M:%S')})\n")
        handle.flush()
        yield folder
    finally:
        if created and not handle.closed and [p.name for p in folder.iterdir()] == [LOCK_FILE]:
            (folder / LOCK_FILE).unlink()  # a run refused before writing: unlinked while still held
            for empty in created:  # the folders this lock made, innermost first
                with contextlib.suppress(OSError):
                    empty.rmdir()
        handle.close()  # closing the file releases the lock
