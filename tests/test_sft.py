"""train.sft: the loss mask sits exactly on the completion, the schedule, and a tiny model that learns."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mentor.losses import causal_lm_logprobs
from mentor.train.sft import SFTConfig, SFTExample, collate, lr_at, tokenize, train_sft

PAD, END = "<pad>", "<end>"

PAIRS = [
    ("name: alice\ncolour:", " red and blue"),
    ("name: bob\ncolour:", " green"),
    ("name: carol\ncolour:", " yellow, then red"),
    ("name: dave\ncolour:", " blue blue"),
    ("name: erin\ncolour:", " purple"),
    ("name: frank\ncolour:", " black or white"),
]


@pytest.fixture(scope="module")
def tokenizer():
    """A byte-level BPE trained here, offline, wrapped as a transformers fast tokenizer with a pad token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=[PAD, END], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = [p + c for p, c in PAIRS] * 5 + ["the quick brown fox jumps over the lazy dog 0123456789"]
    core.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token=PAD, eos_token=END)


def tiny_llama(vocab_size: int, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
                         bos_token_id=None, eos_token_id=None, pad_token_id=0)
    return LlamaForCausalLM(config)


def examples(pairs=PAIRS, weight: float = 1.0) -> list[SFTExample]:
    return [SFTExample(p, c + END, weight) for p, c in pairs]


def completion_logprob(model, tokenizer, example: SFTExample) -> float:
    """Sum of log p(completion tokens | prompt) under ``model``."""
    batch = collate(tokenize(tokenizer, [example], 128), tokenizer.pad_token_id)
    with torch.no_grad():
        logp = causal_lm_logprobs(model, batch["input_ids"], batch["attention_mask"])
    return float((logp * batch["loss_mask"]).sum())


def mean_nll(model, tokenizer, exs) -> float:
    batch = collate(tokenize(tokenizer, exs, 128), tokenizer.pad_token_id)
    with torch.no_grad():
        logp = causal_lm_logprobs(model, batch["input_ids"], batch["attention_mask"])
    return float(-(logp * batch["loss_mask"]).sum() / batch["loss_mask"].sum())


# ----- tokenize and collate ---------------------------------------------------------------------------


MASK_CASES = PAIRS + [
    ("Q: 2+2=", "4"),
    ("prompt ends in a space ", "completion\nwith a newline"),
    ("ünïcødé prompt →", " ∑ completion ✓"),
    ("x", "y" * 40),
]


def test_loss_mask_is_exactly_the_completion_tokens(tokenizer):
    exs = [SFTExample(p, c) for p, c in MASK_CASES]
    data = tokenize(tokenizer, exs, max_length=256)
    batch = collate(data, tokenizer.pad_token_id)
    B, L = batch["input_ids"].shape
    assert batch["loss_mask"].shape == (B, L - 1)
    targets = batch["input_ids"][:, 1:]
    for i, (example, item) in enumerate(zip(exs, data)):
        n = len(item.input_ids)
        mask = batch["loss_mask"][i].bool()
        # decoding the targets under the mask gives back the completion text, exactly
        assert tokenizer.decode(targets[i][mask].tolist()) == example.completion
        # and decoding what is left of the sequence gives back the prompt
        assert tokenizer.decode(batch["input_ids"][i, : item.n_prompt].tolist()) == example.prompt
        # the mask is one contiguous run: from the last prompt position to the second-last real token
        expected = torch.zeros(L - 1, dtype=torch.bool)
        expected[item.n_prompt - 1 : n - 1] = True
        assert torch.equal(mask, expected)
        assert int(mask.sum()) == len(tokenizer(example.completion, add_special_tokens=False)["input_ids"])
        # padding: right-aligned pad ids outside the attention mask, never in the loss
        assert batch["attention_mask"][i].tolist() == [1] * n + [0] * (L - n)
        assert (batch["input_ids"][i, n:] == tokenizer.pad_token_id).all()
    assert batch["input_ids"].dtype == torch.long
    assert batch["weight"].tolist() == [1.0] * B


