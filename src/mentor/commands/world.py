"""``mentor world build | show``."""

from __future__ import annotations

import json
import time
from pathlib import Path

from mentor.commands.common import console, progress_bar


def world_build(args) -> int:
    from mentor.config import load_config, save_config
    from mentor.world_model import WorldModelConfig, build_world_model, world_model_dir

    config = load_config(WorldModelConfig, args.config, args.overrides)
    out = Path(args.out) if args.out else world_model_dir(config)
    record = out / "mentor_world.json"
    if record.is_file() and not args.force:
        if json.loads(record.read_text()).get("key") != config.key():
            raise FileExistsError(f"{out} holds a world model built with another config; use --force or another --out")
        console().print(f"world model already built at {out} (use --force to rebuild)")
        print(out)
        return 0
    start = time.time()
    with progress_bar() as bar:
        task = bar.add("training the world's base solver", total=config.sft.steps)

        def step(n: int, metrics: dict) -> None:
            bar.update(task, n, info=f"loss {metrics['loss']:.3f}")

        build_world_model(config, out, step)
    save_config(config, out / "world_config.yaml")
    console().print(f"built in {time.time() - start:.0f}s -> {out}")
    print(out)
    return 0


def world_show(args) -> int:
    from mentor.tasks import load_task
    from mentor.tasks.world import WorldProblem, canonical_solution

    task = load_task(args.task)
    for problem in task.problems(args.split, n=args.n, seed=args.seed):
        print(f"# {problem.id}\n{problem.question}\n-- canonical --\n"
              f"{canonical_solution(WorldProblem.from_meta(problem.meta))}\n-- reference --\n{problem.solution}\n")
    return 0
