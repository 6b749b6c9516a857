"""The LLM critic: its parser on a corpus of critic replies, and end to end against a loopback server."""

from __future__ import annotations

import json
import random
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mentor.feedback.llm_critic import (
    CRITIC_INSTRUCTIONS,
    LLMCritic,
    build_critic_messages,
    parse_critique,
    strip_thinking,
)
from mentor.sampling.openai_compatible import OpenAISampler
from mentor.world.critic import corrected_solution
from mentor.world.critic import critique as world_critique
from mentor.world.problems import WorldProblem, WorldTask, canonical_solution, corrupt_trace

PROBLEMS = WorldTask().problems("test", n=10)
KINDS = [None, "result", "substitution", "skip", "truncate"]


def trace_for(index: int) -> str:
    """Problem ``index``'s solver trace: canonical, or corrupted at step 2 by one of the error kinds."""
    wp = WorldProblem.from_meta(PROBLEMS[index].meta)
    kind = KINDS[index % len(KINDS)]
    return canonical_solution(wp) if kind is None else corrupt_trace(wp, random.Random(index), kind, 2)


def reply_for(index: int) -> str:
    """What a good critic says: the world critic's verdict in the CASE/FIRST_ERROR format."""
    fb = world_critique(PROBLEMS[index], trace_for(index))
    first = "none" if fb.first_error_step is None else fb.first_error_step
    return f"CASE: {fb.case}\nFIRST_ERROR: {first}\n{corrected_solution(fb)}"


def assert_matches_world(fb, index: int) -> None:
    world = world_critique(PROBLEMS[index], trace_for(index))
    assert (fb.case, fb.first_error_step) == (world.case, world.first_error_step)
    assert corrected_solution(fb) == corrected_solution(world)
    assert len(fb.critique.split("\n", 1)[0]) > 0 and "<step_1>" not in fb.critique.split("\n", 1)[0]


@pytest.mark.parametrize("index", range(len(KINDS)))
def test_good_replies_of_every_case_parse_like_the_world_critic(index):
    fb = parse_critique(PROBLEMS[index], reply_for(index), author="critic", trace=trace_for(index))
    assert_matches_world(fb, index)
    assert fb.author == "critic" and fb.problem_id == PROBLEMS[index].id


def sloppy(text: str) -> str:
    """The same reply as a chatty model writes it: lower-case bold headers, `<step 1>` tags, prose."""
    text = re.sub(r"<step_(\d+)>", r"<Step \1>", text)
    text = text.replace("CASE:", "**case**:").replace("FIRST_ERROR:", "First error:")
    return f"Let me check each step.\n\n{text}\n\nHope this helps!"


@pytest.mark.parametrize("index", range(len(KINDS)))
@pytest.mark.parametrize(
    "wrap",
    [
        lambda r: f"<think>\nStep 2 looks off... CASE: correct?\n</think>\n\n{r}",
        lambda r: f"Okay, the student wrote <step_1> ... hmm.\n</think>\n{r}",  # QwQ: <think> in the prompt
        lambda r: f"Here is my feedback:\n```text\n{r}\n```\n",
        sloppy,
    ],
    ids=["think", "think-open-in-prompt", "code-fence", "sloppy"],
)
def test_wrapped_replies_parse_the_same(index, wrap):
    fb = parse_critique(PROBLEMS[index], wrap(reply_for(index)), author="c", trace=trace_for(index))
    assert_matches_world(fb, index)


@pytest.mark.parametrize("index", [1, 2, 3, 4])
def test_a_missing_first_error_line_is_recovered_from_the_traces(index):
    reply = "\n".join(line for line in reply_for(index).splitlines() if not line.startswith("FIRST_ERROR"))
    assert_matches_world(parse_critique(PROBLEMS[index], reply, author="c", trace=trace_for(index)), index)


def test_strip_thinking():
    assert strip_thinking("<think>a</think>B<THINK>c\nd</think> C") == "B C"
    assert strip_thinking("reasoning only\n</think>\nCASE: correct") == "CASE: correct"
    assert strip_thinking("<think>never finished thinking") == ""
    assert strip_thinking("no thinking") == "no thinking"


def quoting_replies(index: int) -> list[str]:
    wrong = trace_for(index).splitlines()[1].split("> ", 1)[1]  # the solver's wrong step 2
    good = reply_for(index)
    return [
        good.replace("FIRST_ERROR: 2\n", f"FIRST_ERROR: 2\nStep 2 says `{wrong}`, which is wrong.\n"),
        f"CASE: incorrect\nFIRST_ERROR: 2\n{trace_for(index)}",  # "corrects" it to itself
    ]


