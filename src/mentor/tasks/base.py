"""The one small interface every problem source implements."""

from __future__ import annotations

from mentor.records import Feedback, Problem, Verdict


class Task:
    """A source of problems with its verifier and, where it can, an exact step critic.

    Subclasses implement :meth:`problems` and usually :meth:`verify`; tasks without a programmatic
    critic return ``None`` from :meth:`critique`.
    """

    name: str = "task"
    #: appended to every question; the usual instruction for math models. The world sets it to "".
    instruction: str = "Please reason step by step, and put your final answer within \\boxed{}."

    def problems(self, split: str = "test", n: int | None = None, seed: int = 0) -> list[Problem]:
        raise NotImplementedError

    def prompt(self, problem: Problem) -> str:
        """The user message the solver sees for a problem."""
        return f"{problem.question}\n\n{self.instruction}" if self.instruction else problem.question

    def verify(self, problem: Problem, completion: str) -> Verdict:
        from mentor.verify import verify

        return verify(completion, problem.answer)

    def critique(self, problem: Problem, completion: str) -> Feedback | None:
        return None

    def gold_trace(self, problem: Problem) -> str | None:
        """A correct solution in the solver's own format (what an oracle trains on); by default the
        problem's reference solution."""
        return problem.solution
