"""MAPD / FAIR: the committee's prompts and score parser, the acceptance rule, peer review without
self-review, the simulated teachers' new request kinds, the stages resuming after a real SIGKILL, the
ablations of build, the alpha-weighted loss and bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from mentor.cli import main
from mentor.feedback.committee import (
    accept,
    explain_prompt,
    parse_score,
    rationale_prompt,
    request_kind,
    review_prompt,
)
from mentor.offline.mapd import (
    Rationale,
    StudentAnswer,
    build,
    explain,
    load_dataset_rows,
    mapd_examples,
    rationales,
    read_rows,
    review,
)
from mentor.records import RecordError
from mentor.sampling import SamplingParams
from mentor.tasks import load_task
from mentor.world.problems import WorldProblem, canonical_solution, corrupt_trace, question_text
from mentor.world.teacher import SimulatedWorldTeacher

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


# ----- the score parser and the acceptance rule ---------------------------------------------------------


@pytest.mark.parametrize(("text", "score", "reason"), [
    ("Every step is right. Score: [4]", 4.0, "ok"),
    ("Good work. [ 5 ]\n", 5.0, "ok"),
    ("Step 2 is wrong [2], but on reflection the rest is fine: [3]", 3.0, "ok"),  # the last one counts
    ("[4] first, then [see step 2] and a final [1]", 1.0, "ok"),
    ("partly right [3.5]", 3.5, "ok"),
    ("I liked it.", None, "no_score"),
    ("", None, "empty"),
    ("   \n", None, "empty"),
    ("Score: [7]", None, "out_of_range"),
    ("[4] ... actually [0]", None, "out_of_range"),  # the last bracketed number decides, even when invalid
    ("I would rate this 4/5.", None, "unbracketed"),
    ("4 out of 5", None, "unbracketed"),
    ("[4/5]", None, "unbracketed"),
])
def test_parse_score(text, score, reason):
    assert parse_score(text) == (score, reason)


def test_acceptance_rule_with_and_without_the_verifier():
    assert accept([4, 5], correct=True)
    assert not accept([4, 5], correct=False)  # the verifier says no
    assert accept([4, 5], correct=False, require_verified=False)
    assert not accept([3, 3], correct=True)  # the mean must be *above* the threshold
    assert accept([3, 4], correct=True)
    assert not accept([], correct=True)  # no valid score: not accepted
    assert accept([], correct=True, require_review=False)
    assert not accept([1], correct=False, require_review=False)
    assert accept([3, 3], correct=True, threshold=2.5)


def test_request_kinds_are_recognised_from_the_templates():
    assert request_kind(explain_prompt("Q?", "my answer", "4")) == "explanation"
    assert request_kind(review_prompt("Q?", "a rationale", "4")) == "review"
    assert request_kind(rationale_prompt("Q?")) == "rationale"
    assert request_kind("Q?") == "solve"


# ----- the simulated teachers' new request kinds --------------------------------------------------------


@pytest.fixture(scope="module")
def world():
    task = load_task("world")
    return task, task.problems("train", n=12)


def ask(teacher, prompt, seed=0):
    return teacher.chat([[{"role": "user", "content": prompt}]], SamplingParams(max_new_tokens=512, seed=seed))[0][0].text


def test_simulated_teacher_explains_the_first_wrong_step(world):
    import random

    _, problems = world
    wp = WorldProblem.from_meta(problems[0].meta)
    wrong = corrupt_trace(wp, random.Random(0), "result", 2)
    exact = SimulatedWorldTeacher("t", error_rate=0.0)
    text = ask(exact, explain_prompt(question_text(wp), wrong, str(wp.answer)))
    assert "Step 2 is wrong" in text and canonical_solution(wp).splitlines()[-1] in text
    liar = SimulatedWorldTeacher("t", error_rate=1.0)
    assert "Step 2 is wrong" not in ask(liar, explain_prompt(question_text(wp), wrong, str(wp.answer)))


def test_simulated_reviews_score_what_the_critic_finds_and_can_be_malformed(world):
    import random

    _, problems = world
    exact = SimulatedWorldTeacher("t", review_noise=0.0)
    for problem in problems[:5]:
        wp = WorldProblem.from_meta(problem.meta)
        good = canonical_solution(wp)
        assert parse_score(ask(exact, review_prompt(problem.question, good, problem.answer))) == (5.0, "ok")
        bad = corrupt_trace(wp, random.Random(1), "result", 1)
        assert parse_score(ask(exact, review_prompt(problem.question, bad, problem.answer))) == (1.0, "ok")
    # a correct rationale in the alternative wording is read too
    from mentor.world.problems import alternative_solution

    wp = WorldProblem.from_meta(problems[0].meta)
    alternative = alternative_solution(wp, random.Random(3))
    assert parse_score(ask(exact, review_prompt(problems[0].question, alternative, problems[0].answer)))[0] == 5.0
    broken = SimulatedWorldTeacher("t", malformed_review_rate=1.0)
    reasons = {parse_score(ask(broken, review_prompt(p.question, canonical_solution(WorldProblem.from_meta(p.meta)),
                                                     p.answer), seed=i))[1] for i, p in enumerate(problems)}
    assert reasons <= {"no_score", "out_of_range", "unbracketed"} and len(reasons) >= 2


# ----- review: nobody reviews their own rationale; the acceptance switches ------------------------------


def rationale_rows(problems, teachers_correct: dict[str, bool]) -> list[Rationale]:
    rows = []
    for problem in problems:
        wp = WorldProblem.from_meta(problem.meta)
        for name, correct in teachers_correct.items():
            text = canonical_solution(wp) if correct else canonical_solution(wp).rsplit("<answer>", 1)[0] + \
                f"<answer> {(wp.answer + 1) % wp.modulus}"
            rows.append(Rationale(problem.id, name, problem.question, problem.question, problem.answer, text,
                                  correct, None, "ok" if correct else "wrong"))
    return rows


def test_review_excludes_self_review_and_counts_everything(world, tmp_path):
    _, problems = world
    teachers = [SimulatedWorldTeacher(n, seed=i, review_noise=0.2, malformed_review_rate=0.3)
                for i, n in enumerate(("a", "b", "c"))]
    rows = rationale_rows(problems[:6], {"a": True, "b": True, "c": False})
    s = review(teachers, rows, tmp_path / "r")
    reviews = [json.loads(line) for line in (tmp_path / "r" / "reviews.jsonl").read_text().splitlines()]
    assert len(reviews) == 18 * 2 and all(r["reviewer"] != r["author"] for r in reviews)
    assert {(r["problem_id"], r["author"], r["reviewer"]) for r in reviews} == {
        (p.id, a, b) for p in problems[:6] for a in "abc" for b in "abc" if a != b}
    assert all(t.stats()["requests"] == 12 for t in teachers)
    assert s["reviews"] == 36 and s["valid_reviews"] + s["unparseable_reviews"] == 36
    assert s["unparseable_reviews"] == sum(s["unparseable_by_reason"].values()) > 0
    assert sum(s["score_histogram"].values()) == s["valid_reviews"]
    assert s["per_teacher"]["c"]["accepted"] == 0  # never verified
    reviewed = [json.loads(line) for line in (tmp_path / "r" / "reviewed.jsonl").read_text().splitlines()]
    for row in reviewed:
        scores = [r["score"] for r in row["reviews"] if r["score"] is not None]
        assert row["n_valid"] == len(scores)
        assert row["accepted"] == accept(scores, row["rationale"]["correct"])
    # without the verifier switch, some of c's wrong rationales pass on their (noisy) scores alone
    s2 = review(teachers, rows, tmp_path / "r2", require_verified=False)
    assert s2["accepted"] >= s["accepted"]
    assert s2["per_teacher"]["c"]["accepted"] == sum(
        r["mean_score"] is not None and r["mean_score"] > 3 for r in reviewed if r["rationale"]["teacher"] == "c")


def test_review_needs_two_teachers(world, tmp_path):
    _, problems = world
    with pytest.raises(ValueError, match="at least two teachers"):
        review([SimulatedWorldTeacher("a")], rationale_rows(problems[:1], {"a": True}), tmp_path / "r")


# ----- the stages through the command line; a real SIGKILL mid-stage ------------------------------------


SLOW = [f"teachers.sim-{x}.delay_s=0.01" for x in "abc"]
BASE = ["n_problems=12", "prompts_per_call=1"]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """The five stages run once, uninterrupted, on 12 world problems."""
    root = tmp_path_factory.mktemp("mapd")
    assert main(["mapd", "mine", "--out", str(root / "mine"), *BASE]) == 0
    assert main(["mapd", "explain", "--mined", str(root / "mine"), "--out", str(root / "explain"), *BASE]) == 0
    assert main(["mapd", "rationales", "--out", str(root / "rationales"), *BASE]) == 0
    assert main(["mapd", "review", "--rationales", str(root / "rationales"), "--out", str(root / "review"),
                 *BASE]) == 0
    for ablation in ("committee", "single", "no-explanation"):
        assert main(["mapd", "build", "--mined", str(root / "mine"), "--explanations", str(root / "explain"),
                     "--reviewed", str(root / "review"), "--out", str(root / f"build-{ablation}"),
                     "--ablation", ablation]) == 0
    return root


def summary(folder) -> dict:
    return json.loads((folder / "summary.json").read_text())


def test_the_pipeline_counts(pipeline):
    mine_s = summary(pipeline / "mine")
    n_mined = mine_s["mined"]
    assert mine_s["problems"] == 12 and n_mined == 12 - mine_s["correct"] and n_mined > 0
    mined = read_rows(pipeline / "mine", StudentAnswer, "mined.jsonl")
    assert len(mined) == n_mined and not any(m.correct for m in mined)
    assert summary(pipeline / "explain")["explanations"] == 3 * n_mined
    assert summary(pipeline / "rationales")["rationales"] == 36
    rev = summary(pipeline / "review")
    assert rev["reviews"] == 72 and rev["rationales"] == 36
    assert set(rev["per_teacher"]) == {"sim-a", "sim-b", "sim-c"}
    committee = summary(pipeline / "build-committee")
    assert committee["explanation_rows"] == n_mined
    assert committee["rationale_rows"] == n_mined - committee["items_without_rationale"]
    accepted = {(r["rationale"]["problem_id"], r["rationale"]["teacher"])
                for r in map(json.loads, (pipeline / "review" / "reviewed.jsonl").read_text().splitlines())
                if r["accepted"]}
    for row in load_dataset_rows(pipeline / "build-committee"):
        if row["task"] == "rationale":
            assert (row["problem_id"], row["teacher"]) in accepted
            assert row["prompt"].endswith("Answer step by step.")
        else:
            assert row["prompt"].endswith("Point out the mistakes in this answer.")
    single = summary(pipeline / "build-single")
    # no review, but the verifier still applies: every item whose sim-a rationale reaches the gold answer
    assert single["teachers"] == ["sim-a"] and single["rationale_rows"] == n_mined - single["items_without_rationale"]
    assert single["rationale_rows"] > 0
    assert {r["teacher"] for r in load_dataset_rows(pipeline / "build-single")} == {"sim-a"}
    no_expl = summary(pipeline / "build-no-explanation")
    assert no_expl["explanation_rows"] == 0 and no_expl["rationale_rows"] == committee["rationale_rows"]
    import datasets

    assert len(datasets.load_from_disk(str(pipeline / "build-committee" / "dataset"))) == committee["rows"]


@pytest.mark.parametrize(("stage", "rows_file", "extra", "total"), [
    ("rationales", "rationales.jsonl", [], 36),
    ("review", "reviews.jsonl", ["--rationales", "{root}/rationales"], 72),
])
def test_a_stage_killed_mid_run_resumes_with_every_row_once(pipeline, tmp_path, stage, rows_file, extra, total):
    out = tmp_path / stage
    command = [sys.executable, "-m", "mentor.cli", "mapd", stage, "--out", str(out),
               *[e.format(root=pipeline) for e in extra], *BASE, *SLOW]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    path = out / rows_file
    deadline = time.time() + 60
    while time.time() < deadline and process.poll() is None:
        if path.is_file() and path.read_bytes().count(b"\n") >= 10:
            break
        time.sleep(0.005)
    assert process.poll() is None, "the stage ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "summary.json").exists()
    found = path.read_bytes().count(b"\n")
    assert 10 <= found < total
    assert subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120,
                          env=ENV).returncode == 0
    assert path.read_text() == (pipeline / stage / rows_file).read_text()  # every row once, as uninterrupted
    run = summary(out)["this_run"]
    assert run["rows_found"] == found and run["rows_written"] == total - found


def test_a_half_written_last_line_is_cut_and_rewritten(pipeline, tmp_path):
    import shutil

    out = tmp_path / "explain"
    shutil.copytree(pipeline / "explain", out)
    path = out / "explanations.jsonl"
    data = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join(data[:3]) + b"\n" + data[3][:17])
    assert main(["mapd", "explain", "--mined", str(pipeline / "mine"), "--out", str(out), *BASE]) == 0
    assert path.read_text() == (pipeline / "explain" / "explanations.jsonl").read_text()
    run = summary(out)["this_run"]
    assert run["partial_line_repaired"] and run["rows_found"] == 3


def test_another_configuration_in_the_same_folder_is_refused(pipeline, capsys):
    assert main(["mapd", "rationales", "--out", str(pipeline / "rationales"), "n_problems=5"]) == 2
    assert "another configuration" in capsys.readouterr().err


# ----- bad input ---------------------------------------------------------------------------------------


def test_a_mined_row_without_gold_answer_is_an_error_naming_the_line(pipeline, tmp_path, capsys):
    rows = (pipeline / "mine" / "mined.jsonl").read_text().splitlines()
    broken = json.loads(rows[0])
    broken["answer"] = ""
    missing = json.loads(rows[0])
    del missing["answer"]
    for bad, message in ((broken, "gold answer is required"), (missing, "field 'answer': missing")):
        path = tmp_path / "mined.jsonl"
        path.write_text(rows[0] + "\n" + json.dumps(bad) + "\n")
        with pytest.raises(RecordError, match=rf"mined.jsonl:2: .*{message}"):
            explain([SimulatedWorldTeacher("a")], path, tmp_path / "out")
        assert main(["mapd", "explain", "--mined", str(path), "--out", str(tmp_path / "cli")]) == 2
        err = capsys.readouterr().err
        assert "mined.jsonl:2" in err and message in err and len(err.strip().splitlines()) == 1


def test_a_data_file_row_without_gold_answer_is_an_error_naming_the_row(tmp_path, capsys):
    data = tmp_path / "gsm8k.jsonl"
    data.write_text(json.dumps({"question": "What is 2+2?", "answer": "2+2=4\n#### 4"}) + "\n"
                    + json.dumps({"question": "What is 3+3?"}) + "\n")
    assert main(["mapd", "rationales", "--data", str(data), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{data}:2" in err and "answer" in err
    assert not (tmp_path / "out" / "rationales.jsonl").exists()


def test_unknown_ablation_and_teacher_keys_are_user_errors(tmp_path, capsys):
    assert main(["mapd", "rationales", "--out", str(tmp_path / "o"), "teachers.sim-a.colour=red"]) == 2
    assert "unknown config key teachers.sim-a.colour" in capsys.readouterr().err
    assert main(["mapd", "build", "--out", str(tmp_path / "b"), "ablation=solo"]) == 2
    assert "unknown MAPD ablation" in capsys.readouterr().err


# ----- the alpha-weighted loss -------------------------------------------------------------------------


def test_mapd_examples_weights_reproduce_the_alpha_loss(world):
    from mentor.loading import load_model
    from mentor.losses import causal_lm_logprobs, weighted_nll
    from mentor.train.sft import collate, tokenize

    model, tokenizer = load_model("world")
    _, problems = world
    rows = []
    for i, problem in enumerate(problems[:7]):
        solution = canonical_solution(WorldProblem.from_meta(problem.meta))
        task = "explanation" if i % 3 == 0 else "rationale"  # unequal counts and lengths
        completion = solution if task == "rationale" else solution.split("<answer>")[0]
        rows.append({"task": task, "problem_id": problem.id, "teacher": "t", "prompt": problem.question,
                     "completion": completion})
    alpha = 0.3
    examples = mapd_examples(rows, alpha, tokenizer)
    data = tokenize(tokenizer, examples, 512)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    batch = collate(data, pad)
    with torch.no_grad():
        logp = causal_lm_logprobs(model, batch["input_ids"], batch["attention_mask"])
    loss, _ = weighted_nll(logp, batch["loss_mask"], batch["weight"])
    per_seq = (logp * batch["loss_mask"]).sum(1)
    tokens = batch["loss_mask"].sum(1)
    is_e = torch.tensor([r["task"] == "explanation" for r in rows])
    ce_e = -per_seq[is_e].sum() / tokens[is_e].sum()
    ce_r = -per_seq[~is_e].sum() / tokens[~is_e].sum()
    assert torch.allclose(loss, alpha * ce_e + (1 - alpha) * ce_r, rtol=1e-5)
    assert len({e.weight for e in examples}) == 2
    # one task only: plain SFT on it
    assert {e.weight for e in mapd_examples([r for r in rows if r["task"] == "rationale"], alpha, tokenizer)} == {1.0}
    with pytest.raises(ValueError, match="alpha"):
        mapd_examples(rows, 1.5, tokenizer)


def test_build_without_accepted_rationales_counts_them(world, tmp_path):
    _, problems = world
    mined = [StudentAnswer(p.id, p.question, p.question, p.answer, "<answer> x", False, "x", "wrong")
             for p in problems[:3]]
    reviewed_rows = rationale_rows(problems[:3], {"a": False, "b": False})
    teachers = [SimulatedWorldTeacher("a", review_noise=0.0), SimulatedWorldTeacher("b", review_noise=0.0)]
    review(teachers, reviewed_rows, tmp_path / "r")
    s = build(mined, [], tmp_path / "r", tmp_path / "b", ablation="no-explanation")
    assert s["rows"] == 0 and s["items_without_rationale"] == 3 and s["notes"]


def test_distill_trains_the_student_on_a_build_folder(pipeline, tmp_path):
    from mentor.offline.train import DistillConfig, training_examples
    from mentor.world.solver import SHIPPED_DIR, load_world_folder

    build = pipeline / "build-committee"
    _, tokenizer = load_world_folder(SHIPPED_DIR)
    examples, counts = training_examples(DistillConfig(data=str(build), mode="mapd", alpha=0.3), tokenizer)
    assert counts["explanation"] > 0 and counts["rationale"] > 0 and counts["examples"] == len(examples)
    assert all(e.completion.endswith(tokenizer.eos_token) for e in examples)
    assert len({e.weight for e in examples}) == 2  # one weight per task
    out = tmp_path / "mapd"
    assert main(["distill", "--out", str(out), f"data={build}", "mode=mapd", "sft.steps=2", "sft.batch_size=4",
                 "eval_problems=2", "eval_k=1"]) == 0
    assert json.loads((out / "summary.json").read_text())["method"] == "mapd"


def test_a_teacher_changed_under_the_same_name_is_refused_on_resume(world, tmp_path):
    task, problems = world
    rationales([SimulatedWorldTeacher("a", error_rate=0.0)], task, problems[:3], tmp_path)
    with pytest.raises(FileExistsError, match="teachers"):
        rationales([SimulatedWorldTeacher("a", error_rate=1.0)], task, problems[:3], tmp_path)


def test_build_refuses_an_explanation_of_another_student_answer(pipeline, tmp_path):
    import shutil

    mine = tmp_path / "mine"
    shutil.copytree(pipeline / "mine", mine)
    rows = [json.loads(line) for line in (mine / "mined.jsonl").read_text().splitlines()]
    rows[0]["completion"] += " (answered again)"
    (mine / "mined.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match="another student answer"):
        build(mine, pipeline / "explain", pipeline / "review", tmp_path / "build")


def test_a_text_cut_at_the_token_limit_gets_no_end_of_sequence(tmp_path):
    from mentor.offline.train import DistillConfig, training_examples
    from mentor.world.solver import SHIPPED_DIR, load_world_folder

    _, tokenizer = load_world_folder(SHIPPED_DIR)
    rows = [{"task": "explanation", "problem_id": "p", "teacher": "t", "prompt": "q", "completion": "cut he",
             "finish_reason": "length"},
            {"task": "rationale", "problem_id": "p", "teacher": "t", "prompt": "q", "completion": "done",
             "finish_reason": "stop"}]
    (tmp_path / "dataset.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    examples, _ = training_examples(DistillConfig(data=str(tmp_path), mode="mapd"), tokenizer)
    assert [e.completion for e in examples] == ["cut he", "done" + tokenizer.eos_token]
