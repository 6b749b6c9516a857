"""The on-policy loop: GRPO and self-distillation with a designed context are configurations of it.

One step, top to bottom (:func:`train_step`):
1. the student samples ``rollouts_per_prompt`` completions of each prompt, with no context;
2. the task's verifier scores them (the reward);
3. feedback and the self-teacher's context for each rollout: nothing (``grpo``), the reference solution
   (``sd-reference``), the critic's step-aligned critique of this very rollout (``sd-critique``) or a
   sibling rollout the verifier accepted (``sd-success``, SDPO); a rollout without a usable context gets
   no teacher signal and is counted;
4. the token signal, in micro-batches: GRPO's clipped policy gradient with the group-normalised
   advantage, and/or the divergence from the self-teacher (full-vocabulary or top-k generalised JSD, or
   the sampled-token form), blended as ``grpo_weight * L_grpo + (1 - grpo_weight) * L_sd``;
5. one optimizer step, then the EMA teacher (if any) follows.

:func:`train_onpolicy` runs the steps with held-out evaluation, the best checkpoint, early stopping,
the guards, metrics to JSON lines and accelerate trackers, and checkpoints that resume exactly.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from mentor.config import default_values, record_config
from mentor.contexts import build_context_prompt, completion_token_mismatch
from mentor.evaluate import EvalConfig, check_contexts, sampling_record
from mentor.losses import (
    group_advantages,
)
from mentor.models import render_prompt
from mentor.records import Problem, append_jsonl, write_jsonl
from mentor.sampling import SamplingParams
from mentor.sampling.local import LocalSampler
from mentor.sampling.vllm_engine import engine_for
from mentor.tasks import Task
from mentor.train.checkpoint import (
    CheckpointError,
    load_checkpoint,
    restore_weights,
    save_checkpoint,
    set_rng_state,
    trainable_state,
)
from mentor.train.common import (
    EvalProgress,
    clip_and_step,
    held_out_score,
    lr_lambda,
    save_model,
    test_scores,
)
from mentor.train.distributed import CompletionForward, Ranks, combine_metrics, policy_of
from mentor.train.guards import Guards
from mentor.train.onpolicy_config import (  # noqa: F401 - the config and its choices are imported from here
    BLENDS,
    DIVERGENCES,
    METHODS,
    SCHEDULES,
    SIGNAL_SPANS,
    OnPolicyConfig,
)
from mentor.train.onpolicy_loss import accumulate, critique_prediction_loss, micro_losses
from mentor.train.rollouts import Critic, Row, attach_contexts, common_prefix, signal_tokens  # noqa: F401
from mentor.train.teacher import SelfTeacher

log = logging.getLogger("mentor")


# ----- one step ------------------------------------------------------------------------------------------


def step_sampling(task: Task, tokenizer, problems: list[Problem], config: OnPolicyConfig, step: int
                  ) -> tuple[list[str], SamplingParams]:
    """The prompts of a step's problems and how they are sampled (each step its own seed)."""
    prompts = [render_prompt(tokenizer, task.prompt(p)) for p in problems]
    params = SamplingParams(n=config.rollouts_per_prompt, temperature=config.temperature, top_p=config.top_p,
                            max_new_tokens=config.max_new_tokens, seed=config.seed * 100_003 + step)
    return prompts, params


