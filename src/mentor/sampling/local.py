"""Batched sampling from a local transformers model with its own decode loop over the KV cache.

Why not ``model.generate``: its sampling draws from one global RNG across the batch, so samples change with
the batch size, and its scores are post-processed. Here every row (prompt ``i``, sample ``j``) has its own
generator seeded from ``(seed, i, j)``, so samples do not depend on ``batch_size`` or on prompt order, and
the log-probs are computed from the raw logits of the step that chose the token.

Log-prob convention: ``Sample.logprobs[t]`` is ``log_softmax(logits / T)`` at the sampled token, the
temperature-scaled distribution *before* top-p truncation. That is the behaviour policy an RL importance
ratio compares against the trainer's ``log_softmax(logits / T)``; with top_p < 1 it is not the exact
truncated sampling distribution. With temperature 0 (greedy) the log-probs are under ``log_softmax(logits)``.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from mentor.models import encode_prompt
from mentor.sampling import Sample, SamplingParams


def row_seed(seed: int, prompt_index: int, sample_index: int) -> int:
    """Seed of the generator that draws sample ``sample_index`` of prompt ``prompt_index``."""
    digest = hashlib.sha256(f"{seed}:{prompt_index}:{sample_index}".encode()).digest()
    return int.from_bytes(digest[:7], "little")


@dataclass
class _Row:
    prompt_ids: list[int]
    generator: torch.Generator
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    text: str | None = None
    finish_reason: str | None = None


def _cache_argument(model: Any) -> str:
    """The forward argument that takes the KV cache: ``cache`` in recent transformers (which warns on
    ``past_key_values`` at every call), ``past_key_values`` before."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a peft wrapper
    return "cache" if "cache" in inspect.signature(type(base).forward).parameters else "past_key_values"


