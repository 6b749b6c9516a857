"""A committee as the self-teacher's critic: MAPD's teachers explain a rollout's mistakes, review each
other's explanations, and the best accepted explanation becomes the critique context of on-policy
self-distillation (docs/methods.md, section 5: peer-reviewed feedback feeding the self-teacher).

For each rollout every teacher writes an explanation (:data:`~mentor.feedback.committee.EXPLAIN_TEMPLATE`,
gold answer as a hint); every other teacher scores it 1-5
(:data:`~mentor.feedback.committee.EXPLANATION_REVIEW_TEMPLATE`, parsed by
:func:`~mentor.feedback.committee.parse_score`); an explanation is accepted when the mean of its valid
scores is above ``threshold``, and the best accepted one (ties: teacher order) is the critique. A rollout
with no accepted explanation gets an ``unusable`` Feedback: no teacher signal, counted in ``stats``.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence

from mentor.feedback.committee import accept, explain_prompt, explanation_review_prompt, parse_score
from mentor.records import Feedback, Problem
from mentor.sampling import SamplingParams
from mentor.teachers import Teacher, user_messages


class CommitteeCritic:
    """``critique_many(problems, traces)`` like :class:`~mentor.feedback.LLMCritic`, from a committee."""

    def __init__(self, teachers: Sequence[Teacher], *, threshold: float = 3.0, temperature: float = 0.0,
                 max_new_tokens: int = 512, review_max_new_tokens: int = 256, seed: int = 0, task=None) -> None:
        if len(teachers) < 2:
            raise ValueError("a committee critic needs at least two teachers (each explanation is reviewed by "
                             "the others)")
        self.teachers, self.threshold, self.task = list(teachers), threshold, task
        self.explain_params = SamplingParams(n=1, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed)
        self.review_params = SamplingParams(n=1, temperature=temperature, max_new_tokens=review_max_new_tokens,
                                            seed=seed)
        self.stats: Counter[str] = Counter()

    def critique_many(self, problems: list[Problem], traces: list[str]) -> list[Feedback]:
        if len(problems) != len(traces):
            raise ValueError(f"{len(problems)} problems but {len(traces)} traces")
        questions = [p.question for p in problems]
        explanations = []  # explanations[t][i]: teacher t's explanation of rollout i
        for index, teacher in enumerate(self.teachers):  # each its own seed: two copies of a model still differ
            asked = [user_messages(explain_prompt(q, trace, p.answer)) for q, trace, p in zip(questions, traces, problems)]
            params = dataclasses.replace(self.explain_params, seed=self.explain_params.seed + index)
            explanations.append([group[0].text for group in teacher.chat(asked, params)] if asked else [])
        scores = [[[] for _ in problems] for _ in self.teachers]  # scores[t][i]: reviews of teacher t's explanation
        for r, reviewer in enumerate(self.teachers):
            jobs = [(t, i) for t in range(len(self.teachers)) if t != r for i in range(len(problems))]
            asked = [user_messages(explanation_review_prompt(questions[i], traces[i], explanations[t][i],
                                                             problems[i].answer)) for t, i in jobs]
            replies = reviewer.chat(asked, self.review_params) if asked else []
            for (t, i), group in zip(jobs, replies):
                score, reason = parse_score(group[0].text)
                self.stats["reviews"] += 1
                if score is None:
                    self.stats[f"review_{reason}"] += 1
                else:
                    scores[t][i].append(score)
        out = []
        for i, (problem, trace) in enumerate(zip(problems, traces)):
            accepted = [(sum(scores[t][i]) / len(scores[t][i]), -t) for t in range(len(self.teachers))
                        if explanations[t][i].strip() and accept(scores[t][i], True, self.threshold,
                                                                  require_verified=False)]
            self.stats["explanations"] += len(self.teachers)
            if not accepted:
                self.stats["unusable"] += 1
                out.append(Feedback(problem_id=problem.id, critique="", case="unusable", author="committee"))
                continue
            _, best = max(accepted)
            self.stats["usable"] += 1
            self.stats[f"chosen_{self.teachers[-best].name}"] += 1
            correct = self.task is not None and self.task.verify(problem, trace).correct
            out.append(Feedback(problem_id=problem.id, critique=explanations[-best][i],
                                case="correct" if correct else "incorrect", author=self.teachers[-best].name))
        return out

    def close(self) -> None:
        for teacher in self.teachers:
            teacher.close()
