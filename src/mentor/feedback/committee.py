"""The teacher committee of MAPD / FAIR (docs/methods.md, section 3): its prompts and the review-score parser.

Three requests go to the teachers, each a user message built from a template below:

- :data:`EXPLAIN_TEMPLATE`: explain a student's mistakes, given the question, the student's answer and the
  gold answer as a hint;
- :data:`RATIONALE_TEMPLATE`: answer the bare question step by step;
- :data:`REVIEW_TEMPLATE`: score another teacher's rationale from 1 to 5 (gold answer as a hint), the score
  written last, in square brackets.

The templates mark their parts with ``### Heading`` lines, so a part can be read back
(:func:`extract_section`) and the kind of a request recognised (:func:`request_kind`): this is how the
world's simulated teachers know what they are asked, exactly as a real teacher reads the prompt.

The two instructions the *student* is trained on (:data:`STUDENT_EXPLAIN_TEMPLATE`: point out the mistakes
in this answer; and the task prompt plus ``Answer step by step.``) are here too, beside the teachers'.
"""

from __future__ import annotations

import re

EXPLAIN_TEMPLATE = """A student answered the question below. The gold answer is given as a hint.

### Question
{question}

### Student answer
{student_answer}

### Gold answer (hint)
{gold}

### Task
Explain the student's mistakes: name the first wrong step, say why it is wrong and how to correct it."""

RATIONALE_INSTRUCTION = "Answer step by step."
RATIONALE_TEMPLATE = "{prompt}\n\n" + RATIONALE_INSTRUCTION

REVIEW_TEMPLATE = """Review another teacher's solution of the question below. The gold answer is given as a hint.

### Question
{question}

### Gold answer (hint)
{gold}

### Rationale to review
{rationale}

### Task
Check every step. Score the rationale from 1 (wrong) to 5 (correct and clear). Write the score last, as a
single number in square brackets, e.g. [3]."""

EXPLANATION_REVIEW_TEMPLATE = """Review another teacher's explanation of a student's mistakes. The gold answer is given as a hint.

### Question
{question}

### Student answer
{student_answer}

### Gold answer (hint)
{gold}

### Explanation to review
{explanation}

### Task
Check that the explanation names the student's first wrong step and corrects it. Score the explanation from
1 (wrong) to 5 (correct and clear). Write the score last, as a single number in square brackets, e.g. [3]."""

#: the explanation task the student is trained on (instruction: point out the mistakes in this answer)
STUDENT_EXPLAIN_TEMPLATE = """{prompt}

Here is an answer to this question:
{student_answer}

Point out the mistakes in this answer."""

SCORE_RANGE = (1.0, 5.0)
#: why a review's score was not used; ``ok`` when it was
SCORE_REASONS = ("ok", "empty", "no_score", "unbracketed", "out_of_range")

_SCORE_RE = re.compile(r"\[\s*([+-]?\d+(?:\.\d+)?)\s*\]")
_UNBRACKETED_RE = re.compile(r"\b\d+(?:\.\d+)?\s*(?:/|out of)\s*5\b")


def explain_prompt(question: str, student_answer: str, gold: str) -> str:
    return EXPLAIN_TEMPLATE.format(question=question.strip(), student_answer=student_answer.strip(), gold=gold)


def rationale_prompt(prompt: str) -> str:
    return RATIONALE_TEMPLATE.format(prompt=prompt.strip())


def review_prompt(question: str, rationale: str, gold: str) -> str:
    return REVIEW_TEMPLATE.format(question=question.strip(), rationale=rationale.strip(), gold=gold)


def explanation_review_prompt(question: str, student_answer: str, explanation: str, gold: str) -> str:
    return EXPLANATION_REVIEW_TEMPLATE.format(question=question.strip(), student_answer=student_answer.strip(),
                                              explanation=explanation.strip(), gold=gold)


def student_explain_prompt(prompt: str, student_answer: str) -> str:
    return STUDENT_EXPLAIN_TEMPLATE.format(prompt=prompt.strip(), student_answer=student_answer.strip())


def extract_section(text: str, heading: str) -> str | None:
    """The text under ``### heading`` up to the next ``### `` heading line (stripped); None without it."""
    match = re.search(rf"(?m)^### {re.escape(heading)}[ \t]*\n(.*?)(?=^### |\Z)", text, re.S)
    return match.group(1).strip() if match else None


def request_kind(text: str) -> str:
    """Which committee request a user message is: explanation, review, rationale, or a plain solve."""
    if extract_section(text, "Explanation to review") is not None:
        return "explanation_review"
    if extract_section(text, "Rationale to review") is not None:
        return "review"
    if extract_section(text, "Student answer") is not None:
        return "explanation"
    if text.rstrip().endswith(RATIONALE_INSTRUCTION):
        return "rationale"
    return "solve"


def parse_score(text: str) -> tuple[float | None, str]:
    """A review's score: the last bracketed number (``[4]``, ``[ 4 ]``, ``[4.5]``), valid in 1..5.

    Returns ``(score, "ok")`` or ``(None, reason)``: ``empty`` (no text), ``no_score`` (no bracketed number),
    ``unbracketed`` (a score written like ``4/5`` or ``4 out of 5`` with no bracketed number), or
    ``out_of_range`` (the last bracketed number is outside 1..5, e.g. ``[7]``; an earlier valid one is not
    used instead: the reviewer's final word is the last one).
    """
    if not text.strip():
        return None, "empty"
    found = _SCORE_RE.findall(text)
    if not found:
        return None, "unbracketed" if _UNBRACKETED_RE.search(text) else "no_score"
    score = float(found[-1])
    if not SCORE_RANGE[0] <= score <= SCORE_RANGE[1]:
        return None, "out_of_range"
    return score, "ok"


def accept(scores: list[float], correct: bool, threshold: float = 3.0, *, require_review: bool = True,
           require_verified: bool = True) -> bool:
    """The peer-review rule: the mean of the valid scores is above ``threshold`` (a rationale with no valid
    score fails it) and, when ``require_verified``, the rationale's answer passed the verifier. Either test
    can be switched off."""
    if require_review and (not scores or sum(scores) / len(scores) <= threshold):
        return False
    return correct or not require_verified
