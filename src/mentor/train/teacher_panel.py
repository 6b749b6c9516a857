"""Several separate teachers (issue 22, part 3): each training prompt is routed to one of them by a field of
its problem (``teacher_route``: ``source``, ``id`` or ``meta.KEY``, mapped to a teacher's name by
``teacher_routes``), or every rollout is scored by a mixture of their distributions (``teacher_mix``: each
teacher's weight). Every teacher must share the student's tokenizer (:mod:`.separate_teacher`).

Routing runs each teacher on its own rows, through the same loss path as one teacher, and the loss is the
mean over every routed token. A mixture scores with ``log(sum_i w_i p_i)`` (the weights normalised), which
needs the teachers' logits: it runs the logits path, never the fused one.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch

from mentor.records import Problem
from mentor.train.separate_teacher import FrozenTeacher


def route_value(problem: Problem, field: str) -> str | None:
    """The value of ``field`` (``source``, ``id``, ``answer`` or ``meta.KEY``) for a problem, as text."""
    if field.startswith("meta."):
        value = (problem.meta or {}).get(field[len("meta."):])
    elif field in ("source", "id", "answer"):
        value = getattr(problem, field)
    else:
        raise ValueError(f"teacher_route must be source, id, answer or meta.KEY, got {field!r}")
    return None if value is None else str(value)


class TeacherPanel(FrozenTeacher):
    """Teachers by name, routed by a problem field or mixed with weights; the teacher interface of
    :class:`~mentor.train.teacher.SelfTeacher` with a key per group of rows."""

    kind = "panel"

    def __init__(self, models: dict, *, route: str = "", routes: dict[str, str] | None = None,
                 mix: dict[str, float] | None = None) -> None:
        if bool(route) == bool(mix):
            raise ValueError("several teachers need exactly one of teacher_route (route each prompt to one) and "
                             "teacher_mix (weights of a mixture)")
        self.models, self.route, self.routes = models, route, dict(routes or {})
        total = sum((mix or {}).values())
        self.mix = {name: weight / total for name, weight in (mix or {}).items()} if mix else {}

    @property
    def mixes(self) -> bool:
        return bool(self.mix)

    def groups(self, rows: list, asked: list[int]) -> dict[str | None, list[int]]:
        """The rows each teacher scores (a mixture: every asked row, under the key None); a row whose value has
        no teacher gets none (its key is absent)."""
        if self.mixes:
            return {None: list(asked)}
        out: dict[str | None, list[int]] = {}
        for i in asked:
            value = route_value(rows[i].problem, self.route)
            name = self.routes.get(value, value) if value is not None else None
            if name in self.models:
                out.setdefault(name, []).append(i)
        return out

    @contextlib.contextmanager
    def scoring(self, student, key: str | None = None) -> Iterator:
        """The routed teacher ``key``; a mixture (key None) scores through :meth:`mixture_logits`."""
        yield None if key is None else self.models[key]

    def mixture_logits(self, prompts: list, completions: list, temperature: float) -> torch.Tensor:
        """``log sum_i w_i softmax(logits_i / T)`` over the completions: the mixture as log-probabilities."""
        from mentor.train.completions import completion_logits

        mixture = None  # summed one teacher at a time: one B x T x V tensor beside the one being added
        for name, weight in self.mix.items():
            logits_BTV = completion_logits(self.models[name], prompts, completions)[0]
            part = torch.log_softmax(logits_BTV.float() / temperature, dim=-1) + math.log(weight)
            mixture = part if mixture is None else torch.logaddexp(mixture, part)
        return mixture
