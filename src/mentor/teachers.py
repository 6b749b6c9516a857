"""Teachers: a name plus something that answers chat messages, for the offline methods (docs/methods.md 2, 3).

Every teacher has one interface, the one :class:`~mentor.sampling.openai_compatible.OpenAISampler` has::

    teacher.name                                   # recorded in every row it writes
    teacher.chat(messages_list, params)            # -> list[list[Sample]]: params.n samples per chat
    teacher.stats()                                # -> dict of counts (requests, cache hits, retries...)
    teacher.close()

- :class:`SamplerTeacher` wraps a sampler: one with ``chat`` (an OpenAI-compatible server, with its request
  cache, retries and API key from the environment) is used as is; one with only ``generate`` (the local
  transformers sampler) gets each chat rendered with its tokenizer's chat template.
- :class:`SimulatedWorldTeacher` answers world problems without a model, with a configurable error rate and
  style, so the offline pipelines run end to end on the model organism without an API.

**How the simulated teacher knows the problem.** It reads it from the messages, as a real teacher does: a
world question (``Work modulo 10. Let a = 7, ... What is f?``) states the whole problem, so
:func:`~mentor.tasks.world.parse_question` recovers it from the last user message, wherever it stands in
the prompt. No side channel carries the :class:`~mentor.records.Problem`, so a prompt template changed by a
user reaches the simulated teacher exactly as it reaches a real one. What it writes depends on the kind of
request (:meth:`SimulatedWorldTeacher.request_kind`), recognised by the MAPD committee's prompt templates
(:mod:`mentor.feedback.committee`): a ``solve`` or ``rationale`` request gets a solution, an
``explanation`` request an explanation of the student's answer quoted in it, a ``review`` request a review
of the rationale quoted in it, ending with its score in brackets. A request that states no world question
is a clear error.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from mentor.config import checked_values
from mentor.sampling import Sample, SamplingParams
from mentor.sampling.backends import build_sampler, check_backend
from mentor.tasks.world import (
    ERROR_KINDS,
    WorldProblem,
    alternative_solution,
    alternative_step,
    canonical_solution,
    corrupt_trace,
    format_trace,
    parse_question,
    parse_trace,
)

Messages = list[dict[str, Any]]
STYLES = ("canonical", "alternative")
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


class SimulatedWorldTeacher:
    """A teacher of the world that writes step-tagged solutions, some with one injected error.

    For each sample it writes the canonical solution (``style="canonical"``) or an alternative derivation in
    other words and, where one exists, another order (``style="alternative"``); with probability
    ``error_rate`` it writes instead a trace with one error of a kind drawn from ``error_kinds`` (see
    :func:`~mentor.tasks.world.corrupt_trace`: a wrong result, a wrong operand, a skipped step, or a trace
    that stops early) at a uniformly drawn step, worded in the teacher's style. Everything is determined by
    (``seed``, ``params.seed``, the question, the sample index); with temperature 0 the sample index is
    ignored, as a greedy model answers the same every time.

    For the MAPD committee (:mod:`mentor.feedback.committee`) it also writes:

    - *explanations* of a student's answer: the world's exact step critic names the first wrong step and
      gives the corrected trace; with probability ``error_rate`` the explanation names another step (a
      wrong explanation);
    - *reviews* of a rationale: the critic checks it and the score follows from what it finds (5 correct,
      3 a missing step, 2 incomplete or a wrong step after the first, 1 a wrong first step), moved by one
      with probability ``review_noise``; with probability ``malformed_review_rate`` the review is malformed
      instead (no score, a score of [7], or "4/5" without brackets), so the unparseable path is exercised.

    ``params.max_new_tokens`` counts whitespace-separated words: a longer answer is cut there with
    ``finish_reason="length"``. ``delay_s`` sleeps that long per sample, to make a demo or a kill test
    slow enough to watch; it changes nothing else.
    """

    def __init__(self, name: str, error_rate: float = 0.2, style: str = "canonical", seed: int = 0, *,
                 error_kinds: tuple[str, ...] = ERROR_KINDS, delay_s: float = 0.0, review_noise: float = 0.1,
                 malformed_review_rate: float = 0.0) -> None:
        if not name:
            raise ValueError("a teacher needs a name")
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError(f"teacher error_rate must be in [0, 1], got {error_rate}")
        if style not in STYLES:
            raise ValueError(f"unknown teacher style {style!r}; choose from {', '.join(STYLES)}")
        bad = [k for k in error_kinds if k not in ERROR_KINDS]
        if bad or not error_kinds:
            raise ValueError(f"teacher error_kinds must be a non-empty subset of {list(ERROR_KINDS)}, got "
                             f"{list(error_kinds)}")
        if delay_s < 0:
            raise ValueError(f"teacher delay_s must be >= 0, got {delay_s}")
        for label, value in (("review_noise", review_noise), ("malformed_review_rate", malformed_review_rate)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"teacher {label} must be in [0, 1], got {value}")
        self.review_noise = review_noise
        self.malformed_review_rate = malformed_review_rate
        self.name = name
        self.error_rate = error_rate
        self.style = style
        self.seed = seed
        self.error_kinds = tuple(error_kinds)
        self.delay_s = delay_s
        self._stats: Counter[str] = Counter()

    def __repr__(self) -> str:
        return (f"SimulatedWorldTeacher({self.name!r}, error_rate={self.error_rate}, style={self.style!r}, "
                f"seed={self.seed})")

    def identity(self) -> dict[str, Any]:
        """What decides this teacher's answers (recorded by resumable stages)."""
        return {"name": self.name, "error_rate": self.error_rate, "style": self.style, "seed": self.seed,
                "error_kinds": list(self.error_kinds), "review_noise": self.review_noise,
                "malformed_review_rate": self.malformed_review_rate}

    @staticmethod
    def request_kind(messages: Messages) -> tuple[str, WorldProblem]:
        """What is asked (solve, rationale, explanation, review), and of which world problem (read from the
        last user message)."""
        from mentor.feedback.committee import request_kind

        text = _last_user(messages)
        problem = parse_question(text)
        if problem is None:
            raise ValueError(f"the simulated world teacher found no world question in the request "
                             f"{text[:120]!r}; it answers world problems only")
        return request_kind(text), problem

    def chat(self, messages_list: list[Messages], params: SamplingParams) -> list[list[Sample]]:
        out = []
        for messages in messages_list:
            kind, problem = self.request_kind(messages)
            text_in = _last_user(messages) if kind in ("explanation", "explanation_review", "review") else ""
            # a rationale is a solve (same key: the same answers); the other kinds also depend on the text asked about
            key = json.dumps(["solve", problem.to_meta()] if kind in ("solve", "rationale")
                             else [kind, problem.to_meta(), text_in], sort_keys=True)
            row = []
            for j in range(params.n):
                index = 0 if params.temperature == 0 else j
                rng = random.Random(f"{self.seed}/{params.seed}/{key}/{index}")
                if kind == "explanation":
                    text = self.explain(problem, text_in, rng)
                elif kind == "review":
                    text = self.review(problem, text_in, rng)
                elif kind == "explanation_review":
                    text = self.review_explanation(problem, text_in, rng)
                else:
                    text = self.solve(problem, rng)
                row.append(_cut(text, params.max_new_tokens))
                self._stats["requests"] += 1
                if self.delay_s:
                    time.sleep(self.delay_s)
            out.append(row)
        return out

    def solve(self, problem: WorldProblem, rng: random.Random) -> str:
        """One solution of ``problem``: right, or with one injected error, in the teacher's style."""
        if rng.random() < self.error_rate:
            kind = rng.choice(self.error_kinds)
            trace = corrupt_trace(problem, rng, kind, rng.randint(1, len(problem.defs)))
            return trace if self.style == "canonical" else restyle(trace, rng.randrange(2))
        if self.style == "canonical":
            return canonical_solution(problem)
        return alternative_solution(problem, rng)

    def explain(self, problem: WorldProblem, request: str, rng: random.Random) -> str:
        """An explanation of the student's answer quoted in ``request``: the exact critique, or (with
        probability ``error_rate``) one that blames another step."""
        from mentor.feedback.committee import extract_section
        from mentor.tasks.world_critic import corrected_solution, critique

        feedback = critique(_as_problem(problem), extract_section(request, "Student answer") or "")
        trace = corrected_solution(feedback)
        if rng.random() < self.error_rate:  # a wrong explanation: it blames a step that is not the first wrong one
            steps = [k for k in range(1, len(problem.defs) + 1) if k != feedback.first_error_step]
            if not steps:
                return "All steps are correct.\n" + trace
            return f"Step {rng.choice(steps)} is wrong; it is fixed below and the rest is recomputed.\n{trace}"
        if feedback.case == "correct":
            return feedback.critique
        return f"The answer is wrong. {feedback.critique}"

    def review(self, problem: WorldProblem, request: str, rng: random.Random) -> str:
        """A review of the rationale quoted in ``request``, ending with its score in brackets."""
        from mentor.feedback.committee import extract_section
        from mentor.tasks.world_critic import critique

        if rng.random() < self.malformed_review_rate:
            return rng.choice(["The rationale looks reasonable to me.", "Every step checks out. Score: [7]",
                               "I would rate this rationale 4/5."])
        rationale = extract_section(request, "Rationale to review") or ""  # the critic reads every wording
        feedback = critique(_as_problem(problem), rationale)
        if feedback.case == "correct":
            score, verdict = 5, "Every step is correct and the final answer matches."
        elif feedback.case == "missing_step":
            score, verdict = 3, f"Step {feedback.first_error_step} is missing."
        elif feedback.case == "incomplete":
            score, verdict = 2, "The solution stops before the answer."
        else:
            first = feedback.first_error_step or 1
            score, verdict = (1 if first == 1 else 2), f"Step {first} is wrong."
        if rng.random() < self.review_noise:
            score = min(5, max(1, score + rng.choice((-1, 1))))
        return f"{verdict} Score: [{score}]"

    def review_explanation(self, problem: WorldProblem, request: str, rng: random.Random) -> str:
        """A review of another teacher's explanation of a student's answer: 5 when it blames the step the
        exact critic finds first wrong (or calls a correct answer correct), 1 otherwise; noise and
        malformed reviews as in :meth:`review`."""
        from mentor.feedback.committee import extract_section
        from mentor.tasks.world_critic import critique

        if rng.random() < self.malformed_review_rate:
            return rng.choice(["A fine explanation.", "Spot on. Score: [9]", "I'd give it 5/5."])
        feedback = critique(_as_problem(problem), extract_section(request, "Student answer") or "")
        explanation = extract_section(request, "Explanation to review") or ""
        blamed = re.search(r"Step (\d+) is (?:wrong|missing)", explanation)
        if feedback.case == "correct":
            right = blamed is None and "All steps are correct" in explanation
        elif feedback.case == "incomplete" or "final answer is wrong" in feedback.critique:
            right = blamed is None and ("incomplete" in explanation or "final answer is wrong" in explanation)
        else:
            right = blamed is not None and int(blamed.group(1)) == feedback.first_error_step
        score = 5 if right else 1
        if rng.random() < self.review_noise:
            score = min(5, max(1, score + rng.choice((-1, 1))))
        verdict = "It names the first wrong step." if right else "It does not name the first wrong step."
        return f"{verdict} Score: [{score}]"

    def stats(self) -> dict[str, int]:
        return dict(self._stats)

    def close(self) -> None:
        pass