def train_step(model, teacher: SelfTeacher | None, tokenizer, task: Task, problems: list[Problem], optimizer,
               config: OnPolicyConfig, step: int, critic: Critic, sampler=None, ranks: Ranks | None = None,
               forward=None, draw: Callable[[], tuple[list, int]] | None = None) -> dict:
    """One on-policy step on ``problems`` (sample, score, context, loss, update); returns its metrics.
    ``sampler`` draws the rollouts (default: mentor's decode loop on ``model``); one that holds its own copy
    of the weights must have ``model``'s current ones. With several processes (``ranks``, ``forward`` its
    DDP-wrapped or sharded loss forward, ``model`` then the whole copy :meth:`Ranks.wrap` gives) each draws and
    scores its share of the prompts, whole groups, and the summed gradient is that of the whole batch; the
    metrics are the whole batch's, on every process. ``draw``: gives the step's rollouts drawn ahead (generation
    that overlaps training, :mod:`.async_rollouts`) and how many updates old their weights were; the wait for them
    is the step's generation time."""
    ranks = ranks or Ranks()
    forward = forward or CompletionForward(model)
    trained = policy_of(forward)  # ``model`` itself, or under FSDP the sharded model ``model`` is a whole copy of
    times = dict.fromkeys(("generate", "critic", "teacher", "update"), 0.0)
    start = time.time()
    offset, problems = ranks.share(problems)
    prompts, params = step_sampling(task, tokenizer, problems, config, step)
    model.eval()
    if draw is not None:  # drawn ahead in another process: the time is the wait for them
        samples, staleness = draw()
    else:
        # each prompt is seeded by its place in the whole step's batch: the rollouts do not depend on the processes
        samples = (sampler or LocalSampler(model, tokenizer, batch_size=64)).generate(
            prompts, params, indices=range(offset, offset + len(prompts)))
    times["generate"] = time.time() - start
    rows = [Row(problem, prompt, s, task.verify(problem, s.text).reward)
            for problem, prompt, group in zip(problems, prompts, samples) for s in group]
    rewards_BG = torch.tensor([r.reward for r in rows]).view(len(problems), -1)
    adv_B, metrics = group_advantages(rewards_BG, scale_by_std=config.scale_by_std)
    adv_B = adv_B.reshape(-1)
    counts = {}
    if config.grpo_weight < 1:
        start = time.time()
        counts = attach_contexts(rows, task, tokenizer, config, critic, config.rollouts_per_prompt)
        times["critic"] = time.time() - start
    start = time.time()
    forward.train()
    optimizer.zero_grad(set_to_none=True)
    size = config.micro_batch_size or len(rows)
    chunks = [list(range(i, min(i + size, len(rows)))) for i in range(0, len(rows), size)]
    # each micro-batch's mean is weighted by its share of the step's tokens: the sum equals the full mean
    per_row = (lambda n: n > 0) if config.aggregation == "sequence-mean" else (lambda n: n)  # what a mean divides by
    pg_count = [sum(per_row(len(rows[i].sample.token_ids)) for i in chunk) for chunk in chunks]
    sd_count = [sum(signal_tokens(rows[i]) for i in chunk) for chunk in chunks]
    # a loss term is a mean over the whole step's tokens; DDP averages the processes' gradients, so each
    # process's share is scaled by their number
    pg_total, sd_total = (max(n, 1) / ranks.world for n in ranks.total([sum(pg_count), sum(sd_count)]))
    cp_count = [sum(len(rows[i].critique_ids or ()) for i in chunk) for chunk in chunks]  # critique_prediction
    totals: dict[str, float] = {}
    for index, (chunk, n_pg, n_sd, n_cp) in enumerate(zip(chunks, pg_count, sd_count, cp_count)):
        with ranks.no_sync(forward, skip=index < len(chunks) - 1):
            pg, sd, chunk_metrics = micro_losses(model, teacher, tokenizer, [rows[i] for i in chunk],
                                                 adv_B[chunk], config, times, forward)
            loss = 0.0
            if pg is not None:
                loss = loss + config.grpo_weight * pg * n_pg / pg_total
            if sd is not None and n_sd > 0:
                loss = loss + (1 - config.grpo_weight) * sd * n_sd / sd_total
            if n_cp:
                cp, _, cp_metrics = critique_prediction_loss(forward, tokenizer, [rows[i] for i in chunk])
                loss = loss + config.critique_prediction * cp * n_cp / sum(cp_count)
                chunk_metrics.update(cp_metrics)
            if not torch.is_tensor(loss) and ranks.world > 1:  # every process's backward takes part in the reduction
                loss = sd * 0.0
            if torch.is_tensor(loss):
                loss.backward()
        for key, value in chunk_metrics.items():
            share = (n_pg / max(sum(pg_count), 1) if key.startswith("pg_") else n_cp / max(sum(cp_count), 1)
                     if key.startswith("critique_") else n_sd / max(sum(sd_count), 1))
            accumulate(totals, key, value, share)
    grad_norm = clip_and_step(trained, optimizer, config.max_grad_norm)
    forward.eval()
    ranks.refresh(forward, model)
    times["update"] = time.time() - start - times["teacher"]
    generated = sum(len(r.sample.token_ids) for r in rows)
    metrics.update(totals, step=step, reward=float(rewards_BG.mean()), rollouts=len(rows), grad_norm=grad_norm,
                   generated_tokens=generated, tokens_per_s=generated / max(times["generate"], 1e-9),
                   **counts, **{f"time_{k}": round(v, 4) for k, v in times.items()})
    if draw is not None:  # the generation ran beside the last step: its rate is not tokens over the wait
        metrics["staleness"] = staleness
        del metrics["tokens_per_s"]
    # what each process's means are over, for combining them across processes: the rollouts by default
    weights = {"pg": sum(pg_count), "sd": sum(sd_count), "rows": len(rows)}
    if config.grpo_weight < 1:
        # of the rollouts the self-teacher was asked about (by-group routes the others to GRPO on purpose)
        asked = len(rows) - counts.get("routed_to_grpo", 0)
        metrics["signal_fraction"] = sum(r.teacher_prompt is not None for r in rows) / asked if asked else 1.0
        overlaps = [r.overlap for r in rows if r.overlap is not None]
        metrics["copy_overlap"] = sum(overlaps) / len(overlaps) if overlaps else 0.0
        weights.update(signal_fraction=asked, copy_overlap=len(overlaps))
    metrics["loss"] = totals.get("pg_loss", 0.0) * config.grpo_weight + totals.get("sd_loss", 0.0) * (
        1 - config.grpo_weight)
    if ranks.world == 1:
        return metrics
    combined = combine_metrics(*zip(*ranks.gather((metrics, weights))))
    combined["tokens_per_s"] = combined["generated_tokens"] / max(combined["time_generate"], 1e-9)
    combined["loss"] = combined.get("pg_loss", 0.0) * config.grpo_weight + combined.get("sd_loss", 0.0) * (
        1 - config.grpo_weight)
    return combined


