"""Teachers: a name plus something that answers chat messages, for the offline methods (docs/methods.md 2, 3).

Every teacher has one interface, the one :class:`~mentor.sampling.openai_compatible.OpenAISampler` has::

    teacher.name                                   # recorded in every row it writes
    teacher.chat(messages_list, params)            # -> list[list[Sample]]: params.n samples per chat
    teacher.stats()                                # -> dict of counts (requests, cache hits, retries...)
    teacher.close()

- :class:`SamplerTeacher` wraps a sampler: one with ``chat`` (an OpenAI-compatible server, with its request
  cache, retries and API key from the environment) is used as is; one with only ``generate`` (the local
  transformers sampler) gets each chat rendered with its tokenizer's chat template.
- the world's simulated teachers (:class:`mentor.world.teacher.SimulatedWorldTeacher`, ``kind="simulated"``)
  answer world problems without a model, so the offline pipelines run on the model organism without an API.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mentor.config import checked_values, unknown_key_error
from mentor.sampling import Sample, SamplingParams
from mentor.sampling.backends import build_sampler, check_backend

Messages = list[dict[str, Any]]
TEACHER_KINDS = ("simulated", "openai", "local")


class Teacher(Protocol):
    name: str

    def chat(self, messages_list: list[Messages], params: SamplingParams) -> list[list[Sample]]: ...

    def stats(self) -> dict[str, int]: ...

    def close(self) -> None: ...


def user_messages(prompt: str, system: str = "") -> Messages:
    """The chat a teacher sees for one prompt: an optional system turn and the user turn."""
    messages = [{"role": "user", "content": prompt}]
    if system:
        messages.insert(0, {"role": "system", "content": system})
    return messages


def render_messages(tokenizer: Any, messages: Messages) -> str:
    """A chat rendered with the tokenizer's chat template and the generation prompt; without a template (a
    base model) the turns' texts joined by blank lines."""
    from mentor.models import _template_text

    if _template_text(tokenizer) is None:
        return "\n\n".join(str(m["content"]) for m in messages)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _chat_seed(seed: int, messages: Messages) -> int:
    digest = hashlib.sha256(json.dumps([seed, messages], sort_keys=True).encode()).digest()
    return int.from_bytes(digest[:6], "little")


class SamplerTeacher:
    """A teacher from a sampler: ``chat`` when it has one (OpenAISampler), else the chat template + ``generate``.

    With a local sampler each chat is generated on its own with a seed derived from (params.seed, the chat),
    so a chat's samples do not depend on which other chats share the call: a resumed job gets the very
    samples an uninterrupted one would have.
    """

    def __init__(self, name: str, sampler: Any, tokenizer: Any | None = None) -> None:
        if not name:
            raise ValueError("a teacher needs a name")
        self.name = name
        self.sampler = sampler
        self.tokenizer = tokenizer if tokenizer is not None else getattr(sampler, "tokenizer", None)
        if not hasattr(sampler, "chat") and self.tokenizer is None:
            raise ValueError(f"teacher {name!r}: a sampler without chat() needs a tokenizer for the chat template")
        self._stats: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"SamplerTeacher({self.name!r}, {self.sampler!r})"

    def identity(self) -> dict[str, Any]:
        """What decides this teacher's answers (recorded by resumable stages): its name and model."""
        model = getattr(self.sampler, "model", None)
        model = model if isinstance(model, str) else getattr(model, "name_or_path", type(model).__name__)
        identity = {"name": self.name, "model": model, "base_url": getattr(self.sampler, "base_url", None)}
        if getattr(self.sampler, "backend", "local") != "local":  # another engine draws other samples
            identity["backend"] = self.sampler.backend
        return identity

    def chat(self, messages_list: list[Messages], params: SamplingParams) -> list[list[Sample]]:
        if hasattr(self.sampler, "chat"):
            return self.sampler.chat(messages_list, params)
        out = []
        for messages in messages_list:
            prompt = render_messages(self.tokenizer, messages)
            seeded = dataclasses.replace(params, seed=_chat_seed(params.seed, messages))
            out.append(self.sampler.generate([prompt], seeded)[0])
            self._stats["requests"] += params.n
        return out

    def stats(self) -> dict[str, int]:
        return {**self._stats, **getattr(self.sampler, "stats", {})}

    def close(self) -> None:
        if hasattr(self.sampler, "close"):
            self.sampler.close()


def _world_teacher():
    """The world's teacher module, imported where a simulated teacher is asked for (the core never imports
    the world at start-up)."""
    import mentor.world.teacher

    return mentor.world.teacher


