"""The self-teacher: the model that reads the privileged context and scores the student's own tokens.

docs/methods.md, section 1 names three choices: the frozen initial weights (the default; under LoRA this is
the same network with the adapter disabled, so no copy is kept), an exponential moving average of the
student (OPSD's decay 0.999; SDPO's update rate 0.05 is decay 0.95), or the live student itself.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch

from mentor.models import is_lora, teacher_mode
from mentor.train.checkpoint import restore_weights

TEACHER_KINDS = ("initial", "ema", "live")


class SelfTeacher:
    """Scores with ``kind`` weights; :meth:`update` after every optimizer step keeps an EMA current."""

    def __init__(self, model, kind: str = "initial", ema_decay: float = 0.999) -> None:
        if kind not in TEACHER_KINDS:
            raise ValueError(f"unknown teacher {kind!r}; choose one of {', '.join(TEACHER_KINDS)}")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
        self.kind, self.decay = kind, ema_decay
        self.copy = None
        if kind == "ema" or (kind == "initial" and not is_lora(model)):
            self.copy = copy.deepcopy(model).eval()
            self.copy.requires_grad_(False)
        # the EMA follows what the student trains (the adapter under LoRA, every weight otherwise)
        self._names = [n for n, p in model.named_parameters() if p.requires_grad]

    def groups(self, rows: list, asked: list[int]) -> dict[None, list[int]]:
        """The rows this teacher scores: every row asked about (several teachers route them)."""
        return {None: list(asked)}

    @contextlib.contextmanager
    def scoring(self, student, key: None = None) -> Iterator:
        """The module to run for teacher log-probs (under ``torch.no_grad`` by the caller)."""
        if self.copy is not None:
            yield self.copy
        elif self.kind == "initial":
            with teacher_mode(student) as frozen:
                yield frozen
        else:
            was_training = student.training
            student.eval()
            try:
                yield student
            finally:
                student.train(was_training)

    @torch.no_grad()
    def update(self, student) -> None:
        if self.kind != "ema":
            return
        live = dict(student.named_parameters())
        for name, param in self.copy.named_parameters():
            if name in live and name in self._names:
                param.mul_(self.decay).add_(live[name].detach(), alpha=1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """What a checkpoint needs to restore the teacher exactly (only the EMA changes during a run)."""
        if self.kind != "ema":
            return {}
        params = dict(self.copy.named_parameters())
        return {name: params[name].detach().clone() for name in self._names}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if self.kind == "ema":
            restore_weights(self.copy, state)