class LocalSampler:
    """Sample completions of already-rendered prompts from ``model`` (eval mode, no gradients): mentor's
    own decode loop, a :class:`~mentor.sampling.Sampler`."""

    backend = "local"

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 32) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.stop_token_ids = _stop_token_ids(model, tokenizer)
        self._cache_argument = _cache_argument(model)

    def generate(
        self,
        prompts: list[str],
        params: SamplingParams,
        progress: Callable[[int], None] | None = None,
        *,
        indices: Sequence[int] | None = None,
        on_prompt: Callable[[int, list[Sample]], None] | None = None,
    ) -> list[list[Sample]]:
        """``params.n`` samples for each prompt, as ``result[prompt_index][sample_index]``.

        ``progress``, when given, is called after each batch with the number of prompts completed so far;
        ``on_prompt(prompt_index, samples)`` as soon as a prompt's samples are all drawn. ``indices[i]``
        (default ``i``) seeds prompt ``i``'s draws: a job resumed on the prompts it had not finished passes
        their original indices and draws what the whole job would have.
        """
        indices = list(range(len(prompts))) if indices is None else list(indices)
        if len(indices) != len(prompts):
            raise ValueError(f"{len(indices)} indices for {len(prompts)} prompts")
        prompt_ids = [encode_prompt(self.tokenizer, p) for p in prompts]
        # Similar lengths share a batch (less padding); a prompt's n rows are adjacent so prompts finish early.
        order = sorted(range(len(prompts)), key=lambda i: len(prompt_ids[i]))
        keys = [(i, j) for i in order for j in range(params.n)]
        results: list[list[Sample | None]] = [[None] * params.n for _ in prompts]
        remaining = [params.n] * len(prompts)
        completed = 0
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(keys), self.batch_size):
                batch_keys = keys[start : start + self.batch_size]
                rows = [
                    _Row(prompt_ids[i], torch.Generator().manual_seed(row_seed(params.seed, indices[i], j)))
                    for i, j in batch_keys
                ]
                self._decode(rows, params)
                for (i, j), row in zip(batch_keys, rows, strict=True):
                    results[i][j] = self._finish(row, params)
                    remaining[i] -= 1
                    if remaining[i] == 0:
                        completed += 1
                        if on_prompt is not None:
                            on_prompt(i, results[i])  # type: ignore[arg-type]
                if progress is not None:
                    progress(completed)
        finally:
            self.model.train(was_training)
        return results  # type: ignore[return-value]

    @torch.inference_mode()
    def _decode(self, rows: list[_Row], params: SamplingParams) -> None:
        """Left-pad the prompts, prefill, then extend every row one token per step until all have stopped."""
        device = next(self.model.parameters()).device
        width = max(len(r.prompt_ids) for r in rows)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids_BL = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask_BL = torch.zeros((len(rows), width), dtype=torch.long)
        for b, row in enumerate(rows):
            input_ids_BL[b, width - len(row.prompt_ids) :] = torch.tensor(row.prompt_ids)
            mask_BL[b, width - len(row.prompt_ids) :] = 1
        position_BL = (mask_BL.cumsum(-1) - 1).clamp(min=0)
        input_ids_BL, mask_BL, position_BL = (
            input_ids_BL.to(device),
            mask_BL.to(device),
            position_BL.to(device),
        )
        out = self.model(
            input_ids=input_ids_BL,
            attention_mask=mask_BL,
            position_ids=position_BL,
            use_cache=True,
            logits_to_keep=1,
        )
        next_position_B1 = position_BL[:, -1:] + 1
        for step in range(params.max_new_tokens):
            token_B, logp_B = _choose(out.logits[:, -1, :], params, [r.generator for r in rows])
            for row, token, logp in zip(rows, token_B.tolist(), logp_B.tolist(), strict=True):
                if row.finish_reason is None:
                    self._append(row, token, logp, params.stop)
            if all(r.finish_reason is not None for r in rows) or step == params.max_new_tokens - 1:
                break
            mask_BL = torch.cat([mask_BL, mask_BL.new_ones((len(rows), 1))], dim=1)
            out = self.model(
                input_ids=token_B[:, None],
                attention_mask=mask_BL,
                position_ids=next_position_B1,
                **{self._cache_argument: out.cache if hasattr(out, "cache") else out.past_key_values},
                use_cache=True,
            )
            next_position_B1 = next_position_B1 + 1

    def _append(self, row: _Row, token: int, logp: float, stop: list[str]) -> None:
        row.token_ids.append(token)
        row.logprobs.append(logp)
        if token in self.stop_token_ids:
            row.text = self._decode_text(row.token_ids[:-1])
            row.finish_reason = "stop"
        elif stop:
            text = self._decode_text(row.token_ids)
            cut = min((k for k in (text.find(s) for s in stop) if k >= 0), default=-1)
            if cut >= 0:
                row.text, row.finish_reason = text[:cut], "stop"

    def _finish(self, row: _Row, params: SamplingParams) -> Sample:
        if row.finish_reason is None:
            row.text, row.finish_reason = self._decode_text(row.token_ids), "length"
        assert row.text is not None
        return Sample(row.text, row.token_ids, row.logprobs, row.finish_reason)

    def _decode_text(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def _choose(
    logits_BV: torch.Tensor, params: SamplingParams, generators: list[torch.Generator]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Next token per row and its log-prob under ``log_softmax(logits / T)`` (see the module docstring)."""
    logits_BV = logits_BV.float()
    if params.temperature == 0:
        logp_BV = torch.log_softmax(logits_BV, dim=-1)
        token_B = logits_BV.argmax(dim=-1)
    else:
        logp_BV = torch.log_softmax(logits_BV / params.temperature, dim=-1)
        uniform_B = torch.cat([torch.rand(1, generator=g) for g in generators]).to(logits_BV.device)
        token_B = _inverse_cdf_top_p(logp_BV.exp(), params.top_p, uniform_B)
    return token_B, logp_BV.gather(-1, token_B[:, None]).squeeze(-1)


def _inverse_cdf_top_p(probs_BV: torch.Tensor, top_p: float, uniform_B: torch.Tensor) -> torch.Tensor:
    """Draw one token per row from ``probs_BV`` restricted to its top-p nucleus, by inverting the CDF at u.

    One uniform per row (instead of ``torch.multinomial`` on a shared RNG) keeps each row's draw independent
    of the other rows in the batch.
    """
    if top_p < 1.0:
        probs_BV, vocab_index_BV = probs_BV.sort(dim=-1, descending=True)
        # keep a token while the mass strictly before it is below top_p (the top token is always kept)
        probs_BV = probs_BV * ((probs_BV.cumsum(dim=-1) - probs_BV) < top_p)
    cdf_BV = probs_BV.cumsum(dim=-1)
    total_B1 = cdf_BV[:, -1:]
    # strictly below the total, so the first cdf entry above it always belongs to a token with mass
    target_B1 = torch.minimum(
        uniform_B[:, None] * total_B1, torch.nextafter(total_B1, torch.zeros_like(total_B1))
    )
    index_B1 = torch.searchsorted(cdf_BV, target_B1, right=True).clamp(max=probs_BV.shape[-1] - 1)
    if top_p < 1.0:
        index_B1 = vocab_index_BV.gather(-1, index_B1)
    return index_B1.squeeze(-1)


def _stop_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """EOS ids of the generation config and the tokenizer, and the pad id."""
    ids: set[int] = set()
    generation_config = getattr(model, "generation_config", None)
    for value in (
        getattr(generation_config, "eos_token_id", None),
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
    ):
        if isinstance(value, int):
            ids.add(value)
        elif value is not None:
            ids.update(int(v) for v in value)
    return ids
