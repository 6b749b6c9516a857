"""Where a command's model runs and in which dtype: ``device`` and ``dtype`` of train, distill, eval and analyze.

``auto`` is the accelerator when there is one (under ``accelerate launch``, each process's own) and the
CPU otherwise. The dtype ``auto`` is bfloat16 for sampling on an accelerator that supports it, and float32
for training everywhere: mentor's trainers keep no float32 master copy of bf16 weights, so a bf16 run would
round away Adam updates smaller than half a bf16 step (and an EMA teacher's at decay 0.999 entirely). A
bf16 training run is there when asked for (``dtype=bfloat16``); float16 training (no loss scaling) is
refused. On a CPU every default run is what it always was.
"""

from __future__ import annotations

import torch

AUTO = "auto"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _accelerator() -> torch.device | None:
    """The GPU this process should use: under a launcher, the one of its local rank (read from the
    environment: creating accelerate's state here would fix its settings before the trainer's own
    Accelerator reads them)."""
    import os

    if not torch.cuda.is_available():
        return None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cuda")


def resolve_device(spec: str) -> torch.device:
    """``auto``, ``cpu``, ``cuda``, ``cuda:N`` (or any torch device): refused at once when it is not here."""
    if spec == AUTO:
        return _accelerator() or torch.device("cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise ValueError(f"device {spec!r} is not available here (torch sees {torch.cuda.device_count()} CUDA "
                         "devices); use device=auto or device=cpu")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {spec!r}: mentor runs on cpu or cuda")
    return device


def resolve_dtype(spec: str, device: torch.device, training: bool = False) -> torch.dtype:
    """``auto`` (float32 for training; for sampling bfloat16 on a GPU that supports it, else float32), or one
    of :data:`DTYPES`."""
    if spec == AUTO:
        supported = not training and device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if supported else torch.float32
    if spec not in DTYPES:
        raise ValueError(f"unknown dtype {spec!r}; choose auto, {', '.join(DTYPES)}")
    if training and spec == "float16":
        raise ValueError("dtype=float16 cannot train here (no loss scaling); use float32 or bfloat16")
    return DTYPES[spec]


def check_placement(device: str, dtype: str, training: bool = False) -> None:
    """A config's device and dtype, checked when it is read (before any model loads)."""
    resolve_dtype(dtype, resolve_device(device), training)


def without_auto_placement(values: dict) -> dict:
    """A run's recorded config without ``device`` and ``dtype`` where they are ``auto``: folders written
    before the fields existed resume and are reused as they are."""
    return {k: v for k, v in values.items() if not (k in ("device", "dtype") and v == AUTO)}


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``bfloat16``, as vLLM and the config files name it."""
    return str(dtype).removeprefix("torch.")