def test_weights_travel_through_tokenize_and_collate(tokenizer):
    exs = [SFTExample("a:", " b", 0.5), SFTExample("c:", " d", -2.0), SFTExample("e:", " f", 0.0)]
    batch = collate(tokenize(tokenizer, exs, 64), tokenizer.pad_token_id)
    assert batch["weight"].tolist() == [0.5, -2.0, 0.0]
    assert batch["weight"].dtype == torch.float32


def test_special_end_token_is_one_masked_token(tokenizer):
    (item,) = tokenize(tokenizer, [SFTExample("name: bob\ncolour:", " green" + END)], 64)
    end_id = tokenizer.convert_tokens_to_ids(END)
    assert item.input_ids[-1] == end_id
    batch = collate([item], tokenizer.pad_token_id)
    assert batch["loss_mask"][0, len(item.input_ids) - 2] == 1.0  # the end token is learned


def test_truncation_keeps_the_prompt_and_a_prefix_of_the_completion(tokenizer):
    example = SFTExample("name: alice\ncolour:", " red and blue and green and yellow")
    p_len = len(tokenizer(example.prompt, add_special_tokens=False)["input_ids"])
    with pytest.warns(UserWarning, match="1 of 1 examples were cut to max_length"):
        (item,) = tokenize(tokenizer, [example], max_length=p_len + 2)
    assert len(item.input_ids) == p_len + 2 and item.n_prompt == p_len
    batch = collate([item], tokenizer.pad_token_id)
    kept = tokenizer.decode(batch["input_ids"][0, 1:][batch["loss_mask"][0].bool()].tolist())
    assert int(batch["loss_mask"].sum()) == 2
    assert example.completion.startswith(kept) and kept


def test_empty_completion_raises(tokenizer):
    with pytest.raises(ValueError, match="example 1 has an empty completion"):
        tokenize(tokenizer, [SFTExample("ok:", " fine"), SFTExample("name: bob\ncolour:", "")], 64)


def test_prompt_longer_than_or_filling_max_length_raises(tokenizer):
    prompt = "name: alice\ncolour:"
    p_len = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    for max_length in (1, p_len - 1, p_len):
        with pytest.raises(ValueError, match=f"max_length={max_length}"):
            tokenize(tokenizer, [SFTExample("ok:", " fine"), SFTExample(prompt, " red")], max_length)
    assert len(tokenize(tokenizer, [SFTExample(prompt, " red")], p_len + 1)[0].input_ids) == p_len + 1


def test_empty_prompt_masks_every_predictable_completion_token(tokenizer):
    exs = [SFTExample("", "green and blue"), SFTExample("name: dave\ncolour:", " a much longer completion")]
    data = tokenize(tokenizer, exs, 64)
    assert data[0].n_prompt == 0
    batch = collate(data, tokenizer.pad_token_id)
    n = len(data[0].input_ids)
    # the first token has nothing before it to predict it from; every later one is learned
    assert batch["loss_mask"][0].tolist() == [1.0] * (n - 1) + [0.0] * (batch["loss_mask"].shape[1] - n + 1)
    kept = tokenizer.decode(batch["input_ids"][0, 1:][batch["loss_mask"][0].bool()].tolist())
    assert "green and blue".endswith(kept) and len(kept) > 5


def test_collate_uses_the_given_pad_id(tokenizer):
    data = tokenize(tokenizer, [SFTExample("a:", " b"), SFTExample("name: carol\ncolour:", " yellow")], 64)
    batch = collate(data, pad_id=7)
    short = len(data[0].input_ids)
    assert (batch["input_ids"][0, short:] == 7).all()


# ----- learning-rate schedule -------------------------------------------------------------------------


