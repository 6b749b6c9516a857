"""The on-policy run's configuration (:class:`OnPolicyConfig`) and the choices each of its options takes."""

from __future__ import annotations

from dataclasses import dataclass, field

from mentor.config import check_at_most
from mentor.losses import (
    CLIP_MODES,
)
from mentor.sampling.backends import BACKENDS, check_backend
from mentor.train.teacher import TEACHER_KINDS

# sd-none: a separate teacher (teacher_model) scores the student's tokens after the plain prompt, the
# field's on-policy distillation; the self-teacher without a context is the student itself: no signal
METHODS = {"grpo": None, "sd-reference": "reference", "sd-critique": "critique", "sd-success": "success",
           "sd-none": "none"}
DIVERGENCES = ("full", "top-k", "sampled")
SIGNAL_SPANS = ("all", "to-divergence")
BLENDS = ("mix", "by-group")
SCHEDULES = ("constant", "cosine", "linear")


@dataclass
class OnPolicyConfig:
    """One method of docs/methods.md, section 1; everything but ``method`` and ``grpo_weight`` is shared."""

    method: str = "sd-critique"  # grpo | sd-reference | sd-critique | sd-success | sd-none
    grpo_weight: float | None = None  # lambda of the blend; default 1 for grpo, 0 for sd-*
    # how a blend (0 < grpo_weight < 1) uses its two signals: mix, both on every rollout; by-group, a group
    # with a verified success learns from GRPO's advantage alone and a group without one (where GRPO's
    # advantage is 0) from the self-teacher alone
    blend: str = "mix"
    steps: int = 100
    prompts_per_step: int = 8
    rollouts_per_prompt: int | None = None  # default: 8 for grpo or a blend, 1 for self-distillation
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 160
    # local: mentor's own decode loop; vllm: a vLLM engine colocated in the process, built once from the
    # model's folder, the weights pushed into it after every optimizer step (needs vllm installed)
    generation_backend: str = "local"
    # generation that overlaps training (mentor.train.async_rollouts): a step's rollouts drawn by mentor's loop
    # in another process while the step before trains, from weights at most max_staleness updates old (0: the
    # synchronous run); generator_threads: its torch threads (0: the cores split with the trainer). GRPO weights tokens
    # drawn by other weights (async, or the vLLM engine) by min(pi_trainer / pi_generator, tis_cap)
    async_generation: bool = False
    max_staleness: int = 1  # async: a step's rollouts come from weights at most this many updates old
    generator_threads: int = 0  # async: the generator's torch threads (0: half the trainer's, which keeps the rest)
    tis_cap: float = 2.0  # GRPO: the cap of the truncated importance weight of tokens drawn by other weights
    # optimisation
    lr: float = 1e-4
    weight_decay: float = 0.0
    schedule: str = "constant"  # constant | cosine | linear (decay to 0 after warmup)
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    micro_batch_size: int | None = None  # rollouts per forward pass (gradient accumulation); None: all
    # self-distillation
    divergence: str = "full"  # full | top-k | sampled
    beta: float = 0.0  # generalised JSD: 0 forward KL(T||S) (the study's), 1 reverse KL(S||T)
    top_k: int = 20
    top_k_source: str = "teacher"
    tail: bool = True  # top-k: one bucket for the remaining mass
    divergence_clip: float | None = None  # OPSD's per-term clip tau (0.05 in OPSD)
    # term: OPSD's clamp of each (position, vocabulary entry) term; position: mentor's, each position's
    # divergence scaled down to the cap, its gradient's direction kept (learns with a confident teacher)
    divergence_clip_mode: str = "term"
    teacher: str = "initial"  # initial (LoRA: adapter disabled) | ema | live
    # a separate teacher in place of the self-teacher: a local folder, .gguf file or Hugging Face id that
    # shares the student's tokenizer (mentor.train.separate_teacher); it reads the method's context
    teacher_model: str = ""
    # a teacher behind vLLM's OpenAI-compatible server (mentor.train.served_teacher): its root URL, with
    # teacher_model the served model's name; it gives top-k log-probs, so divergence=top-k (k = top_k) or
    # sampled, at temperature 1. The API key is read from the environment variable teacher_api_key_env
    teacher_base_url: str = ""
    teacher_api_key_env: str = "OPENAI_API_KEY"  # the environment variable that holds the served teacher's key
    teacher_timeout_s: float = 120.0  # the served teacher: seconds a request may take, whole
    teacher_max_retries: int = 3  # the served teacher: retries of a failed request (connection, 5xx, 429)
    # several separate teachers (mentor.train.teacher_panel): name -> model spec, and either teacher_route, a
    # problem field (source, id, answer or meta.KEY) whose value (mapped by teacher_routes, value -> name, or
    # itself a name) picks each prompt's teacher, or teacher_mix, name -> weight of a mixture of their
    # distributions
    teachers: dict[str, str] = field(default_factory=dict)
    teacher_route: str = ""
    teacher_routes: dict[str, str] = field(default_factory=dict)
    teacher_mix: dict[str, float] = field(default_factory=dict)
    ema_decay: float = 0.999
    signal_span: str = "all"  # all tokens, or up to the first token where the rollout leaves the critique
    # sd-critique: the weight of an auxiliary loss, the student's mean NLL of the critic's critique of its own
    # attempt when asked for one after it (RLTF's feedback modelling); 0: off
    critique_prediction: float = 0.0
    # GRPO
    clip: float = 0.2
    scale_by_std: bool = True
    aggregation: str = "token-mean"
    # evaluation, checkpoints, guards
    eval_every: int = 0  # 0: evaluate only at the start and the end
    eval_problems: int = 50
    eval_k: int = 4
    eval_split: str = "validation"  # where checkpoints are evaluated and the best one is chosen
    test_problems: int = 0  # at the end, the best and the final weights on this many test problems (0: none)
    early_stopping_patience: int = 0  # evaluations without improvement before stopping; 0: never
    save_every: int = 10
    copy_ngram: int = 6
    copy_margin: float = 0.15
    min_signal_fraction: float = 0.5
    report_to: list[str] = field(default_factory=list)  # accelerate trackers: tensorboard, wandb, ...
    seed: int = 0

    def __post_init__(self) -> None:
        choices = {"method": METHODS, "divergence": DIVERGENCES, "teacher": TEACHER_KINDS,
                   "signal_span": SIGNAL_SPANS, "schedule": SCHEDULES, "blend": BLENDS,
                   "divergence_clip_mode": CLIP_MODES,
                   "top_k_source": ("teacher", "student"), "aggregation": ("token-mean", "sequence-mean"),
                   "generation_backend": BACKENDS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.async_generation and self.generation_backend != "local":
            raise ValueError("async_generation draws with mentor's loop in another process; with the "
                             f"{self.generation_backend} backend leave it off")
        check_backend(self.generation_backend, "generation_backend")
        if self.grpo_weight is None:
            self.grpo_weight = 1.0 if self.method == "grpo" else 0.0
        if not 0.0 <= self.grpo_weight <= 1.0 or (self.method == "grpo" and self.grpo_weight != 1.0):
            raise ValueError(f"grpo_weight must be in [0, 1] (and 1 for grpo), got {self.grpo_weight}")
        if self.rollouts_per_prompt is None:
            self.rollouts_per_prompt = 8 if self.grpo_weight > 0 or self.method == "sd-success" else 1
        for name in ("steps", "prompts_per_step", "rollouts_per_prompt", "max_new_tokens", "save_every",
                     "eval_problems", "eval_k", "top_k", "copy_ngram"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.eval_split not in ("train", "validation", "test"):
            raise ValueError(f"eval_split must be train, validation or test, got {self.eval_split!r}")
        for name in ("eval_every", "early_stopping_patience", "warmup_steps", "test_problems"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        check_at_most(self, "steps", "prompts_per_step", "rollouts_per_prompt", "max_new_tokens", "eval_problems",
                      "eval_k", "test_problems", "warmup_steps", "eval_every")
        if self.temperature <= 0 or self.lr <= 0 or not 0 < self.top_p <= 1:
            raise ValueError("temperature and lr must be > 0 and top_p in (0, 1]")
        if self.micro_batch_size is not None and self.micro_batch_size < 1:
            raise ValueError(f"micro_batch_size must be >= 1, got {self.micro_batch_size}")
        if (self.grpo_weight > 0 or self.method == "sd-success") and self.rollouts_per_prompt < 2:
            raise ValueError(f"{self.method} with grpo_weight={self.grpo_weight} needs rollouts_per_prompt >= 2")
        if not 0 <= self.beta <= 1:
            raise ValueError(f"beta must be in [0, 1], got {self.beta}")
        if self.critique_prediction < 0 or (self.critique_prediction > 0 and self.context != "critique"):
            raise ValueError("critique_prediction is a weight >= 0 of sd-critique's auxiliary loss (the student "
                             f"predicts the critique of its attempt), got {self.critique_prediction} with {self.method}")
        if self.method == "sd-none" and not (self.teacher_model or self.teachers):
            raise ValueError("sd-none needs onpolicy.teacher_model: without a context the self-teacher is the "
                             "student itself and gives no signal")
        self._check_teachers()
        if self.max_staleness < 0 or self.generator_threads < 0 or not self.tis_cap > 0:
            raise ValueError("max_staleness and generator_threads must be >= 0 and tis_cap > 0, got "
                             f"{self.max_staleness}, {self.generator_threads}, {self.tis_cap}")
        self._check_served_teacher()
        if self.teacher_model and self.teacher != "initial":
            raise ValueError(f"teacher={self.teacher} is a kind of self-teacher; a separate teacher_model is frozen "
                             "(leave teacher=initial)")
        if self.blend == "by-group" and not (0 < self.grpo_weight < 1 and self.context in ("reference", "critique")):
            raise ValueError("blend=by-group routes each group to GRPO or to the self-teacher: it needs sd-reference "
                             f"or sd-critique with 0 < grpo_weight < 1, got {self.method} with grpo_weight="
                             f"{self.grpo_weight}")

    def _check_served_teacher(self) -> None:
        if not self.teacher_base_url:
            return
        if not self.teacher_model or self.teachers:
            raise ValueError("a served teacher needs onpolicy.teacher_model, the model's name on the server at "
                             "teacher_base_url (and no onpolicy.teachers)")
        if self.divergence not in ("top-k", "sampled") or self.top_k_source != "teacher":
            raise ValueError("a served teacher gives its top-k log-probs, not its logits: use divergence=top-k "
                             f"(top_k_source=teacher) or divergence=sampled, got divergence={self.divergence}")
        if self.temperature != 1.0:
            raise ValueError("a served teacher's log-probs are at temperature 1 (vLLM's raw log-probs): train at "
                             f"temperature=1, got {self.temperature}")
        if not self.teacher_timeout_s > 0:
            raise ValueError(f"teacher_timeout_s must be > 0, got {self.teacher_timeout_s}")
        if self.teacher_max_retries < 0:
            raise ValueError(f"teacher_max_retries must be >= 0, got {self.teacher_max_retries}")

    def _check_teachers(self) -> None:
        if not (self.teachers or self.teacher_route or self.teacher_routes or self.teacher_mix):
            return
        if len(self.teachers) < 2 or self.teacher_model:
            raise ValueError("several teachers: onpolicy.teachers names two or more (name -> model), in place of "
                             "teacher_model")
        if bool(self.teacher_route) == bool(self.teacher_mix):
            raise ValueError("several teachers need exactly one of teacher_route (a problem field that picks each "
                             "prompt's teacher) and teacher_mix (name -> weight)")
        if self.teacher_route and not (self.teacher_route in ("source", "id", "answer")
                                       or self.teacher_route.startswith("meta.")):
            raise ValueError(f"teacher_route must be source, id, answer or meta.KEY, got {self.teacher_route!r}")
        unknown = (set(self.teacher_routes.values()) | set(self.teacher_mix)) - set(self.teachers)
        if unknown:
            raise ValueError(f"teacher_routes / teacher_mix name teachers not in teachers: {sorted(unknown)}")
        if any(not weight > 0 for weight in self.teacher_mix.values()):
            raise ValueError(f"teacher_mix weights must be > 0, got {self.teacher_mix}")
        if self.teacher != "initial":
            raise ValueError(f"teacher={self.teacher} is a kind of self-teacher; separate teachers are frozen")
        if self.method == "sd-none":
            return
        if self.grpo_weight is not None and self.grpo_weight >= 1:
            raise ValueError("several teachers teach through self-distillation: grpo_weight must be < 1")

    @property
    def context(self) -> str | None:
        return METHODS[self.method]
