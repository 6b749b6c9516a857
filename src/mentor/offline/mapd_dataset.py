"""The MAPD dataset on disk (``dataset.jsonl`` and a ``datasets`` folder) and the weighted SFT examples its
two tasks become (docs/methods.md, section 3)."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mentor.records import TOO_DEEP, RecordError


def _save_dataset(rows: list[dict[str, str]], folder: Path) -> None:
    import shutil

    import datasets

    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    columns = ("task", "problem_id", "teacher", "prompt", "completion", "finish_reason")
    features = datasets.Features({k: datasets.Value("string") for k in columns})
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        table = {k: [r.get(k, "stop") if k == "finish_reason" else r[k] for r in rows] for k in columns}  # from_dict: an empty dataset keeps its columns
        datasets.Dataset.from_dict(table, features=features).save_to_disk(str(tmp))
    finally:
        if bars:
            datasets.enable_progress_bars()
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def load_dataset_rows(path: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of a build folder (or its ``dataset.jsonl``)."""
    path = Path(path)
    if path.is_dir():
        path = path / "dataset.jsonl"
    if not path.is_file():
        raise RecordError(f"{path}: no such file (a mentor mapd build folder holds dataset.jsonl)")
    rows = []
    for number, line in enumerate(path.read_bytes().split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line.decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
            reason = err.msg if isinstance(err, json.JSONDecodeError) else getattr(err, "reason", TOO_DEEP)
            raise RecordError(f"{path}:{number}: not valid JSON ({reason})") from None
        if not isinstance(row, dict):
            raise RecordError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
        if row.get("task") not in ("explanation", "rationale"):
            raise RecordError(f"{path}:{number}: field 'task': {row.get('task')!r} is not explanation or rationale")
        for name in ("prompt", "completion"):
            if not isinstance(row.get(name), str):
                raise RecordError(f"{path}:{number}: field {name!r}: expected a string, got {row.get(name)!r:.80}")
        if row.get("finish_reason", "stop") not in ("stop", "length"):
            raise RecordError(f"{path}:{number}: field 'finish_reason': {row['finish_reason']!r} is not 'stop' or "
                              "'length'")
        rows.append(row)
    return rows


# ----- the training examples ----------------------------------------------------------------------------


def mapd_examples(rows: Sequence[dict[str, str]], alpha: float = 0.5, tokenizer: Any = None,
                  render: Callable[[str], str] | None = None) -> list:
    """Weighted SFT examples whose weighted NLL is loss = alpha * CE(explanation) + (1 - alpha) * CE(rationale).

    :func:`~mentor.losses.weighted_nll` computes ``-sum_i w_i S_i / N``, where ``S_i`` is the summed
    log-likelihood of example ``i``'s response tokens and ``N`` the number of response tokens of all examples.
    CE of a task is its token mean, ``CE_e = -sum_{i in e} S_i / N_e`` (and likewise ``N_r`` for the
    rationales, ``N = N_e + N_r``). With ``w_i = alpha * N / N_e`` for every explanation row and
    ``w_i = (1 - alpha) * N / N_r`` for every rationale row,
    ``-sum_i w_i S_i / N = alpha * (-sum_e S_i / N_e) + (1 - alpha) * (-sum_r S_i / N_r)``, the MAPD loss,
    exactly when the batch holds the whole dataset (a minibatch gets the same weights, so its loss is the
    per-token estimate of it with each task's share fixed). ``N_e`` and ``N_r`` are counted with
    ``tokenizer`` (the response tokens as :func:`~mentor.train.sft.tokenize` counts them, before any cut to
    max_length); with only one task present every weight is 1 (plain SFT on it). ``render`` maps a prompt to
    the model's input (e.g. its chat template); default: the prompt as it is.
    """
    from mentor.train.sft import SFTExample

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if tokenizer is None:
        raise ValueError("mapd_examples needs the student's tokenizer to count response tokens")
    for number, row in enumerate(rows, start=1):
        if row.get("task") not in ("explanation", "rationale"):
            raise ValueError(f"row {number}: task {row.get('task')!r} is not explanation or rationale")
    counts = tokenizer([r["completion"] for r in rows], add_special_tokens=False)["input_ids"] if rows else []
    n_task = Counter()
    for row, ids in zip(rows, counts):
        n_task[row["task"]] += len(ids)
    total = sum(n_task.values())
    if n_task["explanation"] and n_task["rationale"]:
        weights = {"explanation": alpha * total / n_task["explanation"],
                   "rationale": (1 - alpha) * total / n_task["rationale"]}
    else:
        weights = {"explanation": 1.0, "rationale": 1.0}
    render = render or (lambda prompt: prompt)
    return [SFTExample(render(r["prompt"]), r["completion"], weights[r["task"]]) for r in rows]
