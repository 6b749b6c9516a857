"""Several training processes through accelerate: ``accelerate launch -m mentor train ...``.

Data parallel, as TRL does it: every process holds the whole model and draws the rollouts of its own
share of each step's prompts (whole groups, so GRPO's group statistics stay local); accelerate's DDP
wrapper averages the gradients; the main process evaluates, writes metrics and checkpoints, and every
process reads a checkpoint back on resume. Each process scales its loss so that the averaged gradient is
the single-process gradient of the same global batch (every token of the step weighted alike).

Sharded, as FSDP2 does it (``accelerate launch --use_fsdp --fsdp_version 2 ...``, ``mentor train`` only): each
process holds a shard of every trained weight and of the optimizer's state; mentor shards the student with
torch's ``fully_shard`` itself, one unit per decoder layer and one for the rest, as accelerate's
transformer-layer wrap does (accelerate shards on a GPU only; this way the same code runs on CPU processes
too). Everything that only reads the weights (rollouts, the self-teacher, evaluation, the files written) reads
a whole copy of them that every process keeps and refreshes after each optimizer step (the copy a colocated
vLLM engine would hold anyway), so no collective call waits on a decode loop that ends at its own length.

One process (no ``accelerate launch``) runs exactly the code path it always did: no wrapper, no
collective calls.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import datetime
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch

from mentor.train.completions import completion_logits, completion_states


class CompletionForward(torch.nn.Module):
    """The student's forward for the loss, as one module, so a DDP wrapper sees it: the logits at the
    completion positions, or (``states=True``) the last hidden states there (the fused loss applies the head
    itself). DDP syncs gradients only for a backward that follows its wrapper's forward."""

    def __init__(self, policy: torch.nn.Module) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, prompts: Sequence[list[int]], completions: Sequence[list[int]], states: bool = False):
        if states:
            return completion_states(self.policy, prompts, completions)
        return completion_logits(self.policy, prompts, completions)


def policy_of(forward: torch.nn.Module) -> torch.nn.Module:
    """The trained model inside a loss forward (plain, DDP-wrapped or sharded)."""
    return getattr(forward, "module", forward).policy


def _decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules transformers says must not be split (its ``_no_split_modules``: the decoder layers)."""
    names = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or ())
    return [module for module in model.modules() if type(module).__name__ in names]


def _fsdp_requested() -> bool:
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def _fsdp_reshard_after_forward() -> bool:
    """accelerate's FSDP settings as its launcher hands them on: the one mentor reads, and a refusal for each
    that it would otherwise ignore."""
    env = os.environ.get
    if env("FSDP_VERSION", "1") != "2":
        raise ValueError("mentor shards with FSDP2: set fsdp_version: 2 (or --fsdp_version 2)")
    if env("FSDP_OFFLOAD_PARAMS", "false").lower() == "true":
        raise ValueError("mentor's FSDP keeps the shards on the device: set fsdp_offload_params to false")
    if env("FSDP_ACTIVATION_CHECKPOINTING", "false").lower() == "true":
        raise ValueError("mentor's FSDP does not checkpoint activations: set fsdp_activation_checkpointing to false")
    if env("ACCELERATE_MIXED_PRECISION", "no") != "no":
        raise ValueError("mentor's FSDP trains in the model's own dtype: set mixed_precision to no")
    reshard = env("FSDP_RESHARD_AFTER_FORWARD", "true").lower()
    if reshard not in ("true", "false"):
        raise ValueError(f"fsdp_reshard_after_forward must be true or false under FSDP2, got {reshard!r}")
    return reshard == "true"


@contextlib.contextmanager
def _gradient_sync_off(forward: torch.nn.Module):
    """FSDP2 keeps accumulating the unsharded gradients, reduce-scattered by the first backward after this."""
    forward.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        forward.set_requires_gradient_sync(True)


def _launched_processes() -> int:
    """How many processes ``accelerate launch`` (or torchrun) started, without initialising anything."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def _leave_process_group() -> None:
    """accelerate's end of a script (``Accelerator.end_training``): the process group destroyed while Python still
    runs. Left to the interpreter's exit, gloo's threads can be torn down unjoined and abort the process (exit
    code -6, "terminate called without an active exception"; ``python benchmarks/launch_exit.py``)."""
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def is_main_process() -> bool:
    """True but in the second and later processes of ``accelerate launch`` (read from its environment)."""
    return int(os.environ.get("RANK", "0")) == 0


