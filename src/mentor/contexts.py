"""Builders of the self-teacher's prompt: the student's question plus a context.

Each context kind is a plain template a user can read and override. ``none`` is the student's own
prompt; ``reference`` adds a complete reference solution; ``critique`` adds a critic's step-aligned
critique of the student's own attempt; ``success`` adds a sibling rollout that the verifier accepted
(SDPO's self-teacher context).
"""

from __future__ import annotations

from mentor.records import Problem

TEMPLATES = {
    "none": "{question}",
    "reference": (
        "{question}\n\nHere is a reference solution:\n{reference}\n\n"
        "Now write your own step-by-step reasoning that reaches the same answer."
    ),
    "critique": (
        "{question}\n\nHere is feedback on your previous attempt:\n{critique}\n\n"
        "Now write a corrected step-by-step solution."
    ),
    "success": (
        "{question}\n\nHere is a correct solution to this problem:\n{success}\n\n"
        "Now write your own step-by-step solution."
    ),
}
CONTEXT_KINDS = tuple(TEMPLATES)
CONTEXT_LABELS = {  # what each kind shows the self-teacher, in words (reports)
    "none": "none (the student's own prompt)",
    "reference": "reference solution",
    "critique": "step-aligned critique",
    "success": "successful sibling rollout",
}


def build_context_prompt(
    kind: str,
    question: str,
    *,
    problem: Problem | None = None,
    critique: str | None = None,
    success: str | None = None,
    templates: dict[str, str] | None = None,
) -> str:
    """The user message of the self-teacher for one context ``kind``."""
    templates = {**TEMPLATES, **(templates or {})}
    if kind not in templates:
        raise ValueError(f"unknown context kind {kind!r}; choose one of {', '.join(templates)}")
    if kind == "reference" and (problem is None or not problem.solution):
        raise ValueError(f"context 'reference' needs a reference solution (problem {getattr(problem, 'id', '?')})")
    if kind == "critique" and not critique:
        raise ValueError("context 'critique' needs a critique")
    if kind == "success" and not success:
        raise ValueError("context 'success' needs a successful sibling rollout")
    return templates[kind].format(
        question=question,
        reference=problem.solution if problem is not None else "",
        critique=critique or "",
        success=success or "",
    )


def completion_token_mismatch(tokenizer, student_prompt: str, teacher_prompt: str, completion: str) -> str | None:
    """Why the student and the teacher would score different tokens for the same completion, or None.

    The self-teacher scores the student's own tokens after its own prompt. That is only the same sequence
    when the completion tokenises identically after either prompt (a merge across the prompt boundary or a
    template that adds a space would shift it). Checked at start-up, warned about, not silently trained on.
    """
    own = tokenizer(completion, add_special_tokens=False)["input_ids"]
    for name, prompt in (("student", student_prompt), ("teacher", teacher_prompt)):
        n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        joined = tokenizer(prompt + completion, add_special_tokens=False)["input_ids"]
        if joined[n_prompt:] != own or len(joined) != n_prompt + len(own):
            return (f"the completion tokenises differently after the {name} prompt "
                    f"({len(joined) - n_prompt} tokens instead of {len(own)})")
    return None
