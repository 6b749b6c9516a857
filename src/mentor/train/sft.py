"""The offline training loop: (weighted) supervised fine-tuning on prompt/completion pairs.

Loss on completion tokens only. Used to build the world's base solver and, with weights, by the
offline distillation methods (plain SFT, rejection-sampling SFT, reward-weighted distillation).
A reader can follow one step top to bottom in :func:`train_sft`.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from mentor.config import check_at_most
from mentor.losses import causal_lm_logprobs, weighted_nll
from mentor.records import append_jsonl
from mentor.train.common import lr_lambda, optimizer_step
from mentor.train.distributed import Ranks


@dataclass
class SFTExample:
    """A rendered prompt (chat template already applied), its completion and the example's weight."""

    prompt: str
    completion: str
    weight: float = 1.0


@dataclass
class SFTConfig:
    """Hyper-parameters of the offline loop."""

    steps: int = 1000  # optimizer steps
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1  # cosine decay down to lr * min_lr_ratio
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    max_length: int = 512
    seed: int = 0
    log_every: int = 20
    group_by_length: bool = True  # batches of similar lengths (less padding); off for weighted losses, whose
    # per-batch token denominator would otherwise favour the weights of short examples

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "max_length", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"sft {name} must be >= 1, got {getattr(self, name)}")
        check_at_most(self, "steps", "batch_size", "max_length", "warmup_steps", prefix="sft ")
        if self.lr <= 0:
            raise ValueError(f"sft lr must be > 0, got {self.lr}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"sft min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")


@dataclass
class TokenizedExample:
    input_ids: list[int]
    n_prompt: int
    weight: float


def tokenize(tokenizer, examples: Sequence[SFTExample], max_length: int) -> list[TokenizedExample]:
    """Prompt and completion tokenised separately, so the loss mask falls exactly on the completion."""
    prompts = tokenizer([e.prompt for e in examples], add_special_tokens=False)["input_ids"]
    completions = tokenizer([e.completion for e in examples], add_special_tokens=False)["input_ids"]
    out = []
    truncated = 0
    for index, (example, p_ids, c_ids) in enumerate(zip(examples, prompts, completions)):
        if not c_ids:
            raise ValueError(f"example {index} has an empty completion: nothing to train on")
        ids = (p_ids + c_ids)[:max_length]
        if len(ids) <= len(p_ids):
            raise ValueError(f"example {index}: its prompt fills max_length={max_length}: {example.prompt[:80]!r}")
        truncated += len(ids) < len(p_ids) + len(c_ids)
        out.append(TokenizedExample(ids, len(p_ids), example.weight))
    if truncated:
        warnings.warn(f"{truncated} of {len(examples)} examples were cut to max_length={max_length} "
                      "(their end, and end-of-sequence token, are not trained on)", stacklevel=2)
    return out


def collate(batch: Sequence[TokenizedExample], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(b.input_ids) for b in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    loss_mask = torch.zeros((len(batch), width - 1), dtype=torch.float32)
    for i, b in enumerate(batch):
        n = len(b.input_ids)
        input_ids[i, :n] = torch.tensor(b.input_ids)
        attention[i, :n] = 1
        # positions that predict completion tokens (with an empty prompt the first token has no predictor)
        loss_mask[i, max(b.n_prompt - 1, 0) : n - 1] = 1.0
    weight = torch.tensor([b.weight for b in batch], dtype=torch.float32)
    return {"input_ids": input_ids, "attention_mask": attention, "loss_mask": loss_mask, "weight": weight}


def length_grouped_batches(lengths: Sequence[int], batch_size: int, rng: random.Random,
                           group: int = 16) -> list[list[int]]:
    """One epoch of batches: shuffled, then sorted by length within windows of ``group`` batches so that
    a batch holds similar lengths (less padding), then the batches shuffled; ``group=0``: shuffled only."""
    order = rng.sample(range(len(lengths)), len(lengths))
    if group < 1:  # plain shuffled batches
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    batches = []
    window = batch_size * group
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def lr_at(step: int, config: SFTConfig) -> float:
    """Linear warm-up then cosine decay to ``lr * min_lr_ratio``."""
    return config.lr * lr_lambda("cosine", config.warmup_steps, config.steps, config.min_lr_ratio)(step)


def train_sft(
    model,
    tokenizer,
    examples: Sequence[SFTExample],
    config: SFTConfig,
    progress: Callable[[int, dict], None] | None = None,
    log_path: str | Path | None = None,
    ranks: Ranks | None = None,
) -> list[dict]:
    """Train ``model`` in place on ``examples``; returns the logged metrics (also appended to log_path).

    With several processes (``ranks``, under ``accelerate launch``) each takes its share of every batch
    and the loss is scaled so that DDP's averaged gradient is the whole batch's; the metrics are the
    whole batch's."""
    if not examples:
        raise ValueError("no training examples")
    ranks = ranks or Ranks()
    forward = ranks.prepare(model)
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    data = tokenize(tokenizer, examples, config.max_length)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
    )
    device = next(model.parameters()).device
    lengths = [len(d.input_ids) for d in data]
    batches: list[list[int]] = []
    history = []
    model.train()
    for step in range(config.steps):
        if not batches:
            batches = length_grouped_batches(lengths, config.batch_size, rng, group=16 if config.group_by_length else 0)
        rows = batches.pop()
        share = ranks.share_evenly(rows) if ranks.world > 1 else rows
        batch = {k: v.to(device) for k, v in collate([data[i] for i in share or rows[:1]], pad_id).items()}
        if not share:  # more processes than rows left in the epoch: this one adds nothing to the gradient
            batch["loss_mask"].zero_()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, config)
        logp_BT = causal_lm_logprobs(forward, batch["input_ids"], batch["attention_mask"])
        loss, metrics = weighted_nll(logp_BT, batch["loss_mask"], batch["weight"])
        if ranks.world > 1:  # the loss divides by the batch's tokens, all processes' together
            tokens = float(batch["loss_mask"].sum())
            loss_sum, nll_sum, total = ranks.total([metrics["loss"] * tokens, metrics["nll"] * tokens, tokens])
            loss = loss * tokens * ranks.world / max(total, 1.0)
            metrics = {"loss": loss_sum / max(total, 1.0), "nll": nll_sum / max(total, 1.0), "tokens": total}
        grad_norm = optimizer_step(model, optimizer, loss, config.max_grad_norm)
        metrics.update(step=step + 1, lr=lr_at(step, config), grad_norm=grad_norm)
        if (step + 1) % config.log_every == 0 or step + 1 == config.steps:
            history.append(metrics)
            if log_path is not None:
                append_jsonl(log_path, metrics)
        if progress is not None:
            progress(step + 1, metrics)
    model.eval()
    return history

