"""LocalSampler on a tiny random Llama with a word-level tokenizer trained offline."""

from __future__ import annotations

import copy

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from mentor.models import LoraSpec, apply_lora, teacher_mode
from mentor.sampling import Sample, SamplingParams
from mentor.sampling.local import LocalSampler
from tiny import tiny_llama

SENTENCES = [
    "the cat sat on the mat and the dog ran to the park",
    "two plus three is five and four plus four is eight",
    "a small model learns to reason from feedback one step at a time",
    "the answer is seven because three plus four is seven",
]
PROMPTS = ["the cat sat", "two plus three is five and four plus", "a small model learns to", "the"]


@pytest.fixture(scope="module")
def tiny_policy() -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    backend = Tokenizer(models.WordLevel(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    backend.train_from_iterator(
        SENTENCES, trainers.WordLevelTrainer(special_tokens=["<unk>", "<s>", "</s>", "<pad>"])
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    model = tiny_llama(len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    with torch.no_grad():  # sharper logits than the default init, so samples are not uniform noise
        model.lm_head.weight.mul_(20.0)
    return model, tokenizer


def forward_logprobs(model, prompt_ids: list[int], token_ids: list[int], temperature: float) -> torch.Tensor:
    """Reference: log_softmax(logits / T) of ``token_ids`` from one unpadded forward pass, no cache."""
    ids_1L = torch.tensor([prompt_ids + token_ids])
    with torch.no_grad():
        logits_LV = model(input_ids=ids_1L).logits[0, len(prompt_ids) - 1 : -1].float()
    logp_LV = torch.log_softmax(logits_LV / (temperature or 1.0), dim=-1)
    return logp_LV.gather(-1, torch.tensor(token_ids)[:, None]).squeeze(-1)


def prompt_ids(tokenizer, prompt: str) -> list[int]:
    return tokenizer(prompt)["input_ids"]


def test_params_validation_and_dict():
    params = SamplingParams(n=2, temperature=0.7, stop=["\n"])
    assert params.to_dict() == {
        "n": 2,
        "temperature": 0.7,
        "top_p": 1.0,
        "max_new_tokens": 256,
        "seed": 0,
        "stop": ["\n"],
    }
    for bad in ({"n": 0}, {"temperature": -1}, {"top_p": 0}, {"top_p": 1.5}, {"max_new_tokens": 0}):
        with pytest.raises(ValueError):
            SamplingParams(**bad)
    with pytest.raises(ValueError):
        SamplingParams(stop="\n")  # a bare string is a common mistake for a list
    with pytest.raises(ValueError):
        Sample("x", [1], [], "stop")


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 0.9), (0.0, 1.0)])
def test_logprobs_match_plain_forward(tiny_policy, temperature, top_p):
    model, tokenizer = tiny_policy
    params = SamplingParams(n=2, temperature=temperature, top_p=top_p, max_new_tokens=12, seed=3)
    results = LocalSampler(model, tokenizer, batch_size=8).generate(PROMPTS, params)
    assert [len(r) for r in results] == [2] * len(PROMPTS)
    for prompt, samples in zip(PROMPTS, results, strict=True):
        for sample in samples:
            expected = forward_logprobs(model, prompt_ids(tokenizer, prompt), sample.token_ids, temperature)
            torch.testing.assert_close(torch.tensor(sample.logprobs), expected, atol=1e-4, rtol=0)


def test_the_local_sampler_is_a_sampler_and_backends_build_one(tiny_policy):
    import inspect

    from mentor.sampling import Sampler
    from mentor.sampling.backends import build_sampler

    model, tokenizer = tiny_policy
    sampler = build_sampler("local", model, tokenizer)
    assert isinstance(sampler, Sampler) and sampler.backend == "local"
    assert inspect.signature(LocalSampler.generate) == inspect.signature(Sampler.generate)


def test_greedy_is_argmax(tiny_policy):
    model, tokenizer = tiny_policy
    params = SamplingParams(temperature=0.0, max_new_tokens=10)
    [[sample]] = LocalSampler(model, tokenizer).generate([PROMPTS[1]], params)
    ids = prompt_ids(tokenizer, PROMPTS[1])
    for token in sample.token_ids:
        with torch.no_grad():
            logits_V = model(input_ids=torch.tensor([ids])).logits[0, -1]
        assert token == int(logits_V.argmax())
        ids.append(token)


def test_same_seed_same_samples_and_batch_size_does_not_matter(tiny_policy):
    model, tokenizer = tiny_policy
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=10, seed=7)
    first = LocalSampler(model, tokenizer, batch_size=5).generate(PROMPTS, params)
    again = LocalSampler(model, tokenizer, batch_size=5).generate(PROMPTS, params)
    one_by_one = LocalSampler(model, tokenizer, batch_size=1).generate(PROMPTS, params)
    assert first == again
    for batched, single in zip(first, one_by_one, strict=True):
        assert [s.token_ids for s in batched] == [s.token_ids for s in single]
        for a, b in zip(batched, single, strict=True):
            torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4, rtol=0)
    other_seed = LocalSampler(model, tokenizer).generate(
        PROMPTS, SamplingParams(**{**params.to_dict(), "seed": 8})
    )
    assert [s.token_ids for r in other_seed for s in r] != [s.token_ids for r in first for s in r]
    assert len({tuple(s.token_ids) for s in first[0]}) > 1  # the n samples of a prompt differ


