"""One run per output folder: a second `mentor` run on a folder in use is refused with one line naming the
holder; the lock dies with its holder, however it ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from mentor.cli import main
from mentor.runlock import FolderInUse, run_lock

HOLD = """
import sys, time
from mentor.runlock import run_lock
with run_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def hold(folder):
    """A separate process holding the folder's lock (as a running `mentor train` would)."""
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_holder_is_refused_naming_the_first(tmp_path):
    process = hold(tmp_path / "run")
    try:
        with pytest.raises(FolderInUse, match=rf"run is in use by pid {process.pid} "), run_lock(tmp_path / "run"):
            pass
    finally:
        process.kill()
        process.wait()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    process = hold(tmp_path / "run")
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    with run_lock(tmp_path / "run") as folder:  # free at once
        assert f"pid {os.getpid()}" in (folder / ".lock").read_text()
    with run_lock(tmp_path / "run"):  # and free again after a clean exit
        pass


@pytest.mark.parametrize("command", [
    ["generate", "n_problems=2", "group_size=2"],
    ["train", "onpolicy.steps=1"],
    ["distill", "mode=oracle", "sft.steps=1"],
    ["compare", "seeds=[0]"],
    ["mapd", "build", "--mined", "M", "--explanations", "E", "--reviewed", "R"],
])
def test_every_run_command_refuses_a_folder_in_use(tmp_path, capsys, command):
    process = hold(tmp_path / "out")
    try:
        start = time.monotonic()
        assert main([*command[:2 if command[0] == "mapd" else 1], "--out", str(tmp_path / "out"),
                     *command[2 if command[0] == "mapd" else 1:]]) == 2
        err = capsys.readouterr().err.strip()
        assert err == (f"mentor: error: {tmp_path / 'out'} is in use by pid {process.pid} "
                       f"({err.split('(', 1)[1]}")
        assert len(err.splitlines()) == 1 and time.monotonic() - start < 30
    finally:
        process.kill()
        process.wait()