def test_lr_warmup_and_cosine_endpoints():
    config = SFTConfig(steps=110, lr=1e-2, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, config) == pytest.approx(1e-3)
    assert lr_at(4, config) == pytest.approx(5e-3)
    assert lr_at(9, config) == pytest.approx(1e-2)  # end of warm-up: full lr
    assert lr_at(10, config) == pytest.approx(1e-2)  # start of cosine: full lr
    assert lr_at(60, config) == pytest.approx(1e-2 * (0.1 + 0.9 * 0.5))  # half way down the cosine
    assert lr_at(110, config) == pytest.approx(1e-3)  # the end: lr * min_lr_ratio
    assert lr_at(10_000, config) == pytest.approx(1e-3)  # and it stays there
    values = [lr_at(s, config) for s in range(120)]
    assert all(a < b for a, b in zip(values[:9], values[1:10]))  # strictly rising warm-up
    assert all(a >= b for a, b in zip(values[10:], values[11:]))  # never rising after it
    assert min(values) == pytest.approx(1e-3) and max(values) == pytest.approx(1e-2)


def test_lr_without_warmup_and_with_constant_floor():
    config = SFTConfig(steps=50, lr=3e-4, warmup_steps=0, min_lr_ratio=0.0)
    assert lr_at(0, config) == pytest.approx(3e-4)
    assert lr_at(25, config) == pytest.approx(1.5e-4)
    assert lr_at(50, config) == pytest.approx(0.0, abs=1e-15)
    constant = SFTConfig(steps=50, lr=3e-4, warmup_steps=0, min_lr_ratio=1.0)
    assert {round(lr_at(s, constant), 12) for s in range(60)} == {3e-4}


def test_lr_cosine_formula_at_every_step():
    config = SFTConfig(steps=40, lr=2.0, warmup_steps=8, min_lr_ratio=0.25)
    for step in range(8, 40):
        progress = (step - 8) / 32
        expected = 2.0 * (0.25 + 0.75 * 0.5 * (1 + math.cos(math.pi * progress)))
        assert lr_at(step, config) == pytest.approx(expected)


# ----- config validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"steps": 0}, "steps must be >= 1"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"batch_size": -4}, "batch_size must be >= 1"),
        ({"max_length": 0}, "max_length must be >= 1"),
        ({"log_every": 0}, "log_every must be >= 1"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"lr": -1e-3}, "lr must be > 0"),
        ({"min_lr_ratio": -0.1}, r"min_lr_ratio must be in \[0, 1\]"),
        ({"min_lr_ratio": 1.5}, r"min_lr_ratio must be in \[0, 1\]"),
    ],
)
def test_sft_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SFTConfig(**kwargs)


def test_sft_config_accepts_edges():
    SFTConfig(steps=1, batch_size=1, max_length=1, log_every=1, lr=1e-12, min_lr_ratio=0.0, warmup_steps=0)
    SFTConfig(min_lr_ratio=1.0)


# ----- training ---------------------------------------------------------------------------------------


def run(tokenizer, exs, seed: int = 0, **overrides):
    settings = {"steps": 60, "batch_size": len(exs), "lr": 1e-2, "warmup_steps": 5, "log_every": 1,
                "seed": seed, "max_length": 64, "weight_decay": 0.0}
    settings.update(overrides)
    model = tiny_llama(len(tokenizer))
    history = train_sft(model, tokenizer, exs, SFTConfig(**settings))
    return model, history


@pytest.fixture(scope="module")
def two_runs(tokenizer):
    initial = tiny_llama(len(tokenizer))
    first = run(tokenizer, examples())
    second = run(tokenizer, examples())
    return initial, first, second


def test_training_memorises_a_handful_of_pairs(tokenizer, two_runs):
    initial, (model, history), _ = two_runs
    assert [h["step"] for h in history] == list(range(1, 61))
    first, last = history[0]["loss"], history[-1]["loss"]
    assert first > 4.0  # about log(vocab) at the start
    assert last < 0.25 * first
    before, after = mean_nll(initial, tokenizer, examples()), mean_nll(model, tokenizer, examples())
    assert after < 0.5 and after < 0.1 * before
    assert not model.training  # handed back in eval mode
    # memorised: greedy decoding of each prompt gives back its completion
    hits = 0
    for prompt, completion in PAIRS:
        ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            for _ in range(12):
                nxt = model(input_ids=ids).logits[0, -1].argmax()
                ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
                if int(nxt) == tokenizer.convert_tokens_to_ids(END):
                    break
        hits += tokenizer.decode(ids[0].tolist()) == prompt + completion + END
    assert hits >= len(PAIRS) - 1


