"""The bad-input corpus for what landed after the first one (``test_bad_inputs.py``, whose rules hold here:
exit code 2, one ``mentor: error:`` line, no traceback, nothing written): the engines and their backends,
``mentor compare`` configs and maps, damaged checkpoints and weights, hostile data files, sizes past any
machine, and device and dtype."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from test_bad_inputs import GSM8K, both, check_bad_input, jsonl, mkdir, write

SHIPPED = Path(__file__).parents[1] / "src/mentor/assets/world_model"
HUGE = "1000000000000"


def compare_yaml(text: str) -> Callable[[Path], None]:
    return write("c.yaml", text)


def copied_model(name: str, damage: Callable[[dict], dict] | None = None, truncate: bool = False) -> Callable:
    """A copy of the shipped world model in ``name`` with its weights damaged."""

    def setup(root: Path) -> None:
        from safetensors.torch import load_file

        folder = root / name
        folder.mkdir(parents=True)
        for path in SHIPPED.iterdir():
            if path.name != "model.safetensors" and path.is_file():
                (folder / path.name).write_bytes(path.read_bytes())
        weights = load_file(SHIPPED / "model.safetensors")
        save_file(damage(weights) if damage else weights, folder / "model.safetensors")
        if truncate:
            data = (folder / "model.safetensors").read_bytes()
            (folder / "model.safetensors").write_bytes(data[: len(data) // 2])

    return setup


def reshaped(weights: dict) -> dict:
    name = next(k for k in weights if k.endswith("q_proj.weight"))
    weights[name] = torch.zeros(3, 5)
    return weights


def extra_key(weights: dict) -> dict:
    return {**weights, "model.layers.99.mlp.up_proj.weight": torch.zeros(2, 2)}


def missing_key(weights: dict) -> dict:
    weights.pop(next(k for k in weights if k.endswith("o_proj.weight")))
    return weights


TRAIN_ARGS = ["onpolicy.steps=2", "onpolicy.eval_problems=2", "onpolicy.eval_k=1", "onpolicy.max_new_tokens=40"]


def interrupted_run(damage: Callable[[dict], object] | None = None, raw: bytes | None = None) -> Callable:
    """A ``mentor train --out {t}/r TRAIN_ARGS`` folder stopped after its first step, its checkpoint damaged:
    ``damage`` changes the saved state (returning what to save), ``raw`` replaces the file's bytes."""

    def setup(root: Path) -> None:
        from mentor.config import load_config
        from mentor.devices import without_auto_placement
        from mentor.train.checkpoint import rng_state
        from mentor.train.recipe import TrainConfig
        from mentor.world.solver import load_world_folder

        config = load_config(TrainConfig, None, TRAIN_ARGS)
        run = root / "r"
        (run / "checkpoint").mkdir(parents=True)
        (run / "train.json").write_text(json.dumps(without_auto_placement(asdict(config)), indent=2) + "\n")
        (run / "config.json").write_text(json.dumps(asdict(config.onpolicy), indent=2) + "\n")
        model, _ = load_world_folder(SHIPPED)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.onpolicy.lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        state = {"step": 1, "model": {n: p.detach().clone() for n, p in model.named_parameters()},
                 "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "teacher": {},
                 "rng": rng_state(),
                 "loop": {"history": [], "evals": [], "best": None, "stopped_early": False, "bad_evals": 0,
                          "guards": {}}}
        path = run / "checkpoint" / "state.pt"
        if raw is not None:
            path.write_bytes(raw)
        else:
            torch.save(damage(state) if damage else state, path)

    return setup


def _shape(state: dict) -> dict:
    name = next(iter(state["model"]))
    state["model"][name] = torch.zeros(2, 2)
    return state


def _extra(state: dict) -> dict:
    state["model"]["no.such.weight"] = torch.zeros(2)
    return state


def _missing(state: dict) -> dict:
    state["model"].pop(next(iter(state["model"])))
    return state


def _no_loop_keys(state: dict) -> dict:
    state["loop"] = {"history": []}
    return state


def _bad_rng(state: dict) -> dict:
    state["rng"] = {"python": 5, "numpy": "x", "torch": torch.zeros(3)}
    return state


def _list(state: dict) -> list:
    return [1, 2, 3]


BIG_LINE = json.dumps({"question": "x" * (50 * 2**20), "answer": "1 + 1 = 2\n#### 2"})

