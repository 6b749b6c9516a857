"""The self-distillation update on a batch whose rows carry no signal: the fused update skips them (no teacher
forward, no vocabulary work), so its cost follows the rows that carry a signal (issue 20, item 6).

    python benchmarks/sd_update_masked_rows.py [--vocab 49152] [--prompts 8] [--tokens 128] [--repeats 3]

The model, batch and objective of ``benchmarks/sd_step_vs_trl.py``'s update (a random-init Llama, hidden 256,
4 layers, the SmolLM2 tokenizer; forward KL over the full vocabulary to the frozen initial weights reading the
reference; one torch thread; one update = student forward, teacher forward, loss, backward, clip, step). Two
batches of the same ``--prompts`` rows: every row with its reference context, and the same with half the rows
without one (the rows a ``to-divergence`` span, a ``by-group`` blend or a missing critique leave without a
signal). The two alternate within each repetition; the table gives each one's median CPU seconds per update and
the ratio. The student's forward and backward still run on every row; the teacher's forward and the loss's
vocabulary work only on the rows with a context.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import torch
import vs_trl
from sd_step_vs_trl import LR, fixed_batch, mentor_config, mentor_update

from mentor.train.teacher import SelfTeacher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    vs_trl.setup(1)
    with tempfile.TemporaryDirectory(prefix="mentor-masked-") as workdir:
        folder = vs_trl.build_model_folder(args.vocab, Path(workdir) / "model")
        tokenizer = vs_trl.smollm2_tokenizer()
        task = vs_trl.word_task(args.prompts, Path(workdir))
        rows, _ = fixed_batch(task, tokenizer, args.prompts, args.tokens, args.vocab)
        half = [dataclasses.replace(r, teacher_prompt=None) if i % 2 else r for i, r in enumerate(rows)]
        config = mentor_config(args.prompts, args.tokens)
        model = vs_trl.load_model(folder)
        teacher = SelfTeacher(model, "initial")
        optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
        batches = {"every row with a context": rows, "half the rows without one": half}
        for batch in batches.values():  # warm-up, untimed
            mentor_update(model, teacher, tokenizer, batch, optimizer, config)
        seconds: dict[str, list[float]] = {name: [] for name in batches}
        names = list(batches)
        for rep in range(args.repeats):
            for name in names if rep % 2 == 0 else names[::-1]:
                spent, _ = vs_trl.cpu_seconds(lambda b=batches[name]: mentor_update(model, teacher, tokenizer, b,
                                                                                    optimizer, config))
                seconds[name].append(spent)
        full = vs_trl.median(seconds[names[0]])
        print(f"SD update, vocab {args.vocab:,}, {args.prompts} prompts x {args.tokens} tokens, one thread, "
              f"{args.repeats} repeats; median CPU seconds per update")
        print("| batch | CPU s | vs every row |\n|---|---|---|")
        for name in names:
            print(f"| {name} | {vs_trl.median(seconds[name]):.3f} | {vs_trl.median(seconds[name]) / full:.2f}x |")


if __name__ == "__main__":
    main()
