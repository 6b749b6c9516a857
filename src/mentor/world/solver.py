"""The world's tiny base solver: its own tokenizer, a Llama-style model of ~1M parameters, trained from
scratch with mentor's SFT loop, and cached so the next run loads it in seconds.

It is trained so that it behaves like a small instruction-tuned model that knows its facts:
- the bare question -> a step-tagged trace written with the solver's error habits
  (:mod:`mentor.world.habits`: a misconception about ``-``, slips, skipped steps, stopping early,
  and a quarter of its steps in the references' wordings);
- question + the exact critic's critique of such a trace -> the corrected trace; and, for a share
  ``continue_rate`` of them, the trace as the solver wrote it up to its first departure from the
  critique, then the rest written correctly *from what is on the page* (the teacher fixes the wrong step
  it is asked about and otherwise goes on consistently, as an LLM continuing a given prefix does);
- question + reference solution -> the reference's own derivation (its wording); and, for a share
  ``continue_rate``, a correct trace worded as the solver words it (``Habits.reword``) cut at a random
  word, then that step finished as written and the remaining steps in the reference's wording.
The context examples train no habits: the self-teacher is the same model, better informed.
"""

from __future__ import annotations

import dataclasses
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
from mentor.train.common import save_model
from mentor.train.sft import SFTConfig, SFTExample, train_sft
from mentor.world.critic import corrected_solution, critique
from mentor.world.habits import Habits, first_departure, habit_trace, swap_steps
from mentor.world.problems import (
    OPS,
    WorldConfig,
    WorldProblem,
    WorldTask,
    format_trace,
    parse_trace,
)

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL_TOKENS = ["<|pad|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
EOS = "<|end|>"
BUILD_VERSION = 6  # bump when the recipe changes so cached builds are not reused
EXAMPLE_KINDS = ("none", "reference", "critique", "facts")
FACTS_PROMPT = "Facts modulo {modulus}: {questions}."


@dataclass
class WorldModelConfig:
    """Everything that determines the built model (its hash names the cache folder)."""

    world: WorldConfig = field(default_factory=lambda: WorldConfig(steps=(2, 6), inputs=(2, 4)))
    train_problems: int = 12000
    habits: Habits = field(default_factory=Habits)  # how the solver errs on the bare question
    mix: dict[str, float] = field(
        default_factory=lambda: {"none": 0.5, "reference": 0.15, "critique": 0.15, "facts": 0.2})
    facts_per_drill: int = 24  # arithmetic facts in one ``facts`` example (the solver's "pre-training")
    continue_rate: float = 0.5  # share of context examples that continue a page departing from the context
    vocab_size: int = 512
    hidden_size: int = 128
    layers: int = 4
    heads: int = 8
    sft: SFTConfig = field(default_factory=lambda: SFTConfig(steps=5000, batch_size=32, lr=3e-3, warmup_steps=30))
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.world, dict):
            self.world = WorldConfig(**self.world)
        if isinstance(self.habits, dict):
            self.habits = Habits(**self.habits)
        if isinstance(self.sft, dict):
            self.sft = SFTConfig(**self.sft)
        self.mix = {k: float(v) for k, v in self.mix.items()}  # 0 and 0.0: one cache key
        if set(self.mix) - set(EXAMPLE_KINDS):
            raise ValueError(f"mix keys must be {'/'.join(EXAMPLE_KINDS)}, got {sorted(self.mix)}")
        if not 0 <= self.continue_rate <= 1:
            raise ValueError(f"continue_rate must be in [0, 1], got {self.continue_rate}")

    def key(self) -> str:
        blob = json.dumps({"v": BUILD_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _critique_continuation(problem: Problem, wp: WorldProblem, config: WorldModelConfig,
                           rng: random.Random) -> tuple[str, str, str] | None:
    """(critique, page, continuation) for one forced solver error, or None when the trace never departs
    from the critique. The page is the solver's trace up to the first word that departs from the critique;
    the continuation goes on from the page correctly (a skipped variable gets its right value)."""
    options = [("swap", i) for i in swap_steps(wp)] + [("slip", i) for i in range(len(wp.defs))]
    options += [("skip", i) for i in range(len(wp.defs) - 1)]
    forced = rng.choice(options)
    seed = rng.random()
    written = habit_trace(wp, config.habits, random.Random(seed), forced)
    # after a swap or a slip the solver's own trace already goes on from its page; after a skip the
    # skipped variable's value is not on the page, and a reader who knows it uses the right one
    continued = written if forced[0] != "skip" else habit_trace(wp, config.habits, random.Random(seed), forced,
                                                                 skipped_value="correct")
    feedback = critique(problem, written)
    end = first_departure(written, corrected_solution(feedback))
    if end is None or continued[:end] != written[:end]:
        return None
    return feedback.critique, written[:end], continued[end:]


def _reference_continuation(problem: Problem, wp: WorldProblem, habits: Habits,
                            rng: random.Random) -> tuple[str, str]:
    """(page, continuation): a correct trace worded as the solver words it, cut at a random word of a
    random step, then that step finished as written and the remaining steps in the reference's wording."""
    correct = Habits(swap=0.0, slip=0.0, skip=0.0, truncate=0.0, reword=habits.reword)
    lines = habit_trace(wp, correct, rng).split("\n")[:-1]  # the steps, without the answer line
    j = rng.randrange(len(lines))
    words = lines[j].split(" ")
    cut = rng.randrange(1, len(words))  # at least the step's tag is on the page
    page = "\n".join(lines[:j] + [" ".join(words[:cut])])
    finish = " " + " ".join(words[cut:])
    done = {wp.defs[i][0] for i in range(j + 1)}
    ref_steps, answer = parse_trace(problem.solution)
    rest = format_trace([s.body for s in ref_steps if s.name not in done], answer).split("\n")
    renumbered = [f"<step_{j + 1 + i}> " + line.split(" ", 1)[1] for i, line in enumerate(rest[:-1], start=1)]
    return page, "\n".join([finish, *renumbered, rest[-1]])


def fact_drill(wp: WorldProblem, config: WorldModelConfig, rng: random.Random) -> tuple[str, str]:
    """(user message, answer): random arithmetic facts of the world, what the solver knows. The message asks
    ``Facts modulo 31: 7 - 9, 12 + 30, ...``; the answer states each, one a line (`` 7 - 9 = -2 so 29``:
    the integer result and its reduction).

    The operands are in the question so that the loss falls on the results, not on random numbers: with the
    operands drawn in the answer itself, a third of a drill's tokens were unpredictable, their loss dwarfed
    every other example's, and a build with more drills learned its facts but lost its copying of the
    definitions (world 6's second build). Each line starts with a space so that its first number is the
    token a trace uses (`` 7``, as in ``, 7 - 9 =``)."""
    m, ops = wp.modulus, config.world.ops
    facts = [(rng.randrange(m), rng.choice(ops), rng.randrange(m)) for _ in range(config.facts_per_drill)]
    questions = ", ".join(f"{x} {op} {y}" for x, op, y in facts)
    lines = [f" {x} {op} {y} = {OPS[op](x, y)} so {wp.apply(op, x, y)}" for x, op, y in facts]
    return FACTS_PROMPT.format(modulus=m, questions=questions), "\n".join(lines)


def training_texts(config: WorldModelConfig, problems: list[Problem]) -> list[tuple[str, str, str]]:
    """(user message, page, completion) triples of the kinds in ``config.mix`` (``EXAMPLE_KINDS``), in its
    proportions;
    the page is text the model is given after the prompt (not trained on), usually empty."""
    rng = random.Random(config.seed)
    kinds, weights = zip(*config.mix.items())
    out = []
    for problem in problems:
        wp = WorldProblem.from_meta(problem.meta)
        kind = rng.choices(kinds, weights)[0]
        if kind == "facts":
            user, answer = fact_drill(wp, config, rng)
            out.append((user, "", answer))
            continue
        if kind == "none":
            out.append((problem.question, "", habit_trace(wp, config.habits, rng)))
            continue
        if kind == "reference":
            user = build_context_prompt("reference", problem.question, problem=problem)
            if rng.random() < config.continue_rate:
                out.append((user, *_reference_continuation(problem, wp, config.habits, rng)))
            else:
                out.append((user, "", problem.solution))
            continue
        continuation = _critique_continuation(problem, wp, config, rng) if rng.random() < config.continue_rate else None
        if continuation is not None:
            text, page, rest = continuation
            out.append((build_context_prompt("critique", problem.question, critique=text), page, rest))
        else:
            feedback = critique(problem, habit_trace(wp, config.habits, rng))
            out.append((build_context_prompt("critique", problem.question, critique=feedback.critique), "",
                        corrected_solution(feedback)))
    return out


HELD_OUT_STEPS = range(1, 11)  # the lengths whose validation and test questions the solver never trains on


def held_out_questions(config: WorldModelConfig, n: int = 1000) -> frozenset[str]:
    """The first ``n`` validation and test questions of the build's own world and of the world at every
    single length (the difficulty levels and carry-over lengths evaluate on these), any number of inputs.
    Kept per world for the process: they are tens of thousands of problems, the same for every build of
    one world (builds that differ in seed or model size share them)."""
    key = (json.dumps(asdict(config.world), sort_keys=True, default=str), n)
    if key not in _HELD_OUT:
        worlds = [config.world] + [dataclasses.replace(config.world, steps=k, inputs=inputs)
                                   for k in HELD_OUT_STEPS for inputs in (config.world.inputs, 2)]
        _HELD_OUT[key] = frozenset(p.question for world in worlds for split in ("validation", "test")
                                   for p in WorldTask(world).problems(split, n=n))
    return _HELD_OUT[key]


_HELD_OUT: dict[tuple[str, int], frozenset[str]] = {}


def train_problems(config: WorldModelConfig) -> list[Problem]:
    """Training problems, with any question that also appears in a held-out split removed."""
    task = WorldTask(config.world)
    held_out = held_out_questions(config)
    return [p for p in task.problems("train", n=config.train_problems, seed=config.seed)
            if p.question not in held_out]


def build_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer with the chat tokens. A step tag is ``<step_`` (one token), the step's
    number (the digit tokens numbers use) and ``>``, so a solver that has counted to 6 can write
    ``<step_7>``: an atomic tag for a length it never saw would be an untrained row it cannot write."""
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
    tags = ["<step_", "<answer>"]
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


MIN_HEAD_DIM = 32  # the smallest head vLLM's CPU attention runs ("Unsupported CPU attention configuration: head_dim=16")


@torch.no_grad()
def pad_attention_heads(model, head_dim: int = MIN_HEAD_DIM):
    """The same function with each attention head widened to ``head_dim`` by dimensions that stay zero.

    Queries and keys get zeros in the new dimensions (their dot product is unchanged; the query is scaled
    by sqrt(head_dim / old) for the 1 / sqrt(head_dim) in the softmax), values get zeros that the output
    projection never reads. The old dimensions are placed at even offsets so that rotary embeddings give
    them the same frequencies: with rotate-half RoPE over d dimensions, offset i pairs with i + d/2 at
    frequency base^(-2i/d), so old offset i (and i + old/2) goes to 2i (and 2i + d/2). Gradients in the new
    dimensions are zero (every one of them multiplies a zero), so training keeps them zero. Returns a new
    model; ``model`` is left as it is."""
    from transformers import LlamaForCausalLM

    old = model.config.head_dim if getattr(model.config, "head_dim", None) else (
        model.config.hidden_size // model.config.num_attention_heads)
    if old >= head_dim:
        return model
    if head_dim % old or (head_dim // old) % 2 or model.config.num_key_value_heads != model.config.num_attention_heads:
        raise ValueError(f"cannot pad heads of {old} to {head_dim} dimensions")
    config = model.config.__class__.from_dict({**model.config.to_dict(), "head_dim": head_dim})
    wide = LlamaForCausalLM(config)
    projections = ("q_proj", "k_proj", "v_proj", "o_proj")
    rest = {k: v for k, v in model.state_dict().items() if k.split(".")[-2] not in projections}
    wide.load_state_dict(rest, strict=False)  # everything but the attention projections, set below
    half, ratio = old // 2, head_dim // old
    place = torch.tensor([ratio * i for i in range(half)] + [head_dim // 2 + ratio * i for i in range(half)])
    heads = model.config.num_attention_heads
    for narrow_layer, wide_layer in zip(model.model.layers, wide.model.layers):
        n, w = narrow_layer.self_attn, wide_layer.self_attn
        for name, scale in (("q_proj", (head_dim / old) ** 0.5), ("k_proj", 1.0), ("v_proj", 1.0)):
            weight = getattr(n, name).weight.view(heads, old, -1)
            padded = weight.new_zeros(heads, head_dim, weight.shape[-1])
            padded[:, place] = weight * scale
            getattr(w, name).weight.copy_(padded.view(heads * head_dim, -1))
        out = n.o_proj.weight.view(-1, heads, old)
        padded = out.new_zeros(out.shape[0], heads, head_dim)
        padded[:, :, place] = out
        w.o_proj.weight.copy_(padded.view(out.shape[0], -1))
    return wide.eval() if not model.training else wide


def build_world_model(
    config: WorldModelConfig,
    out_dir: str | os.PathLike,
    progress: Callable[[int, dict], None] | None = None,
) -> Path:
    """Train the base solver from scratch and save model, tokenizer and build record in ``out_dir``."""
    start = time.time()
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "mentor_world.json").is_file():
        raise FileExistsError(f"{out_dir} exists and is not a world-model build; choose an empty or new folder")
    torch.manual_seed(config.seed)
    problems = train_problems(config)
    triples = training_texts(config, problems)
    tokenizer = build_tokenizer([u + "\n" + p + c for u, p, c in triples], config.vocab_size)
    model = build_model(tokenizer, config)
    examples = [SFTExample(render_prompt(tokenizer, u) + p, c + EOS) for u, p, c in triples]
    tmp = out_dir.with_name(out_dir.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "train_log.jsonl").unlink(missing_ok=True)
    history = train_sft(model, tokenizer, examples, config.sft, progress, tmp / "train_log.jsonl")
    model = pad_attention_heads(model)  # the same function, in heads vLLM's CPU attention runs
    save_model(model, tokenizer, tmp)
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


SHIPPED_DIR = Path(__file__).parent.parent / "assets" / "world_model"


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
