"""A critic written in Python, plugged in from the command line: ``critic.kind=function
critic.function=my_package.critics:check`` (a module and a function in it), or ``critic.function=NAME`` for
a function a package registers under the ``mentor.critics`` entry-point group.

The function takes ``(problem, completion)`` and returns a :class:`~mentor.records.Feedback` (its
``critique`` is the self-teacher's context, ``corrected`` the corrected solution where it writes one), or
None where it has nothing to say (the rollout then gets no teacher signal, as with an unusable critique).
"""

from __future__ import annotations

import importlib
from collections import Counter
from collections.abc import Callable
from importlib.metadata import entry_points

from mentor.records import Feedback, Problem

ENTRY_POINT_GROUP = "mentor.critics"

CriticFunction = Callable[[Problem, str], "Feedback | None"]


def load_critic_function(spec: str) -> CriticFunction:
    """The function ``module:function`` names, or the one registered as ``spec`` in ``mentor.critics``."""
    if ":" in spec:
        module_name, _, attribute = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise ValueError(f"critic.function {spec!r}: cannot import {module_name!r} ({err})") from None
        function = getattr(module, attribute, None)
        if function is None:
            raise ValueError(f"critic.function {spec!r}: module {module_name!r} has no {attribute!r}")
    else:
        found = {point.name: point for point in entry_points(group=ENTRY_POINT_GROUP)}
        if spec not in found:
            registered = ", ".join(sorted(found)) or "none"
            raise ValueError(f"critic.function {spec!r} is not 'module:function' nor a registered critic "
                             f"(entry points in {ENTRY_POINT_GROUP!r}: {registered})")
        function = found[spec].load()
    if not callable(function):
        raise ValueError(f"critic.function {spec!r} is not a function")
    return function


class TraceByTraceCritic:
    """``critique_many(problems, traces)`` from :meth:`feedback_on` one trace at a time (None: nothing to
    say, an ``unusable`` Feedback), with ``stats`` counting the cases."""

    name = "critic"

    def __init__(self) -> None:
        self.stats: Counter[str] = Counter()

    def feedback_on(self, problem: Problem, trace: str) -> Feedback | None:
        raise NotImplementedError

    def critique(self, problem: Problem, trace: str) -> Feedback:
        feedback = self.feedback_on(problem, trace)
        if feedback is None:
            feedback = Feedback(problem_id=problem.id, critique="", case="unusable", author=self.name)
        elif not isinstance(feedback, Feedback):
            raise TypeError(f"critic {self.name!r} returned {type(feedback).__name__}, not a Feedback or None")
        self.stats[feedback.case] += 1
        return feedback

    def critique_many(self, problems: list[Problem], traces: list[str]) -> list[Feedback]:
        if len(problems) != len(traces):
            raise ValueError(f"{len(problems)} problems but {len(traces)} traces")
        return [self.critique(p, t) for p, t in zip(problems, traces)]


class FunctionCritic(TraceByTraceCritic):
    """``critique_many(problems, traces)`` from a function of one (problem, completion)."""

    def __init__(self, function: CriticFunction, name: str = "") -> None:
        super().__init__()
        self.function, self.name = function, name or getattr(function, "__name__", "critic")

    def feedback_on(self, problem: Problem, trace: str) -> Feedback | None:
        return self.function(problem, trace)
