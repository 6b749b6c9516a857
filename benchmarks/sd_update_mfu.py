"""Model FLOPs utilisation (MFU) of mentor's self-distillation update on a GPU: a random-init model of
Qwen3-1.7B's shape in bf16, one update after another on a fixed batch, timed with the device synchronised.

    python benchmarks/sd_update_mfu.py [--shape qwen3-1.7b|tiny] [--prompts 8] [--prompt-tokens 256]
        [--tokens 1024] [--repeats 5] [--peak-tflops F] [--device cuda|cpu] [--top-k K]

The update is the one ``train_step`` runs for ``method=sd-reference`` (``micro_losses``, backward, clip,
AdamW step): the student's forward and backward, the frozen initial teacher's forward on its own prompt
(the student's prompt after a context of the same length), forward KL over the full vocabulary from the
hidden states (``--top-k``: over the teacher's top K ids plus the tail). Prompts and completions are random
token ids (no tokenizer is needed: a prompt is written as its ids). No model download: the weights are
random, which changes nothing in the FLOPs or the time.

Model FLOPs, as PaLM (Chowdhury et al. 2022, appendix B) counts them, per token of a sequence of length S:
the student ``6 N + 12 L d S`` (forward and backward), the teacher ``2 N + 4 L d S`` (forward), with N the
matmul parameters of the layers, L the layers and d the attention width (heads x head_dim); plus the output
head (``V x hidden``, counted even when tied to the embedding) at the completion tokens only, where the
loss applies it (6 and 2 FLOPs per parameter); recomputation is not counted. MFU = model FLOPs per
second / the device's peak dense bf16 FLOPs (``--peak-tflops``; found from the device name for the SXM
H100, H200 and A100). On the CPU (``--shape tiny --device cpu``) it checks that the script runs and prints TFLOP/s.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from vs_trl import random_completions  # ids above the special ones, never an end of sequence

from mentor.records import Problem
from mentor.sampling import Sample
from mentor.train.common import clip_and_step
from mentor.train.onpolicy import OnPolicyConfig, Row, micro_losses
from mentor.train.teacher import SelfTeacher

SHAPES = {
    # Qwen/Qwen3-1.7B's config.json
    "qwen3-1.7b": dict(vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
                       num_attention_heads=16, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True),
    "tiny": dict(vocab_size=4096, hidden_size=128, intermediate_size=384, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=32, tie_word_embeddings=True),
}
PEAK_BF16_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0}  # dense, SXM boards only


class IdsTokenizer:
    """Reads a prompt written as its token ids (``"17 4 99"``): what ``encode_prompt`` asks of a tokenizer."""

    bos_token = None

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict:
        return {"input_ids": [int(t) for t in text.split()]}


def build_model(shape: str, device: str, dtype: torch.dtype):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(**SHAPES[shape], max_position_embeddings=8192, attn_implementation="sdpa")
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen3ForCausalLM(config).to(dtype)
    return model, config


def fixed_rows(config, prompts: int, prompt_tokens: int, tokens: int) -> list[Row]:
    vocab = config.vocab_size
    rows = []
    for i, (prompt, context, completion) in enumerate(zip(random_completions(prompts, prompt_tokens, vocab, seed=1),
                                                         random_completions(prompts, prompt_tokens, vocab, seed=2),
                                                         random_completions(prompts, tokens, vocab), strict=True)):
        sample = Sample(text="", token_ids=completion, logprobs=[0.0] * tokens, finish_reason="length")
        rows.append(Row(Problem(id=str(i), question="random ids", answer="0"), " ".join(map(str, prompt)), sample,
                        reward=0.0, teacher_prompt=" ".join(map(str, context + prompt))))
    return rows


def model_flops(config, rows: list[Row]) -> float:
    """PaLM's model FLOPs of one update: the student's forward and backward, the teacher's forward."""
    hidden, layers = config.hidden_size, config.num_hidden_layers
    attention = config.num_attention_heads * config.head_dim
    kv = config.num_key_value_heads * config.head_dim
    per_layer = hidden * (attention + 2 * kv) + attention * hidden + 3 * hidden * config.intermediate_size
    body, head = layers * per_layer, config.vocab_size * hidden
    flops = 0.0
    for row in rows:
        completion = len(row.sample.token_ids)
        # the inputs are the prompt and the completion but its last token; the head runs at the completion's
        # positions only (the loss applies it to their hidden states)
        student = len(row.prompt.split()) + completion - 1
        teacher = len(row.teacher_prompt.split()) + completion - 1
        flops += student * (6 * body + 12 * layers * attention * student) + 6 * head * completion
        flops += teacher * (2 * body + 4 * layers * attention * teacher) + 2 * head * completion
    return flops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="qwen3-1.7b")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--prompt-tokens", type=int, default=256)
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--top-k", type=int, default=0, help="0: the full vocabulary")
    parser.add_argument("--peak-tflops", type=float, default=None)
    args = parser.parse_args()
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    peak = args.peak_tflops
    if peak is None and args.device.startswith("cuda"):
        name = torch.cuda.get_device_name()
        if not any(board in name for board in ("PCIe", "NVL")):  # other boards, other peaks: --peak-tflops
            peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
        print(f"device: {name}")
    model, config = build_model(args.shape, args.device, dtype)
    params = sum(p.numel() for p in model.parameters())
    print(f"model: {args.shape}, {params / 1e6:.1f}M parameters, {dtype}, vocab {config.vocab_size}")
    rows = fixed_rows(config, args.prompts, args.prompt_tokens, args.tokens)
    train = OnPolicyConfig(method="sd-reference", divergence="top-k" if args.top_k else "full",
                           top_k=args.top_k or 20, tail=True, beta=0.0, teacher="initial", steps=1,
                           prompts_per_step=args.prompts, max_new_tokens=args.tokens, lr=1e-6)
    teacher = SelfTeacher(model, train.teacher, train.ema_decay)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train.lr)
    tokenizer = IdsTokenizer()
    flops = model_flops(config, rows)

    def update() -> float:
        times = dict.fromkeys(("generate", "critic", "teacher", "update"), 0.0)
        model.train()
        optimizer.zero_grad(set_to_none=True)
        _, sd, _ = micro_losses(model, teacher, tokenizer, rows, torch.zeros(len(rows)), train, times)
        sd.backward()
        clip_and_step(model, optimizer, train.max_grad_norm)
        return float(sd.detach())

    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    update()  # warm-up: kernels chosen, optimizer state made
    seconds = []
    for _ in range(args.repeats):
        sync()
        start = time.perf_counter()
        loss = update()
        sync()
        seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    tokens = args.prompts * args.tokens
    achieved = flops / median / 1e12
    print(f"batch: {args.prompts} x ({args.prompt_tokens} prompt + {args.tokens} completion) tokens; "
          f"loss {loss:.4f}")
    print(f"update: median {median:.3f} s over {args.repeats} (min {min(seconds):.3f}); "
          f"{tokens / median:,.0f} completion tok/s; model FLOPs {flops / 1e9:,.1f} G; {achieved:.3f} TFLOP/s")
    if args.device.startswith("cuda"):
        print(f"peak memory: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    if peak:
        print(f"MFU: {100 * achieved / peak:.1f}% of {peak} TFLOP/s (dense bf16)")
    else:
        print("MFU: no peak known for this device (--peak-tflops F)")


if __name__ == "__main__":
    main()
