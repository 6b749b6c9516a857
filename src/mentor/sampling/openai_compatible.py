"""Sampling from any OpenAI-compatible HTTP server (vLLM, ``transformers serve``, hosted APIs).

Design choices:

- **One request per sample.** ``params.n`` samples are ``n`` requests that differ only in their sample
  index (the request's ``seed`` is ``params.seed + sample_index``). Each sample is then cached on its own,
  asking for more samples later reuses the ones already paid for, and servers without ``n`` support work.
- **A persistent request cache** (SQLite, WAL mode) keyed by a hash of (base_url, model, endpoint, request
  body, sample index). A sample is stored the moment its request returns, so a job killed part-way and
  re-run with the same arguments sends only the requests that had not completed. ``params.n`` is not part
  of the key. Rows hold the key hash, the text and the finish reason: never the request or the API key.
- **Retries** with exponential backoff and jitter (or the server's ``Retry-After``) on 408, 429, 5xx,
  timeouts, connection errors, and bodies that are not JSON (or not UTF-8) or carry no ``choices``. Any
  other 4xx raises ``SamplerError`` at once. ``stats`` counts what happened: ``requests`` (HTTP attempts),
  ``cache_hits``, ``retries`` and ``retry_<cause>`` (``http_429``, ``http_408``, ``http_5xx``,
  ``bad_body``, ``connection``), and ``failures`` (retries exhausted).
- **The API key** is read from the environment variable ``api_key_env`` at request time and sent only in
  the ``Authorization`` header; it is redacted from every log line and error message, and never stored.
- The server gives no token ids or log-probs here, so ``Sample.token_ids`` and ``Sample.logprobs`` are
  empty. ``finish_reason`` is "length" when the server says so and "stop" otherwise.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import random
import socket
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mentor.sampling import Sample, SamplingParams

logger = logging.getLogger(__name__)

_RETRYABLE_STATUS = {408, 429}
_MAX_DELAY_S = 60.0


class SamplerError(RuntimeError):
    """A request failed for good: a non-retryable HTTP status, or retries exhausted."""


class ServerUnreachable(SamplerError, ConnectionError):
    """Nothing listens at the configured ``base_url`` (checked before a run starts)."""


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None, cause: str = "connection") -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.cause = cause


class _Cache:
    """``key -> (text, finish_reason)`` in SQLite; one connection shared by the threads under a lock."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._lock = threading.Lock()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS samples (key TEXT PRIMARY KEY, text TEXT, finish TEXT)")
            self._db.execute("SELECT key, text, finish FROM samples LIMIT 1").fetchall()
        except sqlite3.DatabaseError as err:  # not SQLite, or another table: never overwritten
            self._db.close()
            raise ValueError(f"{path}: not a readable request cache ({err}); move it away to start a new "
                             "one") from None

    def get(self, key: str) -> Sample | None:
        with self._lock:
            row = self._db.execute("SELECT text, finish FROM samples WHERE key = ?", (key,)).fetchone()
        return None if row is None else Sample(row[0], [], [], row[1])

    def put(self, key: str, sample: Sample) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO samples VALUES (?, ?, ?)", (key, sample.text, sample.finish_reason)
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()


class _RateLimiter:
    """At most ``per_s`` request starts per second, spaced evenly, across threads."""

    def __init__(self, per_s: float) -> None:
        self._interval = 1.0 / per_s
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self._interval
        time.sleep(start - now)


