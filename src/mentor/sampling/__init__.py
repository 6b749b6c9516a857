"""Samplers behind one interface: ``generate(prompts, params) -> list[list[Sample]]``.

``SamplingParams`` and ``Sample`` live here so the local sampler and the HTTP sampler share them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass
class SamplingParams:
    """How to sample. Recorded beside every rollout and every evaluation number."""

    n: int = 1
    """Samples per prompt."""
    temperature: float = 1.0
    """Softmax temperature; 0 means greedy decoding."""
    top_p: float = 1.0
    """Nucleus sampling: draw from the smallest set of tokens whose probability reaches top_p."""
    max_new_tokens: int = 256
    """Generation stops with finish_reason "length" after this many tokens."""
    seed: int = 0
    """Same seed, same prompts, same params: same samples."""
    stop: list[str] = field(default_factory=list)
    """Generation stops (finish_reason "stop") when the text contains one of these; it is trimmed before it."""

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"SamplingParams.n must be >= 1, got {self.n}")
        if not 0 <= self.temperature < float("inf"):  # NaN too
            raise ValueError(f"SamplingParams.temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"SamplingParams.top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"SamplingParams.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if isinstance(self.stop, str) or not all(isinstance(s, str) and s for s in self.stop):
            raise ValueError(f"SamplingParams.stop must be a list of non-empty strings, got {self.stop!r}")
        self.stop = list(self.stop)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_sampling(prefix: str = "", **fields: Any) -> None:
    """SamplingParams' checks of a config's ``prefix + field`` keys (temperature, top_p, max_new_tokens), so a
    bad value fails when the config is made, before any model loads, naming the key."""
    try:
        SamplingParams(**fields)
    except ValueError as err:
        raise ValueError(prefix + str(err).removeprefix("SamplingParams.")) from None


@dataclass
class Sample:
    """One completion.

    ``token_ids`` and ``logprobs`` cover every generated token, including a final EOS and the tokens of a
    matched stop string; ``text`` excludes the EOS and is cut before the stop string.
    """

    text: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str  # "stop" (EOS or stop string) or "length" (max_new_tokens reached)

    def __post_init__(self) -> None:
        if self.finish_reason not in ("stop", "length"):
            raise ValueError(f"Sample.finish_reason must be 'stop' or 'length', got {self.finish_reason!r}")
        if len(self.logprobs) != len(self.token_ids):
            raise ValueError(f"Sample has {len(self.logprobs)} logprobs for {len(self.token_ids)} tokens")


@runtime_checkable
class Sampler(Protocol):
    """What draws samples of a model in this process (``LocalSampler``, ``VLLMSampler``): the one signature
    rollouts, evaluation and teachers call."""

    backend: str

    def generate(
        self,
        prompts: list[str],
        params: SamplingParams,
        progress: Callable[[int], None] | None = None,
        *,
        indices: Sequence[int] | None = None,
        on_prompt: Callable[[int, list[Sample]], None] | None = None,
    ) -> list[list[Sample]]:
        """``params.n`` samples for each (already rendered) prompt, as ``result[prompt_index][sample_index]``.

        ``progress(prompts_done)`` after each batch; ``on_prompt(prompt_index, samples)`` as soon as a
        prompt's samples are all drawn; ``indices[i]``: prompt i's place in the whole job, which seeds its
        samples, so a job cut into pieces draws what it would have drawn whole."""
        ...


def __getattr__(name: str) -> Any:
    if name == "LocalSampler":  # lazy: importing the shared records must not pull in torch
        from mentor.sampling.local import LocalSampler

        return LocalSampler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["LocalSampler", "Sample", "SamplingParams", "check_sampling"]
