"""Exact arithmetic in free-form text: the claimed equations of a solution, their values, and a step-by-step
solver for an expression.

Nothing here calls ``eval``: an expression is read by a small recursive-descent parser over numbers, the four
operators (``+ - * /`` and ``− × · ÷``, LaTeX's ``\\times \\cdot \\div``) and parentheses, and evaluated
with :class:`fractions.Fraction`, so ``0.1 + 0.2 = 0.3`` is exactly right and ``7 / 2 = 3`` exactly wrong.

An *equation* is a chain ``E0 = E1 = ... = En`` of such expressions in running text ("so 35 × 3 = 105
kiwi", "**4 - 1 - 7 = 3 - 7 = -4**"); one whose first expression holds an operator is a *step*. Restated
values ("x = 5", "total = 140") are not steps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

_LATEX = {"\\times": "×", "\\cdot": "·", "\\div": "÷", "\\left(": "(", "\\right)": ")"}
_UNICODE_OPS = str.maketrans({"−": "-", "×": "*", "·": "*", "÷": "/"})
_NUMBER = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+")
_TOKEN = re.compile(rf"\s*(?:({_NUMBER.pattern})|([-+*/()]))")
# what an expression beside an "=" may be made of
_EXPRESSION_CHARS = set("0123456789.,+-*/()×÷·− \t")
_CANNOT_START = "*/+,)×÷·"
_CANNOT_END = "*/+-−.,(×÷·"


class ExpressionError(ValueError):
    """An expression that cannot be read or evaluated (a parse error, a division by zero)."""


Node = tuple  # ("num", Fraction, text) | ("neg", Node) | ("bin", op, Node, Node)


_LATEX_PATTERN = re.compile("|".join(re.escape(latex) for latex in _LATEX))


def normalise(text: str) -> str:
    """``text`` with LaTeX's operators written as characters (``\\times`` -> ``×``)."""
    return _LATEX_PATTERN.sub(lambda m: _LATEX[m.group()], text)


def normalise_with_offsets(text: str) -> tuple[str, list[int]]:
    """:func:`normalise`'s text and, for each of its characters (and its end), where it was in ``text``."""
    pieces, offsets, pos = [], [], 0
    for match in _LATEX_PATTERN.finditer(text):
        pieces += [text[pos:match.start()], _LATEX[match.group()]]
        offsets += [*range(pos, match.start()), match.start()]
        pos = match.end()
    pieces.append(text[pos:])
    offsets += [*range(pos, len(text)), len(text)]
    return "".join(pieces), offsets


def parse_expression(text: str) -> Node:
    """The syntax tree of an arithmetic expression; :class:`ExpressionError` when it is not one."""
    source = normalise(text).translate(_UNICODE_OPS)
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(source.rstrip()):
        match = _TOKEN.match(source, pos)
        if match is None:
            raise ExpressionError(f"not arithmetic at {source[pos:pos + 10]!r}")
        tokens.append(("num", match.group(1)) if match.group(1) else ("op", match.group(2)))
        pos = match.end()
    node, end = _sum(tokens, 0)
    if end != len(tokens):
        raise ExpressionError(f"unexpected {tokens[end][1]!r} in {text!r}")
    return node


def _sum(tokens: list, i: int) -> tuple[Node, int]:
    node, i = _product(tokens, i)
    while i < len(tokens) and tokens[i] in (("op", "+"), ("op", "-")):
        right, j = _product(tokens, i + 1)
        node, i = ("bin", tokens[i][1], node, right), j
    return node, i


def _product(tokens: list, i: int) -> tuple[Node, int]:
    node, i = _unary(tokens, i)
    while i < len(tokens) and tokens[i] in (("op", "*"), ("op", "/")):
        right, j = _unary(tokens, i + 1)
        node, i = ("bin", tokens[i][1], node, right), j
    return node, i


def _unary(tokens: list, i: int) -> tuple[Node, int]:
    if i >= len(tokens):
        raise ExpressionError("the expression ends early")
    kind, value = tokens[i]
    if (kind, value) in (("op", "-"), ("op", "+")):
        node, j = _unary(tokens, i + 1)
        return (("neg", node) if value == "-" else node), j
    if kind == "num":
        return ("num", Fraction(value.replace(",", "")), value), i + 1
    if value == "(":
        node, j = _sum(tokens, i + 1)
        if j >= len(tokens) or tokens[j] != ("op", ")"):
            raise ExpressionError("an unclosed parenthesis")
        return node, j + 1
    raise ExpressionError(f"unexpected {value!r}")


