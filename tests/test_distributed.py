"""Two training processes through ``accelerate launch`` (DDP, and FSDP2's sharding, over gloo on the CPU)
against one process on the same global batch: the same rollouts, the same losses, the same weights within
float tolerance, and a two-process run killed mid-way resumed to the same end."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mentor.train.distributed import Ranks, combine_metrics

CONFIGS = Path(__file__).parents[1] / "examples" / "accelerate"
PARALLEL = {name: ["--config_file", str(CONFIGS / f"{name}.yaml")] for name in ("ddp", "fsdp")}  # the shipped ones
LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
          "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port"]
COMMON = ["onpolicy.steps=3", "onpolicy.eval_problems=4", "onpolicy.eval_k=1", "onpolicy.lr=1e-4",
          "onpolicy.save_every=1"]
METHODS = {
    # GRPO through the logits, two micro-batches a process; critique self-distillation through the fused path
    # at world 6's 2-step level, where most groups have a success to learn from (at 4 steps a few do, the
    # weights barely move, and the two runs' rounding is no longer small beside the movement)
    "grpo": ["task=world:steps=2", "onpolicy.method=grpo", "onpolicy.prompts_per_step=4",
             "onpolicy.rollouts_per_prompt=4", "onpolicy.micro_batch_size=4"],
    "sd-critique": ["onpolicy.method=sd-critique", "onpolicy.prompts_per_step=8", "onpolicy.micro_batch_size=2"],
    # a LoRA adapter (its initialisation seeded, so both runs start from the same one) and the adapter-free teacher
    "sd-critique-lora": ["lora=true", "onpolicy.method=sd-critique", "onpolicy.prompts_per_step=4"],
    # a group without a correct rollout gives its rows no context: micro-batches (a group each) with nothing to
    # learn from, on one process while the other learns
    "sd-success": ["onpolicy.method=sd-success", "onpolicy.prompts_per_step=4", "onpolicy.rollouts_per_prompt=2",
                   "onpolicy.micro_batch_size=2"],
}


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _port() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _launch(parallel: str = "ddp") -> list[str]:
    return [*LAUNCH[:3], *PARALLEL[parallel], *LAUNCH[3:], _port()]


def _launch_script(script: Path) -> None:
    """``script`` run by 2 launched processes; both must exit cleanly."""
    done = subprocess.run([*_launch(), str(script)], env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _command(out: Path, args: list[str], processes: int, command: str = "train", parallel: str = "ddp") -> list[str]:
    mentor = ["-m", "mentor", "--threads", "1", command, "--out", str(out), *(COMMON if command == "train" else []),
              *args]
    return [*_launch(parallel), *mentor] if processes == 2 else [sys.executable, *mentor]


def _train(out: Path, args: list[str], processes: int, parallel: str = "ddp") -> str:
    done = subprocess.run(_command(out, args, processes, parallel=parallel), env=_env(), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def _kill_launch(process: subprocess.Popen) -> None:
    """SIGKILL a launch and its training processes: torch's launcher starts each in a session of its own, so
    killing the launcher's group alone would leave them to finish the run."""
    workers = []
    for task in Path(f"/proc/{process.pid}/task").iterdir():
        workers += [int(pid) for pid in (task / "children").read_text().split()]
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):  # one that has already ended
            os.killpg(pid, signal.SIGKILL)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _assert_same_run(one: Path, two: Path) -> None:
    for a, b in zip(_metrics(one), _metrics(two), strict=True):
        assert (a["step"], a["rollouts"], a["generated_tokens"], a["reward"]) == (
            b["step"], b["rollouts"], b["generated_tokens"], b["reward"])  # the same rollouts, drawn apart
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4, abs=1e-7)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)
        for guarded in ("signal_fraction", "copy_overlap"):  # what the run's guards read
            assert (guarded in a) == (guarded in b)
            if a.get(guarded) is None:  # no row had the context it is a mean over (GRPO's copy_overlap)
                assert b.get(guarded) is None
            else:
                assert b[guarded] == pytest.approx(a[guarded], rel=1e-9)
    name = "model.safetensors" if (one / "final" / "model.safetensors").is_file() else "adapter_model.safetensors"
    weights_one, weights_two = load_file(one / "final" / name), load_file(two / "final" / name)
    if name == "model.safetensors":
        start = load_file(Path(__file__).parents[1] / "src/mentor/assets/world_model/model.safetensors")
    else:  # LoRA's B starts at zero
        start = {k: torch.zeros_like(v) for k, v in weights_one.items() if "lora_B" in k}
    moved = max(float((weights_one[k] - start[k]).abs().max()) for k in start)
    assert moved > 1e-4  # the runs trained
    apart = max(float((weights_one[k] - weights_two[k]).abs().max()) for k in weights_one)
    assert apart < 0.05 * moved  # Adam divides a near-zero gradient by its own size: rounding shows there


