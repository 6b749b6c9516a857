"""Malformed inputs to every ``mentor`` command: each one ends with exit code 2 and one line on stderr,
``mentor: error: ...``, naming the file, line or config key at fault, with no traceback and nothing
written (no half-written output, no empty --out folder).

A case is ``(id, argv, expected, setup)``: ``{t}`` in argv is the test's folder (also the working
directory, so a default --out lands there too); ``setup(tmp_path)`` writes the bad files first. Every
input is refused before a model samples or trains, so the whole corpus runs in well under a minute.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from mentor.cli import main

NORMALISED = {"zscore": 0.5, "minmax": 1.0, "softmax": 0.5, "zscore_clipped": 0.5}
VERDICT = {"reward": 1.0, "correct": True, "extracted": "2", "format_ok": True, "reason": "ok"}
GSM8K = {"question": "What is 1 + 1?", "answer": "1 + 1 = 2\n#### 2"}


# ----- writing bad inputs ---------------------------------------------------------------------------------


def write(name: str, content: str | bytes) -> Callable[[Path], None]:
    """A setup writing one file (parents made) under the test's folder."""

    def setup(root: Path) -> None:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())

    return setup


def jsonl(*rows) -> str:
    return "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows)


def both(*setups: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        for one in setups:
            one(root)

    return setup


def mkdir(name: str) -> Callable[[Path], None]:
    return lambda root: (root / name).mkdir(parents=True)


def response(**changes) -> dict:
    """A row of ``mentor generate``'s responses.jsonl, with ``changes``."""
    return {"problem_id": "p0", "sample_index": 0, "teacher": "t", "prompt": "What is 1 + 1?", "completion": "2",
            "answer": "2", "verdict": VERDICT, "weights": dict(NORMALISED), **changes}


def generated(*rows, record: str | None = None) -> Callable[[Path], None]:
    """A generate folder ``gen`` holding ``rows`` (and ``generate.json`` when ``record`` is given)."""
    setups = [write("gen/responses.jsonl", jsonl(*rows))]
    if record is not None:
        setups.append(write("gen/generate.json", record))
    return both(*setups)


def mapd_row(**changes) -> dict:
    return {"task": "explanation", "problem_id": "p0", "teacher": "t", "prompt": "q", "completion": "c",
            "finish_reason": "stop", **changes}


def student_answer(**changes) -> dict:
    return {"problem_id": "p0", "prompt": "q", "question": "q", "answer": "2", "completion": "3", "correct": False,
            "extracted": "3", "reason": "wrong", **changes}


def rationale(**changes) -> dict:
    return {"problem_id": "p0", "teacher": "sim-a", "prompt": "q", "question": "q", "answer": "2", "text": "2",
            "correct": True, "extracted": "2", "reason": "ok", **changes}


DEEP = "[" * 100_000 + "]" * 100_000
GARBAGE = bytes(range(256)) * 4
TINY = ["n_problems=2"]

# ----- the corpus ---------------------------------------------------------------------------------------

CASES: list[tuple[str, list[str], str, Callable[[Path], None] | None]] = [
    # --- the command line itself
    ("unknown-command", ["bogus"], "invalid choice: 'bogus'", None),
    ("threads-zero", ["--threads", "0", "world", "show"], "must be between", None),
    ("threads-not-int", ["--threads", "x", "world", "show"], "argument --threads", None),
    ("mapd-no-stage", ["mapd"], "MAPD_COMMAND", None),
    ("world-no-subcommand", ["world"], "WORLD_COMMAND", None),
    ("eval-unknown-flag", ["eval", "--colour", "red"], "unrecognized arguments: --colour", None),
    ("demo-method", ["demo", "--method", "ppo"], "argument --method", None),
    ("mapd-build-ablation", ["mapd", "build", "--ablation", "none"], "argument --ablation", None),
    ("eval-task-and-data", ["eval", "--task", "world", "--data", "x.jsonl"], "not allowed with argument", None),

    # --- world show
    ("world-show-n-negative", ["world", "show", "-n", "-1"], "must be between", None),
    ("world-show-n-zero", ["world", "show", "-n", "0"], "must be between", None),
    ("world-show-n-text", ["world", "show", "-n", "abc"], "argument -n", None),
    ("world-show-split", ["world", "show", "--split", "dev"], "unknown split 'dev'", None),
    ("world-show-task", ["world", "show", "--task", "nope"], "unknown task 'nope'", None),
    ("world-show-option", ["world", "show", "--task", "world:steps"], "world option 'steps'", None),
    ("world-show-unknown-option", ["world", "show", "--task", "world:colour=red"], "colour", None),
    ("world-show-gym", ["world", "show", "--task", "gym:basic_arithmetic"], "not a world task", None),
    ("world-show-seed", ["world", "show", "--seed", "x"], "argument --seed", None),

    # --- world build (config errors; nothing is trained)
    ("build-unknown-key", ["world", "build", "--out", "{t}/m", "colour=red"], "unknown config key colour", None),
    ("build-unknown-nested", ["world", "build", "--out", "{t}/m", "sft.nope=1"], "unknown config key sft.nope", None),
    ("build-steps-text", ["world", "build", "--out", "{t}/m", "sft.steps=abc"], "'sft.steps': expected int", None),
    ("build-lr-text", ["world", "build", "--out", "{t}/m", "sft.lr=fast"], "'sft.lr': expected float", None),
    ("build-lr-nan", ["world", "build", "--out", "{t}/m", "sft.lr=.nan"], "'sft.lr': expected a finite", None),
    ("build-bool", ["world", "build", "--out", "{t}/m", "sft.group_by_length=maybe"], "group_by_length", None),
    ("build-mapping-as-scalar", ["world", "build", "--out", "{t}/m", "sft=3"], "'sft': expected a mapping", None),
    ("build-ops-scalar", ["world", "build", "--out", "{t}/m", "world.ops=7"], "'world.ops': expected a list", None),
    ("build-mix-list", ["world", "build", "--out", "{t}/m", "mix=[1,2]"], "'mix': expected a mapping", None),
    ("build-mix-text", ["world", "build", "--out", "{t}/m", "mix.none=lots"], "'mix.none': expected float", None),
    ("build-not-key-value", ["world", "build", "--out", "{t}/m", "steps"], "'steps' is not key=value", None),
    ("build-inside-scalar", ["world", "build", "--out", "{t}/m", "seed=1", "seed.x=2"], "seed", None),
    ("build-config-missing", ["world", "build", "--config", "{t}/none.yaml"], "none.yaml does not exist", None),
    ("build-config-bad-yaml", ["world", "build", "--out", "{t}/m", "--config", "{t}/c.yaml"], "c.yaml is not valid YAML",
     write("c.yaml", "sft: [1, 2\n")),
    ("build-config-list", ["world", "build", "--out", "{t}/m", "--config", "{t}/c.yaml"], "c.yaml must hold a mapping",
     write("c.yaml", "- 1\n- 2\n")),
    ("build-config-binary", ["world", "build", "--out", "{t}/m", "--config", "{t}/c.yaml"], "c.yaml", write("c.yaml", GARBAGE)),
    ("build-config-folder", ["world", "build", "--out", "{t}/m", "--config", "{t}"], "does not exist", None),
    ("build-config-unknown", ["world", "build", "--out", "{t}/m", "--config", "{t}/c.yaml"], "unknown config key colour",
     write("c.yaml", "colour: red\n")),
    ("build-config-wrong-type", ["world", "build", "--out", "{t}/m", "--config", "{t}/c.yaml"], "'sft.steps': expected int",
     write("c.yaml", "sft:\n  steps: [1]\n")),
    ("build-out-is-file", ["world", "build", "--out", "{t}/f"], "is a file", write("f", "x")),
    ("build-out-under-file", ["world", "build", "--out", "{t}/f/sub"], "lies under", write("f", "x")),
    ("build-corrupt-record", ["world", "build", "--out", "{t}/m"], "mentor_world.json", write("m/mentor_world.json", "{oops")),
    ("build-record-list", ["world", "build", "--out", "{t}/m"], "mentor_world.json", write("m/mentor_world.json", "[1]")),

    # --- eval
    ("eval-unknown-task", ["eval", "--task", "no-such-task"], "unknown task 'no-such-task'", None),
    ("eval-missing-data", ["eval", "--data", "{t}/none.jsonl"], "none.jsonl", None),
    ("eval-unknown-key", ["eval", "colour=red"], "unknown config key colour", None),
    ("eval-n-zero", ["eval", "-n", "0"], "must be between", None),
    ("eval-k-negative", ["eval", "-k", "-2"], "must be between", None),
    ("eval-n-text", ["eval", "-n", "many"], "argument -n", None),
    ("eval-n-key-text", ["eval", "n_problems=abc"], "'n_problems': expected int", None),
    ("eval-k-key-float", ["eval", "k=2.5"], "'k': expected int", None),
    ("eval-temperature-negative", ["eval", "--temperature", "-1"], "temperature must be >= 0", None),
    ("eval-temperature-nan", ["eval", "--temperature", "nan"], "temperature must be >= 0", None),
    ("eval-top-p-zero", ["eval", "--top-p", "0"], "top_p must be in (0, 1]", None),
    ("eval-top-p-big", ["eval", "top_p=1.5"], "top_p must be in (0, 1]", None),
    ("eval-max-new-tokens", ["eval", "--max-new-tokens", "0"], "must be between", None),
    ("eval-batch-size", ["eval", "--batch-size", "0"], "must be between", None),
    ("eval-context-unknown", ["eval", "--context", "gossip"], "unknown context", None),
    ("eval-context-empty-item", ["eval", "--context", "none,"], "unknown context", None),
    ("eval-contexts-scalar", ["eval", "contexts=none"], "'contexts': expected a list", None),
    ("eval-contexts-numbers", ["eval", "contexts=[1]"], "'contexts[0]': expected text", None),
    ("eval-thinking", ["eval", "thinking=sometimes"], "'thinking': expected bool", None),
    ("eval-split", ["eval", "--split", "dev", "-n", "1"], "unknown split 'dev'", None),
    ("eval-critique-gym", ["eval", "--task", "gym:family_relationships", "--context", "critique", "-n", "1"],
     "has no critic", None),
    ("eval-gym-unknown", ["eval", "--task", "gym:no_such_generator", "-n", "1"], "no_such_generator", None),
    ("eval-model-missing", ["eval", "--model", "{t}/none", "-n", "1"], "cannot load model", None),
    ("eval-model-empty-folder", ["eval", "--model", "{t}/empty", "-n", "1"], "has no config.json", mkdir("empty")),
    ("eval-model-run-folder", ["eval", "--model", "{t}/run", "-n", "1"], "it is a run folder",
     write("run/best/config.json", "{}")),
    ("eval-model-bad-config", ["eval", "--model", "{t}/m", "-n", "1"], "cannot load model", write("m/config.json", "{oops")),
    ("eval-model-config-list", ["eval", "--model", "{t}/m", "-n", "1"], "cannot load model", write("m/config.json", "[]")),
    ("eval-model-config-type", ["eval", "--model", "{t}/m", "-n", "1"], "cannot load model",
     write("m/config.json", '{"model_type": "no-such-architecture"}')),
    ("eval-model-binary-config", ["eval", "--model", "{t}/m", "-n", "1"], "cannot load model",
     write("m/config.json", GARBAGE)),
    ("eval-model-a-file", ["eval", "--model", "{t}/weights.bin", "-n", "1"], "not a model folder",
     write("weights.bin", "x")),
    ("eval-gguf-missing", ["eval", "--model", "{t}/none.gguf", "-n", "1"], "GGUF file not found", None),
    ("eval-gguf-truncated", ["eval", "--model", "{t}/m.gguf", "-n", "1"], "not a readable GGUF file",
     write("m.gguf", b"GGUF\x03\x00\x00\x00")),
    ("eval-gguf-empty", ["eval", "--model", "{t}/m.gguf", "-n", "1"], "not a readable GGUF file", write("m.gguf", b"")),
    ("eval-gguf-garbage", ["eval", "--model", "{t}/m.gguf", "-n", "1"], "not a readable GGUF file",
     write("m.gguf", GARBAGE)),
    ("eval-out-is-file", ["eval", "-n", "1", "-k", "1", "--out", "{t}/results"], "is a file", write("results", "x")),
    ("eval-out-under-file", ["eval", "-n", "1", "-k", "1", "--out", "{t}/f/sub"], "lies under", write("f", "x")),
    ("eval-config-missing", ["eval", "--config", "{t}/none.yaml"], "does not exist", None),
    ("eval-config-bad-yaml", ["eval", "--config", "{t}/c.yaml"], "not valid YAML", write("c.yaml", "k: : :\n  - [")),
    ("eval-config-scalar", ["eval", "--config", "{t}/c.yaml"], "must hold a mapping", write("c.yaml", "42\n")),
    ("eval-config-null-k", ["eval", "--config", "{t}/c.yaml"], "'k': expected int", write("c.yaml", "k: null\n")),
    # data files
    ("data-empty-file", ["eval", "--data", "{t}/d.jsonl"], "d.jsonl: no rows", write("d.jsonl", "")),
    ("data-blank-lines", ["eval", "--data", "{t}/d.jsonl"], "d.jsonl: no rows", write("d.jsonl", "\n\n  \n")),
    ("data-not-json", ["eval", "--data", "{t}/d.jsonl"], "d.jsonl:2: not valid JSON",
     write("d.jsonl", jsonl(GSM8K, "{question"))),
    ("data-deeply-nested", ["eval", "--data", "{t}/d.jsonl"], "d.jsonl:2: not valid JSON (nested too deeply)",
     write("d.jsonl", jsonl(GSM8K, DEEP))),
    ("data-deeply-nested-json", ["eval", "--data", "{t}/d.json"], "d.json: not valid JSON (nested too deeply)",
     write("d.json", DEEP)),
    ("data-binary", ["eval", "--data", "{t}/d.jsonl"], "d.jsonl: not UTF-8", write("d.jsonl", GARBAGE)),
    ("data-binary-csv", ["eval", "--data", "{t}/d.csv"], "d.csv: not UTF-8", write("d.csv", GARBAGE)),
    ("data-bad-parquet", ["eval", "--data", "{t}/d.parquet"], "d.parquet: not a readable parquet file",
     write("d.parquet", GARBAGE)),
    ("data-suffix", ["eval", "--data", "{t}/d.txt"], "unsupported file type '.txt'", write("d.txt", "hello")),
    ("data-row-list", ["eval", "--data", "{t}/d.jsonl"], "d.jsonl:1", write("d.jsonl", jsonl([1, 2]))),
    ("data-row-number", ["eval", "--data", "{t}/d.jsonl"], "d.jsonl:2: expected an object",
     write("d.jsonl", jsonl(GSM8K, 7))),
    ("data-unknown-columns", ["eval", "--data", "{t}/d.jsonl"], "cannot tell the format",
     write("d.jsonl", jsonl({"foo": 1, "bar": 2}))),
    ("data-missing-answer", ["eval", "--data", "{t}/d.jsonl"], "d.jsonl:2: field",
     write("d.jsonl", jsonl(GSM8K, {"question": "q"}))),
    ("data-empty-question", ["eval", "--data", "{t}/d.jsonl"], "d.jsonl:1: field 'question'",
     write("d.jsonl", jsonl({"question": "", "answer": "#### 2"}))),
    ("data-question-number", ["eval", "--data", "{t}/d.jsonl"], "d.jsonl:1: field 'question'",
     write("d.jsonl", jsonl({"question": 5, "answer": "#### 2"}))),
    ("data-empty-gold", ["eval", "--data", "{t}/d.jsonl"], "empty gold answer after '####'",
     write("d.jsonl", jsonl({"question": "q", "answer": "so 2\n####  "}))),
    ("data-nan-gold", ["eval", "--data", "{t}/d.jsonl"], "d.jsonl:1: field 'answer'",
     write("d.jsonl", '{"problem": "q", "solution": "s", "answer": NaN}\n')),
    ("data-infinite-gold", ["eval", "--data", "{t}/d.jsonl"], "d.jsonl:1: field 'answer'",
     write("d.jsonl", '{"problem": "q", "solution": "s", "answer": Infinity}\n')),
    ("data-bool-gold", ["eval", "--data", "{t}/d.jsonl"], "d.jsonl:1: field 'answer'",
     write("d.jsonl", jsonl({"problem": "q", "solution": "s", "answer": True}))),
    ("data-math-no-boxed", ["eval", "--data", "{t}/d.jsonl"], "no \\boxed{} answer",
     write("d.jsonl", jsonl({"problem": "q", "solution": "it is two"}))),
    ("data-duplicate-id", ["eval", "--data", "{t}/d.jsonl"], "d.jsonl:2: field 'id': duplicate id",
     write("d.jsonl", jsonl({**GSM8K, "id": "a"}, {**GSM8K, "id": "a"}))),
    ("data-bad-id", ["eval", "--data", "{t}/d.jsonl"], "d.jsonl:1: field 'id'", write("d.jsonl", jsonl({**GSM8K, "id": None}))),
    ("data-chat-not-messages", ["eval", "--data", "{t}/d.jsonl"], "d.jsonl:1: field 'messages'",
     write("d.jsonl", jsonl({"messages": ["hi"]}))),
    ("data-chat-no-user", ["eval", "--data", "{t}/d.jsonl"], "d.jsonl:1: field 'messages'",
     write("d.jsonl", jsonl({"messages": [{"role": "assistant", "content": "#### 2"}]}))),
    ("data-json-object", ["eval", "--data", "{t}/d.json"], "expected a JSON list",
     write("d.json", '{"a": 1, "b": 2}')),
    ("data-json-truncated", ["eval", "--data", "{t}/d.json"], "d.json:1: not valid JSON",
     write("d.json", '[{"question": "q", ')),
    ("data-csv-missing-column", ["eval", "--data", "{t}/d.csv"], "d.csv: row 1", write("d.csv", "question,answer\nq,\n")),
    ("data-csv-header-only", ["eval", "--data", "{t}/d.csv"], "d.csv: no rows", write("d.csv", "question,answer\n")),
    ("data-folder-not-dataset", ["eval", "--data", "{t}/folder"], "not one written by datasets' save_to_disk",
     write("folder/notes.txt", "x")),
    ("data-folder-bad-dataset", ["eval", "--data", "{t}/folder"], "folder",
     both(write("folder/dataset_info.json", "{oops"), write("folder/state.json", "{oops"))),

    # --- generate
    ("gen-n-problems-text", ["generate", "--out", "{t}/g", "n_problems=abc"], "'n_problems': expected int", None),
    ("gen-n-problems-zero", ["generate", "--out", "{t}/g", "n_problems=0"], "n_problems must be >= 1", None),
    ("gen-n-flag-negative", ["generate", "--out", "{t}/g", "-n", "-3"], "must be between", None),
    ("gen-group-size-zero", ["generate", "--out", "{t}/g", "-G", "0"], "must be between", None),
    ("gen-group-size-text", ["generate", "--out", "{t}/g", "group_size=eight"], "'group_size': expected int", None),
    ("gen-prompts-per-call", ["generate", "--out", "{t}/g", "prompts_per_call=0"], "prompts_per_call must be >= 1", None),
    ("gen-temperature", ["generate", "--out", "{t}/g", "temperature=-0.5"], "temperature must be >= 0", None),
    ("gen-top-p", ["generate", "--out", "{t}/g", "top_p=0"], "top_p must be in (0, 1]", None),
    ("gen-max-new-tokens", ["generate", "--out", "{t}/g", "max_new_tokens=0"], "max_new_tokens must be >= 1", None),
    ("gen-unknown-key", ["generate", "--out", "{t}/g", "colour=red"], "unknown config key colour", None),
    ("gen-teacher-timeout-zero", ["generate", "--out", "{t}/g", "teacher.timeout_s=0"], "teacher.timeout_s must be > 0",
     None),
    ("gen-teacher-concurrency-zero", ["generate", "--out", "{t}/g", "teacher.concurrency=0"],
     "teacher.concurrency must be >= 1", None),
    ("gen-teacher-retries-negative", ["generate", "--out", "{t}/g", "teacher.max_retries=-1"],
     "teacher.max_retries must be >= 0", None),
    ("gen-n-huge", ["generate", "--out", "{t}/g", "-n", "1000000000000"], "a count must be between 1 and 10,000,000",
     None),
    ("gen-n-text", ["generate", "--out", "{t}/g", "-n", "many"], "a count must be a whole number", None),
    ("eval-seed-negative", ["eval", "--seed", "-1"], "a seed must be between 0", None),
    ("eval-k-huge", ["eval", "-k", "1000000000000"], "a count must be between 1 and 10,000,000", None),
    ("gen-teacher-kind", ["generate", "--out", "{t}/g", "teacher.kind=oracle"], "unknown teacher kind 'oracle'", None),
    ("gen-teacher-unknown-key", ["generate", "--out", "{t}/g", "teacher.colour=red"], "unknown config key teacher.colour", None),
    ("gen-teacher-error-rate-text", ["generate", "--out", "{t}/g", "teacher.error_rate=often"],
     "'teacher.error_rate': expected float", None),
    ("gen-teacher-error-rate-big", ["generate", "--out", "{t}/g", "teacher.error_rate=2"], "error_rate", None),
    ("gen-teacher-style", ["generate", "--out", "{t}/g", "teacher.style=baroque"], "baroque", None),
    ("gen-teacher-error-kinds", ["generate", "--out", "{t}/g", "teacher.error_kinds=[nonsense]"], "nonsense", None),
    ("gen-teacher-error-kinds-scalar", ["generate", "--out", "{t}/g", "teacher.error_kinds=5"],
     "'teacher.error_kinds': expected a list", None),
    ("gen-openai-no-url", ["generate", "--out", "{t}/g", "teacher.kind=openai"], "teacher.base_url", None),
    ("gen-openai-bad-url", ["generate", "--out", "{t}/g", *TINY, "teacher.kind=openai", "teacher.base_url=ftp://x",
                            "teacher.model=m"], "base_url must be http", None),
    ("gen-openai-concurrency", ["generate", "--out", "{t}/g", *TINY, "teacher.kind=openai",
                                "teacher.base_url=http://127.0.0.1:9", "teacher.model=m", "teacher.concurrency=0"],
     "concurrency must be >= 1", None),
    ("gen-local-no-model", ["generate", "--out", "{t}/g", "teacher.kind=local"], "teacher.model", None),
    ("gen-local-missing-model", ["generate", "--out", "{t}/g", *TINY, "teacher.kind=local", "teacher.model={t}/none"],
     "cannot load model", None),
    ("gen-rewards-weights-list", ["generate", "--out", "{t}/g", "rewards.weights=[1]"],
     "'rewards.weights': expected a mapping", None),
    ("gen-rewards-weight-text", ["generate", "--out", "{t}/g", "rewards.weights.format=heavy"],
     "'rewards.weights.format': expected float", None),
    ("gen-rewards-unknown-component", ["generate", "--out", "{t}/g", "rewards.weights.charm=1"], "charm", None),
    ("gen-normalisation", ["generate", "--out", "{t}/g", "weighting.normalisation=rank"], "rank", None),
    ("gen-zero-variance", ["generate", "--out", "{t}/g", "weighting.zero_variance=shrug"], "shrug", None),
    ("gen-split", ["generate", "--out", "{t}/g", *TINY, "--split", "dev"], "unknown split 'dev'", None),
    ("gen-task", ["generate", "--out", "{t}/g", "--task", "nope"], "unknown task 'nope'", None),
    ("gen-data-deep", ["generate", "--out", "{t}/g", "--data", "{t}/d.jsonl"], "d.jsonl:1: not valid JSON",
     write("d.jsonl", jsonl(DEEP))),
    ("gen-data-nan-gold", ["generate", "--out", "{t}/g", "--data", "{t}/d.jsonl"], "d.jsonl:1: field 'answer'",
     write("d.jsonl", '{"question": "q", "answer": NaN}\n')),
    ("gen-out-is-file", ["generate", "--out", "{t}/g", *TINY], "is a file", write("g", "x")),
    ("gen-out-under-file", ["generate", "--out", "{t}/f/sub", *TINY], "lies under", write("f", "x")),
    ("gen-corrupt-record", ["generate", "--out", "{t}/gen", *TINY], "generate.json",
     generated(response(), record="{not json")),
    ("gen-record-binary", ["generate", "--out", "{t}/gen", *TINY], "generate.json", generated(response(), record=GARBAGE)),
    ("gen-record-list", ["generate", "--out", "{t}/gen", *TINY], "generate.json", generated(response(), record="[]")),
    ("gen-rows-without-record", ["generate", "--out", "{t}/gen", *TINY], "generate.json does not", generated(response())),
    ("gen-corrupt-cache", ["generate", "--out", "{t}/gen", *TINY, "teacher.kind=openai",
                           "teacher.base_url=http://127.0.0.1:9", "teacher.model=m"],
     "teacher_cache.sqlite: not a readable request cache", write("gen/teacher_cache.sqlite", GARBAGE * 8)),
    ("gen-config-bad-yaml", ["generate", "--out", "{t}/g", "--config", "{t}/c.yaml"], "not valid YAML",
     write("c.yaml", "teacher: {kind: openai\n")),
    ("gen-config-teacher-list", ["generate", "--out", "{t}/g", "--config", "{t}/c.yaml"], "'teacher': expected a mapping",
     write("c.yaml", "teacher: [1, 2]\n")),

    # --- distill
    ("distill-no-data", ["distill", "--out", "{t}/d"], "distill needs data=FOLDER", None),
    ("distill-mode", ["distill", "--out", "{t}/d", "data=x", "mode=magic"], "mode must be one of", None),
    ("distill-alpha", ["distill", "--out", "{t}/d", "data=x", "alpha=2"], "alpha must be in [0, 1]", None),
    ("distill-alpha-text", ["distill", "--out", "{t}/d", "data=x", "alpha=half"], "'alpha': expected float", None),
    ("distill-eval-split", ["distill", "--out", "{t}/d", "data=x", "eval_split=dev"], "eval_split must be", None),
    ("distill-eval-k", ["distill", "--out", "{t}/d", "data=x", "eval_k=0"], "eval_problems and eval_k >= 1", None),
    ("distill-temperature", ["distill", "--out", "{t}/d", "data=x", "temperature=-1"], "temperature must be >= 0", None),
    ("distill-max-new-tokens", ["distill", "--out", "{t}/d", "mode=oracle", "max_new_tokens=0"],
     "max_new_tokens must be >= 1", None),
    ("distill-eval-backend", ["distill", "--out", "{t}/d", "mode=oracle", "eval_backend=hf"],
     "eval_backend must be one of local, vllm", None),
    ("distill-oracle-problems", ["distill", "--out", "{t}/d", "mode=oracle", "oracle_problems=-1"],
     "oracle_problems must be >= 0", None),
    ("distill-sft-steps-text", ["distill", "--out", "{t}/d", "data=x", "sft.steps=many"], "'sft.steps': expected int",
     None),
    ("distill-sft-unknown", ["distill", "--out", "{t}/d", "data=x", "sft.nope=1"], "unknown config key sft.nope", None),
    ("distill-missing-data", ["distill", "--out", "{t}/d", "data={t}/none"], "none: no such file or folder", None),
    ("distill-empty-responses", ["distill", "--out", "{t}/d", "data={t}/gen"], "no training examples", generated()),
    ("distill-weights-missing-normalisation", ["distill", "--out", "{t}/d", "data={t}/gen", "normalisation=minmax"],
     "has no 'minmax' weight", generated(response(weights={"zscore": 0.5}))),
    ("distill-weights-strings", ["distill", "--out", "{t}/d", "data={t}/gen"], "responses.jsonl:1: field 'weights.zscore'",
     generated(response(weights={**NORMALISED, "zscore": "high"}))),
    ("distill-weights-list", ["distill", "--out", "{t}/d", "data={t}/gen"], "responses.jsonl:1: field 'weights'",
     generated(response(weights=[0.5]))),
    ("distill-no-weights", ["distill", "--out", "{t}/d", "data={t}/gen"], "has no weights", generated(response(weights={}))),
    ("distill-components-string", ["distill", "--out", "{t}/d", "data={t}/gen"], "field 'components.format'",
     generated(response(components={"format": "yes"}))),
    ("distill-responses-deep", ["distill", "--out", "{t}/d", "data={t}/gen"], "responses.jsonl:2: not valid JSON",
     generated(response(), DEEP)),
    ("distill-responses-binary", ["distill", "--out", "{t}/d", "data={t}/gen/responses.jsonl"], "responses.jsonl:1",
     write("gen/responses.jsonl", b"\xff\xfe\x00\n")),
    ("distill-responses-unknown-field", ["distill", "--out", "{t}/d", "data={t}/gen"], "field 'colour'",
     generated(response(colour="red"))),
    ("distill-responses-missing-field", ["distill", "--out", "{t}/d", "data={t}/gen"], "field 'verdict': missing",
     generated({k: v for k, v in response().items() if k != "verdict"})),
    ("distill-responses-bad-verdict", ["distill", "--out", "{t}/d", "data={t}/gen"], "field 'verdict.reason'",
     generated(response(verdict={**VERDICT, "reason": "vibes"}))),
    ("distill-responses-duplicate", ["distill", "--out", "{t}/d", "data={t}/gen"], "responses.jsonl:2: a second row",
     generated(response(), response())),
    ("distill-responses-negative-index", ["distill", "--out", "{t}/d", "data={t}/gen"], "field 'sample_index'",
     generated(response(sample_index=-1))),
    ("distill-folder-not-generate", ["distill", "--out", "{t}/d", "data={t}/other"], "neither a generate folder",
     write("other/notes.txt", "x")),
    ("distill-mapd-no-string-completion", ["distill", "--out", "{t}/d", "mode=mapd", "data={t}/build"],
     "dataset.jsonl:1: field 'completion'", write("build/dataset.jsonl", jsonl(mapd_row(completion=None)))),
    ("distill-mapd-missing-completion", ["distill", "--out", "{t}/d", "mode=mapd", "data={t}/build"],
     "dataset.jsonl:2: field 'completion'",
     write("build/dataset.jsonl", jsonl(mapd_row(), {k: v for k, v in mapd_row().items() if k != "completion"}))),
    ("distill-mapd-prompt-number", ["distill", "--out", "{t}/d", "mode=mapd", "data={t}/build"],
     "dataset.jsonl:1: field 'prompt'", write("build/dataset.jsonl", jsonl(mapd_row(prompt=3)))),
    ("distill-mapd-bad-task", ["distill", "--out", "{t}/d", "mode=mapd", "data={t}/build"], "dataset.jsonl:1: field 'task'",
     write("build/dataset.jsonl", jsonl(mapd_row(task="poem")))),
    ("distill-mapd-row-list", ["distill", "--out", "{t}/d", "mode=mapd", "data={t}/build"],
     "dataset.jsonl:1: expected a JSON object", write("build/dataset.jsonl", jsonl([1]))),
    ("distill-mapd-not-json", ["distill", "--out", "{t}/d", "mode=mapd", "data={t}/build"],
     "dataset.jsonl:1: not valid JSON", write("build/dataset.jsonl", "{task\n")),
    ("distill-mapd-deep", ["distill", "--out", "{t}/d", "mode=mapd", "data={t}/build"], "dataset.jsonl:1: not valid JSON",
     write("build/dataset.jsonl", DEEP + "\n")),
    ("distill-mapd-finish-reason", ["distill", "--out", "{t}/d", "mode=mapd", "data={t}/build"], "field 'finish_reason'",
     write("build/dataset.jsonl", jsonl(mapd_row(finish_reason="tired")))),
    ("distill-mapd-missing", ["distill", "--out", "{t}/d", "mode=mapd", "data={t}/none"], "none: no such file", None),
    ("distill-model-empty-folder", ["distill", "--out", "{t}/d", "data={t}/gen", "model={t}/empty"],
     "has no config.json", both(generated(response()), mkdir("empty"))),
    ("distill-task", ["distill", "--out", "{t}/d", "data={t}/gen", "task=nope"], "unknown task 'nope'",
     generated(response())),
    ("distill-out-is-file", ["distill", "--out", "{t}/f", "data={t}/gen"], "is a file",
     both(generated(response()), write("f", "x"))),
    ("distill-corrupt-config", ["distill", "--out", "{t}/d", "data={t}/gen"], "config.json",
     both(generated(response()), write("d/config.json", "{oops"), write("d/summary.json", "{}"))),

    # --- mapd
    ("mapd-teachers-list", ["mapd", "rationales", "--out", "{t}/r", "teachers=[1,2]"], "'teachers': expected a mapping",
     None),
    ("mapd-teachers-empty", ["mapd", "rationales", "--out", "{t}/r", "teachers={}"], "the committee has no teacher", None),
    ("mapd-teacher-not-mapping", ["mapd", "rationales", "--out", "{t}/r", "teachers.x=3"], "'teachers.x': expected a mapping",
     None),
    ("mapd-teacher-unknown-key", ["mapd", "rationales", "--out", "{t}/r", "teachers.sim-a.colour=red"],
     "unknown config key teachers.sim-a.colour", None),
    ("mapd-teacher-error-rate-text", ["mapd", "explain", "--out", "{t}/e", "teachers.sim-a.error_rate=abc"],
     "'teachers.sim-a.error_rate': expected float", None),
    ("mapd-teacher-kind", ["mapd", "review", "--out", "{t}/v", "teachers.sim-a.kind=magic"], "unknown teacher kind", None),
    ("mapd-threshold", ["mapd", "review", "--out", "{t}/v", "threshold=9"], "threshold must be in [1, 5]", None),
    ("mapd-threshold-text", ["mapd", "review", "--out", "{t}/v", "threshold=high"], "'threshold': expected float", None),
    ("mapd-ablation", ["mapd", "build", "--out", "{t}/b", "ablation=none"], "unknown MAPD ablation", None),
    ("mapd-alpha", ["mapd", "build", "--out", "{t}/b", "alpha=-1"], "alpha must be in [0, 1]", None),
    ("mapd-batch-size", ["mapd", "mine", "--out", "{t}/m", "batch_size=0"], "batch_size must be >= 1", None),
    ("mapd-student-temperature", ["mapd", "mine", "--out", "{t}/m", "student_temperature=-1"],
     "student_temperature must be >= 0", None),
    ("mapd-student-top-p", ["mapd", "mine", "--out", "{t}/m", "student_top_p=0"], "student_top_p must be in (0, 1]", None),
    ("mapd-teacher-temperature", ["mapd", "rationales", "--out", "{t}/r", "teacher_temperature=-0.5"],
     "teacher_temperature must be >= 0", None),
    ("mapd-review-tokens", ["mapd", "review", "--out", "{t}/r", "review_max_new_tokens=0"],
     "review_max_new_tokens must be >= 1", None),
    ("mapd-require-review-text", ["mapd", "review", "--out", "{t}/v", "require_review=perhaps"],
     "'require_review': expected bool", None),
    ("mapd-n-problems-text", ["mapd", "mine", "--out", "{t}/m", "n_problems=abc"], "'n_problems': expected int", None),
    ("mapd-unknown-key", ["mapd", "mine", "--out", "{t}/m", "colour=red"], "unknown config key colour", None),
    ("mapd-mine-task", ["mapd", "mine", "--out", "{t}/m", "task=nope"], "unknown task 'nope'", None),
    ("mapd-mine-split", ["mapd", "mine", "--out", "{t}/m", *TINY, "split=dev"], "unknown split 'dev'", None),
    ("mapd-mine-data-missing", ["mapd", "mine", "--out", "{t}/m", "--data", "{t}/none.jsonl"], "none.jsonl", None),
    ("mapd-mine-data-binary", ["mapd", "mine", "--out", "{t}/m", "--data", "{t}/d.jsonl"], "d.jsonl: not UTF-8",
     write("d.jsonl", GARBAGE)),
    ("mapd-mine-student-empty-folder", ["mapd", "mine", "--out", "{t}/m", *TINY, "student={t}/empty"],
     "has no config.json", mkdir("empty")),
    ("mapd-mine-student-gguf", ["mapd", "mine", "--out", "{t}/m", *TINY, "student={t}/s.gguf"], "not a readable GGUF",
     write("s.gguf", b"GGUF")),
    ("mapd-mine-out-under-file", ["mapd", "mine", "--out", "{t}/f/sub", *TINY], "lies under", write("f", "x")),
    ("mapd-mine-corrupt-stage", ["mapd", "mine", "--out", "{t}/m", *TINY], "stage.json",
     both(write("m/stage.json", "{oops"), write("m/answers.jsonl", jsonl(student_answer())))),
    ("mapd-rationales-corrupt-stage", ["mapd", "rationales", "--out", "{t}/r", *TINY], "stage.json",
     both(write("r/stage.json", GARBAGE), write("r/rationales.jsonl", jsonl(rationale())))),
    ("mapd-rationales-data-deep", ["mapd", "rationales", "--out", "{t}/r", "--data", "{t}/d.jsonl"], "d.jsonl:1",
     write("d.jsonl", jsonl(DEEP))),
    ("mapd-rationales-out-is-file", ["mapd", "rationales", "--out", "{t}/f", *TINY], "is a file", write("f", "x")),
    ("mapd-explain-missing-mined", ["mapd", "explain", "--out", "{t}/e", "--mined", "{t}/none"], "none: no such file", None),
    ("mapd-explain-mined-not-json", ["mapd", "explain", "--out", "{t}/e", "--mined", "{t}/m"], "mined.jsonl:1: not valid JSON",
     write("m/mined.jsonl", "{nope\n")),
    ("mapd-explain-mined-deep", ["mapd", "explain", "--out", "{t}/e", "--mined", "{t}/m"], "mined.jsonl:1: not valid JSON",
     write("m/mined.jsonl", DEEP + "\n")),
    ("mapd-explain-mined-missing-field", ["mapd", "explain", "--out", "{t}/e", "--mined", "{t}/m"],
     "mined.jsonl:1: field 'completion': missing",
     write("m/mined.jsonl", jsonl({k: v for k, v in student_answer().items() if k != "completion"}))),
    ("mapd-explain-mined-no-gold", ["mapd", "explain", "--out", "{t}/e", "--mined", "{t}/m"], "mined.jsonl:1: field 'answer'",
     write("m/mined.jsonl", jsonl(student_answer(answer=" ")))),
    ("mapd-explain-mined-wrong-type", ["mapd", "explain", "--out", "{t}/e", "--mined", "{t}/m"],
     "mined.jsonl:1: field 'correct'", write("m/mined.jsonl", jsonl(student_answer(correct="no")))),
    ("mapd-explain-corrupt-stage", ["mapd", "explain", "--out", "{t}/e", "--mined", "{t}/m"], "stage.json",
     both(write("m/mined.jsonl", jsonl(student_answer())), write("e/stage.json", "[1, 2"),
          write("e/explanations.jsonl", jsonl({"problem_id": "p0", "teacher": "sim-a", "prompt": "q",
                                               "student_answer": "3", "text": "t"})))),
    ("mapd-review-missing", ["mapd", "review", "--out", "{t}/v", "--rationales", "{t}/none"], "none: no such file",
     None),
    ("mapd-review-one-teacher", ["mapd", "review", "--out", "{t}/v", "--rationales", "{t}/r", "--config", "{t}/c.yaml"],
     "at least two teachers", both(write("r/rationales.jsonl", jsonl(rationale())), write("c.yaml", "teachers: {a: {}}\n"))),
    ("mapd-review-bad-rationale", ["mapd", "review", "--out", "{t}/v", "--rationales", "{t}/r"],
     "rationales.jsonl:2: field 'correct'", write("r/rationales.jsonl", jsonl(rationale(), rationale(correct=None)))),
    ("mapd-review-binary", ["mapd", "review", "--out", "{t}/v", "--rationales", "{t}/r"], "rationales.jsonl:1",
     write("r/rationales.jsonl", b"\x80\x81\n")),
    ("mapd-build-missing-mined", ["mapd", "build", "--out", "{t}/b", "--mined", "{t}/none"], "none: no such file", None),
    ("mapd-build-bad-reviewed", ["mapd", "build", "--out", "{t}/b", "--mined", "{t}/m", "--reviewed", "{t}/v"],
     "reviewed.jsonl:1", both(write("m/mined.jsonl", jsonl(student_answer())),
                              write("v/reviewed.jsonl", jsonl({"rationale": 1})))),
    ("mapd-build-reviewed-nested-bad", ["mapd", "build", "--out", "{t}/b", "--mined", "{t}/m", "--reviewed", "{t}/v"],
     "reviewed.jsonl:1", both(write("m/mined.jsonl", jsonl(student_answer())), write("v/reviewed.jsonl", jsonl(
         {"rationale": {"problem_id": "p0"}, "reviews": [], "mean_score": None, "n_valid": 0, "accepted": False})))),
    ("mapd-build-config-bad-yaml", ["mapd", "build", "--out", "{t}/b", "--config", "{t}/c.yaml"], "not valid YAML",
     write("c.yaml", "teachers:\n\t- a\n")),

    # --- train (config and input errors only; nothing trains)
    ("train-method", ["train", "--out", "{t}/r", "onpolicy.method=ppo"], "method must be one of", None),
    ("train-steps-zero", ["train", "--out", "{t}/r", "onpolicy.steps=0"], "steps must be >= 1", None),
    ("train-steps-text", ["train", "--out", "{t}/r", "onpolicy.steps=ten"], "'onpolicy.steps': expected int", None),
    ("train-lr-negative", ["train", "--out", "{t}/r", "onpolicy.lr=-1"], "lr must be > 0", None),
    ("train-lr-inf", ["train", "--out", "{t}/r", "onpolicy.lr=.inf"], "'onpolicy.lr': expected a finite", None),
    ("train-top-p", ["train", "--out", "{t}/r", "onpolicy.top_p=2"], "top_p in (0, 1]", None),
    ("train-grpo-weight", ["train", "--out", "{t}/r", "onpolicy.grpo_weight=2"], "grpo_weight must be in [0, 1]", None),
    ("train-grpo-rollouts", ["train", "--out", "{t}/r", "onpolicy.method=grpo", "onpolicy.rollouts_per_prompt=1"],
     "needs rollouts_per_prompt >= 2", None),
    ("train-divergence", ["train", "--out", "{t}/r", "onpolicy.divergence=l2"], "divergence must be one of", None),
    ("train-beta", ["train", "--out", "{t}/r", "onpolicy.beta=3"], "beta must be in [0, 1]", None),
    ("train-micro-batch", ["train", "--out", "{t}/r", "onpolicy.micro_batch_size=0"], "micro_batch_size must be >= 1",
     None),
    ("train-eval-split", ["train", "--out", "{t}/r", "onpolicy.eval_split=dev"], "eval_split must be", None),
    ("train-report-to-scalar", ["train", "--out", "{t}/r", "onpolicy.report_to=wandb"],
     "'onpolicy.report_to': expected a list", None),
    ("train-lora-text", ["train", "--out", "{t}/r", "lora=yes please"], "'lora': expected bool", None),
    ("train-critic-kind", ["train", "--out", "{t}/r", "critic.kind=oracle"], "critic.kind must be one of", None),
    ("train-critic-llm", ["train", "--out", "{t}/r", "critic.kind=llm"], "critic.base_url and critic.model", None),
    ("train-critic-committee", ["train", "--out", "{t}/r", "critic.kind=committee"], "at least two critic.teachers",
     None),
    ("train-critic-teachers-list", ["train", "--out", "{t}/r", "critic.teachers=[a, b]"],
     "'critic.teachers': expected a mapping", None),
    ("train-critic-committee-bad-teacher", ["train", "--out", "{t}/r", "critic.kind=committee", "critic.teachers.a={}",
                                            "critic.teachers.b.error_rate=x"], "'critic.teachers.b.error_rate'", None),
    ("train-unknown-key", ["train", "--out", "{t}/r", "optimiser=adam"], "unknown config key optimiser", None),
    ("train-task", ["train", "--out", "{t}/r", "task=nope"], "unknown task 'nope'", None),
    ("train-model-missing", ["train", "--out", "{t}/r", "model={t}/none"], "cannot load model", None),
    ("train-model-empty-folder", ["train", "--out", "{t}/r", "model={t}/empty"], "has no config.json", mkdir("empty")),
    ("train-model-bad-config", ["train", "--out", "{t}/r", "model={t}/m"], "cannot load model",
     write("m/config.json", '{"model_type": 7}')),
    ("train-out-is-file", ["train", "--out", "{t}/f"], "is a file", write("f", "x")),
    ("train-out-under-file", ["train", "--out", "{t}/f/sub"], "lies under", write("f", "x")),
    ("train-corrupt-record", ["train", "--out", "{t}/r"], "train.json", write("r/train.json", "{oops")),
    ("train-record-not-object", ["train", "--out", "{t}/r"], "train.json", write("r/train.json", '"text"')),
    ("train-record-differs", ["train", "--out", "{t}/r"], "with another configuration",
     write("r/train.json", json.dumps({"model": "other"}))),
    ("gen-record-differs", ["generate", "--out", "{t}/gen", *TINY], "another configuration",
     generated(response(), record=json.dumps({"key": {"task": "other"}}))),
    ("mapd-stage-differs", ["mapd", "rationales", "--out", "{t}/r", *TINY], "another configuration",
     both(write("r/stage.json", json.dumps({"key": {"stage": "other"}})), write("r/rationales.jsonl", jsonl(rationale())))),
    ("data-json-rows-not-objects", ["eval", "--data", "{t}/d.json"], "d.json: row 1", write("d.json", "[1, 2]")),
    ("train-config-file-bad", ["train", "--out", "{t}/r", "--config", "{t}/c.yaml"], "'onpolicy': expected a mapping",
     write("c.yaml", "onpolicy: 3\n")),

    # --- analyze
    ("analyze-contexts", ["analyze", "--out", "{t}/a", "--contexts", "vibes"], "unknown context 'vibes'", None),
    ("analyze-n", ["analyze", "--out", "{t}/a", "-n", "0"], "must be between", None),
    ("analyze-pool", ["analyze", "--out", "{t}/a", "--problems-pool", "-1"], "must be between", None),
    ("analyze-temperature", ["analyze", "--out", "{t}/a", "--temperature", "-1"], "--temperature must be >= 0", None),
    ("analyze-max-new-tokens", ["analyze", "--out", "{t}/a", "--max-new-tokens", "0"], "must be between",
     None),
    ("analyze-task", ["analyze", "--out", "{t}/a", "--task", "nope"], "unknown task 'nope'", None),
    ("analyze-out-is-file", ["analyze", "--out", "{t}/f"], "is a file", write("f", "x")),
    ("analyze-rollouts-missing", ["analyze", "--out", "{t}/a", "--rollouts", "{t}/none.jsonl"], "none.jsonl: no such file",
     None),
    ("analyze-rollouts-not-json", ["analyze", "--out", "{t}/a", "--rollouts", "{t}/r.jsonl"], "r.jsonl:1: not valid JSON",
     write("r.jsonl", "nope\n")),
    ("analyze-rollouts-deep", ["analyze", "--out", "{t}/a", "--rollouts", "{t}/r.jsonl"], "r.jsonl:1: not valid JSON",
     write("r.jsonl", DEEP + "\n")),
    ("analyze-rollouts-bad-field", ["analyze", "--out", "{t}/a", "--rollouts", "{t}/r.jsonl"],
     "r.jsonl:1: field 'finish_reason'", write("r.jsonl", jsonl({"problem_id": "p", "prompt": "q", "completion": "c",
                                                                 "finish_reason": "bored"}))),
    ("analyze-rollouts-logprobs", ["analyze", "--out", "{t}/a", "--rollouts", "{t}/r.jsonl"], "r.jsonl:1: field 'logprobs'",
     write("r.jsonl", jsonl({"problem_id": "p", "prompt": "q", "completion": "c", "token_ids": [1],
                             "logprobs": [0.1, 0.2]}))),
    ("analyze-rollouts-unknown-problem", ["analyze", "--out", "{t}/a", "--rollouts", "{t}/r.jsonl",
                                          "--problems-pool", "2"], "matches the rollouts",
     write("r.jsonl", jsonl({"problem_id": "nowhere", "prompt": "q", "completion": "c"}))),
    ("analyze-model-empty-folder", ["analyze", "--out", "{t}/a", "--model", "{t}/empty", "-n", "1"], "has no config.json",
     mkdir("empty")),

    # --- demo
    ("demo-n-zero", ["demo", "--out", "{t}/demo", "-n", "0"], "must be between", None),
    ("demo-k-negative", ["demo", "--out", "{t}/demo", "-k", "-1"], "must be between", None),
    ("demo-train-steps", ["demo", "--out", "{t}/demo", "--train-steps", "-5"], "must be between", None),
    ("demo-out-is-file", ["demo", "--out", "{t}/f"], "is a file", write("f", "x")),

    # --- compare (config errors only; nothing runs)
    ("compare-seeds-text", ["compare", "--out", "{t}/c", "seeds=abc"], "'seeds': expected a list", None),
    ("compare-seeds-items", ["compare", "--out", "{t}/c", "seeds=[a]"], "'seeds[0]': expected int", None),
    ("compare-seeds-empty", ["compare", "--out", "{t}/c", "seeds=[]"], "at least one seed", None),
    ("compare-workers", ["compare", "--out", "{t}/c", "workers=0"], "workers must be >= 1", None),
    ("compare-workers-text", ["compare", "--out", "{t}/c", "workers=all"], "'workers': expected int", None),
    ("compare-methods-list", ["compare", "--out", "{t}/c", "methods=[a]"], "'methods': expected a mapping", None),
    ("compare-method-scalar", ["compare", "--out", "{t}/c", "methods.X=3"], "'methods.X': expected a mapping", None),
    ("compare-method-label", ["compare", "--out", "{t}/c", "methods={data: {method: grpo}}"], "method label 'data'", None),
    ("compare-method-bad", ["compare", "--out", "{t}/c", "methods.GRPO.method=ppo"], "method must be one of", None),
    ("compare-search-scalar", ["compare", "--out", "{t}/c", "search.lr=3"], "'search.lr': expected a list", None),
    ("compare-unknown-key", ["compare", "--out", "{t}/c", "colour=red"], "unknown config key colour", None),
    ("compare-config-missing", ["compare", "{t}/none.yaml", "--out", "{t}/c"], "none.yaml does not exist", None),
    ("compare-config-bad-yaml", ["compare", "{t}/c.yaml", "--out", "{t}/c"], "not valid YAML", write("c.yaml", "seeds: [0\n")),
    ("compare-config-list", ["compare", "{t}/c.yaml", "--out", "{t}/c"], "must hold a mapping", write("c.yaml", "[0]\n")),
]


def _snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` (lock files aside: a refused run on an existing folder may leave one) with
    a hash of its content."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*")) if p.name != ".lock"}


def test_the_corpus_is_large_and_its_ids_unique():
    assert len(CASES) >= 150
    assert len({case[0] for case in CASES}) == len(CASES)


def check_bad_input(argv, expected, setup, root: Path, monkeypatch, capsys) -> None:
    """Run one case in ``root``: exit code 2, one ``mentor: error:`` line holding ``expected``, no traceback,
    and the folder exactly as the setup left it."""
    monkeypatch.chdir(root)  # a default --out (runs/...) lands here too
    if setup is not None:
        setup(root)
    capsys.readouterr()  # what the setup printed is not the command's
    before = _snapshot(root)
    try:
        code = main([arg.replace("{t}", str(root)) for arg in argv])
    except SystemExit as exit_info:  # argparse's own errors
        code = exit_info.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert lines[0].startswith("mentor: error: "), err
    assert expected.replace("{t}", str(root)) in lines[0], err
    assert _snapshot(root) == before  # no output, half-written or empty, and no --out folder left behind


@pytest.mark.parametrize(("argv", "expected", "setup"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(argv, expected, setup, tmp_path, monkeypatch, capsys):
    check_bad_input(argv, expected, setup, tmp_path, monkeypatch, capsys)
