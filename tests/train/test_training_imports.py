"""runtime/training imports one way: no module imports back into one that imports it, and none reaches a
sibling from inside a function (the way a circle used to be dodged)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "runtime" / "training"


def _imports() -> dict[str, dict[str, bool]]:
    """module -> {sibling it imports: whether at module level}."""
    names = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    graph = {}
    for name in names:
        tree = ast.parse((PACKAGE / f"{name}.py").read_text())
        top = {id(node) for node in tree.body}
        found = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for target in targets:
                sibling = target.removeprefix("runtime.training.")
                if target.startswith("runtime.training.") and sibling in names and sibling != name:
                    found[sibling] = id(node) in top
        graph[name] = found
    return graph


def test_no_import_circle_in_runtime_training():
    graph = _imports()
    assert "worker" in graph and graph["worker"]  # the entry point, found and importing its phases
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import circle: {' -> '.join((*path, name))}"
        if name not in done:
            for sibling in graph[name]:
                visit(sibling, (*path, name))
            done.add(name)

    for name in graph:
        visit(name, ())


def test_siblings_are_imported_at_module_level():
    inside = {f"{m} -> {s}" for m, deps in _imports().items() for s, top in deps.items() if not top}
    assert inside == set()
