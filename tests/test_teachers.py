"""mentor.teachers: the simulated world teacher (determinism, error rate, styles, truncation, reading the
problem from the messages), SamplerTeacher over a local model and over an OpenAI-compatible server."""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from mentor.sampling import SamplingParams
from mentor.sampling.local import LocalSampler
from mentor.tasks import load_task
from mentor.teachers import SamplerTeacher, TeacherConfig, build_teacher, user_messages
from mentor.world.problems import (
    ANSWER_RE,
    CANONICAL_STEP_RE,
    WorldProblem,
    canonical_solution,
    match_step,
    parse_question,
    parse_trace,
    question_text,
)
from mentor.world.teacher import SimulatedWorldTeacher, restyle
from tiny import tiny_llama

TASK = load_task("world")
PROBLEMS = TASK.problems("train", n=6)


def chats(problems=PROBLEMS):
    return [user_messages(TASK.prompt(p)) for p in problems]


def texts(out):
    return [[s.text for s in row] for row in out]


@pytest.mark.parametrize("spec", ["world", "world:steps=6,modulus=23", "world:steps=1,inputs=1"])
def test_parse_question_inverts_question_text(spec):
    for problem in load_task(spec).problems("test", n=20):
        wp = WorldProblem.from_meta(problem.meta)
        parsed = parse_question(f"System says hi.\n\n{problem.question}\n\nPlease be brief.")
        assert parsed is not None and parsed.to_meta() == wp.to_meta() and parsed.answer == wp.answer


def test_parse_question_rejects_what_is_not_a_world_problem():
    assert parse_question("What is 2 + 2?") is None
    wp = WorldProblem.from_meta(PROBLEMS[0].meta)
    first = f"Then {wp.defs[0][0]} is"  # a step that uses an undefined variable z
    assert parse_question(question_text(wp).replace(first, f"{first} z + a, x is", 1)) is None


def test_simulated_teacher_is_deterministic_and_independent_of_the_batch():
    teacher = SimulatedWorldTeacher("t", error_rate=0.5, seed=3)
    params = SamplingParams(n=4, seed=1)
    first = texts(teacher.chat(chats(), params))
    assert first == texts(SimulatedWorldTeacher("t", error_rate=0.5, seed=3).chat(chats(), params))
    alone = texts(teacher.chat(chats(PROBLEMS[2:3]), params))
    assert alone == first[2:3]
    # asking for more samples keeps the first ones: sample j depends on j, not on n
    assert [row[:4] for row in texts(teacher.chat(chats(), SamplingParams(n=6, seed=1)))] == first
    assert texts(SimulatedWorldTeacher("t", error_rate=0.5, seed=4).chat(chats(), params)) != first
    assert texts(teacher.chat(chats(), SamplingParams(n=4, seed=2))) != first
    assert teacher.stats()["requests"] == 24 + 4 + 36 + 24


def test_greedy_simulated_teacher_answers_the_same_every_time():
    out = SimulatedWorldTeacher("t", error_rate=0.5).chat(chats(), SamplingParams(n=5, temperature=0.0))
    assert all(len(set(row)) == 1 for row in texts(out))


def test_error_rate_zero_and_one():
    params = SamplingParams(n=3)
    clean = SimulatedWorldTeacher("clean", error_rate=0.0).chat(chats(), params)
    for problem, row in zip(PROBLEMS, clean):
        canonical = canonical_solution(WorldProblem.from_meta(problem.meta))
        assert [s.text for s in row] == [canonical] * 3
        assert all(s.finish_reason == "stop" and s.token_ids == [] for s in row)
    wrong = SimulatedWorldTeacher("wrong", error_rate=1.0).chat(chats(), params)
    # every sample has an error the exact critic finds (its answer may still be right: a skipped step, or
    # a wrong value the target does not depend on)
    assert all(TASK.critique(p, s.text).case != "correct" for p, row in zip(PROBLEMS, wrong) for s in row)


def test_error_rate_is_respected_over_many_samples():
    problems = TASK.problems("train", n=50)
    teacher = SimulatedWorldTeacher("t", error_rate=0.3, seed=1, error_kinds=("result", "substitution"))
    out = teacher.chat(chats(problems), SamplingParams(n=8))
    wrong = sum(not TASK.verify(p, s.text).correct for p, row in zip(problems, out) for s in row)
    # the answer depends on every step of a world problem, so one error always makes it wrong: 30% of 400
    assert 95 <= wrong <= 145


def test_alternative_style_reads_differently_and_errors_keep_the_style():
    ok = SimulatedWorldTeacher("alt", error_rate=0.0, style="alternative").chat(chats(), SamplingParams(n=2))
    for problem, row in zip(PROBLEMS, ok):
        for sample in row:
            assert TASK.verify(problem, sample.text).correct
            steps, _ = parse_trace(sample.text)
            assert steps and all(s.parsed for s in steps)  # read by the critic...
            assert not any(CANONICAL_STEP_RE.match(s.body) for s in steps)  # ...but not the canonical notation
    bad = SimulatedWorldTeacher("alt", error_rate=1.0, style="alternative", error_kinds=("result",))
    for row in bad.chat(chats(), SamplingParams(n=2)):
        for sample in row:
            steps, _ = parse_trace(sample.text)
            assert all(match_step(s.body) and match_step(s.body)[0] > 0 for s in steps)  # wrong, still restyled


