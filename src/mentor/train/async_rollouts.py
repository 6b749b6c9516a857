"""Generation that overlaps training (issue 22, part 4): the rollouts of step n+1 are drawn by mentor's decode
loop in another process while step n trains (``onpolicy.async_generation=true``).

The generator holds its own copy of the student. The trainer pushes the weights after every update (version
v = the number of updates); the rollouts of step m are asked for once version ``m - max_staleness`` has been
pushed, so they come from weights at most ``max_staleness`` updates old. Messages reach the generator in the
order they were sent, so a request is always served with every version pushed before it. With
``max_staleness=0`` a step's rollouts are asked for only after the update before it: the synchronous run, in
another process (the same samples: each row's generator is seeded by (seed, prompt, sample); bit for bit when
the generator is given the trainer's thread count). By default the machine's torch threads are split: the
generator takes half (at least one) and the trainer the rest until the generator stops.

What the trainer does with stale rollouts: GRPO weights each token by a truncated importance weight
``min(pi_trainer / pi_generator, tis_cap)`` (its log-ratio clamped), the rollout correction of TRL and verl;
self-distillation scores the stale tokens as they are (the teacher's signal is about the tokens, whichever
weights drew them) and states the staleness in its metrics.
"""

from __future__ import annotations

import queue
from collections.abc import Callable

import torch

from mentor.sampling import SamplingParams


def _generator(model, tokenizer, threads: int, version: int, inbox, outbox) -> None:
    """The generator process: apply weights, answer requests, in the order they come; stop on None."""
    from mentor.sampling.local import LocalSampler
    from mentor.train.checkpoint import restore_weights

    torch.set_num_threads(threads)
    model.eval()
    sampler = LocalSampler(model, tokenizer, batch_size=64)
    while (message := inbox.get()) is not None:
        kind, payload = message
        if kind == "weights":
            version, state = payload
            restore_weights(model, state)
        else:
            step, prompts, params, indices = payload
            try:
                samples = sampler.generate(prompts, params, indices=indices)
            except Exception as error:  # the trainer raises it; the generator stays to be stopped
                outbox.put((step, version, RuntimeError(f"{type(error).__name__}: {error}")))
                continue
            outbox.put((step, version, samples))


class AsyncRollouts:
    """Rollouts drawn ahead in a generator process; ``schedule(step)`` gives a step's (prompts, params,
    indices). Use as a context manager (the process is stopped on leaving)."""

    def __init__(self, model, tokenizer, schedule: Callable[[int], tuple[list[str], SamplingParams, range]],
                 last_step: int, *, start: int = 0, max_staleness: int = 1, threads: int = 0) -> None:
        import copy

        import torch.multiprocessing as mp

        if max_staleness < 0:
            raise ValueError(f"max_staleness must be >= 0, got {max_staleness}")
        self.schedule, self.last_step, self.max_staleness = schedule, last_step, max_staleness
        self.version = start  # the updates the generator's weights have seen
        self.requested = self.taken = start - 1
        self.ready: dict[int, tuple[int, list]] = {}
        context = mp.get_context("spawn")
        self._inbox, self._outbox = context.Queue(), context.Queue()
        if next(model.parameters()).device.type != "cpu":
            raise ValueError("async_generation draws with mentor's loop on the CPU, beside a trainer on the CPU; on "
                             "an accelerator use generation_backend=vllm")
        self._trainer_threads = torch.get_num_threads()  # restored on close
        self.threads = threads or max(1, self._trainer_threads // 2)  # 0: half the cores to the generator
        self._process = context.Process(target=_generator, args=(copy.deepcopy(model), tokenizer, self.threads,
                                                                 start, self._inbox, self._outbox), daemon=True)
        try:
            self._process.start()
            self._send_requests()
        except BaseException:  # nothing left running
            self.close()
            raise
        if not threads:  # and the rest to the trainer, until close
            torch.set_num_threads(max(1, self._trainer_threads - self.threads))

    def _send_requests(self) -> None:
        """Ask for every step the pushed weights allow (at most ``max_staleness`` updates behind)."""
        while self.requested < min(self.version + self.max_staleness, self.last_step):
            self.requested += 1
            prompts, params, indices = self.schedule(self.requested)
            self._inbox.put(("request", (self.requested, prompts, params, indices)))

    def take(self, step: int) -> tuple[list, int]:
        """The rollouts of ``step`` and how many updates old the weights that drew them were."""
        if step > self.requested:
            raise RuntimeError(f"step {step} was not asked for (asked up to {self.requested}; pushed version "
                               f"{self.version})")
        while step not in self.ready:
            if not self._process.is_alive() and self._outbox.empty():
                raise RuntimeError(f"the generator process died (exit code {self._process.exitcode})")
            try:
                got, version, samples = self._outbox.get(timeout=5)
            except queue.Empty:  # look at the process again
                continue
            if isinstance(samples, Exception):
                raise samples
            self.ready[got] = (version, samples)
        version, samples = self.ready.pop(step)
        self.taken = max(self.taken, step)
        return samples, step - version

    def push(self, model, version: int) -> None:
        """The weights after ``version`` updates, then the requests they allow."""
        from mentor.train.checkpoint import trainable_state

        state = {name: tensor.cpu() for name, tensor in trainable_state(model).items()}
        self._inbox.put(("weights", (version, state)))
        self.version = version
        self._send_requests()

    def close(self) -> None:
        """Stop the generator: at once when it still has rollouts to draw that nobody will read (an early stop,
        an error), else after it has read the stop message; the trainer gets its threads back."""
        torch.set_num_threads(self._trainer_threads)
        if self._process.is_alive():
            if self.requested > self.taken:
                self._process.terminate()
            else:
                self._inbox.put(None)
            self._process.join(timeout=30)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
        for channel in (self._inbox, self._outbox):
            channel.cancel_join_thread()  # what was never read is dropped, not waited for
            channel.close()

    def __enter__(self) -> AsyncRollouts:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
