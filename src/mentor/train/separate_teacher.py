"""A separate teacher: another model, frozen, scores the student's own tokens (issue 22; the field's usual
on-policy distillation, as TRL's DistillationTrainer, verl's OPD and tinker's OPD run it), with or without
the contexts mentor's self-teacher reads (``onpolicy.teacher_model=FOLDER``; ``sd-none`` for no context).

The teacher must read the student's tokens as the student does: the two tokenizers must map every token to
the same id, or the run is refused before the first step with one line that says what differs (mentor does
not align different tokenizers, as TRL's GOLD does). The same vocabulary with a different number of padded
rows in the embedding (Qwen2.5's 151,936 and 152,064) is aligned: the teacher's matrix is cut or padded to
the student's rows. The rows cut lie past the tokenizer's last token, so cutting is exact; rows added get
zero weights (a logit of 0, whose mass is negligible next to a trained model's logits).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def tokenizer_difference(student, teacher) -> str | None:
    """Why two tokenizers do not give the same ids for the same text, in one line, or None."""
    a, b = student.get_vocab(), teacher.get_vocab()
    if a != b:
        if len(a) != len(b):
            return f"the student's tokenizer has {len(a):,} tokens, the teacher's {len(b):,}"
        token = min((t for t in a if a[t] != b.get(t)), key=lambda t: a[t])
        return (f"token {token!r} is id {a[token]} for the student and "
                f"{b.get(token, 'absent')} for the teacher")
    return None  # special tokens may differ (a base and an instruct model): the ids are what must agree


def embedding_rows(model) -> int:
    return model.get_output_embeddings().weight.shape[0]


def align_rows(teacher, rows: int, tokens: int) -> None:
    """Cut or pad the teacher's vocabulary matrices to ``rows`` (the student's), which must hold all
    ``tokens`` of the shared tokenizer."""
    own = embedding_rows(teacher)
    if own == rows:
        return
    if min(own, rows) < tokens:
        raise ValueError(f"the teacher's vocabulary has {own:,} rows and the student's {rows:,}, but the tokenizer "
                         f"has {tokens:,} tokens")
    teacher.resize_token_embeddings(rows, mean_resizing=False)
    if rows > own:
        with torch.no_grad():
            teacher.get_output_embeddings().weight[own:].zero_()


def load_separate_teacher(spec: str, student, tokenizer):
    """The teacher model ``spec`` names, frozen, in eval mode, on the student's device and dtype, its
    vocabulary checked against the student's and aligned to its rows."""
    from mentor.loading import load_model

    parameter = next(student.parameters())
    teacher, teacher_tokenizer = load_model(spec, dtype=parameter.dtype, device=parameter.device)
    difference = tokenizer_difference(tokenizer, teacher_tokenizer)
    if difference:
        raise ValueError(f"the teacher {spec!r} does not share the student's tokenizer: {difference} (a separate "
                         "teacher must read the student's tokens; mentor does not align different tokenizers)")
    align_rows(teacher, embedding_rows(student), len(tokenizer))
    teacher.eval().requires_grad_(False)
    return teacher


class FrozenTeacher:
    """What a teacher that never changes during a run does after a step and in a checkpoint: nothing; and
    the rows it scores: every row asked about (several teachers route them, :mod:`.teacher_panel`)."""

    def groups(self, rows: list, asked: list[int]) -> dict[str | None, list[int]]:
        return {None: list(asked)}

    def update(self, student) -> None:
        pass

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        pass


class SeparateTeacher(FrozenTeacher):
    """The teacher interface of :class:`~mentor.train.teacher.SelfTeacher` for another model."""

    kind = "separate"

    def __init__(self, model) -> None:
        self.copy = model

    @contextlib.contextmanager
    def scoring(self, student, key: None = None) -> Iterator:
        yield self.copy