class Ranks:
    """This process's place among the training processes, and the few collective calls the loop needs."""

    def __init__(self) -> None:
        self.world = _launched_processes()
        self.rank, self.accelerator, self.sharded, self.reshard = 0, None, False, True
        if self.world > 1 and os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
            raise ValueError("DeepSpeed is not supported by mentor's training loops yet; launch with data parallel "
                             "(examples/accelerate/ddp.yaml) or FSDP (examples/accelerate/fsdp.yaml)")
        if self.world > 1 and _fsdp_requested():
            self.sharded, self.reshard = True, _fsdp_reshard_after_forward()
        if self.world > 1:
            from accelerate import Accelerator
            from accelerate.utils import DistributedType, InitProcessGroupKwargs

            # accelerate takes a launch without a GPU for several CPU processes (gloo) only when told so; the
            # others wait while the main process evaluates, which can take longer than the default 30 minutes
            self.accelerator = Accelerator(cpu=not torch.cuda.is_available(), kwargs_handlers=[
                InitProcessGroupKwargs(timeout=datetime.timedelta(hours=6))])
            kind = self.accelerator.distributed_type
            if not self.sharded and kind not in (DistributedType.MULTI_CPU, DistributedType.MULTI_GPU,
                                                 DistributedType.MULTI_XPU, DistributedType.MULTI_NPU):
                raise ValueError(f"accelerate's {kind.value} is not supported by mentor's training loops yet; "
                                 "launch with data parallel (examples/accelerate/ddp.yaml) or FSDP "
                                 "(examples/accelerate/fsdp.yaml)")
            self.rank = self.accelerator.process_index
            atexit.unregister(_leave_process_group)  # once, however many Ranks a process makes
            atexit.register(_leave_process_group)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, items: Sequence, what: str = "prompts_per_step") -> tuple[int, list]:
        """This process's contiguous share of ``items`` and where it starts (every process the same size)."""
        if len(items) % self.world:
            raise ValueError(f"{what}={len(items)} must be a multiple of the {self.world} training processes")
        size = len(items) // self.world
        return self.rank * size, list(items[self.rank * size : (self.rank + 1) * size])

    def share_evenly(self, items: Sequence) -> list:
        """This process's contiguous share of ``items`` when they may not divide evenly (the last batch of an
        epoch): shares differ by at most one, and one may be empty."""
        bounds = [len(items) * r // self.world for r in range(self.world + 1)]
        return list(items[bounds[self.rank] : bounds[self.rank + 1]])

    def require_data_parallel(self) -> None:
        """Refuse FSDP where only data parallel is built (mentor distill); call it before writing anything."""
        if self.sharded:
            raise ValueError("FSDP shards mentor train's student only; launch mentor distill with data parallel "
                             "(examples/accelerate/ddp.yaml)")

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` DDP-wrapped for its forward in the loss when there are several processes."""
        self.require_data_parallel()
        return model if self.accelerator is None else self.accelerator.prepare_model(model)

    def wrap(self, model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
        """The student's loss forward (DDP-wrapped or sharded when there are several processes), and the model
        that rollouts, the self-teacher, evaluation and the files read: ``model`` itself, or under FSDP a whole
        copy of it taken before sharding (:meth:`refresh` keeps it current). Build the optimizer after this:
        sharding replaces the parameters."""
        if not self.sharded:
            return self.prepare(CompletionForward(model)), model
        from torch.distributed.fsdp import fully_shard

        model.to(self.accelerator.device)  # as accelerate's prepare would: each process on its own device
        whole = copy.deepcopy(model)
        forward = CompletionForward(model)
        for layer in _decoder_layers(model):
            fully_shard(layer, reshard_after_forward=self.reshard)
        fully_shard(forward)  # the embeddings, final norm and head: gathered by the loss forward, kept to backward
        return forward, whole

    @torch.no_grad()
    def refresh(self, forward: torch.nn.Module, whole: torch.nn.Module, to_shards: bool = False) -> None:
        """Under FSDP: the shards of the trained weights gathered into the whole copy (after an optimizer step),
        or with ``to_shards`` the whole copy cut into the shards (after a checkpoint was restored into it; each
        process cuts its own). Every process calls it at the same point: the gather is collective. Nothing to do
        without FSDP (the copy is the model)."""
        if not self.sharded:
            return
        from torch.distributed.tensor import distribute_tensor

        wholes = dict(whole.named_parameters())
        for name, param in policy_of(forward).named_parameters():
            if not param.requires_grad:
                continue
            if to_shards:  # nothing is sent: every process holds the same whole tensor
                local = distribute_tensor(wholes[name].detach(), param.device_mesh, param.placements,
                                          src_data_rank=None)
                param.to_local().copy_(local.to_local())
            else:
                wholes[name].copy_(param.full_tensor())

    def optimizer_state(self, forward: torch.nn.Module, optimizer) -> dict:
        """The optimizer's state for a checkpoint; under FSDP gathered whole (collective; complete on the main
        process, which writes it)."""
        if not self.sharded:
            return optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(forward, optimizer,
                                        options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def load_optimizer_state(self, forward: torch.nn.Module, optimizer, state: dict) -> None:
        """Restore :meth:`optimizer_state`'s ``state``; one written with FSDP (parameters named) or without it
        (parameters numbered) is refused by the other kind of run."""
        params = [p for group in state.get("param_groups", []) for p in group.get("params", [])]
        if params and isinstance(params[0], str) != self.sharded:
            from mentor.train.checkpoint import CheckpointError

            raise CheckpointError(f"the checkpoint was written by a run {'without' if self.sharded else 'with'} FSDP; "
                             "resume it as it was launched")
        if not self.sharded:
            optimizer.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(forward, optimizer, state, options=StateDictOptions(full_state_dict=True))

    def no_sync(self, forward: torch.nn.Module, skip: bool):
        """Accumulate this backward's gradient without the all-reduce (every micro-batch but the last)."""
        if self.accelerator is None or not skip:
            return contextlib.nullcontext()
        if self.sharded:
            return _gradient_sync_off(forward)
        return self.accelerator.no_sync(forward)

    def total(self, values: Sequence[float]) -> list[float]:
        """Element-wise sums over the processes."""
        if self.accelerator is None:
            return list(values)
        tensor = torch.tensor(list(values), dtype=torch.float64, device=self.accelerator.device)
        return self.accelerator.reduce(tensor, reduction="sum").tolist()

    def gather(self, value: Any) -> list:
        """Every process's ``value``, in rank order, on every process."""
        if self.accelerator is None:
            return [value]
        from accelerate.utils import gather_object

        return gather_object([value])

    def from_main(self, compute: Callable[[], Any]) -> Any:
        """``compute()`` run on the main process alone, its result given to every process (the others wait).
        When it raises, the main process raises the error and every other process a RuntimeError naming it,
        instead of waiting for a result that never comes."""
        if self.accelerator is None:
            return compute()
        from accelerate.utils import broadcast_object_list

        box: list = [None]
        error = None
        if self.is_main:
            try:
                box = [("result", compute())]
            except Exception as err:  # noqa: BLE001  (re-raised below, once the others know)
                error, box = err, [("error", f"{type(err).__name__}: {err}")]
        kind, value = broadcast_object_list(box, from_process=0)[0]
        if error is not None:
            raise error
        if kind == "error":
            raise RuntimeError(f"the main process failed: {value}")
        return value

    def wait(self) -> None:
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()


def combine_metrics(per_rank: list[dict], weights: list[dict[str, float]]) -> dict:
    """One step's metrics from every process's: counts and ``*tokens`` summed, ``*_min`` the least, times
    the slowest process, the rest averaged with the number of things each process's value is a mean over:
    ``weights[rank][key]`` where the key declares its own (``copy_overlap``: the rows with a context), else
    ``weights[rank][prefix]`` (the tokens its loss term divides by: ``pg`` / ``sd``), else its rollouts."""
    if len(per_rank) == 1:
        return per_rank[0]
    summed = ("rollouts", "generated_tokens", "critic_unusable", "no_success", "no_corrected_trace")
    out: dict = {}
    for key in dict.fromkeys(key for m in per_rank for key in m):  # a process without a context has no sd_* keys
        values = [m[key] for m in per_rank if key in m]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            out[key] = values[0]
        elif key in summed or key.endswith("tokens"):
            out[key] = sum(values)
        elif all(v == values[0] for v in values):  # the step, the learning rate, a norm after the all-reduce
            out[key] = values[0]
        elif key.endswith("_min"):
            out[key] = min(values)
        elif key.endswith("_max") or key.startswith("time_"):
            out[key] = max(values)
        else:
            prefix = key.split("_", 1)[0]
            w = [weights[r].get(key, weights[r].get(prefix, weights[r]["rows"])) for r, m in enumerate(per_rank)
                 if key in m]
            out[key] = sum(v * x for v, x in zip(values, w)) / sum(w) if sum(w) else sum(values) / len(values)
    return out
