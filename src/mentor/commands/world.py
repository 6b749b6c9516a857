"""``mentor world build | show``."""

from __future__ import annotations

import time

from mentor.commands.common import console, progress_bar


def world_build(args) -> int:
    from mentor.config import load_config, save_config
    from mentor.records import read_json
    from mentor.runlock import check_out
    from mentor.world.solver import WorldModelConfig, build_world_model, world_model_dir

    config = load_config(WorldModelConfig, args.config, args.overrides)
    out = check_out(args.out) if args.out else world_model_dir(config)
    record = out / "mentor_world.json"
    if record.is_file() and not args.force:
        if read_json(record, "a world model record").get("key") != config.key():
            raise FileExistsError(f"{out} holds a world model built with another config; use --force or another --out")
        console().print(f"world model already built at {out} (use --force to rebuild)")
        return 0
    console().print(build_estimate(config.sft.steps))
    start = time.time()
    with progress_bar() as bar:
        task = bar.add("training the world's base solver", total=config.sft.steps)

        def step(n: int, metrics: dict) -> None:
            bar.update(task, n, info=f"loss {metrics['loss']:.3f}")

        build_world_model(config, out, step)
    save_config(config, out / "world_config.yaml")
    console().print(f"built in {time.time() - start:.0f}s -> {out}")
    return 0


def build_estimate(steps: int) -> str:
    """What a build of ``steps`` steps should take, from the shipped build's own record (its steps and seconds)."""
    from mentor.records import read_json
    from mentor.world.solver import SHIPPED_DIR

    shipped = read_json(SHIPPED_DIR / "mentor_world.json", "the shipped world model's record")
    seconds = shipped["seconds"] / shipped["config"]["sft"]["steps"] * steps
    return (f"{steps:,} training steps: about {seconds / 60:.0f} minutes on a 2-core CPU at the shipped model's size "
            f"(its build took {shipped['seconds']:,.0f} s for {shipped['config']['sft']['steps']:,} steps)")


def world_show(args) -> int:
    from mentor.tasks import load_task
    from mentor.world.problems import WorldProblem, WorldTask, canonical_solution

    if args.n < 1:
        raise ValueError(f"-n must be >= 1, got {args.n}")
    task = load_task(args.task)
    if not isinstance(task, WorldTask):
        raise ValueError(f"--task {args.task!r} is not a world task (world or world:OPTIONS)")
    for problem in task.problems(args.split, n=args.n, seed=args.seed):
        print(f"# {problem.id}\n{problem.question}\n-- canonical --\n"
              f"{canonical_solution(WorldProblem.from_meta(problem.meta))}\n-- reference --\n{problem.solution}\n")
    return 0
