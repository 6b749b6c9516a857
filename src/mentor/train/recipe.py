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

from mentor.config import check_config, default_values, record_config
from mentor.devices import check_placement, resolve_device, resolve_dtype, without_auto_placement
from mentor.models import LoraSpec
from mentor.train.distributed import is_main_process
from mentor.train.onpolicy import OnPolicyConfig, OnPolicyResult, train_onpolicy

CRITIC_KINDS = ("task", "llm", "committee", "arithmetic", "function")


@dataclass
class CriticConfig:
    """Who writes the critique: ``task`` (its own critic: the world's exact one, the arithmetic step critic for
    reasoning-gym's numeric tasks), ``llm`` (a model behind an OpenAI-compatible server; setting ``base_url``
    alone selects it), ``committee`` (``teachers`` explain and peer-review, the best accepted explanation is
    the critique), ``arithmetic`` (the step critic for arithmetic in free-form text, on any task with numeric
    answers, a GSM8K file for one) or ``function`` (``function``: ``module:function`` or a name registered in
    the ``mentor.critics`` entry points, called with (problem, completion))."""

    kind: str = "task"
    base_url: str = ""
    model: str = ""
    api_key_env: str = "OPENAI_API_KEY"  # the variable's name; the key itself is never written anywhere
    max_new_tokens: int = 1024
    concurrency: int = 4
    teachers: dict[str, dict] = field(default_factory=dict)  # committee: name -> TeacherConfig fields
    threshold: float = 3.0  # committee: an explanation is accepted above this mean review score
    function: str = ""  # function: module:function, or an entry point's name in mentor.critics

    def __post_init__(self) -> None:
        if self.kind not in CRITIC_KINDS:
            raise ValueError(f"critic.kind must be one of {', '.join(CRITIC_KINDS)}, got {self.kind!r}")
        if self.kind == "task" and self.base_url:
            self.kind = "llm"
        if self.kind == "llm" and not (self.base_url and self.model):
            raise ValueError("an llm critic needs critic.base_url and critic.model")
        if self.kind == "committee" and len(self.teachers) < 2:
            raise ValueError("a committee critic needs at least two critic.teachers")
        if (self.kind == "function") != bool(self.function):
            raise ValueError("critic.function goes with critic.kind=function, and a function critic needs it "
                             "(module:function, or a name in the mentor.critics entry points)")


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
    device: str = "auto"  # auto (the accelerator when there is one, else cpu) | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto (bfloat16 on a GPU that supports it, else float32) | float32 | bfloat16 | float16

    def __post_init__(self) -> None:
        check_placement(self.device, self.dtype, training=True)
        if self.dtype == "bfloat16" and self.onpolicy.teacher == "ema":  # its 0.1% steps round away in bf16
            raise ValueError("an ema teacher needs float32 weights (dtype=float32 or auto)")


def build_critic(config: CriticConfig, run_dir: Path | None, task=None):
    """The critic object (with ``critique_many``), or None for the task's own critic."""
    if config.kind == "task":
        return None
    if config.kind == "arithmetic":
        from mentor.feedback.arithmetic_critic import ArithmeticCritic

        return ArithmeticCritic(task.verify)
    if config.kind == "function":
        from mentor.feedback.function_critic import FunctionCritic, load_critic_function

        return FunctionCritic(load_critic_function(config.function), name=config.function)
    if config.kind == "committee":
        from mentor.feedback.committee_critic import CommitteeCritic
        from mentor.teachers import build_teacher, teacher_configs

        teachers = [build_teacher(t, run_dir) for t in teacher_configs(config.teachers, "critic.teachers")]
        return CommitteeCritic(teachers, threshold=config.threshold, task=task)
    from mentor.feedback import LLMCritic
    from mentor.sampling.openai_compatible import OpenAISampler, check_reachable

    check_reachable(config.base_url)  # before the run folder or its cache exists
    cache = run_dir / "critic_cache.sqlite" if run_dir is not None else None
    sampler = OpenAISampler(config.base_url, config.model, api_key_env=config.api_key_env, cache_path=cache,
                            concurrency=config.concurrency)
    return LLMCritic(sampler, max_new_tokens=config.max_new_tokens, name=config.model)


def run_training(config: TrainConfig, out: str | Path, *, loaded=None,
                 progress: Callable[[int, dict], None] | None = None,
                 eval_progress: Callable[[str, int, int], None] | None = None) -> OnPolicyResult:
    """Load the model (unless ``loaded`` = (model, tokenizer)), the task and the critic; train into ``out``."""
    from mentor.loading import load_model
    from mentor.models import apply_lora
    from mentor.tasks import load_task

    out = Path(out)
    task = load_task(config.task)
    critic = build_critic(config.critic, out, task)  # an unreachable critic fails before anything is written
    recorded = without_auto_placement(asdict(config))
    defaults = default_values(TrainConfig)
    check_config(out / "train.json", recorded, defaults=defaults)  # the model, task, LoRA and critic must match on resume too
    device = resolve_device(config.device)
    model, tokenizer = loaded or load_model(config.model, dtype=resolve_dtype(config.dtype, device, training=True),
                                            device=device)
    if is_main_process():
        record_config(out / "train.json", recorded, defaults=defaults)  # written once every input has loaded
    if config.lora:
        model = apply_lora(model, LoraSpec(r=config.lora_r, alpha=config.lora_alpha), seed=config.onpolicy.seed)
    result = train_onpolicy(model, tokenizer, task, config.onpolicy, run_dir=out,
                            critic=critic.critique_many if critic else None, progress=progress,
                            eval_progress=eval_progress)
    if critic is not None and is_main_process():
        (out / "critic_stats.json").write_text(json.dumps(dict(critic.stats), indent=2) + "\n")
    return result