UNUSABLE = [
    (1, "I cannot help with that.", "no_case"),
    (1, "<think>CASE: correct\n<step_1> x\n<answer> 1", "no_case"),  # thinking never ended
    (1, "CASE: correct\nFIRST_ERROR: none\nThe solution is fine.", "no_trace"),
    (1, "CASE: incorrect\nFIRST_ERROR: 2\n<answer> 4", "no_trace"),
    (1, reply_for(1).rsplit("\n", 1)[0], "no_answer"),
    (1, reply_for(1).rsplit("\n", 1)[0] + "\n<answer>", "no_answer"),
    *[(i, text, "quotes_error") for i in (1, 2) for text in quoting_replies(i)],
]


@pytest.mark.parametrize(
    ("index", "text", "reason"), UNUSABLE, ids=[f"{r}-{n}" for n, (*_, r) in enumerate(UNUSABLE)]
)
def test_unusable_replies_are_never_agreement(index, text, reason):
    from mentor.feedback.llm_critic import _parse

    fb, why = _parse(PROBLEMS[index], text, "c", trace_for(index))
    assert why == reason
    assert fb.case == "unusable" and fb.critique == "" and fb.first_error_step is None
    assert parse_critique(PROBLEMS[index], text, author="c", trace=trace_for(index)) == fb


def test_quoting_is_checked_only_when_the_trace_is_given():
    text = quoting_replies(1)[1]
    assert parse_critique(PROBLEMS[1], text, author="c", trace=trace_for(1)).case == "unusable"
    assert parse_critique(PROBLEMS[1], text, author="c").case == "incorrect"


def test_prompt_carries_question_reference_and_trace():
    problem = PROBLEMS[1]
    (message,) = build_critic_messages(problem, trace_for(1))
    assert message["role"] == "user"
    for part in (problem.question, problem.solution, trace_for(1), "CASE:", "FIRST_ERROR:", "<answer>"):
        assert part in message["content"]
    bare = type(problem)(id="x", question="What is {1}?", answer="7")
    (message,) = build_critic_messages(bare, "<step_1> y", instructions="{reference_kind}: {reference}")
    assert message["content"] == "gold answer: 7"
    assert "faithful scribe" in CRITIC_INSTRUCTIONS


class CriticServer(BaseHTTPRequestHandler):
    """An OpenAI-compatible critic: the world critic's verdict, sometimes inside a think block, garbage
    for problem 5."""

    requests: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        content = body["messages"][0]["content"]
        question = re.search(r"<question>\n(.*?)\n</question>", content, re.S).group(1)
        index = next(i for i, p in enumerate(PROBLEMS) if p.question == question)
        trace = re.search(r"<student_trace>\n(.*?)\n</student_trace>", content, re.S).group(1)
        assert trace == trace_for(index)
        fb = world_critique(PROBLEMS[index], trace)
        first = "none" if fb.first_error_step is None else fb.first_error_step
        text = f"CASE: {fb.case}\nFIRST_ERROR: {first}\n{corrected_solution(fb)}"
        if index % 2:
            text = f"<think>\nLet me check step 1 of the student.\n</think>\n{text}"
        if index == 5:
            text = "As an AI critic I find this solution interesting."
        reply = {"choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


def test_llm_critic_end_to_end_through_an_openai_compatible_server(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), CriticServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    CriticServer.requests = []
    url = f"http://127.0.0.1:{server.server_address[1]}"
    sampler = OpenAISampler(url, "qwq", cache_path=tmp_path / "cache.sqlite", max_retries=1, backoff_s=0.01)
    try:
        critic = LLMCritic(sampler, max_new_tokens=512, name="qwq-critic")
        traces = [trace_for(i) for i in range(len(PROBLEMS))]
        feedback = critic.critique_many(PROBLEMS, traces)
        assert all(r["temperature"] == 0 and r["max_tokens"] == 512 for r in CriticServer.requests)
        assert len(CriticServer.requests) == len(PROBLEMS)
        for index, fb in enumerate(feedback):
            assert fb.author == "qwq-critic" and fb.problem_id == PROBLEMS[index].id
            if index == 5:
                assert fb.case == "unusable" and fb.critique == ""
            else:
                assert_matches_world(fb, index)
        assert critic.stats == {"usable": 9, "unusable": 1, "no_case": 1}
        again = critic.critique(PROBLEMS[2], traces[2])  # served from the cache
        assert again == feedback[2] and len(CriticServer.requests) == len(PROBLEMS)
        assert critic.critique_many([], []) == []
        with pytest.raises(ValueError, match="traces"):
            critic.critique_many(PROBLEMS[:2], traces[:1])
    finally:
        sampler.close()
        server.shutdown()
        server.server_close()