# ----- the run -------------------------------------------------------------------------------------------


@dataclass
class OnPolicyResult:
    """What a run leaves: per-step metrics, every evaluation, and the best and final scores."""

    history: list[dict]
    evals: list[dict]
    best: dict | None
    stopped_early: bool = False
    test: dict | None = None  # {"best": ..., "final": ...} on the test split, when test_problems > 0
    best_weights: dict | None = None  # the best evaluated trainable weights (kept for the test evaluation)

    @property
    def final(self) -> dict | None:
        return self.evals[-1] if self.evals else None


def task_critic(task: Task) -> Critic:
    """The task's own critic (the world's exact one) as a batch function."""
    return lambda problems, traces: [task.critique(p, t) for p, t in zip(problems, traces)]


def warn_on_tokenisation(tokenizer, task: Task, problem: Problem, config: OnPolicyConfig) -> None:
    """Start-up check: a completion must tokenise the same after the student's and the teacher's prompts,
    or the teacher would score token boundaries the student never produces (a warning, not an error)."""
    student = render_prompt(tokenizer, task.prompt(problem))
    teacher = student
    if problem.solution:
        teacher = render_prompt(tokenizer, build_context_prompt("reference", task.prompt(problem), problem=problem))
    reason = completion_token_mismatch(tokenizer, student, teacher, problem.solution or problem.answer)
    if reason:
        log.warning(f"{config.method}: {reason}; the self-teacher's scores may not match the student's tokens")


