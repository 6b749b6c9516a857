"""The first line of a step-aligned critique (docs/methods.md, section 1), worded the same by every
programmatic critic: which step is wrong, and what the corrected solution below it does."""

from __future__ import annotations


def critique_header(case: str, error_step: int | None, at_answer: bool = False) -> str:
    """The header of a critique of ``case`` whose first error is at 1-based ``error_step`` (``at_answer``:
    every step is right and only the final answer is wrong)."""
    if case == "correct":
        return "All steps are correct."
    if case == "missing_step":
        return f"Step {error_step} is missing; it is inserted below and the rest is checked."
    if case == "incomplete":
        return "The steps so far are correct but the solution is incomplete; it is finished below."
    if at_answer:
        return "All steps are correct but the final answer is wrong; it is fixed below."
    before = {1: "", 2: "Step 1 is correct. "}.get(error_step, f"Steps 1 to {error_step - 1} are correct. ")
    return f"{before}Step {error_step} is wrong; it is fixed below and the rest is recomputed."
