"""The house's shape (issue 20): no import circle between mentor's subpackages, and the world (the model
organism) plugs in from outside the core: no module outside ``mentor.world`` imports it when it is imported."""

from __future__ import annotations

import ast
from pathlib import Path

import mentor

ROOT = Path(mentor.__file__).parent


def _part(module: str) -> str:
    """The subpackage (or top-level module) of ``mentor.X.Y`` a module belongs to: ``X``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "mentor"


def _runtime_statements(body: list[ast.stmt]):
    """A module's statements run on import: its top level, and inside top-level ``try`` and ``if`` blocks
    (not ``if TYPE_CHECKING:``); function and class bodies are not entered."""
    for statement in body:
        if isinstance(statement, ast.If):
            if "TYPE_CHECKING" not in ast.unparse(statement.test):
                yield from _runtime_statements(statement.body + statement.orelse)
        elif isinstance(statement, ast.Try):
            yield from _runtime_statements(statement.body + statement.orelse + statement.finalbody
                                           + [s for handler in statement.handlers for s in handler.body])
        else:
            yield statement


def package_imports(root: Path = ROOT) -> dict[str, set[str]]:
    """For each subpackage, the other subpackages its modules import when they are imported (``import
    mentor.X``, ``from mentor.X import ...``, ``from mentor import X``; imports inside functions are deferred
    and not counted)."""
    edges: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        module = ".".join(path.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__")
        source = _part(module)
        for statement in _runtime_statements(ast.parse(path.read_text(encoding="utf-8")).body):
            if isinstance(statement, ast.Import):
                names = [alias.name for alias in statement.names]
            elif isinstance(statement, ast.ImportFrom) and statement.level == 0 and statement.module == "mentor":
                names = [f"mentor.{alias.name}" for alias in statement.names]
            elif isinstance(statement, ast.ImportFrom) and statement.level == 0 and statement.module:
                names = [statement.module]
            else:
                continue
            for name in names:
                if name.startswith("mentor.") and _part(name) != source:
                    edges.setdefault(source, set()).add(_part(name))
    return edges


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every import path that comes back to where it started (each found once per starting node)."""
    found = []

    def walk(path: list[str]) -> None:
        for nxt in sorted(edges.get(path[-1], ())):
            if nxt == path[0]:
                found.append([*path, nxt])
            elif nxt not in path:
                walk([*path, nxt])

    for start in sorted(edges):
        walk([start])
    return found


def test_circles_are_found_in_a_graph_that_has_one_and_not_in_one_without():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"], ["b", "c", "a", "b"],
                                                            ["c", "a", "b", "c"]]
    assert circles({"a": {"b", "c"}, "b": {"c"}}) == []


def test_no_import_circle_between_subpackages(tmp_path):
    assert circles(package_imports()) == []
    # the scan sees a circle when there is one (the two that issue 20 found had this shape)
    for name, text in {"evaluate.py": "from mentor.offline.rows import x\n",
                       "offline/train.py": "try:\n    from mentor import evaluate\nexcept ImportError:\n    pass\n",
                       "world/__init__.py": "if TYPE_CHECKING:\n    from mentor.evaluate import z\n"}.items():
        (tmp_path / "mentor" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "mentor" / name).write_text(text)
    assert circles(package_imports(tmp_path / "mentor")) == [["evaluate", "offline", "evaluate"],
                                                            ["offline", "evaluate", "offline"]]


def test_nothing_outside_the_world_imports_it_on_import():
    importers = sorted(source for source, targets in package_imports().items() if "world" in targets)
    assert importers == []