def test_restyle_keeps_values_and_answer():
    wp = WorldProblem.from_meta(PROBLEMS[0].meta)
    text = restyle(canonical_solution(wp), 0)
    assert ANSWER_RE.search(text).group(1) == str(wp.answer)
    assert text.count("<step_") == len(wp.defs) and " gives " in text


def test_max_new_tokens_cuts_words_and_says_length():
    out = SimulatedWorldTeacher("t", error_rate=0.0).chat(chats(PROBLEMS[:1]), SamplingParams(n=1, max_new_tokens=9))
    sample = out[0][0]
    assert sample.finish_reason == "length" and len(sample.text.split()) == 9
    assert canonical_solution(WorldProblem.from_meta(PROBLEMS[0].meta)).startswith(sample.text)


def test_simulated_teacher_reads_the_problem_from_the_last_user_message():
    teacher = SimulatedWorldTeacher("t", error_rate=0.0)
    messages = [{"role": "system", "content": "You are a careful tutor."},
                {"role": "user", "content": f"Solve this.\n{PROBLEMS[1].question}\nShow your steps."}]
    (sample,), = teacher.chat([messages], SamplingParams())
    assert TASK.verify(PROBLEMS[1], sample.text).correct
    with pytest.raises(ValueError, match="found no world question"):
        teacher.chat([user_messages("What is 2 + 2?")], SamplingParams())


def test_bad_simulated_options_are_errors():
    for bad in ({"error_rate": 1.5}, {"style": "poetic"}, {"error_kinds": ("typo",)}, {"delay_s": -1}):
        with pytest.raises(ValueError):
            TeacherConfig(**bad)
    with pytest.raises(ValueError, match="base_url"):
        TeacherConfig(kind="openai")
    assert TeacherConfig().display_name() == "sim-canonical-0.2"


@pytest.fixture(scope="module")
def chat_policy():
    words = ["work", "modulo", "let", "then", "is", "what", "a", "b", "c", "d", "e", "f", "=", "+", "-", "*",
             "step", "answer", "user", "assistant", "system"] + [str(i) for i in range(10)]
    backend = Tokenizer(models.WordLevel(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece(prefix="##")
    backend.train_from_iterator([" ".join(words)], trainers.WordLevelTrainer(
        special_tokens=["<unk>", "<s>", "</s>", "<pad>"]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>",
                                        eos_token="</s>", pad_token="<pad>")
    tokenizer.chat_template = ("{% for m in messages %}{{ m.role }} {{ m.content }} {% endfor %}"
                               "{% if add_generation_prompt %}assistant {% endif %}")
    model = tiny_llama(len(tokenizer), eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    with torch.no_grad():
        model.lm_head.weight.mul_(10.0)
    return model, tokenizer


def test_sampler_teacher_over_a_local_model_uses_the_chat_template(chat_policy):
    model, tokenizer = chat_policy
    seen = []

    class Recording(LocalSampler):
        def generate(self, prompts, params, progress=None):
            seen.extend(prompts)
            return super().generate(prompts, params, progress)

    teacher = SamplerTeacher("local", Recording(model, tokenizer))
    params = SamplingParams(n=3, max_new_tokens=6, seed=7)
    out = teacher.chat(chats(PROBLEMS[:3]), params)
    assert [len(row) for row in out] == [3, 3, 3] and all(s.token_ids for row in out for s in row)
    assert seen[0] == f"user {PROBLEMS[0].question} assistant "
    # a chat's samples do not depend on the other chats of the call
    assert texts(teacher.chat(chats(PROBLEMS[1:2]), params)) == texts(out)[1:2]
    assert teacher.stats()["requests"] == 12
    with pytest.raises(ValueError, match="needs a tokenizer"):
        SamplerTeacher("x", object())


def test_sampler_teacher_over_a_server_counts_retries():
    from test_sampling_openai import Script, echo, make_handler

    script = Script()
    script.actions = ["429", "truncated", "500"]
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(script))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        config = TeacherConfig(kind="openai", base_url=f"http://127.0.0.1:{httpd.server_address[1]}",
                               model="m", concurrency=1, backoff_s=0.01, api_key_env="MENTOR_NO_SUCH_KEY")
        teacher = build_teacher(config)
        out = teacher.chat(chats(PROBLEMS[:2]), SamplingParams(n=2, seed=5, max_new_tokens=64))
        assert texts(out) == [[echo({"messages": chat, "seed": 5 + j, "temperature": 1.0, "top_p": 1.0,
                                     "max_tokens": 64}) for j in range(2)] for chat in chats(PROBLEMS[:2])]
        stats = teacher.stats()
        assert stats["retries"] == 3 and stats["retry_http_429"] == 1 and stats["retry_bad_body"] == 1
        assert stats["retry_http_5xx"] == 1 and stats["requests"] == 7
        teacher.close()
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_local_teacher_from_config_runs_generate(chat_policy, tmp_path):
    from mentor.offline.generate import GenerateConfig, load_responses, run_generate

    config = TeacherConfig(kind="local", model="tiny")
    teacher = build_teacher(config, load_model=lambda spec: chat_policy)
    assert teacher.name == "tiny" and isinstance(teacher, SamplerTeacher)
    summary = run_generate(GenerateConfig(n_problems=2, group_size=2, max_new_tokens=5, teacher=config),
                           tmp_path / "out", teacher=teacher)
    rows = load_responses(tmp_path / "out")
    assert summary["responses"] == 4 and [r.teacher for r in rows] == ["tiny"] * 4
    assert summary["truncated"] == sum(r.finish_reason == "length" for r in rows)
