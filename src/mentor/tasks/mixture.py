"""Several tasks as one (``mix:SPEC;SPEC;...``): problems drawn from each in turn, every problem's ``source``
the spec of the task it came from, which writes its prompt, verifies it and critiques it. What several teachers
route on (``onpolicy.teacher_route=source``), and how a run trains on problems of different kinds."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from mentor.records import Feedback, Problem, Verdict
from mentor.tasks.base import Task


class MixtureTask(Task):
    """Problems of ``tasks`` interleaved (one from each in turn, equal shares; task i's j-th problem is the
    same whatever the total), each handled by its own task. ``names`` (default: the tasks' names; ``load_task``
    gives the specs) become each problem's ``source`` and the prefix of its id, so that ids never collide."""

    def __init__(self, tasks: Sequence[Task], names: Sequence[str] | None = None) -> None:
        names = [task.name for task in tasks] if names is None else list(names)
        if len(tasks) < 2:
            raise ValueError(f"a mixture needs at least two tasks, got {len(tasks)}")
        if len(names) != len(tasks) or len(set(names)) != len(names):
            raise ValueError(f"a mixture's tasks need one distinct name each, got {names}")
        self.tasks = dict(zip(names, tasks))
        self.name = "mix-" + "+".join(task.name for task in tasks)

    def problems(self, split: str = "test", n: int | None = None, seed: int = 0) -> list[Problem]:
        """``n`` problems (100 by default), equal shares of each task's; a task with fewer is refused."""
        n = 100 if n is None else n
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        drawn = []
        for i, (name, task) in enumerate(self.tasks.items()):
            share = n // len(self.tasks) + (i < n % len(self.tasks))
            problems = task.problems(split, n=share, seed=seed)
            if len(problems) < share:
                raise ValueError(f"the mixture's task {name!r} has {len(problems)} {split} problems, {share} asked")
            drawn.append([dataclasses.replace(p, id=f"{name}/{p.id}", source=name) for p in problems])
        return [problems[j] for j in range(max(map(len, drawn), default=0)) for problems in drawn
                if j < len(problems)]

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
