"""Typed dataclass configs from a YAML file plus ``key=value`` overrides (dotted keys for nested ones).

An unknown key is a one-line error that names the key and the valid ones; values are checked by each
config's own ``__post_init__``. The resolved config is what a run saves beside its results.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

C = TypeVar("C")


class ConfigError(ValueError):
    """A config file or override is wrong; the message says which key and why."""


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _merge(cls: type, values: dict[str, Any], where: str) -> dict[str, Any]:
    """Check keys against ``cls`` recursively; nested dataclass fields become their dataclass."""
    types = _field_types(cls)
    out = {}
    for key, value in values.items():
        if key not in types:
            raise ConfigError(f"{where}unknown config key {key!r}; valid keys: {', '.join(types)}")
        hint = types[key]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = hint(**_merge(hint, value, f"{where}{key}."))
        out[key] = value
    return out


def _parse_value(text: str) -> Any:
    return yaml.safe_load(text) if text.strip() else ""


def _nest(overrides: list[str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value")
        key, value = item.split("=", 1)
        node = tree
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} sets inside a non-mapping key {part!r}")
        node[leaf] = _parse_value(value)
    return tree


def _deep_update(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_update(out[key], value)
        else:
            out[key] = value
    return out


def load_config(cls: type[C], path: str | Path | None = None, overrides: list[str] | None = None) -> C:
    """Build ``cls`` from an optional YAML file and ``key=value`` overrides (later wins)."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        values = loaded
    values = _deep_update(values, _nest(overrides or []))
    try:
        return cls(**_merge(cls, values, ""))
    except TypeError as err:
        raise ConfigError(f"bad config: {err}") from None


def save_config(config: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))
    return path
