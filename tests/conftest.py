"""Shared test set-up: tiny models run fastest on one thread (and don't fight a parallel job for cores)."""

from __future__ import annotations

import os

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _single_thread_torch():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Builds and conversions go to a per-session cache, never the user's ~/.cache/mentor."""
    if "MENTOR_CACHE" not in os.environ:
        monkeypatch.setenv("MENTOR_CACHE", str(tmp_path_factory.getbasetemp() / "mentor-cache"))
