"""The model organism: procedurally generated multi-step clock-arithmetic problems.

A problem defines a few input variables and then derived variables, each from two earlier ones with
one operation, all modulo a small number; the question asks for the last one. Example (mod 10)::

    Work modulo 10. Let a = 7, b = 4, c = 3. Then d is a + b, e is c - a, f is d - e. What is f?

The canonical, step-tagged solution computes the derived variables in order, one step each, naming the
operands' values before it uses them, then the result as an integer, then reduced::

    <step_1> d is a + b with a = 7 and b = 4, 7 + 4 = 11 so d = 1
    <step_2> e is c - a with c = 3 and a = 7, 3 - 7 = -4 so e = 6
    <step_3> f is d - e with d = 1 and e = 6, 1 - 6 = -5 so f = 5
    <answer> 5

(Writing ``x = value`` for every value that is used and never ``x = expression`` means a value is always
found the same way, and writing the integer before its reduction lets a tiny transformer learn the
arithmetic in minutes: integer sums are learned fast, a modular table from scratch is not.) Reference
derivations reach the same answer by the same steps in one of two other wordings (:func:`alternative_step`).
Because the whole problem is known, an exact step critic (``world_critic``) can check every step.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import string
from dataclasses import asdict, dataclass, field

from mentor.records import Problem, Verdict
from mentor.tasks.base import Task

OPS = {"+": lambda x, y: x + y, "-": lambda x, y: x - y, "*": lambda x, y: x * y}
STEP_RE = re.compile(r"<step_(\d+)>")
ANSWER_RE = re.compile(r"<answer>\s*(\S*)")
CANONICAL_STEP_RE = re.compile(
    r"^(?P<name>[a-z]) is (?P<left>[a-z]) (?P<op>[-+*]) (?P<right>[a-z]) "
    r"with (?P<left2>[a-z]) = (?P<lv>-?\d+) and (?P<right2>[a-z]) = (?P<rv>-?\d+), "
    r"(?P<x>-?\d+) (?P<op2>[-+*]) (?P<y>-?\d+) = (?P<zi>-?\d+) so (?P<name2>[a-z]) = (?P<z>-?\d+)$"
)
SPLITS = ("train", "validation", "test")


Count = int | tuple[int, int]  # one number, or an inclusive range [lo, hi] drawn uniformly per problem


def count_range(value: Count, what: str) -> tuple[int, int]:
    """``(lo, hi)`` of a count given as one number or as a pair (a list from YAML, ``2-6`` from a spec)."""
    if isinstance(value, str) and re.fullmatch(r"\d+-\d+", value.strip()):
        value = tuple(int(v) for v in value.split("-"))
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        lo, hi = value
    elif isinstance(value, int) and not isinstance(value, bool):
        lo = hi = value
    else:
        raise ValueError(f"world {what} must be a number or a range [lo, hi] (e.g. 2-6), got {value!r}")
    if lo > hi:
        raise ValueError(f"world {what} range {lo}-{hi} is empty")
    return lo, hi


def _compact(lo: int, hi: int) -> Count:
    return lo if lo == hi else (lo, hi)


@dataclass
class WorldConfig:
    """Difficulty of the world: how many derived steps and inputs (each a number or a range drawn per
    problem), the modulus and the operations."""

    steps: Count = 4
    inputs: Count = (2, 4)
    modulus: int = 31  # prime, and no `*`: every answer is about equally likely (a guess is right 1 in 31)
    ops: tuple[str, ...] = ("+", "-")
    chain_prob: float = 0.6  # how often a step builds on the previous step's variable
    sensitive: bool = True  # every derived step changes the answer when its value changes (no dead steps)

    def __post_init__(self) -> None:
        self.ops = tuple(self.ops)
        steps, inputs = count_range(self.steps, "steps"), count_range(self.inputs, "inputs")
        self.steps, self.inputs = _compact(*steps), _compact(*inputs)
        if not 1 <= steps[0] <= steps[1] <= 16:
            raise ValueError(f"world steps must be in 1..16, got {self.steps}")
        if not 1 <= inputs[0] <= inputs[1] <= 6 or inputs[1] + steps[1] > 26:
            raise ValueError(f"world inputs must be in 1..6 with inputs + steps <= 26, got {self.inputs}")
        if not 2 <= self.modulus <= 100:
            raise ValueError(f"world modulus must be in 2..100, got {self.modulus}")
        bad = [op for op in self.ops if op not in OPS]
        if bad or not self.ops:
            raise ValueError(f"world ops must be a non-empty subset of {list(OPS)}, got {list(self.ops)}")
        if not 0.0 <= self.chain_prob <= 1.0:
            raise ValueError(f"world chain_prob must be in [0, 1], got {self.chain_prob}")

    @property
    def steps_range(self) -> tuple[int, int]:
        return count_range(self.steps, "steps")

    @property
    def inputs_range(self) -> tuple[int, int]:
        return count_range(self.inputs, "inputs")


@dataclass
class WorldProblem:
    """The structured form of a world problem (stored in ``Problem.meta``)."""

    modulus: int
    inputs: dict[str, int]
    defs: list[tuple[str, str, str, str]]  # (name, left, op, right)
    values: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.defs = [tuple(d) for d in self.defs]
        if not self.values:
            self.values = dict(self.inputs)
            for name, left, op, right in self.defs:
                self.values[name] = self.apply(op, self.values[left], self.values[right])

    @property
    def target(self) -> str:
        return self.defs[-1][0]

    @property
    def answer(self) -> int:
        return self.values[self.target]

    def apply(self, op: str, x: int, y: int) -> int:
        return OPS[op](x, y) % self.modulus

    def definition(self, name: str) -> tuple[str, str, str, str] | None:
        return next((d for d in self.defs if d[0] == name), None)

    def to_meta(self) -> dict:
        return {"modulus": self.modulus, "inputs": self.inputs, "defs": [list(d) for d in self.defs]}

    @classmethod
    def from_meta(cls, meta: dict) -> WorldProblem:
        try:
            return cls(int(meta["modulus"]), dict(meta["inputs"]), [tuple(d) for d in meta["defs"]])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"not a world problem (meta lacks modulus/inputs/defs): {err}") from None


def _answer_with(wp: WorldProblem, name: str) -> int:
    """The answer when ``name``'s value is one more than it is, everything after it recomputed."""
    values = dict(wp.values)
    values[name] = (values[name] + 1) % wp.modulus
    start = 0 if name in wp.inputs else next(i for i, d in enumerate(wp.defs) if d[0] == name) + 1
    for later, left, op, right in wp.defs[start:]:
        values[later] = wp.apply(op, values[left], values[right])
    return values[wp.target]


