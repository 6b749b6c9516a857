"""Answer extraction and math equivalence, with timeouts that hold in threads and worker processes.

The common case (both answers are plain numbers: ``72``, ``1,000``, ``0.5``, ``\\frac{1}{2}``, ``$5``,
``5 cm``) is decided in-process by exact rational comparison. Everything else goes to math-verify, which
runs in a persistent helper process: math-verify's own timeouts use ``signal.alarm`` and silently answer
False off the main thread, so they are switched off and the helper is killed (and later restarted) when a
check runs past its time. A timed-out check is reported as such, never as a wrong answer.
"""

from __future__ import annotations

import atexit
import functools
import logging
import math
import os
import pickle
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from multiprocessing.connection import Connection, Pipe

from mentor.records import Verdict

__all__ = [
    "FORMAT_KINDS",
    "SYMBOLIC_CHECK",
    "RewardWeights",
    "answer_key",
    "extract_answer",
    "is_equivalent",
    "normalize_number",
    "verify",
]

Choices = str | Sequence[str] | Mapping[str, str]

#: Extraction kinds that count as an explicit answer marker (the ``format`` reward component).
FORMAT_KINDS = frozenset({"boxed", "gsm8k", "answer_tag", "answer_line", "choice"})

# ---------------------------------------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------------------------------------

_BOXED = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_HASHES = re.compile(r"####[ \t]*([^\n]*)")
_ANSWER_MARK = re.compile(r"\banswer\**[ \t]*(?:is\b[ \t]*:?|:)", re.IGNORECASE)
_MATH_SPAN = re.compile(r"\$+([^$]+)\$+|\\\((.+?)\\\)")
_SENTENCE_END = re.compile(r"\.(?:\s|$)")
_SPECIAL_TOKENS = re.compile(r"(?:\s*<[^<>\s]+>)+\s*$")
_LAST_NUMBER = re.compile(
    r"(?<![\w.])[-\u2212]?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?(?:[ \t]*/[ \t]*\d+|\\?%)?"
)
# "B", "B.", "B: 42", "(B) 42", "option B": a bare letter needs punctuation or the end after it, so that
# "A total of 5" is not read as choice A.
_LETTER = re.compile(r"(?i:option|choice)\s+\(?([A-Z])\)?(?![A-Za-z0-9])|\(([A-Z])\)|([A-Z])(?:[.:)\]]|$)")
_CHOICE_IN_TEXT = re.compile(
    r"\b(?i:answer|option|choice)\**\s*(?:is\b\s*)?:?\s*\(?([A-Z])(?![A-Za-z0-9])|(?<![A-Za-z0-9])\(?([A-Z])\)"
)


def _braced(text: str, start: int) -> str | None:
    """The content of the brace group opening at ``text[start]``; None when it never closes."""
    depth = 0
    i = start
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2  # an escaped brace (\{ or \}) does not nest
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i]
        i += 1
    return None


# Each finder returns the last answer of its kind as ``(answer, start, end)``: the answer, where its marker
# starts, and where the text it was read from ends (a marker that starts inside that span is part of it).


def _line_end(text: str, position: int) -> int:
    end = text.find("\n", position)
    return len(text) if end < 0 else end


def _boxed(text: str) -> tuple[str, int, int] | None:
    """The last complete ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces allowed), or ``\\boxed 5``."""
    for match in reversed(list(_BOXED.finditer(text))):
        rest = text[match.end() :]
        stripped = rest.lstrip(" ")
        if stripped.startswith("{"):
            content = _braced(stripped, 0)
            end = match.end() + len(rest) - len(stripped) + len(content or "") + 2
        elif rest[:1] == " ":
            content = re.match(r"\S*", stripped).group().rstrip("$.")
            end = match.end() + len(rest) - len(stripped) + len(content)
        else:
            content = None
        if content and content.strip():
            return content.strip(), match.start(), end
    return None


def _hashes(text: str) -> tuple[str, int, int] | None:
    found = list(_HASHES.finditer(text))
    if not found or not found[-1].group(1).strip():
        return None
    return found[-1].group(1).strip(), found[-1].start(), found[-1].end()


def _first_line(rest: str) -> str:
    """The rest of the current line, or the next non-empty line when the current one is empty."""
    rest = rest.lstrip(" \t*")
    line = rest.split("\n", 1)[0].strip()
    if not line:
        line = next((ln.strip() for ln in rest.splitlines() if ln.strip()), "")
    return line


