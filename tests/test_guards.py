"""The self-distillation guards: copying of the privileged context, low teacher-signal fraction."""

from __future__ import annotations

import pytest

from mentor.train.guards import Guards, copy_overlap


def test_copy_overlap_counts_ngrams_only_the_context_has():
    question = "what is one plus two"
    context = "the reference says one plus two is three so the answer is three"
    assert copy_overlap("one plus two is three", context, question, n=2) == pytest.approx(2 / 4)
    assert copy_overlap("one plus two", context, question, n=2) == 0.0  # all in the question too
    assert copy_overlap("three", context, question, n=2) == 0.0  # too short for a 2-gram


def test_a_rise_in_copying_warns_once_and_the_level_alone_does_not():
    guards = Guards(window=3, copy_margin=0.15)
    warned = [w for step in range(1, 7) for w in guards.check(step, {"copy_overlap": 0.5})]
    assert warned == []  # a high but steady overlap (a correct trace shares text with a critique of it)
    warned = [w for step in range(7, 13) for w in guards.check(step, {"copy_overlap": 0.9})]
    assert len(warned) == 1 and "copying" in warned[0]


def test_low_signal_fraction_warns_every_time():
    guards = Guards(min_signal_fraction=0.5)
    assert guards.check(1, {"signal_fraction": 0.25}) and not guards.check(2, {"signal_fraction": 0.75})


def test_guard_state_round_trips():
    guards = Guards(window=2)
    for step, overlap in enumerate([0.1, 0.1, 0.2, 0.3, 0.4], start=1):
        guards.check(step, {"copy_overlap": overlap})
    again = Guards(window=2)
    again.load_state_dict(guards.state_dict())
    assert again.state_dict() == guards.state_dict() and again.recent.maxlen == 2