def answer_depends_on_every_step(wp: WorldProblem) -> bool:
    """Whether a wrong value (off by one) at any derived step, or at any input a step uses, changes the
    answer: no step is dead or cancels out, so a trace with one wrong step never reaches the right answer
    by luck, and the answer is no constant (``d = a + b, e = d - a, f = e - b`` is always 0)."""
    used = {operand for _, left, _, right in wp.defs for operand in (left, right) if operand in wp.inputs}
    names = [name for name in wp.inputs if name in used] + [d[0] for d in wp.defs[:-1]]
    return all(_answer_with(wp, name) != wp.answer for name in names)


def generate(config: WorldConfig, rng: random.Random, max_tries: int = 200) -> WorldProblem:
    """A random problem; with ``config.sensitive`` one on which the answer depends on every derived step
    (drawn again up to ``max_tries`` times; tiny moduli such as 2 may not allow it, and keep the last)."""
    for _ in range(max_tries):
        wp = _draw(config, rng)
        if not config.sensitive or answer_depends_on_every_step(wp):
            break
    return wp


def _draw(config: WorldConfig, rng: random.Random) -> WorldProblem:
    names = string.ascii_lowercase
    n_inputs, n_steps = rng.randint(*config.inputs_range), rng.randint(*config.steps_range)
    inputs = {names[i]: rng.randrange(config.modulus) for i in range(n_inputs)}
    defined = list(inputs)
    defs = []
    for i in range(n_steps):
        name = names[n_inputs + i]
        if i > 0 and rng.random() < config.chain_prob:
            pair = [defined[-1], rng.choice(defined[:-1])]
            rng.shuffle(pair)
        else:
            pair = rng.sample(defined, 2) if len(defined) > 1 else [defined[0], defined[0]]
        defs.append((name, pair[0], rng.choice(config.ops), pair[1]))
        defined.append(name)
    return WorldProblem(config.modulus, inputs, defs)