def _last_user(messages: Messages) -> str:
    users = [m for m in messages if m.get("role") == "user"]
    return str(users[-1]["content"]) if users else ""


def _as_problem(problem: WorldProblem):
    from mentor.records import Problem
    from mentor.tasks.world import question_text

    return Problem(id="request", question=question_text(problem), answer=str(problem.answer),
                   meta=problem.to_meta())


def restyle(trace: str, style: int) -> str:
    """A canonical-notation trace reworded in one of the alternative wordings (steps it cannot read are
    kept as they are; the answer line is kept)."""
    steps, answer = parse_trace(trace)
    bodies = [
        alternative_step(s.name, s.left, s.op, s.right, s.x, s.y, s.integer, s.result, style) if s.parsed else s.body
        for s in steps
    ]
    return format_trace(bodies, answer)


def _cut(text: str, max_words: int) -> Sample:
    """The text, or its first ``max_words`` words (spacing kept) with finish_reason "length"."""
    words = list(re.finditer(r"\S+", text))
    if len(words) <= max_words:
        return Sample(text, [], [], "stop")
    return Sample(text[: words[max_words - 1].end()], [], [], "length")


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
    error_kinds: tuple[str, ...] = ERROR_KINDS
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
        if self.kind == "simulated":  # check the options now, not after the problems are loaded
            SimulatedWorldTeacher("check", self.error_rate, self.style, self.seed, error_kinds=self.error_kinds,
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
            raise ValueError(f"{where}.{name}: unknown config key {unknown[0]!r}")
        out.append(TeacherConfig(**{**checked_values(TeacherConfig, values, f"{where}.{name}."), "name": name}))
    return out


def build_teacher(config: TeacherConfig, cache_dir: str | Path | None = None,
                  load_model: Callable[[str], tuple[Any, Any]] | None = None) -> Teacher:
    """The teacher a config describes; an openai teacher caches its requests in ``cache_dir/teacher_cache.sqlite``."""
    name = config.display_name()
    if config.kind == "simulated":
        return SimulatedWorldTeacher(name, config.error_rate, config.style, config.seed,
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
