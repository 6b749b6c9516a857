"""Model specs as every command takes them: ``world``, the model organism's solver (built or loaded from
the cache or the package), or anything :func:`mentor.models.load_policy` loads.

This sits above both the core (``models``) and the world, so the core never imports a task.
"""

from __future__ import annotations

from typing import Any

import torch

from mentor.models import LoraSpec, load_policy, prepare_policy

WORLD = "world"


def load_model(spec: str, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
               lora: LoraSpec | None = None) -> tuple[Any, Any]:
    """``(model, tokenizer)`` for a model spec, in eval mode, on ``device``, optionally with LoRA."""
    if spec == WORLD:
        from mentor.progress import no_transformers_bars
        from mentor.world_model import load_world_model

        with no_transformers_bars():  # a local folder of a few MB
            model, tokenizer = load_world_model()
        return prepare_policy(model, tokenizer, dtype=dtype, device=device, lora=lora)
    return load_policy(spec, dtype=dtype, device=device, lora=lora)