def question_text(wp: WorldProblem) -> str:
    given = ", ".join(f"{k} = {v}" for k, v in wp.inputs.items())
    derived = ", ".join(f"{n} is {a} {op} {b}" for n, a, op, b in wp.defs)
    return f"Work modulo {wp.modulus}. Let {given}. Then {derived}. What is {wp.target}?"


_QUESTION_RE = re.compile(
    r"Work modulo (?P<m>\d+)\. Let (?P<given>[a-z] = \d+(?:, [a-z] = \d+)*)\. "
    r"Then (?P<derived>[a-z] is [a-z] [-+*] [a-z](?:, [a-z] is [a-z] [-+*] [a-z])*)\. What is (?P<target>[a-z])\?"
)


def parse_question(text: str) -> WorldProblem | None:
    """The world problem stated in ``text`` (the inverse of :func:`question_text`, found anywhere in the
    text, e.g. inside a longer prompt); None when the text states none, or one that is inconsistent."""
    match = _QUESTION_RE.search(text)
    if match is None:
        return None
    inputs = {}
    for item in match["given"].split(", "):
        name, value = item.split(" = ")
        inputs[name] = int(value)
    defs = [tuple(item.replace(" is ", " ").split(" ")) for item in match["derived"].split(", ")]
    known = set(inputs)
    for name, left, _, right in defs:
        if name in known or not {left, right} <= known:
            return None
        known.add(name)
    if defs[-1][0] != match["target"] or int(match["m"]) < 2:
        return None
    return WorldProblem(int(match["m"]), inputs, defs)


def format_step(name: str, left: str, op: str, right: str, x: int, y: int, integer: int, modulus: int,
                written: tuple[int, int] | None = None) -> str:
    """A step body in the canonical notation: ``x``, ``y`` the operands' values, ``integer`` the result
    before reduction (the name is assigned ``integer % modulus``), ``written`` the operands as the
    arithmetic writes them when they differ (e.g. swapped)."""
    a, b = written or (x, y)
    return (f"{name} is {left} {op} {right} with {left} = {x} and {right} = {y}, {a} {op} {b} = {integer} "
            f"so {name} = {integer % modulus}")


def step_body(wp: WorldProblem, name: str) -> str:
    """The canonical, correct body of the step that computes ``name``."""
    _, left, op, right = wp.definition(name)
    x, y = wp.values[left], wp.values[right]
    return format_step(name, left, op, right, x, y, OPS[op](x, y), wp.modulus)


def format_trace(bodies: list[str], answer: str | int | None) -> str:
    lines = [f"<step_{i}> {body}" for i, body in enumerate(bodies, start=1)]
    if answer is not None:
        lines.append(f"<answer> {answer}")
    return "\n".join(lines)


def canonical_solution(wp: WorldProblem) -> str:
    return format_trace([step_body(wp, d[0]) for d in wp.defs], wp.answer)


def alternative_step(name: str, left: str, op: str, right: str, x: int, y: int, integer: int, z: int,
                     style: int, written: tuple[int, int] | None = None) -> str:
    """A step body in one of the two alternative wordings (``style`` 0 or 1) of reference derivations
    (``integer`` the result before reduction, ``z`` after, ``written`` the operands as the arithmetic
    writes them when they differ from the looked-up ``x``, ``y``). Like the canonical wording, both name
    the definition and look up the operands' values before using them: only the words differ."""
    a, b = written or (x, y)
    if style == 0:
        return f"{name} = {left} {op} {right} where {left} is {x} and {right} is {y}; {a} {op} {b} gives {integer}, hence {name} = {z}"
    return f"for {name} take {left} {op} {right}, {left} being {x} and {right} being {y}: {a} {op} {b} makes {integer}, reduced {name} = {z}"


def _alternative_body(wp: WorldProblem, name: str, style: int) -> str:
    _, left, op, right = wp.definition(name)
    x, y = wp.values[left], wp.values[right]
    return alternative_step(name, left, op, right, x, y, OPS[op](x, y), wp.values[name], style)


