"""The committee critic: teachers explain a rollout's mistakes, review each other's explanations, and the
best accepted explanation becomes the self-teacher's critique (issue 4 item 5)."""

from __future__ import annotations

import json
import random

import pytest

from mentor.feedback.committee_critic import CommitteeCritic
from mentor.tasks import load_task
from mentor.train.recipe import CriticConfig, TrainConfig, run_training
from mentor.world.problems import WorldProblem, canonical_solution, corrupt_trace
from mentor.world.teacher import SimulatedWorldTeacher


def traces(task, n=4):
    problems = task.problems("train", n=n)
    wrong = [corrupt_trace(WorldProblem.from_meta(p.meta), random.Random(i), "result", 1)
             for i, p in enumerate(problems)]
    return problems, wrong


def test_the_best_accepted_explanation_is_the_critique():
    task = load_task("world")
    problems, wrong = traces(task)
    committee = [SimulatedWorldTeacher("good", error_rate=0.0, review_noise=0.0),
                 SimulatedWorldTeacher("also-good", error_rate=0.0, review_noise=0.0),
                 SimulatedWorldTeacher("bad", error_rate=1.0, review_noise=0.0)]
    critic = CommitteeCritic(committee, task=task)
    feedback = critic.critique_many(problems, wrong)
    for problem, trace, fb in zip(problems, wrong, feedback):
        assert fb.author == "good"  # accepted with 5 / 5 like also-good: ties go to teacher order
        assert fb.case == ("correct" if task.verify(problem, trace).correct else "incorrect")
        assert "Step 1 is wrong" in fb.critique and canonical_solution(WorldProblem.from_meta(problem.meta)) in fb.critique
    assert critic.stats["reviews"] == 3 * 2 * len(problems)  # every other teacher, never itself
    assert critic.stats["usable"] == len(problems) and critic.stats["unusable"] == 0


def test_a_committee_of_wrong_explainers_gives_no_critique():
    task = load_task("world")
    problems, wrong = traces(task)
    committee = [SimulatedWorldTeacher(name, error_rate=1.0, review_noise=0.0) for name in "abc"]
    critic = CommitteeCritic(committee, task=task)
    assert all(fb.case == "unusable" for fb in critic.critique_many(problems, wrong))
    assert critic.stats["unusable"] == len(problems)


def test_malformed_reviews_are_counted_and_not_scores():
    task = load_task("world")
    problems, wrong = traces(task, n=3)
    committee = [SimulatedWorldTeacher(name, error_rate=0.0, malformed_review_rate=1.0) for name in "ab"]
    critic = CommitteeCritic(committee, task=task)
    assert all(fb.case == "unusable" for fb in critic.critique_many(problems, wrong))
    unparseable = sum(v for k, v in critic.stats.items() if k.startswith("review_"))
    assert unparseable == critic.stats["reviews"] == 2 * len(problems)


def test_a_committee_critic_needs_two_teachers():
    with pytest.raises(ValueError, match="at least two"):
        CommitteeCritic([SimulatedWorldTeacher("solo")])
    with pytest.raises(ValueError, match="at least two"):
        CriticConfig(kind="committee", teachers={"solo": {}})
    with pytest.raises(ValueError, match="critic.kind"):
        CriticConfig(kind="oracle")


def test_on_policy_training_takes_the_committee_critique_as_context(tmp_path):
    teachers = {"sim-a": {"error_rate": 0.0}, "sim-b": {"error_rate": 0.0}, "sim-c": {"error_rate": 1.0}}
    config = TrainConfig(critic=CriticConfig(kind="committee", teachers=teachers))
    config.onpolicy.steps, config.onpolicy.prompts_per_step = 2, 4
    config.onpolicy.eval_problems, config.onpolicy.eval_k, config.onpolicy.max_new_tokens = 4, 2, 120
    result = run_training(config, tmp_path)
    assert all(m["signal_fraction"] == 1.0 and m["critic_unusable"] == 0 for m in result.history)
    stats = json.loads((tmp_path / "critic_stats.json").read_text())
    assert stats["usable"] == 8 and stats["chosen_sim-a"] + stats.get("chosen_sim-b", 0) == 8