CASES: list[tuple[str, list[str], str, Callable[[Path], None] | None]] = [
    # ----- backends: vLLM absent (this environment has none) or misnamed, for every command that takes one
    ("eval-backend-vllm-absent", ["eval", "--backend", "vllm", "-n", "1"], "vllm", None),
    ("eval-backend-misnamed", ["eval", "--backend", "vlm"], "vlm", None),
    ("eval-backend-case", ["eval", "backend=VLLM"], "VLLM", None),
    ("eval-backend-empty", ["eval", "backend="], "backend", None),
    ("train-backend-vllm-absent", ["train", "--out", "{t}/r", "onpolicy.generation_backend=vllm"], "vllm", None),
    ("train-backend-misnamed", ["train", "--out", "{t}/r", "onpolicy.generation_backend=sglang"], "sglang", None),
    ("distill-backend-vllm-absent", ["distill", "--out", "{t}/d", "mode=oracle", "eval_backend=vllm"], "vllm", None),
    ("distill-backend-misnamed", ["distill", "--out", "{t}/d", "mode=oracle", "eval_backend=hf"], "hf", None),
    ("gen-backend-vllm-absent", ["generate", "--out", "{t}/g", "teacher.kind=local", "teacher.model=world",
                                 "teacher.backend=vllm"], "vllm", None),
    ("gen-backend-misnamed", ["generate", "--out", "{t}/g", "teacher.kind=local", "teacher.model=world",
                              "teacher.backend=llamacpp"], "llamacpp", None),
    ("mapd-backend-vllm-absent", ["mapd", "mine", "--out", "{t}/m", "student_backend=vllm"], "vllm", None),
    ("mapd-backend-misnamed", ["mapd", "mine", "--out", "{t}/m", "student_backend=fast"], "fast", None),
    # ----- device and dtype
    ("train-device-cuda-absent", ["train", "--out", "{t}/r", "device=cuda"], "not available here", None),
    ("eval-device-index", ["eval", "device=cuda:7"], "not available here", None),
    ("eval-device-unknown", ["eval", "device=gpu"], "unknown device 'gpu'", None),
    ("distill-dtype-unknown", ["distill", "--out", "{t}/d", "mode=oracle", "dtype=int8"], "unknown dtype 'int8'", None),
    ("analyze-device-unknown", ["analyze", "--out", "{t}/a", "--device", "tpu"], "unknown device 'tpu'", None),
    ("analyze-dtype-unknown", ["analyze", "--out", "{t}/a", "--dtype", "fp4"], "unknown dtype 'fp4'", None),
    # ----- mentor compare: labels, methods, search, seeds, levels, carry-over
    ("compare-label-parent", ["compare", "--out", "{t}/c", "{t}/c.yaml"], "must be a plain name",
     compare_yaml('methods: {"../../x": {method: grpo}}')),
    ("compare-label-slash", ["compare", "--out", "{t}/c", "{t}/c.yaml"], "must be a plain name",
     compare_yaml('methods: {"a/b": {method: grpo}}')),
    ("compare-label-empty", ["compare", "--out", "{t}/c", "{t}/c.yaml"], "must be a plain name",
     compare_yaml('methods: {"": {method: grpo}}')),
    ("compare-label-reserved", ["compare", "--out", "{t}/c", "{t}/c.yaml"], "must be a plain name",
     compare_yaml("methods: {analysis: {method: grpo}}")),
    ("compare-label-number", ["compare", "--out", "{t}/c", "{t}/c.yaml"], "its keys must be text, got 7",
     compare_yaml("methods: {7: {method: grpo}}")),
    ("compare-methods-empty", ["compare", "--out", "{t}/c", "{t}/c.yaml"], "at least one seed and one method",
     compare_yaml("methods: {}")),
    ("compare-method-unknown", ["compare", "--out", "{t}/c", "{t}/c.yaml"], "'magic'",
     compare_yaml("methods: {A: {method: magic}}")),
    ("compare-method-unknown-key", ["compare", "--out", "{t}/c", "{t}/c.yaml"], "methods.A.colour",
     compare_yaml("methods: {A: {method: grpo, colour: red}}")),
    ("compare-search-unknown-key", ["compare", "--out", "{t}/c", "{t}/c.yaml"], "methods.GRPO.colour",
     compare_yaml("search: {colour: [1, 2]}")),
    ("compare-search-lr-string", ["compare", "--out", "{t}/c", "{t}/c.yaml"], "expected float, got 'fast'",
     compare_yaml("search: {lr: [fast, slow]}")),
    ("compare-search-lr-scalar", ["compare", "--out", "{t}/c", "{t}/c.yaml"], "'search.lr': expected a list",
     compare_yaml("search: {lr: 1e-4}")),
    ("compare-search-empty-list", ["compare", "--out", "{t}/c", "{t}/c.yaml"], "non-empty lists",
     compare_yaml("search: {lr: []}")),
    ("compare-search-clash", ["compare", "--out", "{t}/c", "{t}/c.yaml"], "which the search varies",
     compare_yaml("search: {lr: [1.0e-4, 3.0e-4]}\nmethods: {A: {method: grpo, lr: 1.0e-4}}")),
    ("compare-lr-string", ["compare", "--out", "{t}/c", "{t}/c.yaml"], "'methods.A.lr': expected float",
     compare_yaml('methods: {A: {method: grpo, lr: "a lot"}}')),
    ("compare-shared-unknown", ["compare", "--out", "{t}/c", "{t}/c.yaml"], "unknown config key methods.",
     compare_yaml("shared: {stepz: 3}")),
    ("compare-seeds-negative", ["compare", "--out", "{t}/c", "{t}/c.yaml"], "seeds must be distinct",
     compare_yaml("seeds: [-1]")),
    ("compare-seeds-repeated", ["compare", "--out", "{t}/c", "{t}/c.yaml"], "seeds must be distinct",
     compare_yaml("seeds: [0, 1, 0]")),
    ("compare-workers-zero", ["compare", "--out", "{t}/c", "{t}/c.yaml"], "workers must be >= 1",
     compare_yaml("workers: 0")),
    ("compare-levels-list", ["compare", "--out", "{t}/c", "{t}/c.yaml"], "'levels': expected a mapping",
     compare_yaml("levels: [easy, hard]")),
    ("compare-level-label", ["compare", "--out", "{t}/c", "{t}/c.yaml"], "levels label '../x'",
     compare_yaml('levels: {"../x": "world:steps=2"}')),
    ("compare-level-method-clash", ["compare", "--out", "{t}/c", "{t}/c.yaml"], "levels label 'GRPO'",
     compare_yaml('levels: {GRPO: "world:steps=2"}')),
    ("compare-level-task", ["compare", "--out", "{t}/c", "{t}/c.yaml"], "unknown task 'nonsense'",
     compare_yaml('levels: {easy: "nonsense"}')),
    ("compare-level-world-option", ["compare", "--out", "{t}/c", "{t}/c.yaml"], "world steps must be in",
     compare_yaml('levels: {easy: "world:steps=0"}')),
    ("compare-carry-task", ["compare", "--out", "{t}/c", "{t}/c.yaml"], "unknown task 'far'",
     compare_yaml('carry_over: {long: "far"}')),
    ("compare-carry-empty", ["compare", "--out", "{t}/c", "{t}/c.yaml"], "must be a task spec",
     compare_yaml('carry_over: {long: ""}')),
    ("compare-carry-k-zero", ["compare", "--out", "{t}/c", "{t}/c.yaml"], "must be >= 1",
     compare_yaml('carry_over: {long: "world:steps=6"}\ncarry_over_k: 0')),
    ("compare-model-missing", ["compare", "--out", "{t}/c", "{t}/c.yaml"], "cannot load model /no/such/model",
     compare_yaml("model: /no/such/model")),
    ("compare-model-gguf-folder", ["compare", "--out", "{t}/c", "{t}/c.yaml"], "a folder, not a GGUF file",
     both(mkdir("m.gguf"), compare_yaml("model: m.gguf"))),
    ("compare-yaml-tabs", ["compare", "--out", "{t}/c", "{t}/c.yaml"], "not valid YAML",
     compare_yaml("methods:\n\tA: {method: grpo}")),
    ("compare-yaml-not-mapping", ["compare", "--out", "{t}/c", "{t}/c.yaml"], "mapping at the top level",
     compare_yaml("- a\n- b\n")),
    # ----- damaged weights: a model folder (a run's best/ or final/) that cannot be what it says
    ("eval-weights-truncated", ["eval", "--model", "{t}/best", "-n", "1"], "cannot load model",
     copied_model("best", truncate=True)),
    ("eval-weights-wrong-shape", ["eval", "--model", "{t}/best", "-n", "1"], "cannot load model",
     copied_model("best", reshaped)),
    ("eval-weights-extra-key", ["eval", "--model", "{t}/best", "-n", "1"], "cannot load model",
     copied_model("best", extra_key)),
    ("eval-weights-missing-key", ["eval", "--model", "{t}/best", "-n", "1"], "cannot load model",
     copied_model("best", missing_key)),
    ("train-weights-truncated", ["train", "--out", "{t}/r", "model={t}/final"], "cannot load model",
     copied_model("final", truncate=True)),
    ("analyze-weights-wrong-shape", ["analyze", "--out", "{t}/a", "--model", "{t}/best"], "cannot load model",
     copied_model("best", reshaped)),
    ("eval-model-gguf-folder", ["eval", "--model", "{t}/m.gguf"], "a folder, not a GGUF file", mkdir("m.gguf")),
    ("eval-model-gguf-empty", ["eval", "--model", "{t}/m.gguf"], "not a readable GGUF file", write("m.gguf", b"")),
    # ----- damaged checkpoints of an interrupted run
    ("train-checkpoint-truncated", ["train", "--out", "{t}/r", *TRAIN_ARGS], "not a mentor checkpoint",
     interrupted_run(raw=b"PK\x03\x04 truncated")),
    ("train-checkpoint-empty", ["train", "--out", "{t}/r", *TRAIN_ARGS], "not a mentor checkpoint",
     interrupted_run(raw=b"")),
    ("train-checkpoint-not-dict", ["train", "--out", "{t}/r", *TRAIN_ARGS], "not a mentor checkpoint",
     interrupted_run(_list)),
    ("train-checkpoint-wrong-shape", ["train", "--out", "{t}/r", *TRAIN_ARGS], "does not match the model",
     interrupted_run(_shape)),
    ("train-checkpoint-extra-key", ["train", "--out", "{t}/r", *TRAIN_ARGS], "does not match the model",
     interrupted_run(_extra)),
    ("train-checkpoint-missing-key", ["train", "--out", "{t}/r", *TRAIN_ARGS], "does not match the model",
     interrupted_run(_missing)),
    ("train-checkpoint-loop-keys", ["train", "--out", "{t}/r", *TRAIN_ARGS], "checkpoint",
     interrupted_run(_no_loop_keys)),
    ("train-checkpoint-rng", ["train", "--out", "{t}/r", *TRAIN_ARGS], "checkpoint", interrupted_run(_bad_rng)),
    # ----- hostile data files
    ("eval-data-nul", ["eval", "--data", "{t}/d.jsonl"], "d.jsonl",
     write("d.jsonl", b'{"question": "What is 1 + 1?", "answer": "#### 2"}\n\x00\x00\x00\n')),
    ("eval-data-nul-in-string", ["eval", "--data", "{t}/d.jsonl", "-n", "1"], "d.jsonl",
     write("d.jsonl", '{"question": "What is\\u0000 1 + 1?", "answer": "no final answer"}\n')),
    ("eval-data-lone-surrogate", ["eval", "--data", "{t}/d.jsonl"], "d.jsonl",
     write("d.jsonl", '{"question": "What is \\ud800?", "answer": "#### 2"}\n')),
    ("eval-data-bad-utf8", ["eval", "--data", "{t}/d.jsonl"], "d.jsonl",
     write("d.jsonl", b'{"question": "What is \xff\xfe?", "answer": "#### 2"}\n')),
    ("eval-data-huge-line", ["eval", "--data", "{t}/d.jsonl"], "d.jsonl",
     write("d.jsonl", jsonl(GSM8K, BIG_LINE))),
    ("gen-data-lone-surrogate", ["generate", "--out", "{t}/g", "--data", "{t}/d.jsonl"], "d.jsonl",
     write("d.jsonl", '{"question": "\\udfff", "answer": "#### 2"}\n')),
    ("distill-responses-nul", ["distill", "--out", "{t}/d", "data={t}/gen"], "responses.jsonl",
     write("gen/responses.jsonl", b"\x00" * 64 + b"\n")),
    ("distill-responses-surrogate", ["distill", "--out", "{t}/d", "data={t}/gen"], "responses.jsonl",
     write("gen/responses.jsonl", '{"problem_id": "\\ud83d", "prompt": 1}\n')),
    # ----- sizes past any machine
    ("demo-n-huge", ["demo", "--out", "{t}/d", "-n", HUGE], "a count must be between", None),
    ("demo-k-huge", ["demo", "--out", "{t}/d", "-k", HUGE], "a count must be between", None),
    ("analyze-n-huge", ["analyze", "--out", "{t}/a", "-n", HUGE], "a count must be between", None),
    ("world-show-n-huge", ["world", "show", "-n", HUGE], "a count must be between", None),
    ("gen-group-huge", ["generate", "--out", "{t}/g", "-G", HUGE], "a count must be between", None),
    ("eval-tokens-huge", ["eval", "--max-new-tokens", HUGE], "a count must be between", None),
    ("eval-n-override-huge", ["eval", f"n_problems={HUGE}"], "n_problems", None),
    ("train-steps-override-huge", ["train", "--out", "{t}/r", f"onpolicy.steps={HUGE}"], "steps", None),
    ("gen-n-override-huge", ["generate", "--out", "{t}/g", f"n_problems={HUGE}"], "n_problems", None),
]


def test_the_new_corpus_is_large_and_its_ids_unique():
    from test_bad_inputs import CASES as FIRST

    ids = [case[0] for case in CASES]
    assert len(CASES) >= 60 and len(set(ids)) == len(ids) and not set(ids) & {case[0] for case in FIRST}


@pytest.mark.parametrize(("argv", "expected", "setup"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(argv, expected, setup, tmp_path, monkeypatch, capsys):
    check_bad_input(argv, expected, setup, tmp_path, monkeypatch, capsys)