class OpenAISampler:
    """``chat`` and ``complete`` against ``{base_url}/v1/chat/completions`` and ``/v1/completions``.

    ``base_url`` is the server root; a trailing ``/v1`` (the OpenAI client's convention) is accepted too.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        cache_path: str | os.PathLike[str] | None = None,
        concurrency: int = 4,
        max_retries: int = 5,
        timeout_s: float = 60,
        backoff_s: float = 1.0,
        rate_limit_per_s: float | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if rate_limit_per_s is not None and rate_limit_per_s <= 0:
            raise ValueError(f"rate_limit_per_s must be > 0, got {rate_limit_per_s}")
        _parse_base_url(base_url)  # a malformed one fails here, not after a minute of retries
        self.base_url = base_url.rstrip("/").removesuffix("/v1")  # "http://host:8000" or ".../v1" alike
        self.model = model
        self.api_key_env = api_key_env
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self.backoff_s = backoff_s
        self._cache = _Cache(cache_path) if cache_path is not None else None
        self._limiter = _RateLimiter(rate_limit_per_s) if rate_limit_per_s else None
        self.stats: Counter[str] = Counter()
        self._stats_lock = threading.Lock()

    def _count(self, *names: str) -> None:
        with self._stats_lock:
            self.stats.update(names)

    def __repr__(self) -> str:
        return f"OpenAISampler(base_url={self.base_url!r}, model={self.model!r}, api_key_env={self.api_key_env!r})"

    def chat(
        self,
        messages_list: list[list[dict[str, Any]]],
        params: SamplingParams,
        progress: Callable[[int], None] | None = None,
    ) -> list[list[Sample]]:
        """``params.n`` samples per conversation, as ``result[conversation_index][sample_index]``."""
        return self._run("/v1/chat/completions", "messages", messages_list, params, progress)

    def complete(
        self, prompts: list[str], params: SamplingParams, progress: Callable[[int], None] | None = None
    ) -> list[list[Sample]]:
        """``params.n`` samples per raw prompt, as ``result[prompt_index][sample_index]``."""
        return self._run("/v1/completions", "prompt", prompts, params, progress)

    generate = complete  # the interface the local sampler shares

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()

    def _run(
        self,
        endpoint: str,
        field: str,
        inputs: list[Any],
        params: SamplingParams,
        progress: Callable[[int], None] | None,
    ) -> list[list[Sample]]:
        """Every (input, sample index) as one cached request; ``progress(inputs completed so far)``."""
        results: list[list[Sample | None]] = [[None] * params.n for _ in inputs]
        remaining = [params.n] * len(inputs)
        completed = 0
        pool = ThreadPoolExecutor(max_workers=self.concurrency)
        try:
            futures = {
                pool.submit(self._sample, endpoint, self._body(field, x, params, j), j): (i, j)
                for i, x in enumerate(inputs)
                for j in range(params.n)
            }
            for future in as_completed(futures):
                i, j = futures[future]
                results[i][j] = future.result()
                remaining[i] -= 1
                if remaining[i] == 0:
                    completed += 1
                    if progress is not None:
                        progress(completed)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # on error: send nothing more
        return results  # type: ignore[return-value]

    def _body(self, field: str, payload: Any, params: SamplingParams, sample_index: int) -> dict[str, Any]:
        body = {
            "model": self.model,
            field: payload,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_new_tokens,
            "seed": params.seed + sample_index,
        }
        if params.stop:
            body["stop"] = list(params.stop)
        return body

    def _sample(self, endpoint: str, body: dict[str, Any], sample_index: int) -> Sample:
        identity = [self.base_url, self.model, endpoint, body, sample_index]
        key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        if self._cache is not None and (cached := self._cache.get(key)) is not None:
            self._count("cache_hits")
            return cached
        sample = self.post(endpoint, body, _sample_of)
        if self._cache is not None:
            self._cache.put(key, sample)
        return sample

    def post(self, endpoint: str, body: dict[str, Any], parse: Callable[[dict], Any]) -> Any:
        """POST ``body`` to ``endpoint`` with the retries above; ``parse`` reads the JSON answer (a KeyError,
        IndexError, TypeError or ValueError there is a malformed body, retried)."""
        url = self.base_url + endpoint
        for attempt in range(self.max_retries + 1):
            if self._limiter is not None:
                self._limiter.wait()
            self._count("requests")
            try:
                return self._post(url, body, parse)
            except _Retryable as error:
                if attempt == self.max_retries:
                    self._count("failures")
                    raise SamplerError(f"POST {url} failed after {attempt + 1} attempts: {error}") from None
                self._count("retries", f"retry_{error.cause}")
                delay = error.retry_after
                if delay is None:
                    delay = self.backoff_s * 2**attempt * random.uniform(0.5, 1.5)
                delay = min(delay, _MAX_DELAY_S)
                logger.warning(
                    "POST %s attempt %d failed (%s); retrying in %.2fs", url, attempt + 1, error, delay
                )
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _post(self, url: str, body: dict[str, Any], parse: Callable[[dict], Any]) -> Any:
        """One attempt: what ``parse`` reads, ``_Retryable``, or ``SamplerError`` for a non-retryable status."""
        key = os.environ.get(self.api_key_env, "")
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
        deadline = time.monotonic() + self.timeout_s
        watchdog = _Watchdog(deadline)
        try:
            with _opener(watchdog).open(request, timeout=self.timeout_s) as response:
                raw = response.read()
            watchdog.cancel()  # a whole answer read in time is kept, whatever the timer does next
        except urllib.error.HTTPError as error:
            if 300 <= error.code < 400:
                raise SamplerError(f"HTTP {error.code} from POST {url}: redirected to "
                                   f"{error.headers.get('Location')!r}; mentor sends the API key only to the "
                                   "configured base_url and follows no redirect: set base_url to the server "
                                   "that answers") from None
            try:
                detail = _redact(error.read()[:300].decode(errors="replace"), key)
            except (OSError, http.client.HTTPException):
                detail = "(unreadable body)"
            message = f"HTTP {error.code} from POST {url}: {detail}"
            if error.code in _RETRYABLE_STATUS or error.code >= 500:
                cause = f"http_{error.code}" if error.code in _RETRYABLE_STATUS else "http_5xx"
                raise _Retryable(message, _retry_after(error.headers.get("Retry-After")), cause) from None
            raise SamplerError(message) from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as error:  # timeouts included
            if watchdog.fired:
                raise _Retryable(_past_deadline(url, self.timeout_s), cause="connection") from None
            cause = "bad_body" if isinstance(error, http.client.IncompleteRead) else "connection"
            raise _Retryable(_redact(f"{type(error).__name__}: {error}", key), cause=cause) from None
        finally:
            watchdog.cancel()
        try:
            return parse(json.loads(raw))
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as error:
            if watchdog.fired:  # the shut socket read as a response that simply ended
                raise _Retryable(_past_deadline(url, self.timeout_s), cause="connection") from None
            raise _Retryable(f"malformed response body ({type(error).__name__}: {error})", cause="bad_body") from None


def _sample_of(answer: dict) -> Sample:
    """The first choice of a completions or chat answer as a Sample (text and finish reason)."""
    choice = answer["choices"][0]
    text = choice["message"]["content"] if "message" in choice else choice["text"]
    if not isinstance(text, str):
        raise TypeError(f"text is {type(text).__name__}")
    finish = "length" if choice.get("finish_reason") == "length" else "stop"
    return Sample(text, [], [], finish)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A 3xx is an HTTPError: following it would carry the Authorization header to another server."""

    def redirect_request(self, *args: Any) -> None:
        return None


