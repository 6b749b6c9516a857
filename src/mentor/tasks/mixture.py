"""Several tasks as one (``mix:SPEC;SPEC;...``): problems drawn from each in turn, every problem's ``source``
naming the task it came from, which writes its prompt, verifies it and critiques it. What several teachers
route on (``onpolicy.teacher_route=source``), and how a run trains on problems of different kinds."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from mentor.records import Feedback, Problem, Verdict
from mentor.tasks.base import Task


class MixtureTask(Task):
    """Problems of ``tasks`` interleaved (one from each in turn, equal shares; task i's j-th problem is the
    same whatever the total), each handled by its own task."""

    def __init__(self, tasks: Sequence[Task]) -> None:
        names = [task.name for task in tasks]
        if len(tasks) < 2:
            raise ValueError(f"a mixture needs at least two tasks, got {len(tasks)}")
        if len(set(names)) != len(names):
            raise ValueError(f"a mixture's tasks must differ, got {names}")
        self.tasks = {task.name: task for task in tasks}
        self.name = "mix-" + "+".join(names)

    def problems(self, split: str = "test", n: int | None = None, seed: int = 0) -> list[Problem]:
        n = 100 if n is None else n
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        tasks = list(self.tasks.values())
        drawn = [task.problems(split, n=n // len(tasks) + (i < n % len(tasks)), seed=seed)
                 for i, task in enumerate(tasks)]
        out = []
        for j in range(max(map(len, drawn), default=0)):
            for task, problems in zip(tasks, drawn):
                if j < len(problems):
                    problem = problems[j]
                    out.append(problem if problem.source == task.name else dataclasses.replace(
                        problem, id=f"{task.name}/{problem.id}", source=task.name))
        return out

    def _task(self, problem: Problem) -> Task:
        try:
            return self.tasks[problem.source]
        except KeyError:
            raise ValueError(f"problem {problem.id!r} comes from {problem.source!r}, not from one of this "
                             f"mixture's tasks ({', '.join(self.tasks)})") from None

    def prompt(self, problem: Problem) -> str:
        return self._task(problem).prompt(problem)

    def verify(self, problem: Problem, completion: str) -> Verdict:
        return self._task(problem).verify(problem, completion)

    def critique(self, problem: Problem, completion: str) -> Feedback | None:
        return self._task(problem).critique(problem, completion)

    def gold_trace(self, problem: Problem) -> str | None:
        return self._task(problem).gold_trace(problem)