def evaluate(node: Node) -> Fraction:
    if node[0] == "num":
        return node[1]
    if node[0] == "neg":
        return -evaluate(node[1])
    _, op, left, right = node
    a, b = evaluate(left), evaluate(right)
    if op == "/" and b == 0:
        raise ExpressionError("a division by zero")
    return {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else a}[op]


def value_of(text: str) -> Fraction:
    """The exact value of an arithmetic expression."""
    return evaluate(parse_expression(text))


def number(value: Fraction) -> Node:
    return ("num", value, render(value))


_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}


def write(node: Node, outer: int = 0, right_side: bool = False) -> str:
    """An expression's text from its tree, with the parentheses it needs (numbers as they were written)."""
    if node[0] == "num":
        text = node[2]
        return f"({text})" if node[1] < 0 and (right_side or outer > 1) else text
    if node[0] == "neg":
        inner = write(node[1], 3)
        return f"(-{inner})" if right_side or outer > 1 else f"-{inner}"
    _, op, left, right = node
    own = _PRECEDENCE[op]
    text = f"{write(left, own)} {op} {write(right, own, right_side=True)}"
    return f"({text})" if own < outer or (own == outer and right_side) else text


def substitute(node: Node, values: dict[Fraction, Fraction]) -> Node:
    """``node`` with every number (or negated number) whose value is a key of ``values`` replaced by the
    key's value: a wrong result carried into later steps, replaced by the right one."""
    if node[0] == "num":
        return number(values[node[1]]) if node[1] in values else node
    if node[0] == "neg":
        if node[1][0] == "num" and -node[1][1] in values:
            return number(values[-node[1][1]])
        return ("neg", substitute(node[1], values))
    return ("bin", node[1], substitute(node[2], values), substitute(node[3], values))


def has_operator(node: Node) -> bool:
    return node[0] == "bin" or (node[0] == "neg" and has_operator(node[1]))


def operands(node: Node) -> list[Fraction]:
    """The numbers an expression is built from, in order (their signs dropped)."""
    if node[0] == "num":
        return [node[1]]
    if node[0] == "neg":
        return operands(node[1])
    return operands(node[2]) + operands(node[3])