def _answer_tag(text: str) -> tuple[str, int, int] | None:
    start = text.rfind("<answer>")
    if start < 0:
        return None
    rest = text[start + len("<answer>") :]
    close = rest.find("</answer>")
    content = rest[:close].strip() if close >= 0 else _first_line(rest)
    end = (start + len("<answer>") + close + len("</answer>") if close >= 0
           else _line_end(text, text.find(content, start) if content else start))
    content = _SPECIAL_TOKENS.sub("", content).strip()
    if not content:
        return None
    inner = _answer_line(content)  # "<answer>The answer is 5.</answer>"
    return (inner[0] if inner else content), start, end


def _answer_line(text: str) -> tuple[str, int, int] | None:
    marks = list(_ANSWER_MARK.finditer(text))
    if not marks:
        return None
    line = _first_line(text[marks[-1].end() :])
    end = _line_end(text, text.find(line, marks[-1].end()) if line else marks[-1].end())
    # "The final answer is $5$. I hope it is correct." -> 5
    span = _MATH_SPAN.search(line)
    if span:
        line = span.group(1) or span.group(2)
    else:
        stop = _SENTENCE_END.search(line)
        line = line[: stop.start()] if stop else line
    line = line.strip(" \t*")
    return (line, marks[-1].start(), end) if line else None


def _last_number(text: str) -> str | None:
    found = _LAST_NUMBER.findall(text)
    return found[-1] if found else None


_MARKERS: tuple[tuple[str, Callable[[str], str | None]], ...] = (
    ("boxed", _boxed),
    ("gsm8k", _hashes),
    ("answer_tag", _answer_tag),
    ("answer_line", _answer_line),
)


def _choice_table(choices: Choices) -> tuple[str, dict[str, str]]:
    """Normalise ``choices`` to (allowed letters, {letter: option text})."""
    options = dict(choices) if isinstance(choices, Mapping) else {}
    letters = list(options) if options else list(choices)
    if not letters or any(not isinstance(c, str) or len(c) != 1 or not ("A" <= c <= "Z") for c in letters):
        raise ValueError(f"choices must be single capital letters (or a mapping from them), got {choices!r}")
    return "".join(letters), options


def _as_letter(answer: str, letters: str, options: Mapping[str, str]) -> str | None:
    """Read an extracted answer as a choice letter: ``B``, ``(B)``, ``B) 42``, ``option B``, or an option's text."""
    match = _LETTER.match(_unwrap_text(_tidy(answer)))
    letter = match and next(g for g in match.groups() if g)
    if letter and letter in letters:
        return letter
    key = answer_key(answer)
    hits = [letter for letter, text in options.items() if answer_key(text) == key]
    return hits[0] if len(hits) == 1 else None


def _choice_in_text(text: str, letters: str) -> str | None:
    found = [a or b for a, b in _CHOICE_IN_TEXT.findall(text)]
    found = [letter for letter in found if letter in letters]
    return found[-1] if found else None


def _final_markers(text: str) -> list[tuple[str, str]]:
    """``(kind, answer)`` of the marked answer the response commits to last, best kind first.

    The final answer is the last one: of every kind's last marker, the one that starts latest, together
    with the markers that start inside the text it was read from (``\\boxed{5}`` on an ``Answer:`` line,
    ``The answer is 5`` inside ``<answer>...</answer>``), ordered by ``_MARKERS``. An earlier ``\\boxed{18}``
    does not beat a later ``The answer is 19``.
    """
    found = [(kind, *hit) for kind, find in _MARKERS if (hit := find(text)) is not None]
    if not found:
        return []
    starts_last = max(found, key=lambda hit: hit[2])
    group = [hit for hit in found if hit is starts_last or hit[2] <= starts_last[2] < hit[3]
             or starts_last[2] <= hit[2] < starts_last[3]]
    return [(kind, answer) for kind, answer, _, _ in group]


def extract_answer(text: str, *, choices: Choices | None = None) -> tuple[str | None, str]:
    """The final answer in a completion and how it was found.

    Returns ``(answer, kind)``; kind is one of ``boxed`` (``\\boxed{}``/``\\fbox{}``), ``gsm8k`` (``#### N``),
    ``answer_tag`` (``<answer> X`` or ``<answer>X</answer>``), ``answer_line`` (``Answer: X``, ``the final
    answer is X``), ``choice``, ``last_number`` or ``none``. The marked answer that comes last in the text
    wins (a later ``The answer is 19`` beats an earlier ``\\boxed{18}``); markers nested in one answer
    (``<answer>The answer is 5</answer>``) count as that answer, read by the first kind in that order.
    Only a text with no marker falls back to its last number.

    With ``choices`` (letters such as ``"ABCD"``, or a mapping from letters to option texts) the answer is
    a choice letter: a marked answer is read as a letter (``(B)``, ``B) 42``, or an option's text), else the
    last letter pattern in the text is taken (``answer is C``, ``(B)``, ``B)``); there is no last-number
    fallback. A marked answer that is not a letter is returned as is, so the caller can call it unparseable.
    """
    marked = _final_markers(text)
    if choices is None:
        for kind, found in marked:
            return found, kind
        number = _last_number(text)
        return (number, "last_number") if number is not None else (None, "none")

    letters, options = _choice_table(choices)
    unreadable: tuple[str | None, str] = (None, "none")
    for kind, found in marked:
        letter = _as_letter(found, letters, options)
        if letter is not None:
            return letter, kind
        if unreadable[0] is None:
            unreadable = (found, kind)
    letter = _choice_in_text(text, letters)
    return (letter, "choice") if letter is not None else unreadable