def _past_deadline(url: str, timeout_s: float) -> str:
    return f"POST {url}: no complete answer within the request's deadline ({timeout_s:g} s)"


class _Watchdog:
    """Shuts a request's socket down at its deadline. The socket timeout bounds each read, and a server
    that trickles its status line or headers a byte at a time resets it with every byte; shutting the
    socket down wakes the read that blocks, wherever in the response it is."""

    def __init__(self, deadline: float) -> None:
        self.fired, self._done = False, False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(deadline - time.monotonic(), 0.0), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.fired:
                self._shutdown(sock)

    def _fire(self) -> None:
        with self._lock:
            if self._done:  # the answer was read in time
                return
            self.fired = True
            for sock in self._sockets:
                self._shutdown(sock)

    @staticmethod
    def _shutdown(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):  # already closed
            sock.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        with self._lock:
            self._done = True
        self._timer.cancel()


def _watched(connection_class: type, watchdog: _Watchdog) -> type:
    class Watched(connection_class):
        def connect(self) -> None:
            super().connect()
            watchdog.watch(self.sock)

    return Watched


def _opener(watchdog: _Watchdog) -> urllib.request.OpenerDirector:
    """urllib's opener for one request: no redirects, and every connection it opens watched to the deadline."""
    http_class = _watched(http.client.HTTPConnection, watchdog)
    https_class = _watched(http.client.HTTPSConnection, watchdog)

    class HTTP(urllib.request.HTTPHandler):
        def http_open(self, req):
            return self.do_open(http_class, req)

    class HTTPS(urllib.request.HTTPSHandler):
        def https_open(self, req):
            return self.do_open(https_class, req, context=self._context)

    return urllib.request.build_opener(_NoRedirect, HTTP, HTTPS)


def _parse_base_url(base_url: str):
    url = urlparse(base_url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError(f"base_url must be http://HOST[:PORT] or https://..., got {base_url!r}")
    return url


def check_reachable(base_url: str, timeout_s: float = 5.0) -> None:
    """Fail now, in one line, when nothing listens at ``base_url`` (not after minutes of retries)."""
    url = _parse_base_url(base_url)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout_s):
            pass
    except OSError as error:
        raise ServerUnreachable(f"cannot reach {base_url}: {error.strerror or error}") from None


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _redact(text: str, key: str) -> str:
    return text.replace(key, "<redacted>") if key else text