def alternative_solution(wp: WorldProblem, rng: random.Random) -> str:
    """A reference derivation with the same answer and steps, in the canonical order and one of the two
    alternative wordings: what a reference written by someone else looks like to the student (the same
    facts said in other words). World 4 also reordered the steps; its student learned invalid orders."""
    style = rng.randrange(2)
    return format_trace([_alternative_body(wp, d[0], style) for d in wp.defs], wp.answer)


@dataclass
class ParsedStep:
    label: int
    body: str
    name: str | None = None
    left: str | None = None
    op: str | None = None
    right: str | None = None
    x: int | None = None
    y: int | None = None
    integer: int | None = None  # the result before reduction
    result: int | None = None  # the value assigned

    @property
    def parsed(self) -> bool:
        return self.name is not None


ALTERNATIVE_STEP_RES = (  # the two wordings of reference derivations (see alternative_step)
    re.compile(r"^(?P<name>[a-z]) = (?P<left>[a-z]) (?P<op>[-+*]) (?P<right>[a-z]) where (?P<left2>[a-z]) is "
               r"(?P<lv>-?\d+) and (?P<right2>[a-z]) is (?P<rv>-?\d+); (?P<x>-?\d+) (?P<op2>[-+*]) (?P<y>-?\d+) "
               r"gives (?P<zi>-?\d+), hence (?P<name2>[a-z]) = (?P<z>-?\d+)$"),
    re.compile(r"^for (?P<name>[a-z]) take (?P<left>[a-z]) (?P<op>[-+*]) (?P<right>[a-z]), (?P<left2>[a-z]) being "
               r"(?P<lv>-?\d+) and (?P<right2>[a-z]) being (?P<rv>-?\d+): (?P<x>-?\d+) (?P<op2>[-+*]) "
               r"(?P<y>-?\d+) makes (?P<zi>-?\d+), reduced (?P<name2>[a-z]) = (?P<z>-?\d+)$"),
)
STEP_WORDINGS = ("canonical", "reference: where/gives", "reference: take/makes")
STEP_RES = (CANONICAL_STEP_RE, *ALTERNATIVE_STEP_RES)


def match_step(body: str) -> tuple[int, re.Match] | None:
    """(wording index into ``STEP_WORDINGS``, match) of a step body in any of the world's wordings, its
    values not yet checked against each other; None when the body is in none of them."""
    for index, pattern in enumerate(STEP_RES):
        match = pattern.match(body)
        if match:
            return index, match
    return None


def names_consistent(match: re.Match) -> bool:
    """The step repeats the variables and operation it defines (``d is a - b with a = .. and b = ..``)."""
    return (match["left2"], match["right2"], match["op2"], match["name2"]) == (
        match["left"], match["right"], match["op"], match["name"])


def _read_step(step: ParsedStep) -> None:
    """Fill ``step`` from its body when the body is a step in one of the world's wordings and is
    consistent with itself (the values it looks up are the ones it uses, with the same operation and the
    same variable); leave it unread otherwise. Whether the arithmetic is right is the critic's to say."""
    found = match_step(step.body)
    if found is None:
        return
    match = found[1]
    if not names_consistent(match) or (match["x"], match["y"]) != (match["lv"], match["rv"]):
        return
    step.name, step.left, step.op, step.right = match.group("name", "left", "op", "right")
    step.x, step.y = int(match["x"]), int(match["y"])
    step.integer, step.result = int(match["zi"]), int(match["z"])


def parse_trace(text: str) -> tuple[list[ParsedStep], str | None]:
    """Split a step-tagged trace into steps and the answer (None when there is no ``<answer>`` tag)."""
    answer_match = ANSWER_RE.search(text)
    body_text = text[: answer_match.start()] if answer_match else text
    answer = answer_match.group(1).strip() if answer_match else None
    pieces = STEP_RE.split(body_text)
    steps = []
    for label, body in zip(pieces[1::2], pieces[2::2]):
        step = ParsedStep(int(label), " ".join(body.split()))
        _read_step(step)
        steps.append(step)
    return steps, answer