def test_same_seed_gives_bitwise_identical_weights(two_runs):
    _, (model_a, history_a), (model_b, history_b) = two_runs
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    assert state_a.keys() == state_b.keys()
    for name in state_a:
        assert torch.equal(state_a[name], state_b[name]), name
    assert history_a == history_b
    # and training really changed them
    initial = two_runs[0].state_dict()
    assert any(not torch.equal(initial[k], state_a[k]) for k in initial)


def test_zero_weight_example_has_no_effect(tokenizer):
    """[A..., B (w=0)] against [A...] alone, with every example in every batch and no clipping.

    B's tokens still count in the loss's denominator, so its gradient is the A-only gradient times a
    constant c = |A| / (|A| + |B|). Adam's update m / (sqrt(v) + eps) does not change when every
    gradient is scaled by the same constant (up to eps), so the weights must end up the same.
    """
    a_only = examples(PAIRS[:4])
    b = SFTExample(PAIRS[4][0], PAIRS[4][1] + END, 0.0)
    common = {"steps": 25, "max_grad_norm": 1e9, "weight_decay": 0.01}
    model_a, history_a = run(tokenizer, a_only, **common)
    model_ab, history_ab = run(tokenizer, a_only + [b], **common)
    model_b1, _ = run(tokenizer, a_only + [SFTExample(b.prompt, b.completion, 1.0)], **common)
    initial = tiny_llama(len(tokenizer))

    def distance(m1, m2) -> float:
        with torch.no_grad():
            deltas = [(p - q).flatten() for p, q in zip(m1.parameters(), m2.parameters())]
            return float(torch.cat(deltas).norm())

    moved = distance(model_a, initial)
    assert moved > 0.1
    assert distance(model_a, model_ab) < 1e-3 * moved  # tiny next to how far training moved the weights
    assert distance(model_a, model_b1) > 0.2 * moved  # while training on B with weight 1 does move them
    # B's tokens are counted in the loss's denominator (that is the constant c above)
    b_tokens = len(tokenizer(b.completion, add_special_tokens=False)["input_ids"])
    assert history_ab[0]["tokens"] == history_a[0]["tokens"] + b_tokens

    # what B's log-prob does: unchanged from the A-only run, while training on it (w=1) raises it a lot
    lp0, lp_a, lp_ab, lp_b1 = (
        completion_logprob(m, tokenizer, b) for m in (initial, model_a, model_ab, model_b1)
    )
    assert lp_ab == pytest.approx(lp_a, abs=0.05)
    assert lp_b1 - lp0 > 5.0
    assert lp_b1 - lp_ab > 5.0


def test_logging_progress_and_log_file(tokenizer, tmp_path):
    seen = []
    log = tmp_path / "log.jsonl"
    model = tiny_llama(len(tokenizer))
    config = SFTConfig(steps=7, batch_size=2, lr=1e-3, warmup_steps=2, log_every=3, max_length=64)
    history = train_sft(model, tokenizer, examples(), config,
                        progress=lambda s, m: seen.append(s), log_path=log)
    assert seen == list(range(1, 8))
    assert [h["step"] for h in history] == [3, 6, 7]  # every log_every steps, and the last one
    assert [json.loads(line) for line in log.read_text().splitlines()] == history
    for h in history:
        assert set(h) >= {"loss", "nll", "tokens", "step", "lr", "grad_norm"}
        assert h["lr"] == pytest.approx(lr_at(h["step"] - 1, config))
        assert math.isfinite(h["loss"]) and h["tokens"] >= 1


def test_no_examples_is_an_error(tokenizer):
    with pytest.raises(ValueError, match="no training examples"):
        train_sft(tiny_llama(len(tokenizer)), tokenizer, [], SFTConfig(steps=1))


def test_batches_without_length_grouping_are_a_plain_shuffle():
    import random

    from mentor.train.sft import length_grouped_batches

    lengths = [1, 50, 2, 49, 3, 48, 4, 47]
    batches = length_grouped_batches(lengths, 4, random.Random(0), group=0)
    order = random.Random(0).sample(range(8), 8)
    assert batches == [order[:4], order[4:]]
