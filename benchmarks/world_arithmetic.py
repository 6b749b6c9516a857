"""Why the world writes the integer result before its reduction: a tiny Llama learns integer sums fast and
a modular table from scratch not at all (docs/world.md).

    python benchmarks/world_arithmetic.py [--steps 300] [--modulus 13]

The world model's shape (hidden 128, 3 layers, 4 heads), trained on lines of random facts, one token per
number, loss on the results only, batch 32 x 20 facts, AdamW lr 3e-3, one torch thread, seed 0. Prints
the accuracy of the argmax result every 50 steps for two formats:
- ``modular``: ``x op y = (x op y) mod m``;
- ``integer``: ``x op y = x op y`` (an integer), then its reduction mod m (a one-number look-up).
"""

from __future__ import annotations

import argparse
import random
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def train(fmt: str, modulus: int, steps: int, facts: int = 20, batch: int = 32) -> None:
    low = -(modulus - 1)  # token i stands for the number low + i
    numbers = 3 * modulus - 2  # -(m-1) .. 2(m-1)
    plus, minus, equals, then, newline = range(numbers, numbers + 5)

    def token(n: int) -> int:
        return n - low

    def line(rng: random.Random) -> tuple[list[int], list[int]]:
        """The tokens of one fact and the positions (in it) that predict a result."""
        x, y, op = rng.randrange(modulus), rng.randrange(modulus), rng.choice((plus, minus))
        z = x + y if op == plus else x - y
        if fmt == "modular":
            return [token(x), op, token(y), equals, token(z % modulus), newline], [3]
        return [token(x), op, token(y), equals, token(z), then, token(z % modulus), newline], [3, 5]

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=numbers + 5, hidden_size=128, intermediate_size=384, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
                         tie_word_embeddings=True, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    model = LlamaForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    rng, start = random.Random(0), time.time()
    for step in range(1, steps + 1):
        rows, targets = [], []
        for _ in range(batch):
            ids, where = [], []
            for _ in range(facts):
                tokens, positions = line(rng)
                where += [len(ids) + p for p in positions]
                ids += tokens
            rows.append(ids)
            targets.append(where)
        ids_BT = torch.tensor(rows)
        logits = model(ids_BT).logits
        index_B, index_T = zip(*[(b, t) for b, where in enumerate(targets) for t in where])
        predicted = logits[list(index_B), list(index_T)]
        wanted = ids_BT[list(index_B), [t + 1 for t in index_T]]
        loss = torch.nn.functional.cross_entropy(predicted, wanted)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 0:
            accuracy = (predicted.argmax(-1) == wanted).float().mean().item()
            print(f"{fmt:8s} step {step:4d}  loss {loss.item():.3f}  result accuracy {accuracy:.3f}  "
                  f"({time.time() - start:.0f} s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--modulus", type=int, default=13)
    parser.add_argument("--format", choices=("modular", "integer", "both"), default="both")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for fmt in ("modular", "integer") if args.format == "both" else (args.format,):
        train(fmt, args.modulus, args.steps)


if __name__ == "__main__":
    main()
