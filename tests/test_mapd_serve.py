"""mentor generate and MAPD's explain and review stages against a real OpenAI-compatible server (``transformers serve`` with
SmolLM2-135M-Instruct on loopback): the text is weak; what is checked is that rows, score parsing, the request
cache and the statistics are right with real model text."""

from __future__ import annotations

import json

from mentor.feedback.committee import parse_score
from mentor.offline.mapd import Rationale, StudentAnswer, explain, review
from mentor.teachers import TeacherConfig, build_teacher
from serving import needs_served_smollm2, served_smollm2  # noqa: F401 - the fixture is used by name

pytestmark = needs_served_smollm2

QUESTIONS = [("q1", "Tom has 3 apples and buys 4 more. How many apples does he have?", "7"),
             ("q2", "A box holds 6 eggs. How many eggs are in 2 boxes?", "12")]


def teachers(served, cache_dir):
    cache_dir.mkdir(parents=True, exist_ok=True)
    return [build_teacher(TeacherConfig(kind="openai", name=name, base_url=served.base_url, model=served.model,
                                        api_key_env="MENTOR_NO_SUCH_KEY", max_retries=1), cache_dir)
            for name in ("smol-a", "smol-b")]


def test_explain_and_review_with_real_model_text(served_smollm2, tmp_path):  # noqa: F811
    mined = [StudentAnswer(pid, q, q, gold, "3 + 4 = 8. The answer is \\boxed{8}.", False, "8", "wrong")
             for pid, q, gold in QUESTIONS]
    before = served_smollm2.requests_seen()
    committee = teachers(served_smollm2, tmp_path / "explain")
    s = explain(committee, mined, tmp_path / "explain", max_new_tokens=24)
    assert served_smollm2.requests_seen() - before == 4  # 2 items x 2 teachers
    rows = [json.loads(line) for line in (tmp_path / "explain" / "explanations.jsonl").read_text().splitlines()]
    assert [(r["problem_id"], r["teacher"]) for r in rows] == [(p, t) for p, _, _ in QUESTIONS
                                                              for t in ("smol-a", "smol-b")]
    assert all(r["finish_reason"] in ("stop", "length") for r in rows)
    assert s["explanations"] == 4 and s["empty"] == sum(not r["text"].strip() for r in rows)
    assert all(v["requests"] >= 2 for v in s["this_run"]["teachers"].values())

    rationales = [Rationale(pid, author, q, q, gold, f"Step by step: the answer is \\boxed{{{gold}}}. [5]", True,
                            gold, "ok") for pid, q, gold in QUESTIONS for author in ("smol-a", "smol-b")]
    before = served_smollm2.requests_seen()
    committee = teachers(served_smollm2, tmp_path / "review")
    s = review(committee, rationales, tmp_path / "review", max_new_tokens=24)
    assert served_smollm2.requests_seen() - before == 4  # 4 rationales x 1 other teacher each
    reviews = [json.loads(line) for line in (tmp_path / "review" / "reviews.jsonl").read_text().splitlines()]
    assert len(reviews) == 4 and all(r["author"] != r["reviewer"] for r in reviews)
    for r in reviews:  # the stored score is what the parser makes of the real text
        assert (r["score"], r["reason"]) == parse_score(r["text"])
    assert s["valid_reviews"] + s["unparseable_reviews"] == 4
    assert sum(s["score_histogram"].values()) == s["valid_reviews"]
    assert sum(s["unparseable_by_reason"].values()) == s["unparseable_reviews"]

    # the rows file lost: the same stage again is answered from the request cache, nothing is sent
    (tmp_path / "review" / "reviews.jsonl").unlink()
    before = served_smollm2.requests_seen()
    again = review(teachers(served_smollm2, tmp_path / "review"), rationales, tmp_path / "review", max_new_tokens=24)
    assert served_smollm2.requests_seen() == before
    assert sum(v.get("cache_hits", 0) for v in again["this_run"]["teachers"].values()) == 4
    assert [json.loads(line) for line in (tmp_path / "review" / "reviews.jsonl").read_text().splitlines()] == reviews


def test_generate_with_a_served_teacher_scores_caches_and_counts(served_smollm2, tmp_path):  # noqa: F811
    from mentor.offline.generate import GenerateConfig, run_generate

    teacher = TeacherConfig(kind="openai", base_url=served_smollm2.base_url, model=served_smollm2.model,
                            api_key_env="MENTOR_NO_SUCH_KEY", max_retries=1)
    config = GenerateConfig(task="gym:basic_arithmetic", n_problems=2, group_size=2, max_new_tokens=24,
                            teacher=teacher)
    before = served_smollm2.requests_seen()
    summary = run_generate(config, tmp_path / "gen")
    assert served_smollm2.requests_seen() - before == 4  # 2 prompts x 2 samples, each its own request
    rows = [json.loads(line) for line in (tmp_path / "gen" / "responses.jsonl").read_text().splitlines()]
    assert sorted((r["problem_id"], r["sample_index"]) for r in rows) == sorted(
        (r["problem_id"], j) for r in rows[::2] for j in (0, 1))
    assert summary["responses"] == 4 and summary["correct"] == sum(r["verdict"]["correct"] for r in rows)
    assert summary["truncated"] == sum(r["finish_reason"] == "length" for r in rows)
    assert all(set(r["weights"]) >= {"zscore", "minmax", "softmax"} for r in rows)
    # the rows lost: the same command again is answered from the request cache, nothing is sent
    (tmp_path / "gen" / "responses.jsonl").unlink()
    before = served_smollm2.requests_seen()
    again = run_generate(config, tmp_path / "gen")
    assert served_smollm2.requests_seen() == before and again["responses"] == 4