# ---------------------------------------------------------------------------------------------------------
# Normalisation: the cheap, in-process path
# ---------------------------------------------------------------------------------------------------------

_TEXT_CMD = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
_SPACING = re.compile(r"\\[,;:! ]|\\(?:left|right)(?![A-Za-z])|\\displaystyle|~")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°")
_PERCENT = re.compile(r"\s*(?:\\%|%)$")
_VARIABLE = re.compile(r"^[A-Za-z]\s*=\s*")
_UNITS = re.compile(
    r"(?:\s+(?!(?:hundreds?|thousands?|millions?|billions?|trillions?|times|percent)\b)[A-Za-z]{2,}\.?|\s*(?:cm|mm|km|m|kg|mg|g|lbs?|oz|ft|in|mi|s|sec|min|h|hrs?|ml|l|L|mph)(?![A-Za-z]))"
    r"(?:\^\{?[23]\}?|[²³])?$"
)
_DECIMAL = r"[+-]?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|\.\d+)"
_PLAIN_NUMBER = re.compile(rf"(?P<num>{_DECIMAL})(?:\s*/\s*(?P<den>\d+))?")
_LATEX_FRAC = re.compile(
    r"(?P<sign>[+-]?)\\frac\s*(?:\{\s*(?P<num>[+-]?\d+)\s*\}|(?P<n1>\d))\s*(?:\{\s*(?P<den>[+-]?\d+)\s*\}|(?P<d1>\d))"
)


