"""A teacher behind a server (issue 22, part 2): vLLM's OpenAI-compatible server scores the student's own
tokens through its prompt log-probs, so the teacher's weights never sit beside the student's
(``onpolicy.teacher_base_url=http://HOST:PORT onpolicy.teacher_model=SERVED_NAME``).

Each row is one request to ``/v1/completions`` whose prompt is the token ids of the teacher's prompt (with the
method's context) followed by the student's completion, asking for ``prompt_logprobs: k`` (a vLLM field; no
other server here returns prompt log-probs). The answer gives, at every completion position, the teacher's
k most likely ids with their log-probabilities and the log-probability of the student's token: enough for
the top-k-with-tail divergence (:func:`mentor.losses.sparse_teacher_divergence`) and the sampled-token loss,
not for the full-vocabulary ones. vLLM's log-probs are the raw model's (temperature 1). The server must read
the student's ids as the student's tokenizer writes them: checked once through vLLM's ``/tokenize``.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor

import torch

from mentor.train.separate_teacher import FrozenTeacher

# text whose ids the server's tokenizer must give as the student's does: words, digits, symbols, whitespace
PROBE = "Step 1: 12 + 30 = 42, so x = 42 mod 31 = 11.\n<step_2> d is c - a; 'quoted' (and) {braces} ! ?\tend"


def prompt_logprobs_body(model: str, token_ids: list[int], k: int) -> dict:
    """The request that scores every token of ``token_ids`` (one token is generated and ignored)."""
    return {"model": model, "prompt": list(token_ids), "max_tokens": 1, "temperature": 0.0, "prompt_logprobs": k}


def read_prompt_logprobs(answer: dict, start: int, tokens: list[int], k: int
                         ) -> tuple[list[float], list[list[int]], list[list[float]]]:
    """From a prompt-log-probs answer, at the positions ``start, start + 1, ...`` of ``tokens``: the
    log-probability of each token, and the k most likely ids and their log-probabilities. An answer that
    lacks positions, a position's own token or k entries will not change on a retry: SamplerError."""
    from mentor.sampling.openai_compatible import SamplerError

    entries = answer["choices"][0]["prompt_logprobs"]
    if len(entries) < start + len(tokens):
        raise SamplerError(f"prompt_logprobs has {len(entries)} positions, {start + len(tokens)} asked")
    own, ids, logps = [], [], []
    for position, token in enumerate(tokens):
        entry = entries[start + position]
        if not entry or str(token) not in entry:
            raise SamplerError(f"prompt_logprobs lacks token {token} at position {start + position}")
        own.append(float(entry[str(token)]["logprob"]))
        ranked = sorted(((float(v["logprob"]), int(i)) for i, v in entry.items()), reverse=True)[:k]
        if len(ranked) < k:
            raise SamplerError(f"prompt_logprobs gives {len(ranked)} ids at position {start + position}, {k} asked")
        ids.append([i for _, i in ranked])
        logps.append([lp for lp, _ in ranked])
    return own, ids, logps


def served_tokenizer_difference(client, tokenizer) -> str | None:
    """Why the server's tokenizer does not give the student's ids for :data:`PROBE`, in one line, or None."""
    served = client.post("/tokenize", {"model": client.model, "prompt": PROBE, "add_special_tokens": False},
                         lambda answer: [int(t) for t in answer["tokens"]])
    own = list(tokenizer(PROBE, add_special_tokens=False)["input_ids"])
    if served == own:
        return None
    at = next((i for i, (a, b) in enumerate(zip(own, served)) if a != b), min(len(own), len(served)))
    return (f"the server tokenises a probe text into {len(served)} ids and the student into {len(own)}; they "
            f"first differ at position {at}")


class ServedTeacher(FrozenTeacher):
    """The teacher interface of :class:`~mentor.train.teacher.SelfTeacher` for a model behind a server; it
    returns the teacher's numbers (:meth:`score`) in place of a module to run."""

    kind = "served"

    def __init__(self, client, top_k: int) -> None:
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.client, self.top_k = client, top_k

    def score(self, prompts: list[list[int]], completions: list[list[int]], width: int, device
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For each row, the teacher's log-probability of each completion token (B x width) and its top k
        (ids and log-probabilities, B x width x k), zero past a row's end; one request per row, up to the
        client's ``concurrency`` at a time."""
        def one(row: tuple[list[int], list[int]]):
            prompt, completion = row
            read = functools.partial(read_prompt_logprobs, start=len(prompt), tokens=completion, k=self.top_k)
            return self.client.post("/v1/completions", prompt_logprobs_body(self.client.model, prompt + completion,
                                                                             self.top_k), read)

        with ThreadPoolExecutor(max_workers=self.client.concurrency) as pool:
            answers = list(pool.map(one, zip(prompts, completions)))
        own = torch.zeros(len(prompts), width, dtype=torch.float32)
        ids = torch.zeros(len(prompts), width, self.top_k, dtype=torch.long)
        logps = torch.zeros(len(prompts), width, self.top_k, dtype=torch.float32)
        for row, (own_T, ids_TK, logps_TK) in enumerate(answers):
            n = min(len(own_T), width)
            own[row, :n] = torch.tensor(own_T[:n])
            ids[row, :n] = torch.tensor(ids_TK[:n], dtype=torch.long).reshape(n, self.top_k)
            logps[row, :n] = torch.tensor(logps_TK[:n]).reshape(n, self.top_k)
        return own.to(device), ids.to(device), logps.to(device)


def connect_served_teacher(base_url: str, model: str, tokenizer, *, top_k: int, api_key_env: str,
                           timeout_s: float, max_retries: int):
    """A :class:`ServedTeacher` for the server at ``base_url``, its tokenizer checked against the student's
    and one top-``top_k`` scoring request made (a mismatch, or a k above the server's ``--max-logprobs``, is
    refused with one line before the first step)."""
    from mentor.sampling.openai_compatible import OpenAISampler, SamplerError, check_reachable

    check_reachable(base_url)
    client = OpenAISampler(base_url, model, api_key_env=api_key_env, timeout_s=timeout_s, max_retries=max_retries)
    difference = served_tokenizer_difference(client, tokenizer)
    if difference:
        raise ValueError(f"the served teacher {model!r} at {base_url} does not share the student's tokenizer: "
                         f"{difference} (a served teacher must read the student's tokens)")
    teacher = ServedTeacher(client, top_k)
    probe = list(tokenizer(PROBE, add_special_tokens=False)["input_ids"])
    try:
        teacher.score([probe[:1]], [probe[1:]], len(probe) - 1, "cpu")
    except SamplerError as error:
        refused_k = str(error).startswith("HTTP 400") and "logprob" in str(error).lower()
        hint = ("; vLLM serves at most --max-logprobs of them (20 unless set): lower onpolicy.top_k or raise "
                "the server's" if refused_k else "")
        raise SamplerError(f"the served teacher {model!r} at {base_url} cannot score a completion with its top "
                           f"{top_k} log-probs ({error}){hint}") from error
    return teacher
