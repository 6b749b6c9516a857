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


@pytest.fixture(scope="session")
def mentor_cache(tmp_path_factory) -> str:
    """The cache every test uses: $MENTOR_CACHE when set, else one per test session."""
    return os.environ.get("MENTOR_CACHE") or str(tmp_path_factory.getbasetemp() / "mentor-cache")


@pytest.fixture(autouse=True)
def _isolated_cache(mentor_cache, monkeypatch):
    """Builds and conversions go to the session's cache, never the user's ~/.cache/mentor."""
    monkeypatch.setenv("MENTOR_CACHE", mentor_cache)
