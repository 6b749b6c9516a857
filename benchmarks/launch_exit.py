"""How often a 2-process ``accelerate launch`` (gloo, on CPU) ends with a process aborted on its way out.

    python benchmarks/launch_exit.py [--launches 20] [--without-exit-handler]

Each launch runs the script of tests/test_distributed.py's error test: ``Ranks()``, one
failing and one succeeding broadcast from the main process (``from_main``), the closing barrier (``wait``), then exit. ``Ranks()``
registers an exit handler that destroys the process group while Python still runs; with
``--without-exit-handler`` the script unregisters it, and the interpreter's exit tears the group down as it
did before (gloo's threads can then be destroyed unjoined: exit code -6, "terminate called without an active
exception"). Prints the launches that failed and their first stderr line. Run it alone.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIGS = Path(__file__).parents[1] / "examples" / "accelerate"
SCRIPT = """\
import atexit, sys
from mentor.train import distributed
ranks = distributed.Ranks()
if "--without-exit-handler" in sys.argv:
    atexit.unregister(distributed._leave_process_group)
out = open(f"{sys.argv[1]}/rank{ranks.rank}.txt", "w")
def fail():
    raise ValueError("boom")
try:
    ranks.from_main(fail)  # an error on the main process, given to the other as a RuntimeError
except Exception as err:
    out.write(f"rank {ranks.rank}: {type(err).__name__}: {err}\\n")
out.write(f"rank {ranks.rank}: got {ranks.from_main(lambda: 41) + 1}\\n")
out.close()
ranks.wait()
"""


def free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--launches", type=int, default=20)
    parser.add_argument("--without-exit-handler", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "leave.py"
        script.write_text(SCRIPT)
        failed, start = 0, time.time()
        for launch in range(args.launches):
            done = subprocess.run(
                [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / "ddp.yaml"),
                 "--num_processes", "2", "--main_process_port", free_port(), str(script), folder,
                 *(["--without-exit-handler"] if args.without_exit_handler else [])],
                env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
            if done.returncode:
                failed += 1
                print(f"launch {launch}: exit {done.returncode}: {(done.stderr.splitlines() or [''])[0]}", flush=True)
    handler = "without the exit handler" if args.without_exit_handler else "with the exit handler"
    print(f"{failed} of {args.launches} launches failed ({handler}; {time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