def test_left_padding_matches_single_prompt_greedy(tiny_policy):
    model, tokenizer = tiny_policy
    params = SamplingParams(temperature=0.0, max_new_tokens=8)
    sampler = LocalSampler(model, tokenizer, batch_size=len(PROMPTS))
    batched = sampler.generate(PROMPTS, params)
    for prompt, [sample] in zip(PROMPTS, batched, strict=True):
        [[alone]] = sampler.generate([prompt], params)
        assert sample.token_ids == alone.token_ids and sample.text == alone.text
        torch.testing.assert_close(
            torch.tensor(sample.logprobs), torch.tensor(alone.logprobs), atol=1e-4, rtol=0
        )


def test_finish_reasons_eos_and_length(tiny_policy):
    model, tokenizer = tiny_policy
    params = SamplingParams(temperature=0.0, max_new_tokens=6)
    [[free]] = LocalSampler(model, tokenizer).generate([PROMPTS[0]], params)
    assert free.finish_reason == "length" and len(free.token_ids) == 6
    assert free.text == tokenizer.decode(free.token_ids)
    # make the third greedy token the end-of-sequence token: generation stops there and drops it from the text
    eos = free.token_ids[2]
    original = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = eos
    try:
        [[stopped]] = LocalSampler(model, tokenizer).generate([PROMPTS[0]], params)
    finally:
        model.generation_config.eos_token_id = original
    first_eos = free.token_ids.index(eos)
    assert stopped.finish_reason == "stop"
    assert stopped.token_ids == free.token_ids[: first_eos + 1]
    assert stopped.text == tokenizer.decode(free.token_ids[:first_eos])


def test_stop_strings_trim_text(tiny_policy):
    model, tokenizer = tiny_policy
    params = SamplingParams(temperature=0.0, max_new_tokens=8)
    [[free]] = LocalSampler(model, tokenizer).generate([PROMPTS[2]], params)
    words = free.text.split(" ")
    stop = words[3]
    cut = free.text.find(stop)
    [[stopped]] = LocalSampler(model, tokenizer).generate(
        [PROMPTS[2]], SamplingParams(**{**params.to_dict(), "stop": ["zzz", stop]})
    )
    assert stopped.finish_reason == "stop"
    assert stopped.text == free.text[:cut]
    assert stop in tokenizer.decode(stopped.token_ids)  # the tokens that completed the stop string are kept
    assert stopped.token_ids == free.token_ids[: len(stopped.token_ids)]


def test_progress_reports_completed_prompts(tiny_policy):
    model, tokenizer = tiny_policy
    seen: list[int] = []
    LocalSampler(model, tokenizer, batch_size=3).generate(
        PROMPTS, SamplingParams(n=2, max_new_tokens=3), progress=seen.append
    )
    assert seen == sorted(seen) and seen[-1] == len(PROMPTS) and len(seen) == 3


def test_a_subset_drawn_with_its_indices_matches_the_whole_call(tiny_policy):
    """A job resumed on the prompts it had not finished draws what the whole job would have; each prompt is
    handed over as soon as its samples are all drawn."""
    model, tokenizer = tiny_policy
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=6, seed=3)
    whole = LocalSampler(model, tokenizer, batch_size=3).generate(PROMPTS, params)
    done: list[tuple[int, list[Sample]]] = []
    rest = LocalSampler(model, tokenizer, batch_size=3).generate(
        [PROMPTS[1], PROMPTS[3]], params, indices=[1, 3], on_prompt=lambda i, samples: done.append((i, samples)))
    tokens = lambda groups: [[s.token_ids for s in group] for group in groups]  # noqa: E731
    assert tokens(rest) == tokens([whole[1], whole[3]])  # (log-probs agree to padding's rounding)
    assert sorted(i for i, _ in done) == [0, 1] and all(samples == rest[i] for i, samples in done)
    unseeded = LocalSampler(model, tokenizer, batch_size=3).generate([PROMPTS[1], PROMPTS[3]], params)
    assert tokens(unseeded) != tokens(rest)  # without the indices, the seeds of prompts 0 and 1
    with pytest.raises(ValueError, match="indices"):
        LocalSampler(model, tokenizer).generate(PROMPTS, params, indices=[0])


def test_samples_from_lora_model_and_its_teacher(tiny_policy):
    model, tokenizer = tiny_policy
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=6, seed=1)
    base = LocalSampler(model, tokenizer).generate(PROMPTS, params)
    student = apply_lora(copy.deepcopy(model), LoraSpec(r=2))
    with torch.no_grad():
        for name, param in student.named_parameters():
            if "lora_B" in name:
                param.normal_(std=1.0)
    with teacher_mode(student):
        teacher = LocalSampler(student, tokenizer).generate(PROMPTS, params)
    assert [[s.token_ids for s in r] for r in teacher] == [[s.token_ids for s in r] for r in base]
    changed = LocalSampler(student, tokenizer).generate(PROMPTS, params)
    assert [[s.token_ids for s in r] for r in changed] != [[s.token_ids for s in r] for r in base]
