"""The `mentor` command end to end: world build with a tiny budget, eval, demo, and one-line errors."""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from mentor.cli import main

TINY_BUILD = ["train_problems=300", "sft.steps=4", "sft.batch_size=8", "sft.log_every=2",
              "hidden_size=32", "layers=1", "heads=2", "vocab_size=300", "world.steps=2"]


@pytest.fixture(scope="module")
def tiny_world_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("world") / "model"
    assert main(["world", "build", "--out", str(out), *TINY_BUILD]) == 0
    return out


def test_world_build_says_up_front_how_long_it_should_take():
    from mentor.commands.world import build_estimate

    assert build_estimate(5000).startswith("5,000 training steps: about 36 minutes on a 2-core CPU")
    assert "about 18 minutes" in build_estimate(2500)


def test_world_build_writes_a_loadable_model(tiny_world_model):
    record = json.loads((tiny_world_model / "mentor_world.json").read_text())
    assert record["config"]["sft"]["steps"] == 4
    assert record["final"]["step"] == 4
    assert (tiny_world_model / "world_config.yaml").is_file()
    assert len((tiny_world_model / "train_log.jsonl").read_text().splitlines()) == 2
    assert not tiny_world_model.with_name("model.partial").exists()


def test_world_build_is_deterministic_given_a_seed(tiny_world_model, tmp_path):
    from safetensors.torch import load_file

    again = tmp_path / "again"
    assert main(["world", "build", "--out", str(again), *TINY_BUILD]) == 0
    first, second = load_file(tiny_world_model / "model.safetensors"), load_file(again / "model.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert (tiny_world_model / "tokenizer.json").read_text() == (again / "tokenizer.json").read_text()
    other = tmp_path / "other-seed"
    assert main(["world", "build", "--out", str(other), *TINY_BUILD, "seed=1"]) == 0
    embedding = "model.embed_tokens.weight"
    assert not torch.equal(load_file(other / "model.safetensors")[embedding], first[embedding])


def test_world_build_refuses_to_overwrite_a_folder_that_is_not_a_build(tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    assert main(["world", "build", "--out", str(precious), *TINY_BUILD]) == 2
    assert (precious / "notes.txt").read_text() == "keep me"


def test_world_build_is_cached(tiny_world_model, capsys):
    assert main(["world", "build", "--out", str(tiny_world_model), *TINY_BUILD]) == 0
    assert "already built" in capsys.readouterr().err
    # the same folder with another config is not "already built": it is an error without --force
    assert main(["world", "build", "--out", str(tiny_world_model), *TINY_BUILD, "seed=5"]) == 2
    assert "another config" in capsys.readouterr().err


def test_eval_writes_results_with_every_sampling_parameter(tiny_world_model, tmp_path):
    out = tmp_path / "eval"
    code = main(["eval", "--model", str(tiny_world_model), "--task", "world:steps=2", "-n", "3", "-k", "2",
                 "--context", "none,reference,critique", "--max-new-tokens", "24", "--seed", "7",
                 "--out", str(out)])
    assert code == 0
    record = json.loads((out / "results.json").read_text())
    assert set(record["results"]) == {"none", "reference", "critique"}
    assert record["sampling"] == {"n": 2, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 24,
                                  "seed": 7, "stop": []}
    assert record["checkpoint"]["spec"] == str(tiny_world_model)
    for summary in record["results"].values():
        assert summary["n_problems"] == 3 and summary["k"] == 2
        assert 0.0 <= summary["avg@2"] <= summary["pass@2"] <= 1.0
    rows = (out / "rollouts_critique.jsonl").read_text().splitlines()
    assert len(rows) == 6 and "feedback on your previous attempt" in json.loads(rows[0])["prompt"]


def test_tables_in_a_log_keep_their_headers_and_values_on_one_line(capsys):
    """Piped to a file, a table was squeezed to 80 columns: headers cut (``trace_r…``) and ``±`` wrapped."""
    assert main(["eval", "--task", "world:steps=2", "-n", "2", "-k", "2", "--context", "none,reference,critique"]) == 0
    out = capsys.readouterr().out
    assert "…" not in out and "fully correct" in out and "answer format ok" in out
    assert any(line.count("│") >= 9 and "reference" in line for line in out.splitlines())


def test_eval_warns_when_most_answers_were_cut_off_and_not_otherwise(capsys):
    """The README's first SmolLM2 command printed all zeros: 85% of its answers stopped at 64 tokens."""
    assert main(["eval", "--task", "world:steps=4", "-n", "2", "-k", "2", "--max-new-tokens", "12"]) == 0
    shown = capsys.readouterr()
    assert "warning [none]: 100% of the samples stopped at --max-new-tokens 12" in " ".join((shown.out + shown.err).split())
    assert main(["eval", "--task", "world:steps=2", "-n", "2", "-k", "2", "--max-new-tokens", "200"]) == 0
    shown = capsys.readouterr()
    assert "warning" not in shown.out + shown.err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["eval", "--task", "no-such-task"], "unknown task"),
        (["eval", "--data", "/no/such/file.jsonl"], "unknown task"),
        (["eval", "colour=red"], "unknown config key colour"),
        (["eval", "--model", "/no/such/model", "-n", "1"], "cannot load model"),
        (["eval", "--context", "gossip"], "unknown context"),
        (["eval", "--data", "1000"], "unknown task"),  # a number-like path stays a path
        (["eval", "--task", "gym:family_relationships", "--context", "critique"], "has no critic"),
        (["world", "build", "sft.nope=1"], "unknown config key sft.nope"),
        (["world", "build", "--config", "/no/such.yaml"], "does not exist"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(argv, message):
    result = subprocess.run([sys.executable, "-m", "mentor.cli", *argv], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_overrides_may_come_on_both_sides_of_an_option(tmp_path, capsys):
    """``distill mode=oracle --out DIR sft.steps=0``: argparse alone called sft.steps=0 unrecognized."""
    assert main(["distill", "mode=oracle", "--out", str(tmp_path / "d"), "sft.steps=0"]) == 2
    assert "sft steps must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["distill", "mode=oracle", "--out", str(tmp_path / "d"), "--bogus"])
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_threads_option_sets_torch_threads(capsys):
    import torch

    before = torch.get_num_threads()
    try:
        assert main(["--threads", "1", "world", "show", "-n", "1"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(SystemExit) as exit_info:
        main(["--threads", "0", "world", "show"])
    assert exit_info.value.code == 2 and "--threads: a count must be between 1" in capsys.readouterr().err


def test_help_for_every_command():
    for argv in (["--help"], ["demo", "--help"], ["eval", "--help"], ["world", "build", "--help"],
                 ["world", "show", "--help"], ["train", "--help"], ["analyze", "--help"], ["compare", "--help"]):
        result = subprocess.run([sys.executable, "-m", "mentor.cli", *argv], capture_output=True, text=True)
        assert result.returncode == 0 and "usage: mentor" in result.stdout


def _subparsers(parser, path=("mentor",)):
    import argparse

    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _subparsers(sub, (*path, name))


def test_every_option_has_help_and_the_key_lists_read_as_sentences():
    from mentor.cli import build_parser

    for path, parser in _subparsers(build_parser()):
        bare = [a.option_strings or a.dest for a in parser._actions
                if not a.help and a.dest != "help" and not a.choices]
        assert not bare, (path, bare)
        text = parser.format_help()
        assert "``" not in text and ":func:" not in text, path  # no reST markup
        for line in text.split("config keys", 1)[-1].splitlines():
            assert not line.endswith("...") or line.endswith(" ...") or "= {" in line or "= [" in line, (path, line)
    compare = build_parser()._subparsers._group_actions[0].choices["compare"].format_help()
    assert "--config" not in compare and "in the config YAML file" in compare
    stages = build_parser()._subparsers._group_actions[0].choices["mapd"]._subparsers._group_actions[0].choices
    assert "  threshold = " in stages["review"].format_help() and "  threshold = " not in stages["mine"].format_help()
    assert "  student_temperature = " in stages["mine"].format_help()
    assert "  teachers = " not in stages["build"].format_help()


@pytest.mark.parametrize("argv, keys", [
    (["train"], ["onpolicy.lr = 0.0001", "onpolicy.method = sd-critique    grpo | sd-reference", "critic.base_url"]),
    (["distill"], ["sft.lr = 0.0003", "mode = advdistill", "oracle_problems = 0"]),
    (["generate"], ["group_size = 8", "teacher.error_rate"]),
    (["compare"], ["search = {}", "workers = 1    runs in parallel"]),
    (["eval"], ["k = 8"]),
    (["world", "build"], ["sft.steps = 5000", "habits.swap = 0.8", "habits.reword = 0.25"]),
    (["mapd", "review"], ["threshold = 3.0"]),
])
def test_help_lists_every_config_key_with_its_default(capsys, argv, keys):
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and "config keys (as KEY=VALUE overrides" in out
    for key in keys:
        assert f"\n  {key}" in out, key


def test_world_show_prints_problems(capsys):
    assert main(["world", "show", "-n", "2", "--task", "world:steps=3"]) == 0
    out = capsys.readouterr().out
    assert out.count("-- canonical --") == 2 and "<answer>" in out


def test_demo_runs_end_to_end_with_the_shipped_model(tmp_path, capsys):
    from mentor.world.solver import SHIPPED_DIR, WorldModelConfig, find_world_model

    assert find_world_model(WorldModelConfig()) == SHIPPED_DIR  # the demo needs no build on a fresh install
    assert main(["demo", "-n", "4", "-k", "2", "--train-steps", "2", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "base solver" in out and "after grpo" in out and "world-3step-mod31" in out  # the middle level
    assert len((tmp_path / "demo" / "train" / "metrics.jsonl").read_text().splitlines()) == 2
    assert out.count("the critic's step-aligned critique") == 3
    for kind in ("none", "reference", "critique"):
        assert kind in out
    record = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert set(record["results"]) == {"none", "reference", "critique"}


@pytest.mark.parametrize(("argv", "message"), [
    (["eval", "--temperature", "-1"], "temperature must be >= 0"),
    (["eval", "--top-p", "2"], "top_p must be in (0, 1]"),
    (["eval", "k=0"], "k must be >= 1"),
    (["train", "onpolicy.temperature=-1"], "temperature and lr must be > 0"),
    (["analyze", "--temperature", "-1"], "--temperature must be >= 0"),
    (["distill", "mode=oracle", "temperature=-1"], "temperature must be >= 0"),
    (["distill", "mode=oracle", "max_new_tokens=0"], "max_new_tokens must be >= 1"),
    (["mapd", "mine", "student_top_p=2"], "student_top_p must be in (0, 1]"),
    (["mapd", "rationales", "teacher_temperature=-1"], "teacher_temperature must be >= 0"),
    (["generate", "temperature=-1"], "temperature must be >= 0"),
])
def test_bad_sampling_arguments_are_refused_before_the_model_loads(argv, message, tmp_path, monkeypatch, capsys):
    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded before the sampling arguments were checked")

    monkeypatch.setattr("mentor.loading.load_model", no_model)
    monkeypatch.setattr("mentor.world.solver.load_world_model", no_model)
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
@pytest.mark.parametrize("argv", [["eval", "--backend", "vllm"], ["train", "onpolicy.generation_backend=vllm"]])
def test_the_vllm_backend_without_vllm_is_one_line_before_the_model_loads(argv, tmp_path, monkeypatch, capsys):
    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded before the backend was checked")

    monkeypatch.setattr("mentor.loading.load_model", no_model)
    monkeypatch.setattr("mentor.world.solver.load_world_model", no_model)
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs vLLM in this environment" in err, err
    assert not (tmp_path / "out").exists()


def test_ctrl_c_on_eval_keeps_the_rollouts_drawn_and_a_rerun_resumes(tmp_path, capsys):
    out = tmp_path / "eval"
    argv = ["eval", "-n", "40", "-k", "2", "--batch-size", "2", "--max-new-tokens", "60", "--out", str(out)]
    process = subprocess.Popen([sys.executable, "-m", "mentor.cli", "--threads", "1", *argv],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as in a terminal
    rows = out / "rollouts_none.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if rows.is_file() and len(rows.read_text().splitlines()) >= 4:
            break
        time.sleep(0.02)
    assert process.poll() is None, "the evaluation ended before it could be interrupted"
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Traceback" not in err
    [message] = [line for line in err.splitlines() if not line.startswith("sampling [none]")]
    assert message.startswith("mentor: interrupted: ") and f"rollouts kept in {out}; run the same command again" in message
    kept = [line for line in rows.read_text().splitlines(keepends=True) if line.endswith("\n")]
    assert 4 <= len(kept) < 80 and not (out / "results.json").exists()

    assert main(argv) == 0
    assert f"resuming {out}: " in capsys.readouterr().err
    final = rows.read_text().splitlines()
    assert len(final) == 80 and set(line.rstrip("\n") for line in kept) <= set(final)  # kept, not drawn again
    assert json.loads((out / "results.json").read_text())["results"]["none"]["n_problems"] == 40
