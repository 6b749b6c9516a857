"""Problem sources behind one interface: the procedural world, reasoning-gym, files and datasets.

``load_task(spec)`` understands:
- ``world`` or ``world:steps=5,modulus=10`` (the model organism, with its exact critic);
- ``gym:NAME`` or ``gym:NAME:min_terms=2,max_terms=4,size=1000,fallback=true`` (a reasoning-gym generator
  with its config's settings, scored by reasoning-gym; ``a|b`` is a tuple such as ``operators=+|-``);
- a local file or folder (GSM8K, MATH, prompt/completion or messages format);
- ``hf:NAME`` or ``hf:NAME:CONFIG`` (a Hugging Face dataset, when the Hub is reachable);
- ``mix:SPEC;SPEC;...`` (several of the above as one task, their problems in turn, each problem's ``source``
  naming its task: ``mix:world:steps=2;world:steps=4,inputs=2``).
"""

from __future__ import annotations

from pathlib import Path

from mentor.tasks.base import Task

__all__ = ["Task", "load_task"]


def _world_overrides(text: str) -> dict:
    overrides = {}
    for item in filter(None, text.split(",")):
        if "=" not in item:
            raise ValueError(f"world option {item!r} is not key=value (e.g. world:steps=5,modulus=10)")
        key, value = item.split("=", 1)
        overrides[key.strip()] = tuple(value.split("/")) if key.strip() == "ops" else _number(value)
    return overrides


def _gym_settings(name: str, text: str) -> dict:
    settings = {}
    for item in filter(None, text.split(",")):
        if "=" not in item:
            raise ValueError(f"gym setting {item!r} is not key=value (e.g. gym:{name}:min_terms=2,max_terms=4)")
        key, value = (part.strip() for part in item.split("=", 1))
        settings[key] = tuple(_number(v) for v in value.split("|")) if "|" in value else _number(value)
    return settings


def _number(value: str) -> int | float | bool | str:
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def load_task(spec: str) -> Task:
    """A Task from a short spec string (see the module docstring); unknown specs are a clear error."""
    kind, _, rest = spec.partition(":")
    if kind == "mix":
        from mentor.tasks.mixture import MixtureTask

        parts = [part.strip() for part in rest.split(";")]
        if any(not part or part.startswith("mix:") for part in parts):
            raise ValueError(f"mix: takes tasks separated by ';' (none empty, none a mixture), got {spec!r}")
        return MixtureTask([load_task(part) for part in parts], names=parts)
    if kind == "world":
        from mentor.world.problems import WorldConfig, WorldTask

        overrides = _world_overrides(rest)
        try:
            return WorldTask(WorldConfig(**overrides))
        except TypeError as err:
            raise ValueError(f"bad world option in {spec!r}: {err}") from None
    if kind == "gym":
        from mentor.tasks.gym import GymTask

        name, _, settings = rest.partition(":")
        return GymTask(name, **_gym_settings(name, settings))
    if kind == "hf":
        from mentor.tasks.files import FileTask

        name, _, config = rest.partition(":")
        return FileTask(name, config=config or None)
    if Path(spec).exists():
        from mentor.tasks.files import FileTask

        return FileTask(spec)
    raise ValueError(
        f"unknown task {spec!r}: not 'world[:opts]', 'gym:NAME', 'hf:NAME' or an existing file or folder"
    )
