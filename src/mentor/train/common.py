"""Pieces every training loop shares."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def clip_and_step(model, optimizer, max_grad_norm: float) -> float:
    """Clip the accumulated gradient's norm and step; returns the norm before clipping."""
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    if hasattr(grad_norm, "full_tensor"):  # sharded (FSDP) gradients give a distributed norm
        grad_norm = grad_norm.full_tensor()
    return float(grad_norm)


def optimizer_step(model, optimizer, loss: torch.Tensor, max_grad_norm: float) -> float:
    """Backward, clip the gradient norm, step; returns the norm before clipping."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    return clip_and_step(model, optimizer, max_grad_norm)


def lr_lambda(schedule: str, warmup_steps: int, total_steps: int, min_ratio: float = 0.0):
    """Multiplier of the base learning rate at each step: linear warmup, then constant, cosine or linear
    decay to ``min_ratio``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        decay = 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else 1.0 - progress
        return min_ratio + (1 - min_ratio) * decay

    return factor


EvalProgress = Callable[[str, int, int], None]
"""``(what is evaluated, problems done, total)``: an evaluation inside a training run reports its progress."""


def held_out_score(model, tokenizer, task, problems, config, step: int, progress: EvalProgress | None = None,
                   label: str | None = None, engine=None) -> dict:
    """``{"step": step, **metrics}`` of the model's context-free samples on held-out ``problems`` under an
    :class:`~mentor.evaluate.EvalConfig`; the model is sampled in eval mode and left as it was. ``progress``
    is called with ``label`` (default: the step and the split), ``[greedy]`` added for the greedy answers.
    ``engine``: a sampler with its own copy of the weights (a vLLM engine, ``load_weights``) that samples
    instead of ``config.backend``; ``model``'s current weights are loaded into it first."""
    from mentor.evaluate import evaluate

    label = label or f"evaluation at step {step} ({config.split})"
    report = None
    if progress is not None:
        def report(kind: str, done: int, total: int) -> None:
            progress(label if kind == "none" else f"{label} [{kind}]", done, total)

    if engine is not None:
        engine.load_weights(model)
    was_training = model.training
    model.eval()
    try:
        summary, _ = evaluate(model, tokenizer, task, problems, config, report, sampler=engine)
    finally:
        model.train(was_training)
    return {"step": step, **summary["none"]}


def test_scores(model, tokenizer, task, config, final_step: int, best: dict | None,
                best_weights: dict | None, progress: EvalProgress | None = None, engine=None) -> dict:
    """``{"final": ..., "best": ...}``: the final weights and the best ones (chosen on another split, kept
    as ``best_weights``, the trainable parameters) scored on ``config.n_problems`` problems of
    ``config.split``; the model, and ``engine`` (as for :func:`held_out_score`), are left with its final
    weights."""
    from mentor.train.checkpoint import restore_weights, trainable_state

    problems = task.problems(config.split, n=config.n_problems)
    scores = {"final": held_out_score(model, tokenizer, task, problems, config, final_step, progress,
                                      f"{config.split}: final weights (step {final_step})", engine)}
    best_step = best["step"] if best else final_step
    if best_weights is None or best_step == final_step:
        scores["best"] = {**scores["final"], "step": best_step, "seconds": 0.0}  # the final score, not scored again
        return scores
    final_weights = trainable_state(model)
    restore_weights(model, best_weights)
    try:
        scores["best"] = held_out_score(model, tokenizer, task, problems, config, best_step, progress,
                                        f"{config.split}: best weights (step {best_step})", engine)
    finally:
        restore_weights(model, final_weights)
        if engine is not None:
            engine.load_weights(model)
    return scores


def save_model(model, tokenizer, folder) -> None:
    """Weights (an adapter under LoRA) and tokenizer, loadable with ``load_policy(folder)``."""
    from mentor.progress import no_transformers_bars

    with no_transformers_bars():  # one "Writing model shards" bar per checkpoint otherwise
        model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
