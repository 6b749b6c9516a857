"""reasoning-gym generators as a mentor Task, scored by reasoning-gym's own answer checkers."""

from __future__ import annotations

import difflib
import hashlib
import json
from typing import Any

from mentor.records import Problem, Verdict
from mentor.tasks.base import Task

# reasoning-gym seeds item ``i`` with ``Random(seed + i)``, so the seeds of two splits must lie far apart or
# the splits would share items. Split seeds are hashed into [0, 2**31) (some generators pass the seed on to
# numpy, which wants 32 bits): two splits of 10,000 items overlap with a probability of about 1e-5.
_SEED_RANGE = 2**31 - 2**24


def generator_names() -> list[str]:
    """The names of every registered reasoning-gym generator."""
    from reasoning_gym.factory import DATASETS

    return sorted(DATASETS)


def split_seed(name: str, split: str, seed: int) -> int:
    """The reasoning-gym seed of one split: a stable hash, so train, validation and test do not overlap."""
    digest = hashlib.sha256(f"{name}\0{split}\0{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % _SEED_RANGE


def _json_exact(entry: dict) -> bool:
    """True when the entry survives a JSON round trip unchanged (tuples, sets and objects do not)."""
    try:
        return json.loads(json.dumps(entry, allow_nan=False)) == entry
    except (TypeError, ValueError):
        return False


class GymTask(Task):
    """Problems from one reasoning-gym generator, e.g. ``GymTask("basic_arithmetic", max_terms=3)``
    (``gym:basic_arithmetic:max_terms=3`` on the command line).

    ``config`` goes to the generator's config dataclass (its size and difficulty settings). ``problems(split, n, seed)`` generates items
    ``0..n-1`` (``n`` defaults to ``size``) from :func:`split_seed` of the split, so any split name works
    and splits do not share items; ids are ``<name>-<split>-<seed>-<index>``.

    ``Problem.meta`` holds what the scorer needs: the generator, seed, size and index, plus the whole entry
    when it is plain JSON. Entries whose metadata holds tuples or other objects (most, since reasoning-gym
    records difficulty ranges as tuples) are regenerated from (name, seed, index) at verify time instead.

    :meth:`verify` scores, with the generator's own ``score_answer``, the answer that
    ``mentor.verify.extract_answer`` finds behind an answer marker (boxed, ``Answer:``, ``<answer>``...).
    Only with ``fallback=True`` does a completion without a marker count, by the better of its whole
    stripped text and its last number: a small model's cut-off ramble then scores by luck, which the
    evaluation's ``fallback_rate`` shows. ``reward`` is that score (it
    can be partial), ``correct`` means a score of at least 1.0, and ``reason`` is ``ok``, ``wrong``,
    ``no_answer`` (no marker, no number, and the whole completion did not score 1) or ``unparseable`` (the
    scorer raised on every candidate).
    """

    def __init__(self, name: str, *, size: int = 500, fallback: bool = False, **config: Any) -> None:
        names = generator_names()
        if name not in names:
            close = difflib.get_close_matches(name, names, n=5, cutoff=0.4) or names[:8]
            raise ValueError(
                f"unknown reasoning-gym generator {name!r}; close names: {', '.join(close)} "
                f"({len(names)} in all, see mentor.tasks.gym.generator_names())"
            )
        if not isinstance(fallback, bool):
            raise ValueError(f"gym fallback must be true or false, got {fallback!r}")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError(f"gym size must be a whole number >= 0, got {size!r}")
        self.name, self.size, self.config, self.fallback = name, size, config, fallback
        self._datasets: dict[tuple[int, int], Any] = {}
        self._dataset(split_seed(name, "test", 0), 1)  # a bad config fails here, not at the first batch

    def _dataset(self, seed: int, size: int) -> Any:
        key = (seed, size)
        if key not in self._datasets:
            import reasoning_gym

            try:
                self._datasets[key] = reasoning_gym.create_dataset(
                    self.name, size=size, seed=seed, **self.config
                )
            except (TypeError, AssertionError) as err:  # unknown config field / the config's own validate()
                raise ValueError(
                    f"reasoning-gym generator {self.name!r}: bad config {self.config}: {err}"
                ) from err
        return self._datasets[key]

    def problems(self, split: str = "test", n: int | None = None, seed: int = 0) -> list[Problem]:
        size = self.size if n is None else n
        if size < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if size == 0:
            return []
        gym_seed = split_seed(self.name, split, seed)
        dataset = self._dataset(gym_seed, size)
        return [self._problem(dataset[i], split, seed, gym_seed, size, i) for i in range(size)]

    def _problem(self, entry: dict, split: str, seed: int, gym_seed: int, size: int, index: int) -> Problem:
        if entry.get("answer") is None:
            raise ValueError(
                f"reasoning-gym generator {self.name!r} gives no gold answer (its scorer checks validity "
                "instead); mentor problems need one, so this generator cannot be used as a GymTask"
            )
        meta: dict[str, Any] = {"gym": self.name, "gym_seed": gym_seed, "gym_size": size, "gym_index": index}
        if _json_exact(entry):
            meta["entry"] = entry
        expression = entry.get("metadata", {}).get("expression")
        if isinstance(expression, str):
            meta["expression"] = expression  # the arithmetic critic's operands and the solver's input
        return Problem(
            id=f"{self.name}-{split}-{seed}-{index}",
            question=entry["question"],
            answer=str(entry["answer"]),
            solution=_reference(entry),
            source=f"reasoning_gym/{self.name}",
            meta=meta,
        )

    def _entry(self, problem: Problem) -> tuple[dict, Any]:
        """The reasoning-gym entry of a problem and the dataset that scores it."""
        meta = problem.meta
        if meta.get("gym") != self.name:
            raise ValueError(f"problem {problem.id!r} is not from reasoning-gym generator {self.name!r}")
        dataset = self._dataset(meta["gym_seed"], meta["gym_size"])
        entry = meta.get("entry") or dataset[meta["gym_index"]]
        if entry["question"] != problem.question:
            raise ValueError(
                f"problem {problem.id!r}: regenerating it gave a different question; "
                f"was it made with another config than {self.config}?"
            )
        return entry, dataset

    def verify(self, problem: Problem, completion: str) -> Verdict:
        from mentor.verify import FORMAT_KINDS, extract_answer

        entry, dataset = self._entry(problem)
        extracted, kind = extract_answer(completion)
        marked = kind in FORMAT_KINDS
        # Without an answer marker, a bare final answer ("mother-in-law", a grid) is the whole completion,
        # and a numeric one after some working is its last number: both are scored and the better counts.
        if marked:
            candidates = [extracted]
        elif self.fallback:
            candidates = list(dict.fromkeys(c for c in (completion.strip(), extracted) if c))
        else:
            candidates = []
        best, score = None, 0.0
        for candidate in candidates:
            try:
                value = float(dataset.score_answer(answer=candidate, entry=entry))
            except Exception:  # a scorer choking on odd model output is a wrong answer, not a crashed run
                continue
            if best is None or value > score:
                best, score = candidate, value
        correct = score >= 1.0
        if correct:
            reason = "ok"
        elif best is None and candidates:
            reason = "unparseable"
        else:
            reason = "no_answer" if kind == "none" or not candidates else "wrong"
        return Verdict(
            reward=score,
            correct=correct,
            extracted=None if reason == "no_answer" else best,
            format_ok=marked,
            reason=reason,
            components={"gym_score": score},
        )

    def critique(self, problem: Problem, completion: str):
        """The arithmetic step critic's critique (:mod:`mentor.feedback.arithmetic_critic`) where the gold
        answer is a number; None (no critic) where it is not."""
        from mentor.feedback.arithmetic import as_number
        from mentor.feedback.arithmetic_critic import ArithmeticCritic

        if as_number(problem.answer) is None:
            return None
        return ArithmeticCritic(self.verify).critique(problem, completion)


def _reference(entry: dict) -> str | None:
    """A reference solution: the generator's own worked solution (gsm_symbolic's ``answer_cot``), else one
    mentor's solver writes for an arithmetic expression (chain_sum, basic_arithmetic), else None."""
    from mentor.feedback.arithmetic import ExpressionError
    from mentor.feedback.arithmetic_critic import answer_line, reference_solution

    metadata = entry.get("metadata") or {}
    worked = metadata.get("answer_cot")
    if isinstance(worked, str) and worked.strip():
        return f"{worked.strip()}\n{answer_line(str(entry['answer']))}"
    expression = metadata.get("expression")
    if isinstance(expression, str):
        try:
            solution = reference_solution(expression)
        except ExpressionError:
            return None
        return solution if solution.endswith(answer_line(str(entry["answer"]))) else None  # a solver's slip
    return None
