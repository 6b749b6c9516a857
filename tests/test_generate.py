"""`mentor generate`: rows, group statistics and every weight; the Hugging Face folder; resuming after a real
SIGKILL, a half-written last line and a crashed server; bad input and faults counted in the summary."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from mentor.cli import main
from mentor.offline.generate import (
    GenerateConfig,
    load_responses,
    recover_responses,
    reweight,
    run_generate,
)
from mentor.records import RecordError
from mentor.rewards import NORMALISATIONS, RewardConfig, WeightingConfig, all_group_weights, group_stats
from mentor.sampling import Sample
from mentor.sampling.openai_compatible import SamplerError
from mentor.teachers import TeacherConfig
from mentor.world.problems import canonical_solution, parse_question
from serving import loopback_server

BASE = ["-n", "8", "-G", "4", "teacher.error_rate=0.4"]


def lines(folder) -> list[str]:
    return (folder / "responses.jsonl").read_text().splitlines()


def summary(folder) -> dict:
    return json.loads((folder / "summary.json").read_text())


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted run of the command the resume tests interrupt."""
    out = tmp_path_factory.mktemp("gen") / "straight"
    assert main(["generate", "--out", str(out), *BASE]) == 0
    return out


def test_rows_carry_group_statistics_and_every_weight(straight):
    rows = load_responses(straight)
    ids = [f"world-4step-mod31-train-0-{i}" for i in range(8)]
    assert [(r.problem_id, r.sample_index) for r in rows] == [(i, j) for i in ids for j in range(4)]
    weighting = WeightingConfig()
    for i in range(0, 32, 4):
        group = rows[i : i + 4]
        rewards, correct = [r.reward for r in group], [r.verdict.correct for r in group]
        assert rewards == [float(c) for c in correct]  # default reward: correctness only
        stats = group_stats(rewards, correct)
        weights = all_group_weights(rewards, correct, weighting)
        for j, row in enumerate(group):
            assert row.group == stats
            assert row.weights == {m: weights[m][j] for m in NORMALISATIONS}
            assert set(row.components) == {"correctness", "format", "length", "repetition"}
            assert row.teacher == "sim-canonical-0.4" and row.sampling["seed"] == j
    s = summary(straight)
    assert s["prompts"] == 8 and s["responses"] == 32
    assert s["correct"] == sum(r.verdict.correct for r in rows)
    assert s["format_failures"] == sum(r.components["format"] == 0 for r in rows)
    assert s["empty"] == sum(not r.completion for r in rows)
    zero = sum(rows[i].group["zero_variance"] for i in range(0, 32, 4))
    assert s["zero_variance_groups"] == s["dropped_groups"] == zero
    assert s["weights"]["zscore"]["none"] == 4 * zero
    assert s["this_run"]["rows_written"] == 32 and s["this_run"]["teacher"]["requests"] == 32


def test_the_datasets_folder_holds_the_same_rows_flat(straight):
    import datasets

    dataset = datasets.load_from_disk(str(straight / "dataset"))
    assert len(dataset) == 32
    for column in ("correct", "reward", "group_mean", "group_n_correct", "weight", "weight_softmax",
                   "component_format"):
        assert column in dataset.column_names
    assert dataset["weight"] == dataset["weight_zscore"]
    assert load_responses(straight / "dataset") == load_responses(straight / "responses.jsonl")
    correct_only = dataset.filter(lambda row: row["correct"])
    assert len(correct_only) == summary(straight)["correct"]


def test_a_generate_process_killed_mid_run_resumes_to_the_same_rows(straight, tmp_path):
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "mentor.cli", "generate", "--out", str(out), *BASE,
               "teacher.delay_s=0.05", "prompts_per_call=1"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    path = out / "responses.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and process.poll() is None:
        if path.is_file() and path.read_bytes().count(b"\n") >= 10:
            break
        time.sleep(0.01)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "summary.json").exists()
    found = path.read_bytes().count(b"\n")
    assert 10 <= found < 32
    # the same command again
    assert subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}).returncode == 0
    assert lines(out) == lines(straight)  # every (problem, sample) once, equal to the uninterrupted rows
    run = summary(out)["this_run"]
    assert run["rows_found"] == found and run["rows_written"] == 32 - found
    assert load_responses(out / "dataset") == load_responses(straight)


