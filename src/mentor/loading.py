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
        from transformers.utils import logging as transformers_logging

        from mentor.world_model import load_world_model

        bars = transformers_logging.is_progress_bar_enabled()
        transformers_logging.disable_progress_bar()  # a local folder of a few MB: its "Loading weights" bar is noise
        try:
            model, tokenizer = load_world_model()
        finally:
            if bars:
                transformers_logging.enable_progress_bar()
        return prepare_policy(model, tokenizer, dtype=dtype, device=device, lora=lora)
    return load_policy(spec, dtype=dtype, device=device, lora=lora)
