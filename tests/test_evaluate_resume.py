"""An evaluation writing to a folder keeps each problem's rollouts as soon as they are drawn: run again on
the same folder it draws only the problems it had not finished, and ends with what one straight run writes."""

from __future__ import annotations

import json

import pytest

from mentor.evaluate import UNFINISHED, EvalConfig, evaluate, open_rollouts, write_results
from mentor.loading import load_model
from mentor.records import Rollout, append_jsonl
from mentor.rows import RowFile
from mentor.sampling.local import LocalSampler
from mentor.tasks import load_task

CONFIG = EvalConfig(n_problems=3, k=2, max_new_tokens=40, contexts=["none", "critique"])
CHECKPOINT = {"spec": "world", "path": "world"}


@pytest.fixture(scope="module")
def world():
    model, tokenizer = load_model("world")
    task = load_task("world")
    return model, tokenizer, task, task.problems("test", n=CONFIG.n_problems)


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_an_interrupted_evaluation_resumes_without_drawing_again(world, tmp_path, monkeypatch):
    model, tokenizer, task, problems = world
    straight = tmp_path / "straight"
    summaries, rollouts = evaluate(model, tokenizer, task, problems, CONFIG,
                                   saved=open_rollouts(straight, CONFIG, CHECKPOINT, problems))
    write_results(straight, CONFIG, summaries, rollouts, CHECKPOINT)
    assert not (straight / UNFINISHED).exists()

    # an interrupted run left problem 0 whole and one sample of problem 1 (the other was being drawn)
    resumed = tmp_path / "resumed"
    open_rollouts(resumed, CONFIG, CHECKPOINT, problems)
    first = lines(straight / "rollouts_none.jsonl")
    for row in first[:3]:
        append_jsonl(resumed / "rollouts_none.jsonl", row)
    drawn: list[list[int]] = []
    generate = LocalSampler.generate

    def spy(self, prompts, params, progress=None, **kwargs):
        drawn.append(list(kwargs.get("indices") or range(len(prompts))))
        return generate(self, prompts, params, progress, **kwargs)

    monkeypatch.setattr(LocalSampler, "generate", spy)
    saved = open_rollouts(resumed, CONFIG, CHECKPOINT, problems)
    assert saved["none"].found == 3
    again, again_rollouts = evaluate(model, tokenizer, task, problems, CONFIG, saved=saved)
    assert drawn == [[1, 2], [0, 1, 2]]  # none: problem 0 read back; critique: all drawn
    for kind in ("none", "critique"):  # no second row for the sample kept from problem 1
        assert len(RowFile(resumed / f"rollouts_{kind}.jsonl", Rollout, lambda r: (r.problem_id, r.sample_index)).rows) == 6
    write_results(resumed, CONFIG, again, again_rollouts, CHECKPOINT)
    tokens = lambda rows: [(r["problem_id"], r["sample_index"], r["token_ids"]) for r in rows]  # noqa: E731
    for kind in ("none", "critique"):
        assert tokens(lines(resumed / f"rollouts_{kind}.jsonl")) == tokens(lines(straight / f"rollouts_{kind}.jsonl"))
    assert {k: again[k]["avg@2"] for k in again} == {k: summaries[k]["avg@2"] for k in summaries}


def test_a_finished_or_different_evaluation_is_not_resumed(world, tmp_path):
    _, _, _, problems = world
    row = {"problem_id": problems[0].id, "prompt": "p", "completion": "c", "sample_index": 0}
    open_rollouts(tmp_path, CONFIG, CHECKPOINT, problems)
    append_jsonl(tmp_path / "rollouts_none.jsonl", row)
    assert open_rollouts(tmp_path, CONFIG, CHECKPOINT, problems)["none"].found == 1  # same config: kept
    other = EvalConfig(**{**CONFIG.__dict__, "seed": 1})
    assert open_rollouts(tmp_path, other, CHECKPOINT, problems)["none"].found == 0  # another config: emptied
    write_results(tmp_path, other, {}, {}, CHECKPOINT)  # finished
    append_jsonl(tmp_path / "rollouts_none.jsonl", row)
    assert open_rollouts(tmp_path, other, CHECKPOINT, problems)["none"].found == 0  # the next one starts afresh
    assert not (tmp_path / "results.json").exists()
    assert open_rollouts(tmp_path, CONFIG, CHECKPOINT, [problems[0], problems[0]]) is None  # ids repeat
