"""Typed dataclass configs from a YAML file plus ``key=value`` overrides (dotted keys for nested ones).

An unknown key is a one-line error that names the key and the valid ones; values are checked by each
config's own ``__post_init__``. The resolved config is what a run saves beside its results.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

C = TypeVar("C")


class _Loader(yaml.SafeLoader):
    """YAML with 1.2's floats: ``1e-4`` is a number (PyYAML's 1.1 rules read it as text)."""


class _Dumper(yaml.SafeDumper):
    """Quotes text that ``_Loader`` would read as a number (``label: '1e-3'``)."""


for _cls in (_Loader, _Dumper):
    _cls.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
        list("-+0123456789."))


def dump_yaml(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False)


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


class ConfigError(ValueError):
    """A config file or override is wrong; the message says which key and why."""


#: the most problems, samples, steps or tokens any count may ask for: past it a run would take years and
#: the problem list alone would not fit in memory (``n_problems=10**12`` was an out-of-memory kill)
MAX_COUNT = 10_000_000


def check_at_most(config: Any, *names: str, prefix: str = "") -> None:
    """Each named count of ``config`` (None: unset, allowed) at most :data:`MAX_COUNT`."""
    for name in names:
        value = getattr(config, name)
        if value is not None and value > MAX_COUNT:
            raise ConfigError(f"{prefix}{name} must be at most {MAX_COUNT:,}, got {value:,}")


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _default(cls: type, name: str, base: Any) -> Any:
    """The value a field has when not set: ``base``'s, else the field's own default (None if required)."""
    if base is not None:
        return getattr(base, name)
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


_SCALARS = {int: "int", float: "float", bool: "bool", str: "text"}


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Numbers for float fields (YAML reads ``1e-3`` as a string); a clear error for a wrong scalar, list or
    mapping (``X | None`` also takes null; the items of lists and the values of mappings are checked too)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        if value is None:
            return None
        options = [a for a in args if a is not type(None)]
        return _coerce(key, value, options[0]) if len(options) == 1 else value
    if hint in (list, tuple) or origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r}: expected a list, got {value!r}")
        item = args[0] if args and args[0] is not Ellipsis else None
        return type(value)(_coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)) if item else value
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r}: expected a mapping, got {value!r}")
        bad = next((k for k in value if not isinstance(k, str)), None)
        if bad is not None:
            raise ConfigError(f"config key {key!r}: its keys must be text, got {bad!r}")
        return {k: _coerce(f"{key}.{k}", v, args[1]) for k, v in value.items()} if len(args) == 2 else value
    if hint is float and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            number = float(value)
        except ValueError:
            pass
        else:
            if not math.isfinite(number):
                raise ConfigError(f"config key {key!r}: expected a finite number, got {value!r}")
            return number
    if hint in (int, float, bool) and (
        not isinstance(value, hint) or (hint is not bool and isinstance(value, bool))
    ):
        raise ConfigError(f"config key {key!r}: expected {_SCALARS[hint]}, got {value!r}")
    if hint is str and not isinstance(value, str):
        raise ConfigError(f"config key {key!r}: expected text, got {value!r} (quote it in YAML)")
    if dataclasses.is_dataclass(hint) and not isinstance(value, hint):
        raise ConfigError(f"config key {key!r}: expected a mapping of {hint.__name__} keys, got {value!r}")
    return value


def unknown_key_error(key: str, valid: list[str], where: str = "") -> ConfigError:
    """The error for a key that is not a config field: its full path, the closest valid key, the valid keys."""
    import difflib

    close = difflib.get_close_matches(key, valid, n=1)
    hint = f"; did you mean {where}{close[0]}?" if close else ""
    return ConfigError(f"unknown config key {where}{key}{hint} (valid keys here: {', '.join(valid)})")


def _merge(cls: type, values: dict[str, Any], where: str, base: Any = None) -> dict[str, Any]:
    """Check keys against ``cls`` recursively; nested dataclass fields become their dataclass.

    A nested mapping updates the field's default (``sft.steps=5`` keeps every other ``sft`` value the
    parent config chose), it does not start again from the nested class's own defaults.
    """
    types = _field_types(cls)
    out = {}
    for key, value in values.items():
        if key not in types:
            raise unknown_key_error(key, list(types), where)
        hint = types[key]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            inner = _default(cls, key, base)
            changes = _merge(hint, value, f"{where}{key}.", inner if isinstance(inner, hint) else None)
            if isinstance(inner, hint):
                changes = {**_derived_unset(hint, inner, changes), **changes}
            value = dataclasses.replace(inner, **changes) if isinstance(inner, hint) else hint(**changes)
        out[key] = _coerce(f"{where}{key}", value, hint)
    return out


def checked_values(cls: type, values: dict[str, Any], where: str = "") -> dict[str, Any]:
    """``values`` for the fields of ``cls`` checked and coerced as a config file's are: a mapping written
    inside a config (a committee's teachers); errors name the key as ``where`` + key."""
    return _merge(cls, values, where)


def _derived_unset(cls: type, inner: Any, changes: dict[str, Any]) -> dict[str, Any]:
    """Derived fields (declared default None, filled by ``__post_init__`` from other fields) that the
    changes leave alone and that still hold their derived value, set back to None: so that they follow
    the new values (``onpolicy.method=grpo`` gets grpo's ``grpo_weight``, not the default method's)."""
    plain = cls()
    return {f.name: None for f in dataclasses.fields(cls)
            if f.default is None and f.name not in changes and getattr(plain, f.name) is not None
            and getattr(inner, f.name) == getattr(plain, f.name)}


def _parse_value(text: str) -> Any:
    return _yaml(text) if text.strip() else ""


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


def _seed_mappings(cls: type, values: dict, overrides: dict) -> None:
    """An override of one key of a mapping field (``mix.none=0.8``) updates that field's current value, so
    the other keys keep theirs; a mapping written whole in a file still replaces it (exact round trips)."""
    types = _field_types(cls)
    for key, sub in overrides.items():
        if key not in types or not isinstance(sub, dict):
            continue
        hint = types[key]
        if typing.get_origin(hint) is dict and key not in values:
            values[key] = dict(_default(cls, key, None) or {})
        elif dataclasses.is_dataclass(hint):
            inner = values.setdefault(key, {})
            if isinstance(inner, dict):
                _seed_mappings(hint, inner, sub)


def _deep_update(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and value and isinstance(out.get(key), dict):  # ``key={}`` empties it
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
            loaded = _yaml(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {' '.join(str(err).split())}") from None
        except UnicodeDecodeError as err:
            raise ConfigError(f"config file {path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
        except RecursionError:
            raise ConfigError(f"config file {path} is not valid YAML: nested too deeply") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        values = loaded
    tree = _nest(overrides or [])
    _seed_mappings(cls, values, tree)
    values = _deep_update(values, tree)
    try:
        return cls(**_merge(cls, values, ""))
    except TypeError as err:
        raise ConfigError(f"bad config: {err}") from None


def save_config(config: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump_yaml(dataclasses.asdict(config)))
    return path


def differences(a: dict, b: dict, prefix: str = "", defaults: dict | None = None) -> list[str]:
    """The dotted keys whose values differ between two nested mappings, sorted. A key ``a`` lacks whose value
    in ``b`` is its value in ``defaults`` is no difference: a field added since ``a`` was written, left at its
    default, changes nothing a folder holds."""
    defaults = defaults or {}
    out = []
    for k in sorted(set(a) | set(b)):
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            nested = defaults.get(k) if isinstance(defaults.get(k), dict) else None
            out += differences(a[k], b[k], f"{prefix}{k}.", nested)
        elif k not in a and k in b and k in defaults and b[k] == defaults[k]:
            continue
        elif a.get(k) != b.get(k):
            out.append(prefix + k)
    return out


def default_values(cls: type) -> dict:
    """A config dataclass's defaults as plain values (nested configs nested), as a run folder records them;
    fields without a default are left out."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            continue
        out[f.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    return json.loads(json.dumps(out))


def check_config(path: str | Path, values: dict, what: str = "a run", defaults: dict | None = None) -> bool:
    """Whether a run folder's resolved config is already there; one that differs from ``values`` is an error
    naming what differs (a folder resumed with another configuration). ``defaults`` (:func:`default_values`):
    fields added since the folder was written count as unchanged while they keep their defaults."""
    path = Path(path)
    if not path.is_file():
        return False
    from mentor.records import read_json

    changed = differences(read_json(path, f"the configuration of {what}"), json.loads(json.dumps(values)),
                          defaults=defaults)
    if changed:
        raise ValueError(f"{path.parent} holds {what} with another configuration (differs in "
                         f"{', '.join(changed)}); use a new folder")
    return True


def record_config(path: str | Path, values: dict, what: str = "a run", defaults: dict | None = None) -> None:
    """Write a run folder's resolved config, or check that the one already there is the same
    (:func:`check_config`)."""
    path = Path(path)
    values = json.loads(json.dumps(values))
    if check_config(path, values, what, defaults):
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(values, indent=2) + "\n")


def _field_notes(cls: type) -> dict[str, str]:
    """Each field's one-line note from the class source: its trailing ``# comment``, else the attribute
    docstring under it, else the comment lines just above it."""
    import ast
    import inspect
    import io
    import textwrap
    import tokenize

    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    comments = {tok.start[0]: tok.string.lstrip("# ").strip()
                for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}
    body = ast.parse(source).body[0].body
    lines = source.splitlines()
    notes = {}
    for index, node in enumerate(body):
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        note = comments.get(node.end_lineno, "")
        following = body[index + 1] if index + 1 < len(body) else None
        if not note and isinstance(following, ast.Expr) and isinstance(getattr(following, "value", None), ast.Constant) \
                and isinstance(following.value.value, str):
            note = " ".join(following.value.value.split())
        line, above = node.lineno - 1, []
        while not note and line in comments and lines[line - 1].lstrip().startswith("#"):  # whole-line comments
            above.insert(0, comments[line])
            line -= 1
        notes[node.target.id] = note or " ".join(above)
    return notes


def short_note(note: str, width: int = 110) -> str:
    """A field's note for ``--help``: reST markup dropped (````x````, ``:func:`x```), and a long one cut at the
    end of its first sentence or clause, else at a word, never mid-word."""
    import re

    note = re.sub(r":\w+:`~?([^`]+)`", r"\1", note).replace("``", "")
    if len(note) <= width:
        return note
    for end in (r"(?<!e\.g)(?<!i\.e)\. ", "; ", ": ", ", "):  # a sentence's end, not an abbreviation's
        cuts = [m.start() for m in re.finditer(end, note[:width])  # not inside brackets
                if sum(note[: m.start()].count(c) for c in "([{") == sum(note[: m.start()].count(c) for c in ")]}")]
        if cuts and cuts[-1] > width // 3:
            return note[: cuts[-1] + 1] if end.endswith("\\. ") else note[: cuts[-1]] + " ..."
    return note[: note.rfind(" ", 0, width - 4)] + " ..."


def config_help(cls: type, prefix: str = "", instance: Any = None, only: tuple[str, ...] | None = None) -> list[str]:
    """``key = default  note`` for every field of ``cls`` (or the top-level fields in ``only``), nested
    dataclasses as dotted keys: what a command's ``--help`` lists (the keys are its ``KEY=VALUE`` overrides
    and its YAML file's keys)."""
    instance = instance if instance is not None else _safe_default(cls)
    notes = _field_notes(cls)
    lines = []
    for f in dataclasses.fields(cls):
        if only is not None and f.name not in only:
            continue
        value = getattr(instance, f.name) if instance is not None else _default(cls, f.name, None)
        hint = _field_types(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            lines += config_help(hint, f"{prefix}{f.name}.", value)
            continue
        shown = json.dumps(value, default=str) if not isinstance(value, str) else (value or '""')
        if len(shown) > 60:
            shown = shown[:57] + "..."
        note = short_note(notes.get(f.name, ""))
        lines.append(f"  {prefix}{f.name} = {shown}" + (f"    {note}" if note else ""))
    return lines


def _safe_default(cls: type) -> Any:
    try:
        return cls()
    except (TypeError, ValueError):
        return None