def render(value: Fraction) -> str:
    """``value`` as a solution writes it: an integer, a terminating decimal, or ``p/q``."""
    if value.denominator == 1:
        return str(value.numerator)
    denominator = value.denominator
    for prime in (2, 5):
        while denominator % prime == 0:
            denominator //= prime
    if denominator == 1:
        digits = 0
        while (value * 10**digits).denominator != 1:
            digits += 1
        scaled = abs(value.numerator * 10**digits // value.denominator)
        whole, fraction = divmod(scaled, 10**digits)
        return f"{'-' if value < 0 else ''}{whole}.{fraction:0{digits}d}"
    return f"{value.numerator}/{value.denominator}"


def as_number(text: str | None) -> Fraction | None:
    """The exact value of a stated answer (``-4``, ``1,234``, ``3.5``, ``7/2``), or None when it is none."""
    if text is None:
        return None
    cleaned = text.strip().strip("$").replace("\\!", "").replace(" ", "")
    try:
        return value_of(cleaned)
    except ExpressionError:
        return None


@dataclass(frozen=True)
class Step:
    """One claimed equation chain ``E0 = E1 = ... = En``: its expressions and their exact values; ``start``
    and ``end``: where it begins and ends in the text it was found in."""

    expressions: tuple[str, ...]
    values: tuple[Fraction, ...]
    start: int = 0
    end: int = 0

    @property
    def value(self) -> Fraction:
        """What the first expression is worth."""
        return self.values[0]

    @property
    def claimed(self) -> Fraction:
        """What the solution carries forward: the chain's last expression."""
        return self.values[-1]

    @property
    def right(self) -> bool:
        return all(v == self.values[0] for v in self.values)

    def fixed(self) -> str:
        """The chain up to its first wrong expression, ended by the right value."""
        kept = []
        for expression, value in zip(self.expressions, self.values):
            if value != self.value:
                break
            kept.append(expression)
        if len(kept) == 1 or not _is_plain(kept[-1]):
            kept.append(render(self.value))
        return " = ".join(kept)

    def text(self) -> str:
        return " = ".join(self.expressions)


def _is_plain(expression: str) -> bool:
    return _NUMBER.fullmatch(expression.strip().lstrip("-−")) is not None


def _trim(segment: str, *, left: bool) -> str | None:
    """The readable expression inside a run of arithmetic characters beside an "=": junk trimmed from its
    edges (markdown's ``**``, a list's comma, a sentence's full stop, an unbalanced parenthesis), words of
    a list dropped from the left until it parses; None when nothing readable is left."""
    segment = segment.strip()
    while segment:
        segment = segment.lstrip(_CANNOT_START + " ").rstrip(_CANNOT_END + " ")
        while segment.startswith(".") and not segment[1:2].isdigit():  # a sentence's full stop, not ".5"
            segment = segment[1:].lstrip(_CANNOT_START + " ")
        while segment.count("(") > segment.count(")") and segment.startswith("("):
            segment = segment[1:].lstrip()
        while segment.count(")") > segment.count("(") and segment.endswith(")"):
            segment = segment[:-1].rstrip()
        if not segment:
            return None
        try:
            parse_expression(segment)
            return segment
        except ExpressionError:
            cut = re.search(r"[\s,]+", segment) if left else None
            if cut is None:
                if left:
                    return None
                segment = segment[:-1]
                continue
            segment = segment[cut.end():]
    return None


def find_steps(text: str) -> list[Step]:
    """Every claimed equation chain in ``text`` whose first expression holds an operator, in order."""
    steps: list[Step] = []
    normalised, offsets = normalise_with_offsets(text)
    line_start = 0  # in the normalised text
    for line in normalised.splitlines(keepends=True):
        pieces = line.split("=")
        piece_starts = [line_start + sum(len(p) + 1 for p in pieces[:i]) for i in range(len(pieces))]
        chain: list[str] = []
        span = [0, 0]  # where the chain begins and ends, in the normalised text
        for i in range(len(pieces) - 1):  # the i-th "=" sits between pieces i and i + 1
            if not chain:
                left = _trim(_run(pieces[i], from_end=True), left=True)
                if left is None:
                    continue
                chain.append(left)
                span[0] = piece_starts[i] + pieces[i].rfind(left)
            # a piece between two "=" links them when it is arithmetic through and through
            linked = i + 2 < len(pieces) and set(pieces[i + 1]) <= _EXPRESSION_CHARS and _parses(pieces[i + 1])
            right = _trim(pieces[i + 1] if linked else _run(pieces[i + 1], from_end=False), left=False)
            if right is not None:
                chain.append(right)
                span[1] = piece_starts[i + 1] + pieces[i + 1].find(right) + len(right)
            if right is None or not linked:
                _close(chain, steps, offsets[span[0]], offsets[span[1]])
        _close(chain, steps, offsets[span[0]], offsets[span[1]])
        line_start += len(line)
    return steps


def _parses(text: str) -> bool:
    """True when the whole of ``text`` is one expression ("8, 8 * 2" between two "=" is two steps' ends)."""
    try:
        parse_expression(text.strip())
        return bool(text.strip())
    except ExpressionError:
        return False


def _close(chain: list[str], steps: list[Step], start: int, end: int) -> None:
    """Add the chain to ``steps`` when it is a step (two or more expressions, an operator in the first)."""
    if len(chain) >= 2:
        try:
            trees = [parse_expression(e) for e in chain]
            if has_operator(trees[0]):
                steps.append(Step(tuple(chain), tuple(evaluate(t) for t in trees), start, end))
        except ExpressionError:  # a division by zero: not a step that can be checked
            pass
    chain.clear()


def _run(piece: str, *, from_end: bool) -> str:
    """The longest run of arithmetic characters at the end (or start) of ``piece``."""
    chars = reversed(piece) if from_end else iter(piece)
    taken = []
    for char in chars:
        if char not in _EXPRESSION_CHARS:
            break
        taken.append(char)
    return "".join(reversed(taken) if from_end else taken)


def solve_steps(expression: str) -> list[tuple[str, Fraction]]:
    """A reference solution of ``expression``: one operation a step, in the order precedence and
    left-to-right evaluation give, each ``("a op b", value)`` written with the values already found."""
    steps: list[tuple[str, Fraction]] = []

    def walk(node: Node) -> Fraction:
        if node[0] == "num":
            return node[1]
        if node[0] == "neg":
            return -walk(node[1])
        _, op, left, right = node
        a, b = walk(left), walk(right)
        value = evaluate(("bin", op, number(a), number(b)))
        steps.append((f"{_operand(a, right=False)} {op} {_operand(b, right=True)}", value))
        return value

    walk(parse_expression(expression))
    return steps


def _operand(value: Fraction, *, right: bool) -> str:
    text = render(value)
    return f"({text})" if (value < 0 and right) or "/" in text else text