def test_a_half_written_last_line_and_a_partial_group_are_rewritten(straight, tmp_path):
    out = tmp_path / "half"
    assert main(["generate", "--out", str(out), *BASE]) == 0
    full = (out / "responses.jsonl").read_bytes()
    kept = full.split(b"\n")[:-1]
    # a kill in the middle of a group: two rows of the last group missing, the third cut mid-line
    (out / "responses.jsonl").write_bytes(b"\n".join(kept[:-3]) + b"\n" + kept[-3][: len(kept[-3]) // 2])
    assert main(["generate", "--out", str(out), *BASE]) == 0
    assert lines(out) == lines(straight)
    run = summary(out)["this_run"]
    assert run["partial_line_repaired"] and run["rows_found"] == 29 and run["rows_written"] == 3


def test_recover_responses_cuts_only_the_last_line(tmp_path, straight):
    path = tmp_path / "responses.jsonl"
    good = (straight / "responses.jsonl").read_bytes().split(b"\n")
    path.write_bytes(good[0] + b"\n" + good[1][:-5])
    rows, repaired = recover_responses(path)
    assert repaired and len(rows) == 1 and path.read_bytes() == good[0] + b"\n"
    path.write_bytes(good[0] + b"\n" + good[1][:-5] + b"\n" + good[2] + b"\n")
    with pytest.raises(RecordError, match=r"responses.jsonl:2: not valid JSON"):
        recover_responses(path)
    path.write_bytes(good[0] + b"\n" + good[0] + b"\n")
    with pytest.raises(RecordError, match="a second row for problem"):
        recover_responses(path)


def test_a_finished_folder_is_reweighted_without_asking_the_teacher(straight, tmp_path, capsys):
    out = tmp_path / "reweighted"
    assert main(["generate", "--out", str(out), *BASE]) == 0
    assert main(["generate", "--out", str(out), *BASE, "weighting.normalisation=softmax",
                 "weighting.zero_variance=correct_weight_one", "rewards.weights.format=0.5"]) == 0
    run = summary(out)["this_run"]
    assert run["rows_written"] == 0 and run["teacher"] == {}
    rows = load_responses(out)
    expected = reweight(load_responses(straight), RewardConfig(weights={"correctness": 1.0, "format": 0.5}),
                        WeightingConfig(normalisation="softmax", zero_variance="correct_weight_one"))
    assert rows == expected
    assert all(r.reward == r.components["correctness"] + 0.5 * r.components["format"] for r in rows)
    assert all(w is not None for r in rows for w in r.weights.values())  # no group dropped any more


def test_another_configuration_in_the_same_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["generate", "--out", str(out), "-n", "2", "-G", "2"]) == 0
    assert main(["generate", "--out", str(out), "-n", "2", "-G", "2", "teacher.error_rate=0.9"]) == 2
    assert "teacher.error_rate differ" in capsys.readouterr().err


def test_a_missing_gold_answer_is_an_error_naming_the_row(tmp_path, capsys):
    data = tmp_path / "gsm8k.jsonl"
    data.write_text(json.dumps({"question": "What is 2+2?", "answer": "2+2=4\n#### 4"}) + "\n"
                    + json.dumps({"question": "What is 3+3?", "answer": "3+3 is six.\nSo six."}) + "\n")
    assert main(["generate", "--data", str(data), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{data}:2" in err and "'answer'" in err and "gold answer" in err
    assert not (tmp_path / "out" / "responses.jsonl").exists()


def test_the_simulated_teacher_refuses_a_problem_that_is_not_of_the_world(tmp_path, capsys):
    data = tmp_path / "gsm8k.jsonl"
    data.write_text(json.dumps({"question": "What is 2+2?", "answer": "2+2=4\n#### 4"}) + "\n")
    assert main(["generate", "--data", str(data), "--out", str(tmp_path / "out")]) == 2
    assert "found no world question" in capsys.readouterr().err
    # nothing was written, so the same folder takes another teacher
    assert main(["generate", "--data", str(data), "--out", str(tmp_path / "out"), "teacher.kind=openai",
                 "teacher.base_url=http://127.0.0.1:9", "teacher.model=m", "teacher.max_retries=0"]) == 1
    assert "teacher request failed" in capsys.readouterr().err


class ScriptedTeacher:
    """Sample 0 empty, sample 1 cut short (finish_reason length), the others the canonical solution."""

    name = "scripted"

    def __init__(self) -> None:
        self.calls = 0

    def chat(self, messages_list, params):
        self.calls += 1
        out = []
        for messages in messages_list:
            text = canonical_solution(parse_question(messages[-1]["content"]))
            out.append([Sample("", [], [], "stop"), Sample(text[:20], [], [], "length")]
                       + [Sample(text, [], [], "stop")] * (params.n - 2))
        return out

    def stats(self):
        return {"requests": self.calls}

    def close(self):
        pass


def test_empty_and_truncated_responses_are_counted(tmp_path):
    config = GenerateConfig(n_problems=3, group_size=4)
    s = run_generate(config, tmp_path / "out", teacher=ScriptedTeacher())
    assert (s["empty"], s["truncated"], s["format_failures"], s["correct"]) == (3, 3, 6, 6)
    assert s["verdict_reasons"] == {"no_answer": 6, "ok": 6}
    rows = load_responses(tmp_path / "out")
    assert rows[0].completion == "" and rows[0].num_words == 0 and rows[1].finish_reason == "length"


# ----- an OpenAI-compatible teacher: the scripted-fault server of test_sampling_openai ------------------


def world_handler(script):
    """The scripted server, answering the world's questions with the canonical solution, plus two faults:
    an empty body ("empty") and a body that is not UTF-8 ("nonutf8")."""
    from test_sampling_openai import make_handler

    class Handler(make_handler(script)):
        def act(self, action, body, auth):
            if action == "nonutf8":
                self.reply(200, b'{"choices": [{"message": {"content": "\xff\xfe"}}]}')
                return
            if action not in ("ok", "empty"):
                super().act(action, body, auth)
                return
            text = "" if action == "empty" else canonical_solution(parse_question(body["messages"][-1]["content"]))
            finish = "length" if body["max_tokens"] <= 4 else "stop"
            with script.lock:
                script.answered.append(body)
            self.reply(200, json.dumps({"choices": [{"message": {"role": "assistant", "content": text},
                                                     "finish_reason": finish}]}).encode())

    return Handler


@pytest.fixture
def world_server():
    from test_sampling_openai import Script

    script = Script()
    with loopback_server(world_handler(script)) as url:
        yield script, url


def openai_config(url: str, **changes) -> GenerateConfig:
    teacher = TeacherConfig(kind="openai", base_url=url, model="teacher-1", api_key_env="MENTOR_NO_SUCH_KEY",
                            concurrency=2, backoff_s=0.01, timeout_s=30, max_retries=changes.pop("max_retries", 8))
    return GenerateConfig(n_problems=5, group_size=3, prompts_per_call=2, teacher=teacher, **changes)


def test_a_server_saying_429_for_a_while_ends_with_every_row_and_the_retries_counted(world_server, tmp_path):
    script, url = world_server
    script.actions = ["429"] * 6 + ["empty", "nonutf8"]
    s = run_generate(openai_config(url), tmp_path / "out")
    assert s["responses"] == 15 and len(lines(tmp_path / "out")) == 15
    run = s["this_run"]
    assert run["retries"] == 7 and run["teacher"]["retry_http_429"] == 6 and run["bad_bodies"] == 1
    assert run["teacher"]["requests"] == 15 + 7
    assert s["empty"] == 1 and s["correct"] == 14


def test_truncated_server_responses_are_counted(world_server, tmp_path):
    _, url = world_server
    s = run_generate(openai_config(url, max_new_tokens=4), tmp_path / "out")
    assert s["truncated"] == 15


def test_a_crashed_openai_run_resumes_without_resending_a_completed_request(world_server, tmp_path):
    script, url = world_server
    script.fail_after = 8  # the server breaks for good after eight answers
    with pytest.raises(SamplerError):
        run_generate(openai_config(url, max_retries=0), tmp_path / "out")
    first = {json.dumps(b, sort_keys=True) for b in script.answered}
    written = len(lines(tmp_path / "out"))
    assert len(first) == 8 and written < 15
    script.fail_after, script.answered = None, []
    s = run_generate(openai_config(url), tmp_path / "out")
    resent = [json.dumps(b, sort_keys=True) for b in script.answered]
    assert len(resent) == 15 - 8 and not set(resent) & first
    # the answered requests of groups not yet written come from the cache
    assert s["this_run"]["rows_found"] == written and s["this_run"]["teacher"]["cache_hits"] == 8 - written
    fresh = tmp_path / "fresh"
    run_generate(openai_config(url), fresh)
    assert lines(tmp_path / "out") == lines(fresh)


def test_a_killed_openai_run_resends_only_what_was_not_cached(world_server, tmp_path):
    import sqlite3

    script, url = world_server
    script.delay_s = 0.05
    out = tmp_path / "killed"
    args = ["generate", "--out", str(out), "-n", "8", "-G", "3", "teacher.kind=openai", f"teacher.base_url={url}",
            "teacher.model=teacher-1", "teacher.api_key_env=MENTOR_NO_SUCH_KEY", "teacher.concurrency=2",
            "prompts_per_call=2"]
    process = subprocess.Popen([sys.executable, "-m", "mentor.cli", *args], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    path = out / "responses.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and process.poll() is None:
        if path.is_file() and path.read_bytes().count(b"\n") >= 6:
            time.sleep(0.08)  # into the next call: some of its requests answered, its rows not yet written
            break
        time.sleep(0.01)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    while script.in_flight:  # the server finishes the requests the dead client had in flight
        time.sleep(0.01)
    found = path.read_bytes().count(b"\n")
    with sqlite3.connect(out / "teacher_cache.sqlite") as db:
        cached = db.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
    assert found <= cached < 24 and len(script.answered) >= cached
    first = {json.dumps(b, sort_keys=True) for b in script.answered}
    script.answered, script.delay_s = [], 0.0
    assert main(args) == 0
    resent = [json.dumps(b, sort_keys=True) for b in script.answered]
    assert len(resent) == 24 - cached  # nothing the killed run had received and cached is sent again
    assert len(first & set(resent)) == len(first) - cached  # only answers lost with the killed process
    assert summary(out)["this_run"]["teacher"].get("cache_hits", 0) == cached - found
    fresh = tmp_path / "fresh"
    assert main([*args[:2], str(fresh), *args[3:]]) == 0
    assert lines(out) == lines(fresh)


@pytest.mark.parametrize(("argv", "message"), [
    (["colour=red"], "unknown config key colour"),
    (["weighting.normalisation=rank"], "unknown normalisation 'rank'"),
    (["rewards.weights.speed=1"], "unknown reward component 'speed'"),
    (["teacher.kind=openai"], "needs teacher.base_url"),
    (["--task", "no-such-task"], "unknown task"),
])
def test_user_errors_are_one_line_and_exit_2(argv, message, tmp_path):
    result = subprocess.run([sys.executable, "-m", "mentor.cli", "generate", "--out", str(tmp_path / "o"), *argv],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_gold_answer_the_verifier_cannot_read_is_counted_not_scored(caplog, tmp_path):
    from mentor.offline.generate import fill_group, score_response, summarize
    from mentor.sampling import SamplingParams
    from mentor.tasks import load_task

    data = tmp_path / "gsm8k.jsonl"
    data.write_text(json.dumps({"question": "What is half of two?", "answer": "half of 2\n#### \\frac{1"}) + "\n")
    task = load_task(str(data))
    (problem,) = task.problems("test")
    assert problem.answer == "\\frac{1"
    config = GenerateConfig(n_problems=1, group_size=2)
    with caplog.at_level("WARNING", logger="mentor"):
        rows = [score_response(task, problem, j, Sample(text="It is \\boxed{1}.", token_ids=[], logprobs=[],
                                                           finish_reason="stop"), "t", SamplingParams(seed=0),
                               config.rewards) for j in range(2)]
    assert all(r.verdict.reason == "bad_gold" and not r.verdict.correct for r in rows)
    assert "cannot read its gold answer" in caplog.text
    fill_group(rows, config.rewards, config.weighting)
    assert summarize(rows, config)["verdict_reasons"] == {"bad_gold": 2}


def test_a_data_file_changed_under_the_same_ids_is_refused_on_resume(tmp_path):
    from mentor.tasks import load_task

    question = load_task("world").problems("train", n=1)[0].question  # the simulated teacher answers it
    data = tmp_path / "gsm8k.jsonl"
    data.write_text(json.dumps({"question": question, "answer": "x\n#### 1"}) + "\n")
    out = tmp_path / "out"
    config = GenerateConfig(task=str(data), n_problems=None, group_size=2)
    run_generate(config, out)
    data.write_text(json.dumps({"question": question, "answer": "x\n#### 2"}) + "\n")
    with pytest.raises(FileExistsError, match="another question or gold answer"):
        run_generate(config, out)
