"""Guards against the known failure modes of self-distillation (docs/methods.md, section 1): a student that
starts copying the privileged context, and steps where few rollouts got a teacher signal."""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field

WORD = re.compile(r"\S+")


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    words = WORD.findall(text)
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def copy_overlap(completion: str, context: str, question: str, n: int = 6) -> float:
    """Fraction of the completion's word n-grams that occur in the context but not in the question:
    text the student can only have from the privileged context (0 when the completion is too short)."""
    own = ngrams(completion, n)
    if not own:
        return 0.0
    privileged = ngrams(context, n) - ngrams(question, n)
    return len(own & privileged) / len(own)


@dataclass
class Guards:
    """Per-step checks; :meth:`check` returns the warnings a step raises.

    Copying: the mean overlap of the last ``window`` steps against the mean of the first ``window`` (a
    correct trace legitimately shares text with a reference or a critique of itself, so the warning is on
    the rise, not the level).
    """

    window: int = 5
    copy_margin: float = 0.15
    min_signal_fraction: float = 0.5
    first: list[float] = field(default_factory=list)
    recent: deque = field(default_factory=deque)
    copy_warned: bool = False

    def __post_init__(self) -> None:
        self.recent = deque(self.recent, maxlen=self.window)  # the last ``window`` steps

    def check(self, step: int, metrics: dict) -> list[str]:
        warnings = []
        signal = metrics.get("signal_fraction")
        if signal is not None and signal < self.min_signal_fraction:
            warnings.append(f"step {step}: only {signal:.0%} of rollouts got a teacher signal "
                            f"(below {self.min_signal_fraction:.0%}); see critic_unusable / no_success")
        overlap = metrics.get("copy_overlap")
        if overlap is None:
            return warnings
        if len(self.first) < self.window:
            self.first.append(overlap)
            return warnings
        self.recent.append(overlap)
        base, now = sum(self.first) / len(self.first), sum(self.recent) / len(self.recent)
        if len(self.recent) == self.window and now > base + self.copy_margin and not self.copy_warned:
            self.copy_warned = True
            warnings.append(f"step {step}: the student may be copying the privileged context: n-gram overlap "
                            f"{now:.2f} over the last {self.window} steps, {base:.2f} at the start")
        return warnings

    def state_dict(self) -> dict:
        return {"first": list(self.first), "recent": list(self.recent), "copy_warned": self.copy_warned}

    def load_state_dict(self, state: dict) -> None:
        self.first, self.recent = list(state["first"]), deque(state["recent"], maxlen=self.window)
        self.copy_warned = state["copy_warned"]
