"""``mentor train``: a model, a task, a critic and an on-policy configuration, resolved into one run.

The YAML file (or ``key=value`` overrides) has the fields of :class:`TrainConfig`; the on-policy method
lives under ``onpolicy`` (``onpolicy.method=sd-critique onpolicy.lr=1e-4``). The critic is the task's
own (the world's exact critic) unless ``critic.base_url`` names an OpenAI-compatible server, in which
case an :class:`~mentor.feedback.LLMCritic` is used, its requests cached in the run folder so a resumed
run repeats none of them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mentor.models import LoraSpec
from mentor.train.onpolicy import OnPolicyConfig, OnPolicyResult, train_onpolicy


@dataclass
class CriticConfig:
    """An LLM critic behind an OpenAI-compatible server; empty ``base_url``: the task's own critic."""

    base_url: str = ""
    model: str = ""
    api_key_env: str = "OPENAI_API_KEY"  # the variable's name; the key itself is never written anywhere
    max_new_tokens: int = 1024
    concurrency: int = 4

    def __post_init__(self) -> None:
        if self.base_url and not self.model:
            raise ValueError("critic.model is required when critic.base_url is set")


@dataclass
class TrainConfig:
    """What ``mentor train`` runs; saved resolved as ``train.json`` in the run folder."""

    model: str = "world"  # world, smollm2, a local folder, a .gguf file or a Hugging Face id
    task: str = "world"
    lora: bool = False  # train a LoRA adapter (the teacher is then the model with the adapter disabled)
    lora_r: int = 16
    lora_alpha: float = 32.0
    critic: CriticConfig = field(default_factory=CriticConfig)
    onpolicy: OnPolicyConfig = field(default_factory=OnPolicyConfig)


def build_critic(config: CriticConfig, run_dir: Path | None):
    """The LLM critic's batch function, or None for the task's own critic."""
    if not config.base_url:
        return None
    from mentor.feedback import LLMCritic
    from mentor.sampling.openai_compatible import OpenAISampler

    cache = run_dir / "critic_cache.sqlite" if run_dir is not None else None
    sampler = OpenAISampler(config.base_url, config.model, api_key_env=config.api_key_env, cache_path=cache,
                            concurrency=config.concurrency)
    return LLMCritic(sampler, max_new_tokens=config.max_new_tokens, name=config.model)


def run_training(config: TrainConfig, out: str | Path, *, loaded=None,
                 progress: Callable[[int, dict], None] | None = None) -> OnPolicyResult:
    """Load the model (unless ``loaded`` = (model, tokenizer)), the task and the critic; train into ``out``."""
    from mentor.models import apply_lora, load_policy
    from mentor.tasks import load_task

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    task = load_task(config.task)
    model, tokenizer = loaded or load_policy(config.model)
    if config.lora:
        model = apply_lora(model, LoraSpec(r=config.lora_r, alpha=config.lora_alpha))
    critic = build_critic(config.critic, out)
    (out / "train.json").write_text(json.dumps(asdict(config), indent=2) + "\n")
    result = train_onpolicy(model, tokenizer, task, config.onpolicy, run_dir=out,
                            critic=critic.critique_many if critic else None, progress=progress)
    if critic is not None:
        (out / "critic_stats.json").write_text(json.dumps(dict(critic.stats), indent=2) + "\n")
    return result
