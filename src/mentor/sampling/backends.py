"""The engine that draws samples from a model in this process: mentor's own decode loop (``local``) or a
vLLM engine colocated here (``vllm``), built from the model's folder. Every command that samples a local
model takes its ``backend`` from here, so the choice and its checks live in one place."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from mentor.sampling import Sampler

BACKENDS = ("local", "vllm")


def check_backend(backend: str, what: str = "backend") -> None:
    """A known backend, and vLLM installed when it is asked for (one line, before any model loads)."""
    if backend not in BACKENDS:
        raise ValueError(f"{what} must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "vllm":
        from mentor.sampling.vllm_engine import require_vllm

        require_vllm()


def build_sampler(backend: str, model: Any, tokenizer: Any, *, seed: int = 0, batch_size: int = 64) -> Sampler:
    """A ``LocalSampler`` on ``model``, or a vLLM engine holding ``model``'s weights (close it when done)."""
    check_backend(backend)
    if backend == "vllm":
        from mentor.sampling.vllm_engine import engine_for

        return engine_for(model, tokenizer, seed=seed)
    from mentor.sampling.local import LocalSampler

    return LocalSampler(model, tokenizer, batch_size=batch_size)


@contextlib.contextmanager
def open_sampler(backend: str, model: Any, tokenizer: Any, *, seed: int = 0, batch_size: int = 64
                 ) -> Iterator[Sampler]:
    """:func:`build_sampler` for the length of a block; a vLLM engine is shut down after it."""
    sampler = build_sampler(backend, model, tokenizer, seed=seed, batch_size=batch_size)
    try:
        yield sampler
    finally:
        if hasattr(sampler, "close"):
            sampler.close()