class WorldTask(Task):
    """The procedural world as a Task, with its exact step critic."""

    instruction = ""  # the world's model is trained on the bare question

    def __init__(self, config: WorldConfig | None = None, **overrides) -> None:
        self.config = config or WorldConfig(**overrides)
        lo, hi = self.config.steps_range
        self.name = f"world-{lo if lo == hi else f'{lo}to{hi}'}step-mod{self.config.modulus}"
        rest = {k: v for k, v in asdict(self.config).items() if k not in ("steps", "modulus")}
        if rest != {k: v for k, v in asdict(WorldConfig()).items() if k not in ("steps", "modulus")}:
            digest = hashlib.sha256(json.dumps(rest, sort_keys=True).encode()).hexdigest()[:6]
            self.name += f"-{digest}"  # problems of differently configured worlds never share ids

    def problems(self, split: str = "test", n: int | None = None, seed: int = 0) -> list[Problem]:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        n = 100 if n is None else n
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        out = []
        for i in range(n):
            # one rng per problem: problem i is the same whatever n is
            rng = random.Random(f"{self.name}/{split}/{seed}/{i}")
            wp = generate(self.config, rng)
            out.append(
                Problem(
                    id=f"{self.name}-{split}-{seed}-{i}",
                    question=question_text(wp),
                    answer=str(wp.answer),
                    solution=alternative_solution(wp, rng),
                    source=self.name,
                    # steps and n_inputs: what a problem's length is, for routing it (teacher_route=meta.steps)
                    meta={**wp.to_meta(), "steps": len(wp.defs), "n_inputs": len(wp.inputs),
                          "config": asdict(self.config)},
                )
            )
        return out

    def verify(self, problem: Problem, completion: str) -> Verdict:
        """Correct only with an ``<answer>`` line: a trace that stops early is never right by luck."""
        answer = ANSWER_RE.search(completion)
        if answer is None:
            return Verdict(0.0, False, None, False, "no_answer", {"correctness": 0.0, "format": 0.0})
        extracted = answer.group(1).strip()
        correct = extracted == problem.answer
        return Verdict(float(correct), correct, extracted, True, "ok" if correct else "wrong",
                       {"correctness": float(correct), "format": 1.0})

    def critique(self, problem: Problem, completion: str):
        from mentor.world.critic import critique

        return critique(problem, completion)

    def gold_trace(self, problem: Problem) -> str:
        """The canonical trace (the reference solution is worded differently on purpose)."""
        return canonical_solution(WorldProblem.from_meta(problem.meta))


ERROR_KINDS = ("result", "substitution", "skip", "truncate")


def corrupt_trace(wp: WorldProblem, rng: random.Random, kind: str, step: int) -> str:
    """A canonical trace with one injected error at 1-based ``step``, continued consistently after it.

    - ``result``: the step's result is wrong (before and after reduction); later steps use the wrong value
      (the answer is wrong);
    - ``substitution``: a wrong value is substituted for one operand; the result follows from it;
    - ``skip``: the step is left out, later steps still use its right value (a missing step);
    - ``truncate``: the trace stops before the step, with no answer (incomplete).
    """
    if kind not in ERROR_KINDS:
        raise ValueError(f"unknown error kind {kind!r}; choose one of {', '.join(ERROR_KINDS)}")
    if not 1 <= step <= len(wp.defs):
        raise ValueError(f"step must be in 1..{len(wp.defs)}, got {step}")
    m = wp.modulus
    values = dict(wp.inputs)
    bodies = []
    for i, (name, left, op, right) in enumerate(wp.defs, start=1):
        x, y = values[left], values[right]
        if i == step and kind == "truncate":
            return format_trace(bodies, None)
        if i == step and kind == "substitution":
            if rng.random() < 0.5:
                x = (x + rng.randrange(1, m)) % m
            else:
                y = (y + rng.randrange(1, m)) % m
        integer = OPS[op](x, y)
        if i == step and kind == "result":
            integer += rng.randrange(1, m)
        values[name] = integer % m
        if i == step and kind == "skip":
            continue
        bodies.append(format_step(name, left, op, right, x, y, integer, m))
    return format_trace(bodies, values[wp.target])
