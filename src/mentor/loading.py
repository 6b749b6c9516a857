"""Model specs as every command takes them: ``world``, the model organism's solver (built or loaded from
the cache or the package), or anything :func:`mentor.models.load_policy` loads.

This sits above both the core (``models``) and the world, so the core never imports a task.
"""

from __future__ import annotations

from typing import Any

import torch

from mentor.models import LoraSpec, load_policy, prepare_policy

WORLD = "world"


def load_model(spec: str, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "auto",
               lora: LoraSpec | None = None) -> tuple[Any, Any]:
    """``(model, tokenizer)`` for a model spec, in eval mode, on ``device`` (``auto``: the accelerator when
    there is one, so no caller runs on the CPU by omission), optionally with LoRA."""
    from mentor.devices import AUTO, resolve_device

    if device == AUTO:
        device = resolve_device(AUTO)
    if spec == WORLD:
        from mentor.progress import no_transformers_bars
        from mentor.world.solver import load_world_model

        with no_transformers_bars():  # a local folder of a few MB
            model, tokenizer = load_world_model()
        return prepare_policy(model, tokenizer, dtype=dtype, device=device, lora=lora)
    return load_policy(spec, dtype=dtype, device=device, lora=lora)


def load_placed(spec: str, device: str = "auto", dtype: str = "auto", *, training: bool = False) -> tuple[Any, Any]:
    """:func:`load_model` with the ``device`` and ``dtype`` settings of a config (``auto``: the accelerator
    when there is one; float32 to train, bfloat16 to sample on a GPU that supports it)."""
    from mentor.devices import resolve_device, resolve_dtype

    placed = resolve_device(device)
    return load_model(spec, dtype=resolve_dtype(dtype, placed, training=training), device=placed)


def check_model(spec: str) -> None:
    """A model spec checked without loading it (``mentor.models.check_model_spec``; the world always loads)."""
    if spec != WORLD:
        from mentor.models import check_model_spec

        check_model_spec(spec)


def weights_fingerprint(spec: str) -> str:
    """A short fingerprint of the weights a model spec names, for caches of its scores: the world's solver
    as it would be loaded now, or a local folder's weight files (name, size, first and last MiB: cheap on
    large files, and any retrained or rebuilt weights differ); a spec that names no local files (a Hub
    id) is its own fingerprint."""
    import hashlib
    from pathlib import Path

    if spec == WORLD:
        from mentor.world.solver import WorldModelConfig, find_world_model, world_model_dir

        folder = find_world_model() or world_model_dir(WorldModelConfig())
    else:
        folder = Path(spec)
    files = sorted(p for p in folder.glob("*") if p.suffix in (".safetensors", ".bin", ".gguf")) if folder.is_dir() \
        else [folder] if folder.is_file() else []
    if not files:
        return spec
    digest = hashlib.sha256()
    for path in files:
        size = path.stat().st_size
        digest.update(f"{path.name}:{size}".encode())
        with path.open("rb") as handle:
            digest.update(handle.read(1 << 20))
            handle.seek(max(size - (1 << 20), 0))
            digest.update(handle.read(1 << 20))
    return digest.hexdigest()[:16]
