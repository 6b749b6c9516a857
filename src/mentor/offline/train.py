"""``mentor distill``: train the student offline on a ``mentor generate`` folder, as AdvDistill
(reward-weighted), plain SFT on every response, or rejection-sampling SFT (docs/methods.md, section 2), or on a
``mentor mapd build`` folder (``mode=mapd``: alpha CE(explanation) + (1 - alpha) CE(rationale), section 3),
or as the *oracle* (``mode=oracle``, no data folder): SFT on the task's correct traces in the solver's own
format (``Task.gold_trace``) of ``sft.steps x sft.batch_size`` training problems, the ceiling that shows
how much a budget can teach at all.

All differ only in the examples' weights (:mod:`mentor.offline.distill`, :func:`mentor.offline.mapd.
mapd_examples`); the loop is the shared ``train_sft``. Held-out evaluation runs before training, every ``eval_every`` steps and at the end, the
best weights are kept, and the run folder records the resolved config, the example counts, the loss
curve and the scores.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mentor.config import check_at_most, default_values, differences
from mentor.devices import check_placement, resolve_device, resolve_dtype, without_auto_placement
from mentor.evaluate import EvalConfig, sampling_record
from mentor.offline.distill import DISTILL_MODES, distillation_examples
from mentor.records import append_jsonl, read_json
from mentor.sampling import check_sampling
from mentor.sampling.backends import check_backend, open_sampler
from mentor.train.checkpoint import trainable_state
from mentor.train.common import EvalProgress, held_out_score, save_model, test_scores
from mentor.train.distributed import Ranks
from mentor.train.sft import SFTConfig, train_sft


def _default_sft() -> SFTConfig:
    # shuffled batches: length grouping would skew a weighted loss's per-batch token denominator
    return SFTConfig(steps=200, batch_size=16, lr=3e-4, warmup_steps=0, min_lr_ratio=1.0, weight_decay=0.0,
                     group_by_length=False)


@dataclass
class DistillConfig:
    """One offline distillation run. ``data``: a ``mentor generate`` output folder (or its responses.jsonl)."""

    data: str = ""
    mode: str = "advdistill"  # advdistill | sft | rft (generate folders) | mapd (mapd build folders) | oracle
    normalisation: str = "zscore"  # advdistill's weight: zscore | minmax | softmax | zscore_clipped
    alpha: float = 0.5  # mapd: the mistake-explanation task's share of the loss
    # oracle: 0 gives one training problem per sequence (steps x batch_size, drawn with ``seed``, as an
    # on-policy run draws its prompts); N > 0 the first N training problems as ``mentor generate`` and
    # ``mentor mapd`` draw them (problem seed 0), so the oracle sees the same prompts as their teachers
    oracle_problems: int = 0
    model: str = "world"
    task: str = "world"  # where the held-out problems come from
    sft: SFTConfig = field(default_factory=_default_sft)
    eval_every: int = 0  # 0: evaluate before and after only
    eval_problems: int = 100
    eval_k: int = 8
    eval_split: str = "validation"  # where checkpoints are evaluated and the best one is chosen
    test_problems: int = 0  # at the end, the best and the final weights on this many test problems (0: none)
    temperature: float = 1.0
    max_new_tokens: int = 160
    seed: int = 0
    # local: mentor's decode loop; vllm: the held-out and test evaluations sample from one vLLM engine built
    # from the model's folder, the trained weights loaded into it before each evaluation
    eval_backend: str = "local"
    device: str = "auto"  # auto (the accelerator when there is one, else cpu) | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto (bfloat16 on a GPU that supports it, else float32) | float32 | bfloat16 | float16

    def __post_init__(self) -> None:
        if self.mode not in (*DISTILL_MODES, "mapd", "oracle"):
            raise ValueError(f"mode must be one of {', '.join(DISTILL_MODES)}, mapd, oracle; got {self.mode!r}")
        if not self.data and self.mode != "oracle":
            raise ValueError("distill needs data=FOLDER (a mentor generate output)")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.oracle_problems < 0:
            raise ValueError(f"oracle_problems must be >= 0, got {self.oracle_problems}")
        if self.eval_every < 0 or self.eval_problems < 1 or self.eval_k < 1 or self.test_problems < 0:
            raise ValueError("eval_every and test_problems must be >= 0, eval_problems and eval_k >= 1")
        if self.eval_split not in ("train", "validation", "test"):
            raise ValueError(f"eval_split must be train, validation or test, got {self.eval_split!r}")
        check_sampling(temperature=self.temperature, max_new_tokens=self.max_new_tokens)
        check_placement(self.device, self.dtype, training=True)
        check_at_most(self, "oracle_problems", "eval_every", "eval_problems", "eval_k", "test_problems",
                      "max_new_tokens")
        check_backend(self.eval_backend, "eval_backend")


def training_rows(config: DistillConfig) -> list | None:
    """The rows of ``config.data`` (None for the oracle), checked before any model loads: a bad row, or a
    weight that ``config.mode`` cannot use, is an error naming the data."""
    if config.mode == "oracle":
        return None
    if config.mode == "mapd":
        from mentor.offline.mapd import load_dataset_rows

        rows = load_dataset_rows(config.data)
        if not rows:
            raise ValueError(f"{config.data}: no training examples for mode mapd (an empty dataset)")
        return rows
    from mentor.offline.generate import load_responses
    from mentor.records import RecordError

    rows = load_responses(config.data)
    try:
        examples, counts = distillation_examples(rows, config.mode, normalisation=config.normalisation)
    except RecordError as err:
        message = str(err)
        raise RecordError(message if message.startswith(config.data) else f"{config.data}: {message}") from None
    if not examples:
        raise ValueError(f"{config.data}: no training examples for mode {config.mode} ({counts})")
    return rows


def training_examples(config: DistillConfig, tokenizer, rows: list | None = None) -> tuple[list, dict]:
    """The weighted examples of ``config.mode`` from ``config.data`` (or its ``rows``, read already by
    :func:`training_rows`) and their counts."""
    if config.mode == "oracle":
        return oracle_examples(config, tokenizer)
    rows = training_rows(config) if rows is None else rows
    if config.mode != "mapd":
        return distillation_examples(rows, config.mode, normalisation=config.normalisation, tokenizer=tokenizer)
    from collections import Counter

    from mentor.offline.distill import renderer
    from mentor.offline.mapd import mapd_examples

    render, eos = renderer(tokenizer)  # the student learns to stop, but not where a text was cut
    rows = [{**row, "completion": row["completion"] + (eos if row.get("finish_reason", "stop") == "stop" else "")}
            for row in rows]
    examples = mapd_examples(rows, config.alpha, tokenizer, render=render)
    return examples, {**Counter(row["task"] for row in rows), "examples": len(examples)}


def oracle_examples(config: DistillConfig, tokenizer) -> tuple[list, dict]:
    """One correct trace (``Task.gold_trace``) for each training problem of ``config.task``: ``sft.steps x
    sft.batch_size`` of them drawn with ``config.seed``, or the first ``oracle_problems`` (problem seed 0)."""
    from mentor.offline.distill import renderer
    from mentor.tasks import load_task
    from mentor.train.sft import SFTExample

    task = load_task(config.task)
    render, eos = renderer(tokenizer)
    if config.oracle_problems:
        problems = task.problems("train", n=config.oracle_problems, seed=0)
    else:
        problems = task.problems("train", n=config.sft.steps * config.sft.batch_size, seed=config.seed)
    examples = [SFTExample(render(task.prompt(p)), trace + eos) for p in problems if (trace := task.gold_trace(p))]
    return examples, {"problems": len(problems), "examples": len(examples)}


def run_distill(config: DistillConfig, out: str | Path, *, loaded=None,
                progress: Callable[[int, dict], None] | None = None, eval_progress: EvalProgress | None = None) -> dict:
    """Train into ``out`` (best/ and final/ weights, evals.jsonl, loss.jsonl, summary.json); returns the
    summary, whose ``evals`` list has the same shape as an on-policy run's (for ``mentor compare``). A
    folder that holds a finished run of the same configuration is not trained again (its summary is
    returned); an unfinished or different one starts again."""
    import dataclasses

    from mentor.loading import load_model
    from mentor.tasks import load_task

    start = time.time()
    out = Path(out)
    resolved = json.loads(json.dumps(without_auto_placement(asdict(config))))
    if config.eval_backend == "local":
        resolved.pop("eval_backend")  # folders made before the field existed stay finished
    if (out / "summary.json").is_file() and (out / "config.json").is_file() and not differences(
            read_json(out / "config.json", "a distill run's config"), resolved,
            defaults=default_values(DistillConfig)):  # fields added since, at their defaults, change nothing
        return read_json(out / "summary.json", "a distill run's summary")  # finished with this configuration
    task = load_task(config.task)  # every input is checked before the run folder is written to
    problems = task.problems(config.eval_split, n=config.eval_problems)
    rows = training_rows(config)
    device = resolve_device(config.device)
    model, tokenizer = loaded or load_model(config.model, dtype=resolve_dtype(config.dtype, device, training=True),
                                            device=device)
    examples, counts = training_examples(config, tokenizer, rows)
    if not examples:
        raise ValueError(f"{config.data}: no training examples for mode {config.mode} ({counts})")
    ranks = Ranks()  # under accelerate launch: the main process evaluates and writes, every one trains
    ranks.require_data_parallel()
    if ranks.world > 1 and config.eval_backend != "local":
        raise ValueError("several training processes evaluate with mentor's own loop only (eval_backend=local)")
    writer = out if ranks.is_main else None
    scoring = EvalConfig(n_problems=len(problems), k=config.eval_k, split=config.eval_split,
                         temperature=config.temperature, max_new_tokens=config.max_new_tokens, seed=0,
                         backend=config.eval_backend)
    testing = (dataclasses.replace(scoring, n_problems=config.test_problems, split="test", greedy=True)
               if config.test_problems else None)
    evals: list[dict] = []
    best: dict | None = None
    best_weights: dict | None = None

    # with eval_backend=vllm: one engine for every evaluation of the run, built before the folder is touched
    evaluating_engine = config.eval_backend == "vllm" and writer is not None
    with open_sampler("vllm", model, tokenizer) if evaluating_engine else contextlib.nullcontext() as engine:
        if writer is not None:
            out.mkdir(parents=True, exist_ok=True)
            (out / "config.json").write_text(json.dumps(resolved, indent=2) + "\n")
            (out / "summary.json").unlink(missing_ok=True)
            for name in ("evals.jsonl", "loss.jsonl"):  # an unfinished run starts again: offline runs are short
                (out / name).unlink(missing_ok=True)

        def record(step: int) -> None:
            nonlocal best, best_weights
            score = ranks.from_main(lambda: held_out_score(model, tokenizer, task, problems, scoring, step, eval_progress,
                                                           engine=engine))
            evals.append(score)
            key = f"avg@{config.eval_k}"
            if best is None or score[key] > best[key]:
                best = score
                best_weights = trainable_state(model) if config.test_problems and writer else None
                if writer is not None:
                    save_model(model, tokenizer, writer / "best")
            if writer is not None:
                append_jsonl(writer / "evals.jsonl", score)

        record(0)

        def on_step(step: int, metrics: dict) -> None:
            if progress is not None and writer is not None:
                progress(step, metrics)
            if config.eval_every and step % config.eval_every == 0 and step < sft.steps:
                record(step)

        sft = dataclasses.replace(config.sft, seed=config.seed)
        history = train_sft(model, tokenizer, examples, sft, progress=on_step,
                            log_path=writer / "loss.jsonl" if writer else None, ranks=ranks)
        record(sft.steps)
        test = (test_scores(model, tokenizer, task, testing, sft.steps, best, best_weights, eval_progress, engine)
                if config.test_problems and writer else None)
    if writer is not None:
        save_model(model, tokenizer, writer / "final")
    summary = {"method": config.mode, "normalisation": config.normalisation, "seed": config.seed,
               "steps": sft.steps, "examples": counts, "sequences": sft.steps * sft.batch_size,
               "final_loss": history[-1]["loss"] if history else None, "best": best, "final": evals[-1],
               "evals": evals, "test": test, "evaluation": sampling_record(scoring),
               "test_evaluation": sampling_record(testing) if config.test_problems else None, "seconds": round(time.time() - start, 1)}
    if writer is not None:
        (writer / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    ranks.wait()  # the others leave once the main process has written everything
    return summary
