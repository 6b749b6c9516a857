"""OpenAISampler against real HTTP servers on loopback, scripted to fail in the ways real servers do."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler

import pytest

from mentor.sampling import SamplingParams
from mentor.sampling.openai_compatible import OpenAISampler, SamplerError
from serving import loopback_server

KEY = "sk-test-SECRET-0123456789"
KEY_ENV = "MENTOR_TEST_OPENAI_KEY"
CHATS = [[{"role": "user", "content": f"question {i}"}] for i in range(3)]
PROMPTS = [f"prompt {i}" for i in range(4)]


def echo(body: dict) -> str:
    """The server's deterministic answer: a hash of what decides the sample."""
    decisive = {k: body.get(k) for k in ("messages", "prompt", "seed", "temperature", "top_p", "max_tokens")}
    return hashlib.sha256(json.dumps(decisive, sort_keys=True).encode()).hexdigest()[:16]


class Script:
    """What the server does: ``actions`` first, one per request; then "ok", or ``fail`` once ``fail_after``
    "ok"s have been handed out."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.actions: list[str] = []
        self.fail_after: int | None = None
        self.fail = "500"
        self.delay_s = 0.0
        self.requests: list[dict] = []
        self.answered: list[dict] = []
        self.auth: list[str | None] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.granted = 0  # "ok"s handed out: counted when decided, so concurrent requests cannot overshoot

    def next_action(self, body: dict, auth: str | None) -> str:
        with self.lock:
            self.requests.append(body)
            self.auth.append(auth)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            if self.actions:
                return self.actions.pop(0)
            if self.fail_after is not None and self.granted >= self.fail_after:
                return self.fail
            self.granted += 1
            return "ok"


def make_handler(script: Script) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def reply(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            auth = self.headers.get("Authorization")
            action = script.next_action(body, auth)
            try:
                time.sleep(script.delay_s)
                self.act(action, body, auth)
            finally:
                with script.lock:
                    script.in_flight -= 1

        def act(self, action: str, body: dict, auth: str | None) -> None:
            if action == "ok":
                choice = {"finish_reason": "length" if body["max_tokens"] <= 4 else "stop"}
                if self.path == "/v1/chat/completions":
                    choice["message"] = {"role": "assistant", "content": echo(body)}
                else:
                    choice["text"] = echo(body)
                with script.lock:
                    script.answered.append(body)
                self.reply(200, json.dumps({"choices": [choice]}).encode())
            elif action.startswith("429"):  # "429" or "429:<retry-after>"
                _, _, after = action.partition(":")
                self.reply(429, b'{"error": "slow down"}', {"Retry-After": after} if after else None)
            elif action in ("400", "401", "404", "500"):  # echo the header back, as a careless server might
                self.reply(int(action), json.dumps({"error": f"bad request, you sent {auth}"}).encode())
            elif action == "hang":
                time.sleep(1.0)
            elif action == "truncated":
                self.reply(200, b'{"choices": [{"text": "abc", "fin')
            elif action == "short":  # Content-Length promises more than is sent
                self.send_response(200)
                self.send_header("Content-Length", "500")
                self.end_headers()
                self.wfile.write(b'{"choices": [')
            elif action.startswith("redirect:"):  # "redirect:<url>": a 302 elsewhere
                self.reply(302, b"", {"Location": action.partition(":")[2]})
            elif action == "trickle":  # a valid answer, one byte every 20 ms: each read is quick, the whole slow
                payload = json.dumps({"choices": [{"text": echo(body), "finish_reason": "stop"}]}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                for byte in payload:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.02)
            elif action == "trickle-head":  # the status line and headers one byte every 20 ms (about 3 s)
                head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Pad: " + b"x" * 100 + b"\r\n"
                for byte in head:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.02)
                self.close_connection = True
            elif action == "nochoices":
                self.reply(200, b'{"object": "error", "message": "overloaded"}')
            else:
                raise AssertionError(f"unknown action {action}")

    return Handler


@pytest.fixture
def server():
    script = Script()
    with loopback_server(make_handler(script)) as url:
        yield script, url


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)


def sampler(base_url: str, **kwargs) -> OpenAISampler:
    options = {"api_key_env": KEY_ENV, "timeout_s": 0.3, "backoff_s": 0.01, "max_retries": 3, **kwargs}
    return OpenAISampler(base_url, "teacher-1", **options)


def test_chat_and_complete_send_params_and_parse(server):
    script, url = server
    seen: list[int] = []
    params = SamplingParams(n=2, temperature=0.7, top_p=0.9, max_new_tokens=16, seed=5, stop=["\n\n"])
    out = sampler(url).chat(CHATS, params, progress=seen.append)
    assert [len(row) for row in out] == [2, 2, 2]
    assert sorted(seen) == seen and seen[-1] == 3
    assert len(script.requests) == 6
    for i, row in enumerate(out):
        for j, sample in enumerate(row):
            body = {"messages": CHATS[i], "seed": 5 + j, "temperature": 0.7, "top_p": 0.9, "max_tokens": 16}
            assert sample.text == echo(body)
            assert (sample.finish_reason, sample.token_ids, sample.logprobs) == ("stop", [], [])
    first = script.requests[0]
    assert first["model"] == "teacher-1" and first["stop"] == ["\n\n"] and "n" not in first
    assert set(script.auth) == {f"Bearer {KEY}"}

    out = sampler(url + "/v1/").complete(PROMPTS, SamplingParams(max_new_tokens=3))
    assert [s.finish_reason for row in out for s in row] == ["length"] * 4
    assert out[2][0].text == echo(
        {"prompt": "prompt 2", "seed": 0, "temperature": 1.0, "top_p": 1.0, "max_tokens": 3}
    )
    assert "stop" not in script.requests[-1]


def test_no_authorization_header_without_key(server, monkeypatch):
    script, url = server
    monkeypatch.delenv(KEY_ENV)
    sampler(url).complete(PROMPTS[:1], SamplingParams())
    assert script.auth == [None]


@pytest.mark.parametrize("failure", ["429", "500", "hang", "truncated", "short", "nochoices", "trickle"])
def test_retryable_failures_recover(server, failure):
    script, url = server
    script.actions = [failure, failure]
    out = sampler(url).complete(PROMPTS[:1], SamplingParams())
    assert out[0][0].text == echo(script.answered[0])
    assert len(script.requests) == 3


def test_timeout_bounds_the_whole_request_not_each_read(server):
    script, url = server
    script.actions = ["trickle"]
    start = time.monotonic()
    out = sampler(url, timeout_s=0.3).complete(PROMPTS[:1], SamplingParams())
    assert out[0][0].text == echo(script.answered[0]) and len(script.requests) == 2
    assert time.monotonic() - start < 1.0  # the trickled answer (about 1.5 s) was given up at its deadline


def test_timeout_bounds_the_status_line_and_headers_too(server):
    script, url = server
    script.actions = ["trickle-head"]
    start = time.monotonic()
    out = sampler(url, timeout_s=0.3).complete(PROMPTS[:1], SamplingParams())
    assert out[0][0].text == echo(script.answered[0]) and len(script.requests) == 2
    assert time.monotonic() - start < 1.0  # the trickled head (about 3 s) was given up at its deadline
    with pytest.raises(SamplerError, match="deadline"):
        script.actions = ["trickle-head"]
        sampler(url, timeout_s=0.3, max_retries=0).complete(["another prompt"], SamplingParams())


def test_a_redirect_is_refused_and_the_key_never_leaves_base_url(server):
    script, url = server
    elsewhere = Script()
    with loopback_server(make_handler(elsewhere)) as other:
        script.actions = [f"redirect:{other}/v1/completions"]
        with pytest.raises(SamplerError, match="redirected to .* follows no redirect") as info:
            sampler(url).complete(PROMPTS[:1], SamplingParams())
    assert elsewhere.requests == [] and script.auth == [f"Bearer {KEY}"]
    assert KEY not in str(info.value)


def test_retry_after_is_honoured(server):
    script, url = server
    script.actions = ["429:0.3"]
    start = time.monotonic()
    sampler(url).complete(PROMPTS[:1], SamplingParams())
    assert time.monotonic() - start >= 0.3
    assert len(script.requests) == 2


def test_retries_exhausted_raise_without_key(server, caplog):
    script, url = server
    script.fail_after = 0
    with caplog.at_level(logging.DEBUG), pytest.raises(SamplerError, match="after 3 attempts") as info:
        sampler(url, max_retries=2).complete(PROMPTS[:1], SamplingParams())
    assert len(script.requests) == 3
    assert "you sent Bearer <redacted>" in str(info.value)
    assert "retrying" in caplog.text and KEY not in caplog.text
    assert KEY not in "".join(traceback.format_exception(info.type, info.value, info.tb))


@pytest.mark.parametrize("status", ["400", "401", "404"])
def test_non_retryable_status_raises_at_once(server, status):
    script, url = server
    script.fail, script.fail_after = status, 0
    with pytest.raises(SamplerError, match=f"HTTP {status}") as info:
        sampler(url).chat(CHATS[:1], SamplingParams())
    assert len(script.requests) == 1
    assert KEY not in str(info.value) and KEY not in repr(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_concurrency_limit(server):
    script, url = server
    script.delay_s = 0.05
    sampler(url, concurrency=3).complete(PROMPTS, SamplingParams(n=3))
    assert len(script.requests) == 12
    assert 1 < script.max_in_flight <= 3


def test_rate_limit(server):
    script, url = server
    start = time.monotonic()
    sampler(url, concurrency=4, rate_limit_per_s=20).complete(PROMPTS, SamplingParams(n=2))
    assert time.monotonic() - start >= 7 / 20 - 0.02
    assert len(script.requests) == 8


def test_cache_second_run_sends_nothing(server, tmp_path):
    script, url = server
    cache = tmp_path / "cache.sqlite"
    params = SamplingParams(n=2, temperature=0.5)
    first = sampler(url, cache_path=cache).chat(CHATS, params)
    assert len(script.requests) == 6
    seen: list[int] = []
    assert sampler(url, cache_path=cache).chat(CHATS, params, progress=seen.append) == first
    assert len(script.requests) == 6 and seen[-1] == 3
    # one more sample per conversation: only the new sample index is sent
    more = sampler(url, cache_path=cache).chat(CHATS, SamplingParams(n=3, temperature=0.5))
    assert [row[:2] for row in more] == first and len(script.requests) == 9
    # other params, other endpoint: not served from the cache
    sampler(url, cache_path=cache).chat(CHATS, SamplingParams(n=2, temperature=0.6))
    sampler(url, cache_path=cache).complete(["question 0"], SamplingParams(temperature=0.5))
    assert len(script.requests) == 16


def test_killed_run_resumes_with_only_missing_requests(server, tmp_path):
    script, url = server
    cache = tmp_path / "cache.sqlite"
    params = SamplingParams(n=2)
    script.fail_after = 3  # the server breaks for good after three answers: the first run dies
    with pytest.raises(SamplerError):
        sampler(url, cache_path=cache, concurrency=2, max_retries=1).complete(PROMPTS, params)
    done = [json.dumps(b, sort_keys=True) for b in script.answered]
    assert 3 <= len(done) < 8
    script.fail_after, script.answered = None, []
    out = sampler(url, cache_path=cache, concurrency=2).complete(PROMPTS, params)
    resent = [json.dumps(b, sort_keys=True) for b in script.answered]
    assert len(resent) == 8 - len(done) and not set(resent) & set(done)
    assert out == sampler(url).complete(PROMPTS, params)  # same samples as an uninterrupted run


def test_key_never_stored_or_shown(server, tmp_path):
    script, url = server
    cache = tmp_path / "cache.sqlite"
    client = sampler(url, cache_path=cache)
    client.chat(CHATS, SamplingParams(n=2))
    script.fail, script.fail_after = "401", 0
    with pytest.raises(SamplerError) as info:
        client.complete(PROMPTS, SamplingParams())
    client.close()
    assert KEY not in str(info.value) and KEY not in repr(client) and KEY_ENV in repr(client)
    files = [p for p in tmp_path.iterdir() if p.name.startswith("cache.sqlite")]
    assert files and all(KEY.encode() not in p.read_bytes() for p in files)
    assert all(KEY not in json.dumps(b) for b in script.requests)