@pytest.mark.parametrize("method", sorted(METHODS))
def test_two_processes_train_as_one_on_the_same_global_batch(tmp_path, method):
    _train(tmp_path / "one", METHODS[method], 1)
    for parallel in PARALLEL:  # data parallel, then every weight and optimizer state sharded over the two
        two = tmp_path / parallel
        _train(two, METHODS[method], 2, parallel)
        _assert_same_run(tmp_path / "one", two)
        assert (two / "summary.json").is_file() and (two / "best").is_dir()
        evals = [json.loads(line) for line in (two / "evals.jsonl").read_text().splitlines()]
        assert [e["step"] for e in evals] == [0, 3]  # the main process alone writes the run folder


@pytest.mark.parametrize("parallel", sorted(PARALLEL))
def test_a_two_process_run_killed_mid_way_resumes_to_the_same_end(tmp_path, parallel):
    args = [*METHODS["sd-critique"], "onpolicy.steps=6"]
    _train(tmp_path / "one", args, 1)
    killed = tmp_path / "two"
    process = subprocess.Popen(_command(killed, args, 2, parallel=parallel), env=_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not (killed / "checkpoint" / "state.pt").is_file():
        time.sleep(0.02)
    _kill_launch(process)
    assert (killed / "checkpoint" / "state.pt").is_file() and not (killed / "summary.json").exists()
    time.sleep(1)  # nothing is left running to go on with the run
    assert not (killed / "summary.json").exists()
    log = _train(killed, args, 2, parallel)
    resumed = {int(step) for step in re.findall(r"resuming \S+ at step (\d+)", log)}
    assert len(resumed) == 1 and 0 < min(resumed) < 6, log[-2000:]  # every process, from one mid-way checkpoint
    _assert_same_run(tmp_path / "one", killed)


def test_a_checkpoint_is_resumed_only_as_it_was_launched(tmp_path):
    # the optimizer's state is numbered by parameter without FSDP and named with it: the other kind refuses it
    args = [*METHODS["grpo"], "onpolicy.steps=1"]
    _train(tmp_path / "run", args, 1)
    done = subprocess.run(_command(tmp_path / "run", args, 2, parallel="fsdp"), env=_env(), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode != 0
    assert "checkpoint: the checkpoint was written by a run without FSDP; resume it as it was launched" in done.stderr


@pytest.mark.parametrize(("command", "flags", "message"), [
    ("distill", PARALLEL["fsdp"], "FSDP shards mentor train's student only; launch mentor distill with data parallel"),
    # what accelerate's DeepSpeed launcher tells its processes (it needs deepspeed installed to start them)
    ("train", PARALLEL["ddp"], "DeepSpeed is not supported by mentor's training loops yet"),
    ("train", ["--use_fsdp"], "mentor shards with FSDP2: set fsdp_version: 2"),  # accelerate's default is 1
    ("train", [*PARALLEL["fsdp"], "--fsdp_activation_checkpointing", "true"], "mentor's FSDP does not checkpoint"),
])
def test_what_mentor_cannot_run_sharded_is_refused_with_a_message(tmp_path, command, flags, message):
    args = (["mode=oracle", "oracle_problems=4", "sft.steps=1", "sft.batch_size=2", "eval_problems=2", "eval_k=1"]
            if command == "distill" else [])
    mentor = ["-m", "mentor", "--threads", "1", command, "--out", str(tmp_path / "out"), *args]
    env = {**_env(), "ACCELERATE_USE_DEEPSPEED": str("DeepSpeed" in message).lower()}
    done = subprocess.run([*LAUNCH[:3], *flags, *LAUNCH[3:], _port(), *mentor], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode != 0 and f"mentor: error: {message}" in done.stderr, done.stderr[-3000:]
    assert not (tmp_path / "out" / "checkpoint").exists()


def test_two_process_distill_trains_as_one_even_when_a_batch_leaves_a_process_empty(tmp_path):
    # 7 oracle problems in batches of 6: every epoch ends on a batch of one row, so one process has none
    args = ["mode=oracle", "oracle_problems=7", "sft.steps=4", "sft.batch_size=6", "sft.lr=1e-4", "sft.warmup_steps=0",
            "sft.min_lr_ratio=1.0", "sft.weight_decay=0", "sft.group_by_length=false", "sft.log_every=1",
            "eval_problems=4", "eval_k=1"]
    for out, processes in ((tmp_path / "one", 1), (tmp_path / "two", 2)):
        done = subprocess.run(_command(out, args, processes, "distill"), env=_env(), capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    logs = [[json.loads(line) for line in (tmp_path / name / "loss.jsonl").read_text().splitlines()]
            for name in ("one", "two")]
    assert [m["tokens"] for m in logs[0]] == [m["tokens"] for m in logs[1]]
    assert min(m["tokens"] for m in logs[0]) < 200  # the one-row batches ran
    for a, b in zip(*logs, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)
    one, two = (load_file(tmp_path / name / "final" / "model.safetensors") for name in ("one", "two"))
    assert max(float((one[k] - two[k]).abs().max()) for k in one) < 1e-5


def test_share_splits_whole_groups_and_refuses_an_uneven_batch():
    ranks = Ranks()
    assert (ranks.world, ranks.is_main, ranks.share(list("abcd"))) == (1, True, (0, list("abcd")))
    ranks.world, ranks.rank = 2, 1
    assert ranks.share(list("abcd")) == (2, ["c", "d"])
    with pytest.raises(ValueError, match="prompts_per_step=3 must be a multiple of the 2 training processes"):
        ranks.share(list("abc"))
    assert ranks.share_evenly(list("abc")) == ["b", "c"] and ranks.share_evenly([]) == []
    ranks.rank = 0
    assert ranks.share_evenly(list("abc")) == ["a"] and ranks.share_evenly(["z"]) == []


def test_combine_metrics_sums_counts_and_weights_means_by_tokens():
    per_rank = [{"step": 3, "rollouts": 4, "generated_tokens": 100, "sd_loss": 1.0, "sd_adv_t_min": -2.0,
                 "reward": 0.5, "time_generate": 1.0, "warnings": ["x"]},
                {"step": 3, "rollouts": 4, "generated_tokens": 50, "sd_loss": 4.0, "sd_adv_t_min": -1.0,
                 "reward": 0.0, "time_generate": 2.0, "warnings": ["x"]}]
    weights = [{"sd": 30, "pg": 0, "rows": 4}, {"sd": 10, "pg": 0, "rows": 4}]
    out = combine_metrics(per_rank, weights)
    assert out == {"step": 3, "rollouts": 8, "generated_tokens": 150, "sd_loss": pytest.approx(1.75),
                   "sd_adv_t_min": -2.0, "reward": 0.25, "time_generate": 2.0, "warnings": ["x"]}
    assert combine_metrics(per_rank[:1], weights[:1]) == per_rank[0]
    # a process whose rows had no context at all has no sd_* keys: the other's still count
    del per_rank[0]["sd_loss"], per_rank[0]["sd_adv_t_min"]
    assert combine_metrics(per_rank, weights)["sd_loss"] == 4.0
    assert combine_metrics(per_rank, weights)["sd_adv_t_min"] == -1.0
    assert torch.equal(torch.tensor(Ranks().total([1.0, 2.0])), torch.tensor([1.0, 2.0]))


def test_a_mean_is_combined_by_the_rows_it_describes():
    """8 rows with a context at copy overlap 0.5 on one process and 1 of 8 at 0.1 on the other: 0.456, the
    number one process over all 16 rows reports (weighting by all rows gave 0.300)."""
    per_rank = [{"copy_overlap": 0.5, "signal_fraction": 1.0, "reward": 0.5},
                {"copy_overlap": 0.1, "signal_fraction": 0.25, "reward": 0.0}]
    weights = [{"pg": 0, "sd": 100, "rows": 8, "copy_overlap": 8, "signal_fraction": 8},
               {"pg": 0, "sd": 10, "rows": 8, "copy_overlap": 1, "signal_fraction": 4}]
    out = combine_metrics(per_rank, weights)
    assert out["copy_overlap"] == pytest.approx((8 * 0.5 + 0.1) / 9)
    assert out["signal_fraction"] == pytest.approx((8 + 1) / 12)
    assert out["reward"] == pytest.approx(0.25)


def test_an_error_on_the_main_process_reaches_every_process(tmp_path):
    # the others would otherwise wait in the broadcast for a result that never comes (hours, at the timeout)
    script = tmp_path / "fail.py"
    # each process writes its own file: two processes printing to one pipe can interleave their lines
    script.write_text(
        "import atexit, os, torch\n"
        # runs after the exit handler Ranks registers (last in, first out): the process group is gone by then
        f"atexit.register(lambda: open(f'{tmp_path}/left{{os.environ[\"RANK\"]}}.txt', 'w')"
        ".write(str(torch.distributed.is_initialized())))\n"
        "from mentor.train.distributed import Ranks\n"
        "ranks = Ranks()\n"
        f"out = open(f'{tmp_path}/rank{{ranks.rank}}.txt', 'w')\n"
        "def fail():\n"
        "    raise ValueError('boom')\n"
        "try:\n"
        "    ranks.from_main(fail)\n"
        "except Exception as err:\n"
        "    out.write(f'rank {ranks.rank}: {type(err).__name__}: {err}\\n')\n"
        "out.write(f'rank {ranks.rank}: got {ranks.from_main(lambda: 41) + 1}\\n')\n"
        "out.close()\n"
        # as every mentor command ends: without it a process that leaves first can abort its peer's gloo
        # threads (exit code -6, 2 runs in 10); the group itself is destroyed at exit (benchmarks/launch_exit.py)
        "ranks.wait()\n")
    _launch_script(script)
    lines = sorted(line for rank in (0, 1) for line in (tmp_path / f"rank{rank}.txt").read_text().splitlines())
    assert lines == ["rank 0: ValueError: boom", "rank 0: got 42",
                     "rank 1: RuntimeError: the main process failed: ValueError: boom", "rank 1: got 42"]
    assert [(tmp_path / f"left{rank}.txt").read_text() for rank in (0, 1)] == ["False", "False"]


def test_a_launched_run_with_a_tracker_ends_on_every_process(tmp_path):
    # the main process's trackers are finished without destroying the process group the others still wait in
    script = tmp_path / "track.py"
    script.write_text(
        "import json, os\n"
        "from accelerate.tracking import GeneralTracker\n"
        "from mentor.tasks import load_task\n"
        "from mentor.train.onpolicy import OnPolicyConfig, train_onpolicy\n"
        "from mentor.world.solver import SHIPPED_DIR, load_world_folder\n"
        "class Steps(GeneralTracker):\n"
        "    name, requires_logging_directory = 'steps', False\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.steps = []\n"
        "    tracker = property(lambda self: self)\n"
        "    def store_init_configuration(self, values):\n"
        "        pass\n"
        "    def log(self, values, step=None, **kwargs):\n"
        "        self.steps += [step] if 'reward' in values else []\n"
        "    def finish(self):\n"
        f"        open(f'{tmp_path}/steps{{os.environ[\"RANK\"]}}.json', 'w').write(json.dumps(self.steps))\n"
        "model, tokenizer = load_world_folder(SHIPPED_DIR)\n"
        "train_onpolicy(model, tokenizer, load_task('world'), OnPolicyConfig(steps=2, prompts_per_step=2, "
        "eval_problems=2, eval_k=1, max_new_tokens=120), trackers=[Steps()])\n")
    _launch_script(script)
    assert json.loads((tmp_path / "steps0.json").read_text()) == [1, 2]  # the main process alone logs
    assert not (tmp_path / "steps1.json").exists()


def test_mentor_launch_checks_the_config_before_any_worker_starts(tmp_path, capsys):
    from mentor.cli import main

    start = time.monotonic()
    assert main(["launch", "--num_processes", "2", "train", "--out", str(tmp_path / "r"), "onpolicy.stepz=5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown config key onpolicy.stepz; did you mean onpolicy.steps?" in err
    assert time.monotonic() - start < 10 and not (tmp_path / "r").exists()  # no launcher, no worker
    assert main(["launch", "eval"]) == 2 and "mentor launch runs train or distill" in capsys.readouterr().err


def test_a_refusal_is_found_when_two_workers_share_a_line():
    from mentor.commands.launch import refusal_in

    message = "mentor: error: FSDP shards mentor train's student only"
    assert refusal_in(message + "\n") == message
    assert refusal_in(message + message + "\n") == message  # two workers' writes, newlines after both
    assert refusal_in("[rank1]: Traceback (most recent call last):\n") is None


def test_a_workers_refusal_is_the_last_line_mentor_launch_prints(tmp_path):
    """FSDP for distill is refused by the launched workers (each knows its accelerate setting): the launcher's
    own traceback comes first, mentor's one line last, exit code 2, and no run folder."""
    out = tmp_path / "d"
    done = subprocess.run([sys.executable, "-m", "mentor", "--threads", "1", "launch", *PARALLEL["fsdp"],
                           "--num_processes", "2", "--main_process_port", _port(), "distill", "mode=oracle",
                           "--out", str(out), "sft.steps=2", "eval_problems=2", "eval_k=1"],
                          env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == ("mentor: error: FSDP shards mentor train's student only; launch "
                                                    "mentor distill with data parallel (examples/accelerate/ddp.yaml)")
    assert not out.exists()
