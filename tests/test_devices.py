"""device and dtype of train, distill, eval and analyze: auto picks the accelerator and bf16 where there is
one (the CPU and float32 here), explicit choices are checked before anything loads, and a bf16 run trains."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mentor.cli import main
from mentor.devices import resolve_device, resolve_dtype


class Loaded(Exception):
    """Raised by the stand-in loader: the test needs only the arguments the model would load with."""


@pytest.fixture
def fake_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)


def test_auto_is_the_cpu_in_float32_without_an_accelerator():
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16


def test_auto_is_the_gpu_in_bf16_where_there_is_one(fake_gpu):
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert resolve_dtype("auto", torch.device("cuda"), training=True) == torch.float32
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ValueError, match="not available"):
        resolve_device("cuda:3")


@pytest.mark.parametrize("bad, message", [("device=cuda", "'cuda' is not available here"),
                                          ("device=tpu", "unknown device 'tpu'"),
                                          ("device=mps", "mentor runs on cpu or cuda"),
                                          ("dtype=fp8", "unknown dtype 'fp8'")])
@pytest.mark.parametrize("command", [["train"], ["eval"], ["distill", "data=x"]])
def test_a_bad_device_or_dtype_is_one_line_before_the_model_loads(command, bad, message, tmp_path, capsys):
    assert main([command[0], "--out", str(tmp_path / "out"), *command[1:], bad]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, dtype", [(["train", "onpolicy.steps=1"], torch.float32),
                                         (["distill", "mode=oracle"], torch.float32),
                                         (["eval", "-n", "1", "-k", "1"], torch.bfloat16),
                                         (["analyze", "-n", "1"], torch.bfloat16)])
def test_every_model_command_loads_onto_the_accelerator_by_default(argv, dtype, fake_gpu, monkeypatch, tmp_path):
    """The defect: a single-process ``mentor train`` loaded on the CPU whatever the machine had. Training
    keeps float32 weights by default (no master copy of bf16 ones); sampling alone runs in bf16."""
    seen = {}

    def loader(spec, *, dtype=torch.float32, device="cpu", lora=None):
        seen.update(dtype=dtype, device=torch.device(device))
        raise Loaded

    monkeypatch.setattr("mentor.loading.load_model", loader)
    with pytest.raises(Loaded):
        main([argv[0], "--out", str(tmp_path / "out"), *argv[1:]])
    assert seen == {"dtype": dtype, "device": torch.device("cuda")}


def test_training_refuses_float16_and_an_ema_teacher_in_bf16(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "a"), "dtype=float16"]) == 2
    assert "float16 cannot train" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "b"), "dtype=bfloat16", "onpolicy.teacher=ema"]) == 2
    assert "ema teacher needs float32" in capsys.readouterr().err
    assert main(["distill", "--out", str(tmp_path / "c"), "mode=oracle", "dtype=float16"]) == 2
    assert resolve_dtype("auto", torch.device("cpu"), training=True) == torch.float32


def test_a_bf16_train_run_on_the_cpu_trains_and_saves_bf16_weights(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "dtype=bfloat16", "onpolicy.method=sd-critique", "onpolicy.steps=2",
                 "onpolicy.prompts_per_step=4", "onpolicy.eval_problems=2", "onpolicy.eval_k=1",
                 "onpolicy.max_new_tokens=120", "onpolicy.lr=3e-3"]) == 0
    weights = load_file(out / "final" / "model.safetensors")
    assert {w.dtype for w in weights.values()} == {torch.bfloat16}
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(m["loss"])) for m in metrics) and metrics[-1]["sd_loss"] > 0
    assert json.loads((out / "train.json").read_text())["dtype"] == "bfloat16"


def test_a_load_that_names_no_device_goes_to_the_accelerator(fake_gpu, monkeypatch):
    """compare's runs, the map's scores, MAPD's student and local teachers load without naming a device."""
    import mentor.loading

    seen = {}
    monkeypatch.setattr(mentor.loading, "prepare_policy", lambda model, tokenizer, **kwargs: seen.update(kwargs))
    mentor.loading.load_model("world")
    assert seen["device"] == torch.device("cuda") and seen["dtype"] == torch.float32


def test_compare_places_every_run_score_and_warm_start_where_its_settings_say(fake_gpu, monkeypatch):
    """compare's device and dtype reach its on-policy runs, offline runs, warm start and scores; training
    stays float32 under auto, scoring takes bf16 on a GPU."""
    from mentor import experiments, feedback_map
    from mentor.experiments import CompareConfig

    seen = []

    def loader(spec, *, dtype=torch.float32, device="cpu", lora=None):
        seen.append((dtype, torch.device(device)))
        raise Loaded

    monkeypatch.setattr("mentor.loading.load_model", loader)
    config = CompareConfig(task="world:steps=2", methods={"GRPO": {"method": "grpo"}, "SFT": {"mode": "oracle"}},
                           warm_start={"sft": {"steps": 1}})
    run, args = experiments._job(config, "GRPO", 0, Path("/nowhere"), {})
    with pytest.raises(Loaded):
        run(*args)
    with pytest.raises(Loaded):
        feedback_map._score("world", "world:steps=2", 1, 1, 1.0, 8, 0, config.device, config.dtype)
    assert seen == [(torch.float32, torch.device("cuda")), (torch.bfloat16, torch.device("cuda"))]
    bf16 = CompareConfig(task="world:steps=2", methods=config.methods, warm_start=config.warm_start,
                         device="cpu", dtype="bfloat16")
    assert (bf16.run_config("SFT", 0).device, bf16.run_config("SFT", 0).dtype) == ("cpu", "bfloat16")
    assert bf16.warm_start_config().dtype == "bfloat16"
    with pytest.raises(ValueError, match="float16 cannot train"):
        CompareConfig(dtype="float16")
