"""The world's tiny base solver: its own tokenizer, a Llama-style model of ~1M parameters, trained from
scratch with mentor's SFT loop, and cached so the next run loads it in seconds.

It is trained on three kinds of example, so that it behaves like a small instruction-tuned model:
- the bare question -> a step-tagged trace, correct or with one injected error (so it is imperfect);
- question + reference solution (other order and wording) -> the canonical correct trace;
- question + the exact critic's step-aligned critique of a trace -> the corrected trace.
The last two make the self-teacher (the same model with context) clearly better than the student.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from mentor.contexts import build_context_prompt
from mentor.models import cache_dir, render_prompt
from mentor.records import Problem
from mentor.tasks.world import (
    ERROR_KINDS,
    WorldConfig,
    WorldProblem,
    WorldTask,
    canonical_solution,
    corrupt_trace,
)
from mentor.tasks.world_critic import corrected_solution, critique
from mentor.train.sft import SFTConfig, SFTExample, train_sft

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL_TOKENS = ["<|pad|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
EOS = "<|end|>"
BUILD_VERSION = 1  # bump when the recipe changes so cached builds are not reused


@dataclass
class WorldModelConfig:
    """Everything that determines the built model (its hash names the cache folder)."""

    world: WorldConfig = field(default_factory=WorldConfig)
    train_problems: int = 8000
    error_rate: float = 0.1  # fraction of bare-question traces with one injected error
    # substitution errors are off: they teach the model to look values up wrongly (docs/world.md)
    error_kinds: dict[str, float] = field(
        default_factory=lambda: {"result": 0.6, "substitution": 0.0, "skip": 0.2, "truncate": 0.2}
    )
    mix: dict[str, float] = field(default_factory=lambda: {"none": 0.7, "reference": 0.15, "critique": 0.15})
    vocab_size: int = 400
    hidden_size: int = 128
    layers: int = 3
    heads: int = 4
    sft: SFTConfig = field(default_factory=lambda: SFTConfig(steps=1100, batch_size=32, lr=3e-3, warmup_steps=30))
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.world, dict):
            self.world = WorldConfig(**self.world)
        if isinstance(self.sft, dict):
            self.sft = SFTConfig(**self.sft)
        self.error_kinds = {k: float(v) for k, v in self.error_kinds.items()}  # 0 and 0.0: one cache key
        self.mix = {k: float(v) for k, v in self.mix.items()}
        if not 0 <= self.error_rate <= 1:
            raise ValueError(f"error_rate must be in [0, 1], got {self.error_rate}")
        unknown = set(self.error_kinds) - set(ERROR_KINDS)
        if unknown:
            raise ValueError(f"unknown error kinds {sorted(unknown)}; choose from {', '.join(ERROR_KINDS)}")
        if set(self.mix) - {"none", "reference", "critique"}:
            raise ValueError(f"mix keys must be none/reference/critique, got {sorted(self.mix)}")

    def key(self) -> str:
        blob = json.dumps({"v": BUILD_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _solo_trace(wp: WorldProblem, config: WorldModelConfig, rng: random.Random) -> str:
    if rng.random() >= config.error_rate:
        return canonical_solution(wp)
    kinds, weights = zip(*config.error_kinds.items())
    kind = rng.choices(kinds, weights)[0]
    return corrupt_trace(wp, rng, kind, rng.randint(1, len(wp.defs)))


def training_texts(config: WorldModelConfig, problems: list[Problem]) -> list[tuple[str, str]]:
    """(user message, completion) pairs of the three kinds, in the proportions of ``config.mix``."""
    rng = random.Random(config.seed)
    kinds, weights = zip(*config.mix.items())
    pairs = []
    for problem in problems:
        wp = WorldProblem.from_meta(problem.meta)
        kind = rng.choices(kinds, weights)[0]
        if kind == "none":
            pairs.append((problem.question, _solo_trace(wp, config, rng)))
        elif kind == "reference":
            pairs.append((build_context_prompt("reference", problem.question, problem=problem),
                          canonical_solution(wp)))
        else:
            feedback = critique(problem, _solo_trace(wp, config, rng))
            pairs.append((build_context_prompt("critique", problem.question, critique=feedback.critique),
                          corrected_solution(feedback)))
    return pairs


def train_problems(config: WorldModelConfig) -> list[Problem]:
    """Training problems, with any question that also appears in the held-out test split removed."""
    task = WorldTask(config.world)
    held_out = {p.question for p in task.problems("test", n=1000)}
    return [p for p in task.problems("train", n=config.train_problems, seed=config.seed)
            if p.question not in held_out]


def build_tokenizer(texts: list[str], vocab_size: int, max_steps: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AddedToken, PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token=EOS, pad_token="<|pad|>", model_max_length=1024
    )
    tags = [f"<step_{i}>" for i in range(1, max_steps + 2)] + ["<answer>"]
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in tags])
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_model(tokenizer, config: WorldModelConfig):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(config.seed)
    model_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.hidden_size * 3,
        num_hidden_layers=config.layers,
        num_attention_heads=config.heads,
        num_key_value_heads=config.heads,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(model_config)


def build_world_model(
    config: WorldModelConfig,
    out_dir: str | os.PathLike,
    progress: Callable[[int, dict], None] | None = None,
) -> Path:
    """Train the base solver from scratch and save model, tokenizer and build record in ``out_dir``."""
    start = time.time()
    torch.manual_seed(config.seed)
    problems = train_problems(config)
    pairs = training_texts(config, problems)
    tokenizer = build_tokenizer([u + "\n" + c for u, c in pairs], config.vocab_size, config.world.steps)
    model = build_model(tokenizer, config)
    examples = [SFTExample(render_prompt(tokenizer, u), c + EOS) for u, c in pairs]
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "mentor_world.json").is_file():
        raise FileExistsError(f"{out_dir} exists and is not a world-model build; choose an empty or new folder")
    tmp = out_dir.with_name(out_dir.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "train_log.jsonl").unlink(missing_ok=True)
    history = train_sft(model, tokenizer, examples, config.sft, progress, tmp / "train_log.jsonl")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    record = {
        "config": asdict(config),
        "key": config.key(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "examples": len(examples),
        "final": history[-1],
        "seconds": round(time.time() - start, 1),
    }
    (tmp / "mentor_world.json").write_text(json.dumps(record, indent=2))
    if out_dir.exists():
        import shutil

        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)  # a crash mid-build never leaves a half-written model behind
    return out_dir


SHIPPED_DIR = Path(__file__).parent / "assets" / "world_model"


def world_model_dir(config: WorldModelConfig | None = None) -> Path:
    """Where ``mentor world build`` puts the model for ``config``: the cache, keyed by the config."""
    return cache_dir() / "world" / (config or WorldModelConfig()).key()


def find_world_model(config: WorldModelConfig | None = None) -> Path | None:
    """A built model for ``config``: the user's own build first, then the one shipped in the package."""
    config = config or WorldModelConfig()
    built = world_model_dir(config)
    if (built / "mentor_world.json").is_file():
        return built
    shipped = SHIPPED_DIR / "mentor_world.json"
    if shipped.is_file() and json.loads(shipped.read_text()).get("key") == config.key():
        return SHIPPED_DIR
    return None


def load_world_model(config: WorldModelConfig | None = None, build_if_missing: bool = True,
                     progress: Callable[[int, dict], None] | None = None):
    """(model, tokenizer) of the world's base solver: from the cache, or built now and cached."""
    config = config or WorldModelConfig()
    folder = find_world_model(config)
    if folder is None:
        folder = world_model_dir(config)
        if not build_if_missing:
            raise FileNotFoundError(f"no world model built at {folder}; run `mentor world build`")
        build_world_model(config, folder, progress)
    return load_world_folder(folder)


def load_world_folder(folder: str | os.PathLike):
    """(model, tokenizer) from a built world-model folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder)
    model.eval()
    return model, AutoTokenizer.from_pretrained(folder)