def _tidy(s: str) -> str:
    """Light clean-up that never changes meaning: dollar signs, spacing macros, \\dfrac, trailing period."""
    s = s.strip().replace("\u2212", "-").replace("\\$", "").replace("$", "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("{,}", ",")
    s = _SPACING.sub("", s)
    return s.strip().rstrip(".,;").strip()


def _unwrap_text(s: str) -> str:
    return _TEXT_CMD.sub(r" \1 ", s).strip()


def _number(s: str) -> tuple[Fraction, bool] | None:
    """The exact value of a plain number (with the decoration real answers carry), and whether it had a %."""
    s = _DEGREES.sub("", _unwrap_text(_tidy(s)))
    s, percent = _PERCENT.subn("", s)
    s = _VARIABLE.sub("", s)
    while True:  # strip trailing unit words: "5 dollars", "3 cm^2", "12 apples each"
        s, found = _UNITS.subn("", s)
        if not found:
            break
    s = s.strip()
    plain = _PLAIN_NUMBER.fullmatch(s)
    if plain:
        value = Fraction(plain["num"].replace(",", ""))
        den = plain["den"]
    else:
        frac = _LATEX_FRAC.fullmatch(s)
        if not frac:
            return None
        value = Fraction(int(frac["num"] or frac["n1"]) * (-1 if frac["sign"] == "-" else 1))
        den = frac["den"] or frac["d1"]
    if den is not None:
        if int(den) == 0:
            return None
        value /= int(den)
    return value, bool(percent)


def normalize_number(s: str) -> str | None:
    """A canonical exact form of a plain number (``"1,000"`` -> ``"1000"``, ``"0.5"`` -> ``"1/2"``), else None.

    Strips ``$``, ``\\text{...}``, trailing unit words, ``%``/``\\%``, degrees, ``x =`` and a trailing
    period; a percent sign is dropped (``50%`` -> ``50``).
    """
    parsed = _number(s)
    return None if parsed is None else str(parsed[0])


def answer_key(s: str) -> str:
    """A cheap grouping key: equal keys mean equivalent answers (the converse needs :func:`is_equivalent`)."""
    number = normalize_number(s)
    return number if number is not None else re.sub(r"\s+", "", _tidy(s))


def _numbers_equal(a: tuple[Fraction, bool], b: tuple[Fraction, bool]) -> bool:
    """Exact equality; a percentage also matches its fraction (``50%`` == ``0.5``), as in math-verify."""
    (x, x_pct), (y, y_pct) = a, b
    return x == y or (x_pct and x / 100 == y) or (y_pct and y / 100 == x)


# ---------------------------------------------------------------------------------------------------------
# The slow path: math-verify in a helper process
# ---------------------------------------------------------------------------------------------------------


def _as_math(s: str) -> str:
    return f"${_tidy(s)}$"


def _math_verify_check(pred: str, gold: str) -> str:
    """Compare with math-verify (its signal timeouts off): ``equal``, ``different``, ``unparseable`` or
    ``gold_unparseable``."""
    from math_verify import parse
    from math_verify import verify as math_verify

    gold_parsed = parse(_as_math(gold), parsing_timeout=None)
    if all(isinstance(p, str) for p in gold_parsed):  # the gold answer itself cannot be read
        return "gold_unparseable"
    pred_parsed = parse(_as_math(pred), parsing_timeout=None)
    if all(isinstance(p, str) for p in pred_parsed):  # nothing but raw-string fallbacks
        return "unparseable"
    return "equal" if math_verify(gold_parsed, pred_parsed, timeout_seconds=None) else "different"


#: The check the helper process runs for answers the numeric fast path cannot decide: a picklable
#: module-level callable ``(pred, gold) -> "equal" | "different" | "unparseable" | "gold_unparseable"``. Replace it to plug in
#: another checker; the tests swap in a deliberately slow one to exercise the timeout.
SYMBOLIC_CHECK: Callable[[str, str], str] = _math_verify_check
CHECK_RESULTS = ("equal", "different", "unparseable", "gold_unparseable")

_STARTUP_TIMEOUT = 120.0
_BOOT = "import sys; sys.path[:] = sys.argv[2:]; from mentor.verify import _serve; _serve(int(sys.argv[1]))"


class _CheckTimeout(Exception):
    pass


def _serve(fd: int) -> None:
    """Main loop of the helper process: answer ``(check, pred, gold)`` requests until the parent goes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout is disabled" warnings
    # Warm up math-verify (imports, parser construction: ~0.5 s) so the first check's time is its own.
    _math_verify_check("\\sqrt{x}+1", "\\frac{1}{2}")
    conn = Connection(fd)
    conn.send(("ready", None))
    while True:
        try:
            payload = conn.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            check, pred, gold = pickle.loads(payload)
            reply = ("ok", check(pred, gold))
        except Exception as err:
            reply = ("error", f"{type(err).__name__}: {err}")
        conn.send(reply)


class _Helper:
    """One persistent helper process, started lazily, killed and dropped when a check runs out of time.

    It is a plain subprocess (not multiprocessing) so it can be started from daemonic pool workers and never
    re-imports the caller's ``__main__``. Requests are serialised by a lock; the wait for the lock does not
    count against a request's timeout.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._conn: Connection | None = None

    def run(self, check: Callable[[str, str], str], pred: str, gold: str, timeout: float | None) -> str:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:  # never started, or died between calls
                self._stop()
                self._start()
            conn = self._conn
            payload = pickle.dumps((check, pred, gold))  # an unpicklable check fails here, loudly
            try:
                conn.send_bytes(payload)
                if not conn.poll(timeout):
                    raise _CheckTimeout
                status, value = conn.recv()
            except (_CheckTimeout, EOFError, OSError):
                self._stop()  # stuck or died mid-check (e.g. killed for memory): the check did not finish
                raise _CheckTimeout from None
        if status != "ok":
            raise RuntimeError(f"equivalence check {check!r} failed in the helper process: {value}")
        if value not in CHECK_RESULTS:
            raise RuntimeError(f"equivalence check {check!r} returned {value!r}, not one of {', '.join(CHECK_RESULTS)}")
        return value

    def _start(self) -> Connection:
        ours, theirs = Pipe()
        paths = [p or os.getcwd() for p in sys.path]
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _BOOT, str(theirs.fileno()), *paths],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        theirs.close()
        self._conn = ours
        try:
            ready = ours.poll(_STARTUP_TIMEOUT) and ours.recv()[0] == "ready"
        except (EOFError, OSError):
            ready = False
        if not ready:
            self._stop()
            raise RuntimeError("the math-verify helper process did not start (is math-verify installed?)")
        return ours

    def _stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _forget(self) -> None:
        """In a forked child: the helper belongs to the parent, so drop it (and the lock) without killing."""
        self._lock = threading.Lock()
        self._proc = self._conn = None


