"""Training checkpoints that resume exactly: a run killed and resumed ends with the same weights as one
that never stopped (bitwise on CPU).

A checkpoint holds what changes during a run: the trained weights, the optimizer and scheduler state, the
self-teacher's EMA, the random-number generators, the step (the data cursor: batches are a pure
function of seed and step) and the loop's own state (history, best score, guard baselines). It is
written to a temporary file and renamed, so a kill while saving leaves the previous one intact.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

STATE_FILE = "state.pt"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be resumed from: truncated, foreign, or holding more than plain data."""


def trainable_state(model) -> dict[str, torch.Tensor]:
    """The parameters the optimizer changes (the adapter under LoRA, everything otherwise)."""
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def rng_state() -> dict[str, Any]:
    """The generators' states as plain data (tuples, ints, tensors), loadable with ``weights_only``."""
    name, keys, position, has_gauss, gauss = np.random.get_state()
    numpy_state = (name, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(gauss))
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(folder: str | Path, *, model, optimizer_state: dict, scheduler, teacher_state: dict, step: int,
                    loop_state: dict) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / STATE_FILE
    tmp = path.with_suffix(".tmp")
    torch.save({"step": step, "model": trainable_state(model), "optimizer": optimizer_state,
                "scheduler": scheduler.state_dict(), "teacher": teacher_state, "rng": rng_state(),
                "loop": loop_state}, tmp)
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(folder: str | Path) -> dict[str, Any] | None:
    """The saved state, or None when ``folder`` holds no checkpoint."""
    path = Path(folder) / STATE_FILE
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # never unpickle code from a run folder
    except Exception as error:  # noqa: BLE001 - torch raises many kinds for a bad file; each is this error
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path}: not a mentor checkpoint that loads as plain data (refused: "
                              f"{reason[:200]}); delete the checkpoint folder to start the run again") from None
    if not isinstance(state, dict) or not {"step", "model", "optimizer", "rng", "loop"} <= set(state):
        raise CheckpointError(f"{path}: not a mentor checkpoint (missing keys); delete the checkpoint folder to "
                              "start the run again")
    return state


@torch.no_grad()
def restore_weights(model, state: dict[str, torch.Tensor]) -> None:
    """``state`` (:func:`trainable_state` of the same model) copied into ``model``; every name and shape is
    checked before anything is copied, so a checkpoint that does not fit leaves the model as it was."""
    params = dict(model.named_parameters())
    foreign = [name for name in state if name not in params]
    if foreign:
        raise CheckpointError(f"checkpoint does not match the model: no parameter {foreign[0]!r}; delete the "
                              "checkpoint folder to start the run again")
    trained = [name for name, p in params.items() if p.requires_grad]
    missing = [name for name in trained if name not in state]
    if missing:
        raise CheckpointError(f"checkpoint does not match the model: it lacks {len(missing)} trained parameter(s), "
                              f"e.g. {missing[0]!r}; delete the checkpoint folder to start the run again")
    for name, value in state.items():
        if not isinstance(value, torch.Tensor) or value.shape != params[name].shape:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise CheckpointError(f"checkpoint does not match the model: {name!r} is {shape}, the model's "
                                  f"{tuple(params[name].shape)}; delete the checkpoint folder to start the run again")
    for name, value in state.items():
        params[name].copy_(value.to(params[name].device))
