"""How the world's base solver goes wrong: a few controlled habits, the kind feedback can correct.

The solver knows its facts (every sum and difference, every value on the page); it fails through habits:

- ``swap``: a misconception. For ``x - y`` with ``x < y`` it subtracts the smaller from the larger and
  writes ``y - x`` (``d is a - b with a = 4 and b = 7, 7 - 4 = 3 so d = 3``, not ``4 - 7 = -3 so d = 10``),
  with probability ``swap``;
- ``slip``: a result off by one, with probability ``slip`` at each step;
- ``skip``: the k-th step (never the last) is left out with probability ``skip * k`` (at most one a
  trace), and a later step takes the skipped variable to equal its first operand;
- ``truncate``: the solver stops before its k-th step (k >= 2), with no answer, with probability
  ``truncate * (k - 1)``;
- ``reword``: not an error: with probability ``reword`` a step is written in one of the two wordings of
  reference derivations (:func:`mentor.world.problems.alternative_step`) instead of the canonical one, as a
  model that has read other people's solutions sometimes words a step their way.

Skips and stops grow with the step's place in the chain: the further in, the likelier the solver loses its
thread, so a longer problem is harder at every step and the share of fully correct traces falls faster than
a constant rate per step would make it (the world's difficulty dial: about 58% at 2 steps, 7% at 6).
After an error the solver goes on consistently with what is on its page (later steps use the wrong
value), as a model does. With every step on the answer's path (``WorldConfig.sensitive``) one error
always changes the answer, except a skip whose other operand is 0.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from mentor.world.problems import OPS, WorldProblem, alternative_step, format_step, format_trace

HABITS = ("swap", "slip", "skip", "truncate", "reword")


@dataclass
class Habits:
    """Rates of the base solver's error habits (see the module docstring)."""

    swap: float = 0.8  # P(y - x for x - y | x < y): the misconception
    slip: float = 0.02  # P(result off by one) per step
    skip: float = 0.03  # P(the k-th step left out) = skip * k, for every step but the last
    truncate: float = 0.05  # P(stops before the k-th step, no answer) = truncate * (k - 1)
    reword: float = 0.25  # P(a step in a reference wording) per step; not an error

    def __post_init__(self) -> None:
        for name in HABITS:
            value = float(getattr(self, name))
            if not 0.0 <= value <= 1.0:  # skip and truncate grow with the step's place (capped at 1)
                raise ValueError(f"habit {name} must be in [0, 1], got {value}")
            setattr(self, name, value)


def habit_trace(wp: WorldProblem, habits: Habits, rng: random.Random,
                forced: tuple[str, int] | None = None, skipped_value: str = "first_operand") -> str:
    """A trace of ``wp`` as the solver with ``habits`` writes it.

    ``forced=(habit, step)`` instead makes exactly that one error at 0-based ``step`` (when the step
    allows it: ``swap`` needs ``x - y`` with ``x < y``; ``reword`` is not an error and still applies at
    its rate) and no other; ``skipped_value="correct"`` makes
    later steps use the skipped variable's right value (how a reader who knows it would go on).
    """
    n = len(wp.defs)
    m = wp.modulus
    if forced is None:
        skip_at = next((i for i in range(n - 1) if rng.random() < habits.skip * (i + 1)), None)
        stop_at = next((i for i in range(1, n) if rng.random() < habits.truncate * i), None)
    else:
        kind, step = forced
        if kind not in HABITS or kind == "reword" or not 0 <= step < n:
            raise ValueError(f"cannot force habit {kind!r} at step {step} of {n}")
        skip_at = step if kind == "skip" and step < n - 1 else None
        stop_at = step if kind == "truncate" else None
    values = dict(wp.inputs)
    bodies = []
    for i, (name, left, op, right) in enumerate(wp.defs):
        if i == stop_at:
            return format_trace(bodies, None)
        x, y = values[left], values[right]
        if i == skip_at:
            values[name] = x if skipped_value == "first_operand" else wp.values[name]
            continue
        if forced is None:
            swap = op == "-" and x < y and rng.random() < habits.swap
            slip = rng.random() < habits.slip
        else:
            swap = forced == ("swap", i) and op == "-" and x < y
            slip = forced == ("slip", i)
        written = (y, x) if swap else (x, y)
        integer = OPS[op](*written)
        if slip:
            integer += rng.choice((-1, 1))
        values[name] = integer % m
        if rng.random() < habits.reword:
            bodies.append(alternative_step(name, left, op, right, x, y, integer, values[name], rng.randrange(2), written))
        else:
            bodies.append(format_step(name, left, op, right, x, y, integer, m, written))
    return format_trace(bodies, None if stop_at == n else values[wp.target])


def swap_steps(wp: WorldProblem) -> list[int]:
    """0-based steps at which the misconception can strike on a correct page (``x - y`` with ``x < y``)."""
    return [i for i, (name, left, op, right) in enumerate(wp.defs)
            if op == "-" and wp.values[left] < wp.values[right]]


def first_departure(text: str, reference: str) -> int | None:
    """The end (character offset in ``text``) of the first whitespace-separated word of ``text`` that
    differs from ``reference``'s word at the same place; None when ``text`` never departs (it is equal
    to, or a prefix of, ``reference``)."""
    words, ref_words = text.split(), reference.split()
    position = 0
    for i, word in enumerate(words):
        start = text.index(word, position)
        position = start + len(word)
        if i >= len(ref_words) or word != ref_words[i]:
            return position
    return None
