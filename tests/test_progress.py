"""Progress lines (stderr not a terminal): an unknown ETA is ``eta ?``, never ``eta nan``, and a bar added on
a resumed job estimates from the work done since, not from the work it found done."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import mentor.progress
from mentor.commands.common import train_progress
from mentor.progress import ProgressBar


@pytest.fixture
def clock(monkeypatch):
    now = SimpleNamespace(value=1000.0)
    monkeypatch.setattr(mentor.progress, "time", SimpleNamespace(time=lambda: now.value))
    return now


def test_an_unknown_eta_is_a_question_mark_never_nan(clock, capsys):
    with ProgressBar() as bar:
        track = bar.tracker("prompts answered")
        track(0, 4)
        clock.value += 3
        track(4, 4)
    err = capsys.readouterr().err
    assert "prompts answered: 0/4 (0%) elapsed 0s, eta ?" in err
    assert "prompts answered: 4/4 (100%) elapsed 3s, eta 0s" in err
    assert "nan" not in err


def test_a_resumed_job_is_not_credited_with_the_work_it_found_done(clock, capsys):
    with ProgressBar() as bar:
        track = bar.tracker("prompts answered")
        track(50, 100)  # found on disk
        clock.value += 10
        track(60, 100)  # 10 in 10 s: 40 left take 40 s (not 10 s / 60 x 40)
    err = capsys.readouterr().err
    assert "prompts answered: 50/100 (50%) elapsed 0s, eta ?" in err
    assert "prompts answered: 60/100 (60%) elapsed 10s, eta 40s" in err


def test_the_training_bar_starts_at_the_first_step_reported(clock, capsys):
    with ProgressBar() as bar:
        progress = train_progress(bar, 10, info=lambda metrics: f"loss {metrics['loss']}")
        clock.value += 100  # model loading and the first evaluation: not training time
        progress(6, {"loss": 1})  # a run resumed at step 5
        clock.value += 2
        progress(7, {"loss": 2})
    err = capsys.readouterr().err
    assert "training: 6/10 (60%) loss 1 elapsed 0s, eta ?" in err
    assert "training: 7/10 (70%) loss 2 elapsed 2s, eta 6s" in err


def test_phases_are_one_bar_per_label(clock, capsys):
    with ProgressBar() as bar:
        phases = bar.phases(transient=True)
        for label in ("evaluation at step 0", "evaluation at step 5"):
            phases(label, 0, 2)
            clock.value += 1
            phases(label, 2, 2)
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["evaluation at step 0: 0/2 (0%) elapsed 0s, eta ?",
                     "evaluation at step 0: 2/2 (100%) elapsed 1s, eta 0s",
                     "evaluation at step 5: 0/2 (0%) elapsed 0s, eta ?",
                     "evaluation at step 5: 2/2 (100%) elapsed 1s, eta 0s"]