def eval_config(config: OnPolicyConfig, test: bool = False) -> EvalConfig:
    """Held-out evaluation: same sampling as training, a fixed seed so every evaluation draws alike;
    ``test``: the final report on the test split, with a greedy answer per problem too."""
    return EvalConfig(n_problems=config.test_problems if test else config.eval_problems, k=config.eval_k,
                      split="test" if test else config.eval_split, temperature=config.temperature,
                      top_p=config.top_p, max_new_tokens=config.max_new_tokens, seed=0, greedy=test,
                      backend=config.generation_backend)


def _trackers(config: OnPolicyConfig, run_dir: Path | None, extra: Sequence = ()):
    """An accelerate Accelerator that only logs (to ``report_to`` by name and to ``extra`` tracker
    objects), or None when no tracker is asked for."""
    if not config.report_to and not extra:
        return None
    from accelerate import Accelerator

    accelerator = Accelerator(log_with=[*config.report_to, *extra], project_dir=str(run_dir) if run_dir else None)
    accelerator.init_trackers("mentor", config={k: v for k, v in asdict(config).items()
                                                if isinstance(v, (int, float, str, bool))})
    return accelerator


def train_onpolicy(model, tokenizer, task: Task, config: OnPolicyConfig, *, run_dir: str | Path | None = None,
                   critic: Critic | None = None, eval_set: list[Problem] | None = None,
                   progress: Callable[[int, dict], None] | None = None, eval_progress: EvalProgress | None = None,
                   trackers: Sequence = (), stop_after: int | None = None, sampler=None) -> OnPolicyResult:
    """Train ``model`` in place for ``config.steps`` steps and return the run's record (under FSDP ``model`` is
    left sharded; the run folder's ``final/`` holds the trained weights whole).

    With ``run_dir`` the run writes ``config.json``, ``metrics.jsonl``, ``evals.jsonl``, a checkpoint every
    ``save_every`` steps (``checkpoint/``), the best evaluated weights (``best/``) and the final ones
    (``final/``); started again on the same folder it resumes from the checkpoint, exactly. Evaluation
    (held-out ``eval_set``, by default ``eval_problems`` problems of ``eval_split``) runs at step 0, every
    ``eval_every`` steps and at the end. ``stop_after`` ends the call after that many steps in total, as
    a kill would (tests and budgets); the folder can be resumed. ``trackers``: accelerate tracker objects
    (``GeneralTracker``) beside the ``report_to`` names. ``progress(step, metrics)`` after each step,
    ``eval_progress(label, done, total)`` during each evaluation. ``sampler`` draws the rollouts instead of
    the one ``generation_backend`` names (with ``load_weights``, it gets the weights at the start and after
    every step, and the held-out and test evaluations sample from it too, the weights they score loaded
    first); without ``load_weights``, evaluation samples from the backend ``generation_backend`` names.
    """
    ranks = Ranks()
    if ranks.world > 1 and sampler is not None:
        raise ValueError("several training processes draw their rollouts from the engine generation_backend names "
                         "(one per process), not from a sampler passed in")
    if ranks.world > 1 and config.critique_prediction > 0:  # two forwards of the DDP module before one backward
        raise ValueError("critique_prediction runs on one training process")
    own = None
    if sampler is None and config.generation_backend == "vllm":
        sampler = own = engine_for(model, tokenizer, seed=config.seed, push=False)
    try:
        return _train(model, tokenizer, task, config, run_dir=run_dir, critic=critic, eval_set=eval_set,
                      progress=progress, eval_progress=eval_progress, trackers=trackers, stop_after=stop_after,
                      sampler=sampler, ranks=ranks)
    finally:
        if own is not None:
            own.close()