@dataclass
class TeacherConfig:
    """One teacher: ``kind`` simulated (the world's), openai (any OpenAI-compatible server) or local."""

    kind: str = "simulated"
    name: str = ""
    """Recorded in every row; default: sim-STYLE-ERRORRATE, or the model."""
    # the simulated world teacher
    error_rate: float = 0.2
    style: str = "canonical"
    seed: int = 0
    error_kinds: tuple[str, ...] = field(default_factory=lambda: _world_teacher().ERROR_KINDS)
    delay_s: float = 0.0
    """Seconds the simulated teacher sleeps per sample: for tests and demos only."""
    review_noise: float = 0.1
    """How often the simulated teacher's review score is one off what its critic found (MAPD)."""
    malformed_review_rate: float = 0.0
    """How often the simulated teacher writes an unparseable review (no score, [7], "4/5")."""
    # an OpenAI-compatible server, or a local model
    base_url: str = ""
    model: str = ""
    """The served model's name (openai), or a model spec: world, smollm2, a folder, a .gguf file (local)."""
    api_key_env: str = "OPENAI_API_KEY"
    """The environment variable holding the API key; the key itself is never written anywhere."""
    backend: str = "local"
    """local: the model is sampled by mentor's decode loop, or by a vLLM engine in this process (vllm)."""
    concurrency: int = 4
    max_retries: int = 5
    backoff_s: float = 1.0
    timeout_s: float = 120.0
    rate_limit_per_s: float | None = None

    def __post_init__(self) -> None:
        self.error_kinds = tuple(self.error_kinds)
        if self.kind not in TEACHER_KINDS:
            raise ValueError(f"unknown teacher kind {self.kind!r}; choose from {', '.join(TEACHER_KINDS)}")
        if self.kind == "openai" and not (self.base_url and self.model):
            raise ValueError("an openai teacher needs teacher.base_url and teacher.model")
        if self.kind == "local" and not self.model:
            raise ValueError("a local teacher needs teacher.model (world, smollm2, a folder, a .gguf file...)")
        check_backend(self.backend, "teacher backend")
        for name, value, ok, rule in (("timeout_s", self.timeout_s, self.timeout_s > 0, "> 0"),
                                      ("concurrency", self.concurrency, self.concurrency >= 1, ">= 1"),
                                      ("max_retries", self.max_retries, self.max_retries >= 0, ">= 0"),
                                      ("backoff_s", self.backoff_s, self.backoff_s >= 0, ">= 0"),
                                      ("delay_s", self.delay_s, self.delay_s >= 0, ">= 0"),
                                      ("rate_limit_per_s", self.rate_limit_per_s,
                                       self.rate_limit_per_s is None or self.rate_limit_per_s > 0, "> 0 or unset")):
            if not ok:  # a request-time failure after every retry otherwise
                raise ValueError(f"teacher.{name} must be {rule}, got {value}")
        if self.kind == "simulated":  # check the options now, not after the problems are loaded
            _world_teacher().SimulatedWorldTeacher("check", self.error_rate, self.style, self.seed, error_kinds=self.error_kinds,
                                  delay_s=self.delay_s, review_noise=self.review_noise,
                                  malformed_review_rate=self.malformed_review_rate)

    def display_name(self) -> str:
        if self.name:
            return self.name
        if self.kind == "simulated":
            return f"sim-{self.style}-{self.error_rate:g}"
        return self.model


#: fields that change how requests are sent, never what the teacher answers
OPERATIONAL_FIELDS = ("delay_s", "api_key_env", "concurrency", "max_retries", "backoff_s", "timeout_s",
                      "rate_limit_per_s")
#: fields that change only a simulated teacher's reviews, never its solutions
REVIEW_FIELDS = ("review_noise", "malformed_review_rate")


def teacher_configs(teachers: dict[str, Any], where: str = "teachers") -> list[TeacherConfig]:
    """A committee written as name -> TeacherConfig fields (config files, ``teachers.NAME.KEY=VALUE``)."""
    out = []
    for name, values in teachers.items():
        if not isinstance(values, dict):
            raise ValueError(f"{where}.{name}: expected a mapping of TeacherConfig keys, got {values!r}")
        unknown = sorted(set(values) - set(TeacherConfig.__dataclass_fields__))
        if unknown:
            raise unknown_key_error(unknown[0], list(TeacherConfig.__dataclass_fields__), f"{where}.{name}.")
        out.append(TeacherConfig(**{**checked_values(TeacherConfig, values, f"{where}.{name}."), "name": name}))
    return out


def build_teacher(config: TeacherConfig, cache_dir: str | Path | None = None,
                  load_model: Callable[[str], tuple[Any, Any]] | None = None) -> Teacher:
    """The teacher a config describes; an openai teacher caches its requests in ``cache_dir/teacher_cache.sqlite``."""
    name = config.display_name()
    if config.kind == "simulated":
        return _world_teacher().SimulatedWorldTeacher(name, config.error_rate, config.style, config.seed,
                                     error_kinds=config.error_kinds, delay_s=config.delay_s,
                                     review_noise=config.review_noise,
                                     malformed_review_rate=config.malformed_review_rate)
    if config.kind == "openai":
        from mentor.sampling.openai_compatible import OpenAISampler

        cache = Path(cache_dir) / "teacher_cache.sqlite" if cache_dir is not None else None
        sampler = OpenAISampler(config.base_url, config.model, api_key_env=config.api_key_env, cache_path=cache,
                                concurrency=config.concurrency, max_retries=config.max_retries,
                                backoff_s=config.backoff_s, timeout_s=config.timeout_s,
                                rate_limit_per_s=config.rate_limit_per_s)
        return SamplerTeacher(name, sampler)
    if load_model is None:
        from mentor.loading import load_model
    model, tokenizer = load_model(config.model)
    return SamplerTeacher(name, build_sampler(config.backend, model, tokenizer, seed=config.seed), tokenizer)
