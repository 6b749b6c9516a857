"""``mentor launch``: ``accelerate launch -m mentor train|distill ...`` with mentor's checks first and its
refusal last.

Launched directly, a bad setting is refused by every worker and then buried under the launcher's own
traceback (45 lines). Here the command's config is read and checked before any worker starts, and when a
worker still refuses (a check that needs the launched processes, such as FSDP for ``distill``), its
one-line ``mentor: error:`` is printed again as the last line, with exit code 2.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

LAUNCHED = {"train": "mentor.train.recipe:TrainConfig", "distill": "mentor.offline.train:DistillConfig"}
REFUSAL = "mentor: error:"


def refusal_in(line: str) -> str | None:
    """The last ``mentor: error:`` message on a line of the workers' stderr, or None. Two workers refusing at
    once can share a line (one's message, then the other's, then both newlines), so the last copy is taken."""
    start = line.rfind(REFUSAL)
    return line[start:].rstrip("\n") if start >= 0 else None


def check_command(argv: list[str]) -> None:
    """The launched command's arguments and config, read as the command itself reads them (a ValueError
    on a bad one); nothing is loaded or written."""
    import importlib

    from mentor.cli import parse
    from mentor.config import load_config

    if not argv or argv[0] not in LAUNCHED:
        raise ValueError(f"mentor launch runs {' or '.join(LAUNCHED)}, got {argv[0] if argv else 'nothing'!r}")
    args = parse(argv)
    module, name = LAUNCHED[argv[0]].split(":")
    load_config(getattr(importlib.import_module(module), name), args.config, args.overrides)


def launch_command(args) -> int:
    if args.config_file and not Path(args.config_file).is_file():
        raise FileNotFoundError(f"--config_file {args.config_file} does not exist")
    check_command(args.command)
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(args.num_processes)]
    if args.config_file:
        launcher += ["--config_file", args.config_file]
    if args.main_process_port:
        launcher += ["--main_process_port", str(args.main_process_port)]
    threads = ["--threads", str(args.threads)] if args.threads else []
    process = subprocess.Popen([*launcher, "-m", "mentor", *threads, *args.command], stderr=subprocess.PIPE,
                               text=True, errors="replace")
    refusals: list[str] = []

    def relay() -> None:  # the workers' and the launcher's stderr as it comes, remembering mentor's refusal
        for line in process.stderr:
            sys.stderr.write(line)
            sys.stderr.flush()
            if (refusal := refusal_in(line)) is not None:
                refusals.append(refusal)

    reader = threading.Thread(target=relay, daemon=True)
    reader.start()
    code = process.wait()
    reader.join()
    if code and refusals:
        print(refusals[-1], file=sys.stderr)  # the last thing the user reads
        return 2
    return code