def _teacher(model, tokenizer, config: OnPolicyConfig):
    """The self-teacher, the separate teacher ``config.teacher_model`` names, or several (``config.teachers``)."""
    if not (config.teacher_model or config.teachers):
        return SelfTeacher(model, config.teacher, config.ema_decay)
    from mentor.train.separate_teacher import SeparateTeacher, load_separate_teacher

    if config.teacher_base_url:
        from mentor.train.served_teacher import connect_served_teacher

        return connect_served_teacher(config.teacher_base_url, config.teacher_model, tokenizer, top_k=config.top_k,
                                      api_key_env=config.teacher_api_key_env, timeout_s=config.teacher_timeout_s,
                                      max_retries=config.teacher_max_retries)
    if config.teacher_model:
        return SeparateTeacher(load_separate_teacher(config.teacher_model, model, tokenizer))
    from mentor.train.teacher_panel import TeacherPanel

    models = {name: load_separate_teacher(spec, model, tokenizer) for name, spec in config.teachers.items()}
    return TeacherPanel(models, route=config.teacher_route, routes=config.teacher_routes, mix=config.teacher_mix)


def _train(model, tokenizer, task: Task, config: OnPolicyConfig, *, run_dir, critic, eval_set, progress,
           eval_progress, trackers, stop_after, sampler, ranks: Ranks) -> OnPolicyResult:
    pool = task.problems("train", n=config.steps * config.prompts_per_step, seed=config.seed)
    random.Random(config.seed).shuffle(pool)
    if config.grpo_weight < 1 and config.context in ("reference", "critique"):
        check_contexts(task, pool, [] if critic is not None and config.context == "critique" else [config.context])
    if config.grpo_weight < 1 and pool:
        warn_on_tokenisation(tokenizer, task, pool[0], config)
    critic = critic or task_critic(task)
    run_dir = Path(run_dir) if run_dir is not None else None
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    # the student's loss forward (DDP-wrapped or sharded with several processes), and the model every reader of
    # the weights uses (itself, or under FSDP a whole copy)
    forward, model = ranks.wrap(model)
    teacher = _teacher(model, tokenizer, config) if config.grpo_weight < 1 else None
    optimizer = torch.optim.AdamW([p for p in policy_of(forward).parameters() if p.requires_grad], lr=config.lr,
                                  weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config.schedule, config.warmup_steps,
                                                                       config.steps))
    eval_set = eval_set if eval_set is not None else task.problems(config.eval_split, n=config.eval_problems)
    guards = Guards(copy_margin=config.copy_margin, min_signal_fraction=config.min_signal_fraction)
    result = OnPolicyResult(history=[], evals=[], best=None)
    bad_evals, start = 0, 0
    if run_dir is not None:
        start, bad_evals = _prepare_run_dir(run_dir, config, model, optimizer, scheduler, teacher, guards, result,
                                            ranks, forward)
    writer = run_dir if ranks.is_main else None  # the main process alone writes the run folder
    trackers = _trackers(config, run_dir, trackers) if ranks.is_main else None
    # an engine with its own copy of the weights: they are pushed into it, and the evaluations sample from it
    engine = sampler if hasattr(sampler, "load_weights") else None
    if engine is not None:
        engine.load_weights(model)

    def record_eval(step: int) -> bool:
        """Evaluate; keep the best; True when early stopping says stop."""
        nonlocal bad_evals
        score = ranks.from_main(
            lambda: held_out_score(model, tokenizer, task, eval_set, eval_config(config), step, eval_progress,
                                   engine=engine))
        result.evals.append(score)
        key = f"avg@{config.eval_k}"
        if writer is not None:
            append_jsonl(writer / "evals.jsonl", score)
        if trackers is not None:
            trackers.log({f"eval/{k}": v for k, v in score.items() if isinstance(v, (int, float))}, step=step)
        if result.best is None or score[key] > result.best[key]:
            result.best, bad_evals = score, 0
            if config.test_problems and ranks.is_main:
                result.best_weights = trainable_state(model)
            if writer is not None:
                save_model(model, tokenizer, writer / "best")
        else:
            bad_evals += 1
        return bool(config.early_stopping_patience) and bad_evals >= config.early_stopping_patience

    if start == 0 and not result.evals:
        record_eval(0)
    def batch_of(step: int) -> list[Problem]:
        return pool[step * config.prompts_per_step : (step + 1) * config.prompts_per_step]

    ahead = None
    try:
        ahead = _rollouts_ahead(model, tokenizer, task, config, ranks, start, stop_after, batch_of)
        for step in range(start, config.steps):
            if stop_after is not None and step >= stop_after:
                return result
            draw = functools.partial(ahead.take, step) if ahead is not None else None
            metrics = train_step(model, teacher, tokenizer, task, batch_of(step), optimizer, config, step, critic,
                                 sampler, ranks, forward, draw)
            optimizer_state = None
            if ahead is not None and step + 1 < config.steps:
                ahead.push(model, step + 1)
            if engine is not None:
                engine.load_weights(model)
            if teacher is not None:
                teacher.update(model)
            metrics["lr"] = scheduler.get_last_lr()[0]
            scheduler.step()
            for warning in guards.check(step + 1, metrics):
                log.warning(warning)
                metrics.setdefault("warnings", []).append(warning)
            result.history.append(metrics)
            if writer is not None:
                append_jsonl(writer / "metrics.jsonl", metrics)
            if trackers is not None:
                trackers.log({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, step=step + 1)
            if progress is not None and ranks.is_main:
                progress(step + 1, metrics)
            done = step + 1 == config.steps
            if (config.eval_every and (step + 1) % config.eval_every == 0) or done:
                result.stopped_early = record_eval(step + 1) and not done
            if run_dir is not None and ((step + 1) % config.save_every == 0 or done or result.stopped_early):
                optimizer_state = ranks.optimizer_state(forward, optimizer)  # every process: FSDP gathers it
            if writer is not None and optimizer_state is not None:
                save_checkpoint(writer / "checkpoint", model=model, optimizer_state=optimizer_state, scheduler=scheduler,
                                teacher_state=teacher.state_dict() if teacher else {}, step=step + 1,
                                loop_state={"history": result.history, "evals": result.evals, "best": result.best,
                                            "bad_evals": bad_evals, "guards": guards.state_dict(),
                                            "stopped_early": result.stopped_early,
                                            "best_weights": result.best_weights})
            if result.stopped_early:
                log.warning(f"early stopping at step {step + 1}: no better avg@{config.eval_k} in "
                            f"{config.early_stopping_patience} evaluations")
                break
    finally:
        if ahead is not None:
            ahead.close()
    if config.test_problems and ranks.is_main:
        # a finished run resumed again keeps the test scores its summary holds (the weights are the same)
        finished = run_dir is not None and start >= config.steps and (run_dir / "summary.json").is_file()
        result.test = (json.loads((run_dir / "summary.json").read_text()).get("test") if finished else None) or \
            test_scores(model, tokenizer, task, eval_config(config, test=True), len(result.history), result.best,
                        result.best_weights, eval_progress, engine)
        if trackers is not None:
            trackers.log({f"test/{which}/{k}": v for which, score in result.test.items() for k, v in score.items()
                          if isinstance(v, (int, float))}, step=len(result.history))
    if trackers is not None:  # not ``end_training``: it would destroy the process group the others still wait in
        for tracker in trackers.trackers:
            tracker.finish()
    if writer is not None:
        save_model(model, tokenizer, writer / "final")
        (writer / "summary.json").write_text(json.dumps(run_summary(config, result), indent=2) + "\n")
    ranks.wait()  # the others leave once the main process has written everything
    return result


def _rollouts_ahead(model, tokenizer, task: Task, config: OnPolicyConfig, ranks: Ranks, start: int,
                    stop_after: int | None, batch_of):
    """With ``async_generation``, the generator process that draws the steps' rollouts ahead; else None."""
    if not config.async_generation or start >= config.steps:
        return None
    if ranks.world > 1:
        raise ValueError("async_generation runs on one training process")
    from mentor.train.async_rollouts import AsyncRollouts

    def schedule(step: int):
        prompts, params = step_sampling(task, tokenizer, batch_of(step), config, step)
        return prompts, params, range(len(prompts))

    last = min(config.steps, stop_after if stop_after is not None else config.steps) - 1
    return AsyncRollouts(model, tokenizer, schedule, last, start=start, max_staleness=config.max_staleness,
                         threads=config.generator_threads)


def _prepare_run_dir(run_dir: Path, config: OnPolicyConfig, model, optimizer, scheduler, teacher, guards,
                     result: OnPolicyResult, ranks: Ranks, forward) -> tuple[int, int]:
    """Start a run folder, or restore its checkpoint; returns the step to continue from and the count of
    evaluations without improvement. Every process but the main one only reads."""
    write = ranks.is_main
    if write:
        record_config(run_dir / "config.json", asdict(config), defaults=default_values(OnPolicyConfig))
    state = load_checkpoint(run_dir / "checkpoint")
    if state is None:
        for name in ("metrics.jsonl", "evals.jsonl") if write else ():  # a run killed before its first checkpoint
            (run_dir / name).unlink(missing_ok=True)
        return 0, 0
    try:
        restore_weights(model, state["model"])  # checked whole before anything is copied
        ranks.refresh(forward, model, to_shards=True)
        ranks.load_optimizer_state(forward, optimizer, state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if teacher is not None:
            teacher.load_state_dict(state["teacher"])
        set_rng_state(state["rng"])
        loop = state["loop"]
        result.history, result.evals, result.best = loop["history"], loop["evals"], loop["best"]
        result.stopped_early = loop["stopped_early"]
        result.best_weights = loop.get("best_weights")
        guards.load_state_dict(loop["guards"])
        bad_evals = loop["bad_evals"]
    except CheckpointError as error:  # mentor's own reason, which says what to do
        raise CheckpointError(f"{run_dir / 'checkpoint'}: {error}") from None
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as error:
        # the weights may already be in: the run stops here, nothing is written, and a restart reloads them;
        # running out of memory or a failed collective is not the checkpoint's fault
        if isinstance(error, torch.OutOfMemoryError) or type(error).__module__.startswith("torch.distributed"):
            raise
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{run_dir / 'checkpoint'}: a checkpoint this run cannot resume from ({type(error).__name__}: "
                              f"{reason[:200]}); delete the checkpoint folder to start the run again") from None
    if write:  # lines written after the checkpoint belong to steps that will run again
        write_jsonl(run_dir / "metrics.jsonl", result.history)
        write_jsonl(run_dir / "evals.jsonl", result.evals)
    log.info(f"resuming {run_dir} at step {state['step']}")
    return (config.steps if result.stopped_early else state["step"]), bad_evals


def run_summary(config: OnPolicyConfig, result: OnPolicyResult) -> dict:
    """The budget actually spent and the scores, for the run folder and for comparisons."""
    history = result.history
    return {
        "method": config.method, "grpo_weight": config.grpo_weight, "seed": config.seed,
        "steps": len(history), "prompts": len(history) * config.prompts_per_step,
        "rollouts": sum(m["rollouts"] for m in history),
        "generated_tokens": sum(m["generated_tokens"] for m in history),
        "stopped_early": result.stopped_early, "best": result.best, "final": result.final, "test": result.test,
        **run_seconds(history, result.evals, result.test),
        "evaluation": sampling_record(eval_config(config)),
        "test_evaluation": sampling_record(eval_config(config, True)) if config.test_problems else None,
    }


def run_seconds(history: list[dict], evals: list[dict], test: dict | None) -> dict[str, float]:
    """The time a run spent, summed over every process that ran a part of it (a resumed run counts the steps
    and evaluations its checkpoint restored, not the seconds it took to reload them): its steps (generation,
    critic, teacher and update) and its evaluations (held-out and test)."""
    train = sum(value for metrics in history for key, value in metrics.items() if key.startswith("time_"))
    scored = [e.get("seconds", 0.0) for e in evals]
    if test:  # the best weights' score, unless it is the final one's (at the same step, or copied: 0 seconds)
        scored += [test[which].get("seconds", 0.0) for which in ("final", "best")
                   if which == "final" or test["best"].get("step") != test["final"].get("step")]
    return {"train_seconds": round(train, 1), "eval_seconds": round(sum(scored), 1)}

