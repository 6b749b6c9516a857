"""`mentor train`, `mentor analyze` and `mentor compare` end to end on the shipped world model, including a
training process killed with SIGKILL and resumed to the same weights."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mentor.cli import main
from mentor.world.solver import load_world_folder

TRAIN = ["onpolicy.steps=4", "onpolicy.prompts_per_step=3", "onpolicy.lr=1e-3", "onpolicy.save_every=1",
         "onpolicy.eval_problems=4", "onpolicy.eval_k=2", "onpolicy.max_new_tokens=120"]


def weights(folder) -> dict[str, torch.Tensor]:
    model, _ = load_world_folder(folder)
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_train_writes_a_run_folder_and_a_second_call_resumes_it(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *TRAIN]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "start" in printed and "best" in printed and "final" in printed
    for step in (0, 4):  # evaluations inside the run show their progress
        assert f"evaluation at step {step} (validation): 4/4 (100%)" in captured.err
    for name in ("config.json", "train.json", "metrics.jsonl", "evals.jsonl", "summary.json", "best", "final",
                 "checkpoint/state.pt"):
        assert (out / name).exists(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["rollouts"] == 12 and summary["method"] == "sd-critique"
    # the evaluations' sampling, not EvalConfig's default model and task (config.json holds the run's)
    assert summary["evaluation"]["split"] == "validation" and not {"model", "task"} & set(summary["evaluation"])
    final = weights(out / "final")
    assert main(["train", "--out", str(out), *TRAIN]) == 0  # already done: nothing retrained
    assert f"resuming {out} at step 4" in capsys.readouterr().err
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 4
    again = weights(out / "final")
    assert all(torch.equal(final[k], again[k]) for k in final)
    assert main(["train", "--out", str(out), *TRAIN, "onpolicy.lr=0.5"]) == 2  # another config, same folder


def test_a_training_process_killed_mid_run_resumes_to_the_same_weights(tmp_path, capsys):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert main(["train", "--out", str(straight), *TRAIN]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "mentor.cli", "train", "--out", str(killed), *TRAIN],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    metrics = killed / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "final").exists()
    capsys.readouterr()
    assert main(["train", "--out", str(killed), *TRAIN]) == 0
    err = capsys.readouterr().err.splitlines()
    [resuming] = [line for line in err if line.startswith("resuming")]
    step = int(resuming.removeprefix(f"resuming {killed} at step "))
    # the bar counts only the steps this process runs: no ETA before one of them is timed
    first = next(line for line in err if line.startswith("training: "))
    assert 1 <= step < 4 and first.startswith(f"training: {step + 1}/4 ") and first.endswith("eta ?")
    expected, resumed = weights(straight / "final"), weights(killed / "final")
    assert all(torch.equal(expected[k], resumed[k]) for k in expected)
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert steps == [0, 1, 2, 3]


def test_analyze_writes_the_report(tmp_path, capsys):
    out = tmp_path / "analysis"
    assert main(["analyze", "-n", "4", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "| reference |" in printed and "| critique |" in printed
    assert "token advantages (2 contexts): 4/4 (100%)" in captured.err
    for name in ("analysis.json", "analysis.html", "advantage_by_error_offset.png", "advantage_by_region.png"):
        assert (out / name).is_file(), name


def test_analyze_reads_rollouts_written_by_eval(tmp_path, capsys):
    assert main(["eval", "-n", "3", "-k", "1", "--out", str(tmp_path / "eval")]) == 0
    out = tmp_path / "analysis"
    assert main(["analyze", "--rollouts", str(tmp_path / "eval" / "rollouts_none.jsonl"), "--contexts", "critique",
                 "--out", str(out)]) == 0
    result = json.loads((out / "analysis.json").read_text())
    assert list(result["contexts"]) == ["critique"] and len(result["contexts"]["critique"]["rollouts"]) == 3


COMPARE = ["seeds=[0,1]", "shared.steps=2", "shared.eval_every=1", "shared.eval_problems=4", "shared.eval_k=2",
           "shared.max_new_tokens=120", "analysis_problems=3", "methods.GRPO.prompts_per_step=1",
           "methods.GRPO.rollouts_per_prompt=4", "methods.RefSol.prompts_per_step=4",
           "methods.StepAlignFB.prompts_per_step=4", "methods.StepAlignFB-to-divergence.prompts_per_step=4",
           "methods.StepAlignFB-position-clip.prompts_per_step=4", "methods.Hybrid.prompts_per_step=1",
           "methods.Hybrid.rollouts_per_prompt=4", "shared.test_problems=4", "distill.sft.steps=2",
           "distill.sft.batch_size=4", "distill.eval_every=1", "distill.eval_problems=4", "distill.eval_k=2",
           "distill.test_problems=4", "distill.max_new_tokens=120"]


NO_SEARCH = ["search={}", "methods.Oracle.search={}"]
SEARCH = ["search.lr=[1e-4, 1e-3]", "methods.Oracle.search.lr=[1e-3, 3e-3]"]
LABELS = ("GRPO", "RefSol", "StepAlignFB", "StepAlignFB-to-divergence", "StepAlignFB-position-clip", "Hybrid",
          "Oracle")


@pytest.mark.parametrize("workers", [1, 2])
def test_compare_writes_the_paper_table_and_resumes(tmp_path, capsys, workers):
    out = tmp_path / "compare"
    assert main(["compare", "--out", str(out), *COMPARE, *NO_SEARCH, f"workers={workers}"]) == 0
    report = (out / "report.md").read_text()
    for label in LABELS:
        assert f"| {label} |" in report
        for seed in (0, 1):
            assert (out / label / f"seed{seed}" / "summary.json").is_file()
    assert "Hyperparameter search" not in report and json.loads((out / "search.json").read_text()) == {}
    assert "| method | Pass@2 | Maj@2 | Avg@2 |" in report and "±" in report
    # chosen on validation, reported on test: both checkpoints of every run, with standard errors
    assert "## On the test split (checkpoint chosen on validation)" in report
    assert "| Oracle | best (step" in report and "| GRPO | final (step 2, 2) |" in report and "(se " in report
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "analysis" / "analysis.html").is_file() and "per-token advantage" in report
    results = json.loads((out / "results.json").read_text())
    assert all(len(runs) == 2 and all(len(r["evals"]) == 3 for r in runs) for runs in results.values())
    # budgets are equal: 4 rollouts a step for every method
    assert {runs[0]["rollouts"] for label, runs in results.items() if label != "Oracle"} == {8}
    assert results["Oracle"][0]["sequences"] == 8  # 2 steps x 4 correct traces
    if workers == 1:  # a second call finds every run finished and reproduces the report
        assert main(["compare", "--out", str(out), *COMPARE, *NO_SEARCH]) == 0
        again = json.loads((out / "results.json").read_text())
        assert again["GRPO"][0]["final"] == results["GRPO"][0]["final"]
        # the budget's time is the time the runs spent, not the seconds a second call took to find them
        assert again["GRPO"][0]["train_seconds"] == results["GRPO"][0]["train_seconds"] > 0
        assert "| of which training |" in (out / "report.md").read_text()


def _children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie may wait for a reaper that a container lacks)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_killed_compare_leaves_no_worker_running(tmp_path):
    process = subprocess.Popen([sys.executable, "-m", "mentor", "--threads", "1", "compare", "--out",
                                str(tmp_path / "c"), *COMPARE, *NO_SEARCH, "workers=2", "shared.steps=1000"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: set[int] = set()
    deadline = time.time() + 180
    # both workers are inside runs (each has written its run's config), not merely starting up
    while (len(workers) < 2 or len(list((tmp_path / "c").glob("*/seed*/config.json"))) < 2) \
            and time.time() < deadline and process.poll() is None:
        time.sleep(0.5)
        workers = {pid for pid in _children(process.pid)
                   if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()}
    assert len(workers) == 2, "the compare did not start its two workers"
    process.kill()
    process.wait()
    deadline = time.time() + 20
    while any(_running(pid) for pid in workers) and time.time() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in workers if _running(pid)], "workers outlived the killed compare"


def test_compare_searches_each_method_on_validation_then_runs_the_chosen_value_on_every_seed(tmp_path):
    out = tmp_path / "search"
    assert main(["compare", "--out", str(out), *COMPARE, *SEARCH, "analysis_problems=0", "workers=2"]) == 0
    search = json.loads((out / "search.json").read_text())
    results = json.loads((out / "results.json").read_text())
    report = (out / "report.md").read_text()
    assert "## Hyperparameter search (on validation)" in report
    for label in LABELS:
        entry = search[label]
        grid = [1e-3, 3e-3] if label == "Oracle" else [1e-4, 1e-3]
        assert [c["lr"] for c in entry["candidates"]] == grid and entry["chosen"] in entry["candidates"]
        # the choice is the best validation score (the first on a tie), and the score is the run's best Avg@2
        scores = entry["scores"]
        assert entry["chosen"] == entry["candidates"][scores.index(max(scores))]
        for choice, score in zip(entry["candidates"], scores):
            lines = (out / label / "search" / f"lr={choice['lr']}" / "evals.jsonl").read_text().splitlines()
            assert score == max(json.loads(line)["avg@2"] for line in lines)
        # seed 0 is the chosen search run; seed 1 ran with the chosen value
        assert not (out / label / "seed0").exists() and (out / label / "seed1" / "summary.json").is_file()
        chosen = json.loads((out / label / "search" / f"lr={entry['chosen']['lr']}" / "summary.json").read_text())
        assert results[label][0]["final"] == chosen["final"]
        seed1 = json.loads((out / label / "seed1" / "config.json").read_text())
        lr = seed1["sft"]["lr"] if label == "Oracle" else seed1["lr"]
        assert lr == entry["chosen"]["lr"] and seed1["seed"] == 1
        assert f"| {label} | **lr={entry['chosen']['lr']}** (chosen) |" in report


@pytest.mark.parametrize("overrides, message", [
    (["methods.GRPO.lr=1e-3", "search.lr=[1e-4]"], "which the search varies"),
    (["shared.lr=1e-3", "search.lr=[1e-4]"], "which the search varies"),
    (["search.lr=1e-4"], "'search.lr': expected a list"),
    (["search.lr=[]"], "non-empty lists"),
    (["search.nonsense=[1, 2]"], "nonsense"),
])
def test_compare_rejects_a_bad_search_before_running(tmp_path, capsys, overrides, message):
    assert main(["compare", "--out", str(tmp_path / "out"), *overrides]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("label", ["../../escape", "a/b", "data", "mapd", "analysis", ".hidden", ""])
def test_compare_method_labels_are_names_never_paths(tmp_path, capsys, label):
    from mentor.config import ConfigError
    from mentor.experiments import CompareConfig

    with pytest.raises((ValueError, ConfigError), match="plain name"):
        CompareConfig(methods={label: {"method": "grpo"}})


def test_compare_rejects_a_bad_method_before_running(tmp_path):
    assert main(["compare", "--out", str(tmp_path), "methods.X.method=ppo"]) == 2


OFFLINE = ["seeds=[0]", "search={}", "methods.Oracle.oracle_problems=6", "generate.n_problems=6", "generate.group_size=4", "distill.sft.steps=4",
           "distill.sft.batch_size=4", "distill.eval_every=2", "distill.eval_problems=4", "distill.eval_k=2",
           "distill.test_problems=4", "distill.max_new_tokens=120"]  # the shipped 300 x 8 test would be most of the time


def test_compare_runs_offline_methods_on_one_teacher_dataset(tmp_path):
    from mentor.experiments import DEFAULT_CONFIG

    out = tmp_path / "offline"
    config = DEFAULT_CONFIG.parent / "compare_world_advdistill.yaml"
    assert main(["compare", "--out", str(out), str(config), *OFFLINE, "workers=1"]) == 0
    report = (out / "report.md").read_text()
    for label in ("AdvDistill", "SFT", "RFT"):
        assert f"| {label} |" in report
        summary = json.loads((out / label / "seed0" / "summary.json").read_text())
        assert [e["step"] for e in summary["evals"]] == [0, 2, 4] and summary["method"] == label.lower()
        assert not {"model", "task"} & set(summary["evaluation"])  # the run's config.json holds them
    assert len((out / "data" / "responses.jsonl").read_text().splitlines()) == 24  # generated once
    examples = {label: json.loads((out / label / "seed0" / "summary.json").read_text())["examples"]["examples"]
                for label in ("AdvDistill", "SFT", "RFT")}
    assert examples["SFT"] >= examples["RFT"]  # rejection sampling keeps only the correct answers
    oracle = json.loads((out / "Oracle" / "seed0" / "summary.json").read_text())["examples"]
    assert oracle == {"problems": 6, "examples": 6}  # the gold traces of the teacher's 6 prompts


def test_distill_command_trains_on_a_generated_folder(tmp_path, capsys):
    data = tmp_path / "gen"
    assert main(["generate", "--out", str(data), "n_problems=4", "group_size=4"]) == 0
    err = capsys.readouterr().err
    assert "prompts answered (4 responses each): 0/4 (0%) elapsed 0s, eta ?" in err and "nan" not in err
    out = tmp_path / "rft"
    assert main(["distill", "--out", str(out), f"data={data}", "mode=rft", "sft.steps=3", "sft.batch_size=4",
                 "eval_problems=3", "eval_k=2"]) == 0
    captured = capsys.readouterr()
    assert "final" in captured.out
    for step in (0, 3):
        assert f"evaluation at step {step} (validation): 3/3 (100%)" in captured.err
    [examples] = [line for line in captured.err.splitlines() if line.startswith("examples: ")]
    assert examples.startswith("examples: rows 16, ") and "{" not in examples  # a readable line, not a dict
    for name in ("best", "final", "summary.json", "evals.jsonl", "loss.jsonl"):
        assert (out / name).exists(), name
    # the same command again finds the run finished and trains nothing; another configuration starts again
    summary = (out / "summary.json").read_text()
    loss = (out / "loss.jsonl").stat().st_mtime_ns
    assert main(["distill", "--out", str(out), f"data={data}", "mode=rft", "sft.steps=3", "sft.batch_size=4",
                 "eval_problems=3", "eval_k=2"]) == 0
    assert (out / "summary.json").read_text() == summary and (out / "loss.jsonl").stat().st_mtime_ns == loss
    assert main(["distill", "--out", str(out), f"data={data}", "mode=rft", "sft.steps=2", "sft.batch_size=4",
                 "eval_problems=3", "eval_k=2"]) == 0
    assert json.loads((out / "summary.json").read_text())["steps"] == 2
    assert main(["distill", "--out", str(out), f"data={tmp_path / 'none'}"]) == 2


def test_compare_runs_the_mapd_pipeline_once_for_its_ablations(tmp_path):
    from mentor.experiments import DEFAULT_CONFIG

    out = tmp_path / "mapd"
    config = DEFAULT_CONFIG.parent / "compare_world_mapd.yaml"
    assert main(["compare", "--out", str(out), str(config), "seeds=[0]", "search={}", "mapd.n_problems=10",
                 "distill.sft.steps=2", "distill.sft.batch_size=4", "distill.eval_problems=3", "distill.eval_k=1",
                 "distill.test_problems=3", "distill.max_new_tokens=120", "workers=1"]) == 0
    report = (out / "report.md").read_text()
    for label, ablation in (("MAPD", "committee"), ("single-teacher", "single"), ("no-explanation", "no-explanation")):
        assert f"| {label} |" in report
        summary = json.loads((out / label / "seed0" / "summary.json").read_text())
        assert summary["method"] == "mapd" and (out / "mapd" / f"build-{ablation}" / "dataset.jsonl").is_file()
    counts = {label: json.loads((out / label / "seed0" / "summary.json").read_text())["examples"]
              for label in ("MAPD", "no-explanation")}
    assert counts["MAPD"].get("explanation", 0) > 0 and counts["no-explanation"].get("explanation", 0) == 0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("command", [
    ["train", "critic.base_url=http://127.0.0.1:{port}", "critic.model=critic"],
    ["train", "critic.base_url=127.0.0.1:{port}", "critic.model=critic"],
    ["analyze", "--critic-base-url", "http://127.0.0.1:{port}", "--critic-model", "critic", "-n", "2"],
])
def test_an_unreachable_critic_fails_at_once_in_one_line_writing_nothing(tmp_path, capsys, command):
    import time

    port = _free_port()
    out = tmp_path / "out"
    start = time.monotonic()
    assert main([command[0], "--out", str(out), *(c.format(port=port) for c in command[1:])]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and ("cannot reach" in err or "base_url must be" in err), err
    assert time.monotonic() - start < 20 and not out.exists()


def test_a_critic_that_refuses_every_request_stops_train_in_one_line(tmp_path, capsys):
    """A served critic that answers (here: HTTP 400 to every request) but never usefully is a user error."""
    from http.server import BaseHTTPRequestHandler

    from tests.serving import loopback_server

    class Refuses(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server API
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(400)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"no")

        def log_message(self, *args) -> None:
            pass

    with loopback_server(Refuses) as base_url:
        code = main(["train", "--out", str(tmp_path / "out"), f"critic.base_url={base_url}", "critic.model=critic",
                     "onpolicy.steps=1", "onpolicy.eval_problems=2", "onpolicy.eval_k=1", "onpolicy.prompts_per_step=2",
                     "onpolicy.max_new_tokens=40", "onpolicy.test_problems=0"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err, err
    assert err.splitlines()[-1].startswith("mentor: error: HTTP 400 from POST"), err


MAP = {"model": "world", "seeds": [0, 1], "workers": 2, "analysis_problems": 0,
       "levels": {"easy": "world:steps=2", "hard": "world:steps=3"}, "carry_over": {"long": "world:steps=5,inputs=2"},
       "carry_over_problems": 3, "carry_over_k": 2, "carry_over_max_new_tokens": 200,
       "methods": {"GRPO": {"method": "grpo", "prompts_per_step": 1, "rollouts_per_prompt": 4},
                   "Hybrid": {"method": "sd-critique", "grpo_weight": 0.5, "blend": "by-group", "prompts_per_step": 1,
                              "rollouts_per_prompt": 4}},
       "shared": {"steps": 2, "eval_every": 2, "eval_problems": 4, "eval_k": 2, "max_new_tokens": 120,
                  "test_problems": 6}}


def test_the_map_runs_each_level_scores_carry_over_and_reuses_everything(tmp_path, monkeypatch):
    import yaml

    import mentor.feedback_map as feedback_map

    out, config_file = tmp_path / "map", tmp_path / "map.yaml"
    config_file.write_text(yaml.safe_dump(MAP))  # a config of its own: overrides would merge into the default's methods
    assert main(["compare", "--out", str(out), str(config_file)]) == 0
    data = json.loads((out / "map.json").read_text())
    assert list(data["levels"]) == ["easy", "hard"] and set(data["base"]) == {"easy", "hard"}
    for level, steps in (("easy", 2), ("hard", 3)):
        report = (out / level / "report.md").read_text()
        assert f"world:steps={steps}" in report and "## Carry-over" in report
        results = json.loads((out / level / "results.json").read_text())
        assert set(results) == {"GRPO", "Hybrid"} and all(len(runs) == 2 for runs in results.values())
        config = json.loads((out / level / "Hybrid" / "seed1" / "config.json").read_text())
        assert config["blend"] == "by-group" and config["seed"] == 1
        # the base is scored on the level's own test problems, with the runs' test settings
        base = json.loads((out / level / "base.json").read_text())
        assert base["job"][1] == f"world:steps={steps}" and base["job"][2:4] == [6, 2]
    # every seed's chosen checkpoint, and the base, on the carry-over task
    assert [len(data["carry_over"][level][m]["long"]) for level in ("easy", "hard") for m in ("GRPO", "Hybrid")] \
        == [2, 2, 2, 2]
    assert (out / "hard" / "GRPO" / "seed1" / "carry_over-long.json").is_file()
    top = (out / "report.md").read_text()
    assert "| easy (`world:steps=2`) |" in top and "## Who leads where" in top and "| hard | GRPO - Hybrid |" in top
    assert (out / "map.png").read_bytes()[:4] == b"\x89PNG" and "[hard](hard/report.md)" in top
    # the rows' numbers are the closed forms of method_estimate and difference
    runs = json.loads((out / "easy" / "results.json").read_text())["GRPO"]
    values = [r["test"]["best"]["avg@2"] for r in runs]
    mean, std, se = feedback_map.method_estimate(runs, "avg@2")
    assert mean == pytest.approx(sum(values) / 2) and std == pytest.approx(abs(values[0] - values[1]) / 2 ** 0.5)
    run_se = sum(r["test"]["best"]["se"]["avg@2"] for r in runs) / 2
    assert se == pytest.approx((std**2 / 2 + run_se**2) ** 0.5)
    # run again: every training run and every evaluation is reused, nothing is scored anew
    monkeypatch.setattr(feedback_map, "_score", lambda *a: pytest.fail("scored again"))
    assert main(["compare", "--out", str(out), str(config_file), "workers=1"]) == 0
    assert json.loads((out / "map.json").read_text())["base"] == data["base"]


def test_map_levels_are_names_and_tasks():
    from mentor.experiments import CompareConfig

    for levels in ({"../x": "world"}, {"GRPO": "world"}, {"easy": ""}, ["world"]):
        with pytest.raises(ValueError, match="levels"):
            CompareConfig(levels=levels)
    with pytest.raises(ValueError, match="carry_over_k"):
        CompareConfig(carry_over_k=0)
    assert CompareConfig(levels={"a": "world:steps=2", "b": "world:steps=3"}).n_runs() == 2 * 3 * 3


def test_a_warm_start_is_trained_once_and_is_every_runs_model(tmp_path):
    from mentor.experiments import CompareConfig, with_warm_start

    warm = {"sft": {"steps": 2, "batch_size": 2}, "eval_problems": 2, "eval_k": 1, "max_new_tokens": 64,
            "oracle_problems": 4}
    config = CompareConfig(task="world:steps=2", seeds=[0], methods={"GRPO": {"method": "grpo"}}, warm_start=warm)
    started = with_warm_start(config, tmp_path)
    folder = tmp_path / "warm_start"
    assert started.model == str(folder / "best") and started.warm_start == {}
    assert (folder / "best" / "config.json").is_file()
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["examples"] == {"problems": 4, "examples": 4}  # SFT on the reference solutions (oracle)
    stamp = (folder / "summary.json").stat().st_mtime_ns
    assert with_warm_start(config, tmp_path).model == started.model
    assert (folder / "summary.json").stat().st_mtime_ns == stamp  # found finished, not trained again
    assert with_warm_start(dataclasses.replace(config, warm_start={}), tmp_path).model == "world"
    with pytest.raises(ValueError, match="warm_start"):
        CompareConfig(warm_start={"no_such_option": 1})
    with pytest.raises(ValueError, match="warm_start"):
        CompareConfig(warm_start={"mode": "telepathy"})


def test_a_local_teacher_without_a_model_is_the_comparisons_own_model():
    from mentor.experiments import CompareConfig, generate_with_own_model

    rft = {"RFT": {"mode": "rft"}}
    own = CompareConfig(model="runs/warm/best", methods=rft, generate={"group_size": 4, "teacher": {"kind": "local"}})
    assert generate_with_own_model(own) == {"group_size": 4, "teacher": {"kind": "local", "model": "runs/warm/best"}}
    named = CompareConfig(methods=rft, generate={"teacher": {"kind": "local", "model": "smollm2"}})
    assert generate_with_own_model(named)["teacher"]["model"] == "smollm2"
    simulated = CompareConfig(methods=rft, generate={"teacher": {"kind": "simulated"}})
    assert generate_with_own_model(simulated) == simulated.generate
    assert own.generate_config().teacher.model == "runs/warm/best"
    with pytest.raises(ValueError, match="generate: .*group_size"):
        CompareConfig(methods=rft, generate={"group_size": 0})