_HELPER = _Helper()
atexit.register(_HELPER.close)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_HELPER._forget)


@functools.lru_cache(maxsize=16384)
def _symbolic(check: Callable[[str, str], str], pred: str, gold: str, timeout: float | None) -> str:
    """Cached slow path; a timeout raises, so it is never cached."""
    return _HELPER.run(check, pred, gold, timeout)


def _compare(pred: str, gold: str, timeout: float | None) -> str:
    """``equal``, ``different``, ``unparseable``, ``gold_unparseable`` or ``timeout``; plain numbers never
    leave this process."""
    if timeout is not None and not (
        isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0
    ):
        raise ValueError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
    pred_number, gold_number = _number(pred), _number(gold)
    if pred_number is not None and gold_number is not None:
        return "equal" if _numbers_equal(pred_number, gold_number) else "different"
    if answer_key(pred) == answer_key(gold):
        return "equal"
    try:
        return _symbolic(SYMBOLIC_CHECK, pred, gold, timeout)
    except _CheckTimeout:
        return "timeout"


def is_equivalent(pred: str, gold: str, timeout: float | None = 5.0) -> bool | None:
    """Whether ``pred`` and ``gold`` are the same mathematical answer; None when the check timed out.

    Plain numbers are compared exactly in-process; anything else goes through math-verify in a helper
    process that is killed after ``timeout`` seconds, so this is safe from threads and worker processes.
    """
    status = _compare(pred, gold, timeout)
    return None if status == "timeout" else status == "equal"


# ---------------------------------------------------------------------------------------------------------
# Verdicts
# ---------------------------------------------------------------------------------------------------------


@dataclass
class RewardWeights:
    """Weights of the reward components; the reward is ``correctness * [correct] + format * [marked answer]``."""

    correctness: float = 1.0
    format: float = 0.0

    def __post_init__(self) -> None:
        for name in ("correctness", "format"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"RewardWeights.{name} must be a finite number, got {value!r}")
            if value < 0:
                raise ValueError(f"RewardWeights.{name} must be >= 0, got {value!r}")
        if self.correctness == 0 and self.format == 0:
            raise ValueError("RewardWeights: at least one weight must be positive")

    def reward(self, components: Mapping[str, float]) -> float:
        return self.correctness * components["correctness"] + self.format * components["format"]


_LETTER_GOLD = re.compile(r"\(?([A-Z])\)?")


def _default_choices(gold: str) -> str | None:
    """Choice letters A-J (or up to the gold letter) when the gold answer is a single capital letter."""
    match = _LETTER_GOLD.fullmatch(_unwrap_text(_tidy(gold)))
    if not match:
        return None
    return "".join(chr(c) for c in range(ord("A"), max(ord("J"), ord(match.group(1))) + 1))


def verify(
    completion: str,
    gold: str,
    *,
    timeout: float | None = 5.0,
    weights: RewardWeights | None = None,
    choices: Choices | None = None,
) -> Verdict:
    """Score one completion against the gold answer.

    ``reason`` is ``ok``, ``no_answer`` (nothing extracted), ``unparseable`` (extracted but neither a number
    nor something math-verify can read, or not a letter in a multiple-choice question), ``wrong`` or
    ``timeout`` (the check ran out of time: ``correct`` is False but the reason says why) or ``bad_gold``
    (the gold answer itself cannot be read: the problem, not the completion, is at fault).

    Multiple choice is on when ``choices`` is given (letters, or a mapping from letters to option texts,
    see :func:`extract_answer`) or when the gold answer is a single capital letter such as ``B`` or ``(B)``.
    """
    weights = weights if weights is not None else RewardWeights()
    if choices is None:
        choices = _default_choices(gold)
    extracted, kind = extract_answer(completion, choices=choices)
    if extracted is None:
        reason = "no_answer"
    elif choices is not None:
        letters, options = _choice_table(choices)
        gold_letter = _as_letter(gold, letters, options)
        if gold_letter is None:
            raise ValueError(f"gold answer {gold!r} is not one of the choices {letters}")
        reason = "ok" if extracted == gold_letter else "wrong" if extracted in letters else "unparseable"
    else:
        status = _compare(extracted, gold, timeout)
        reason = {"equal": "ok", "different": "wrong", "gold_unparseable": "bad_gold"}.get(status, status)
    correct = reason == "ok"
    components = {"correctness": float(correct), "format": float(kind in FORMAT_KINDS)}
    return Verdict(
        reward=weights.reward(components),
        correct=correct,
        extracted=extracted,
        format_ok=kind in FORMAT_KINDS,
        reason=reason,
        components=components,
    )
