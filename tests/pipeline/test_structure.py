"""The pass's shape: engines only move work, the core decides, and no module of the pass imports
one that imports it back (at module level or inside a function)."""

from __future__ import annotations

import ast
from pathlib import Path

import heroes.pipeline

PIPELINE = Path(heroes.pipeline.__file__).parent


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("heroes.pipeline."):
                found.add(node.module.split(".")[2])
            elif node.module == "heroes.pipeline":
                found.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("heroes.pipeline."):
                    found.add(a.name.split(".")[2])
    return found


def test_the_modules_of_the_pass_import_each_other_without_a_cycle() -> None:
    graph = {p.stem: _imports(p) - {p.stem} for p in PIPELINE.glob("*.py")}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for dep in sorted(graph.get(name, ())):
            if state.get(dep) == 1:
                cycle = path[path.index(dep) :] + [dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        path.pop()
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


def test_engines_leave_decisions_and_writes_to_the_core() -> None:
    """Neither engine classifies files or writes rows itself: no store writes, no status
    decisions; both hand typed results to ``PassCore``."""
    for engine in ("runner.py", "raypass.py"):
        text = (PIPELINE / engine).read_text(encoding="utf-8")
        for forbidden in ("insert_and_update", "match_exact(", '"duplicate_of"', "seen_sha["):
            assert forbidden not in text, f"{engine} does {forbidden!r} itself"
    core = (PIPELINE / "core.py").read_text(encoding="utf-8")
    assert "insert_and_update" in core and "match_exact(" in core
