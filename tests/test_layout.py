"""The rooms of design.md and the arrows between them, read from the source: which room imports which,
no import cycles between modules (lazy imports inside functions count), and `policies` free of torch."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "archrouter"

# room -> the rooms it may import (its own included); the CLI and `__main__` entry points import anything
ALLOWED = {
    "kernels": {"kernels"},
    "backends": {"backends", "kernels"},
    "policies": {"policies"},
    "router": {"router", "policies", "backends"},
    "evals": {"evals", "policies", "backends"},
    "ray_app": {"router", "policies", "backends"},
    "__init__": set(),
}
TOP = {"cli"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every `archrouter...` module a file imports, anywhere in it, with the line."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from archrouter.x import y`: a dependency on submodule x.y where y is one, else on x
            subs = [f"{node.module}.{a.name}" for a in node.names if _exists(f"{node.module}.{a.name}")]
            out += [(m, node.lineno) for m in subs]
            if len(subs) < len(node.names):
                out.append((node.module, node.lineno))
    return [(m, line) for m, line in out if m == "archrouter" or m.startswith("archrouter.")]


def _exists(module: str) -> bool:
    rel = Path(*module.split("."))
    return (PACKAGE.parent / rel).with_suffix(".py").is_file() or (PACKAGE.parent / rel / "__init__.py").is_file()


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_the_package_is_the_only_import_root():
    root = PACKAGE.parents[1]
    for name in ("router", "backends", "policies", "kernels", "evals", "ray_app"):
        assert not (root / name / "__init__.py").exists() and not (root / f"{name}.py").exists(), name
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()} == {
        "router", "backends", "policies", "kernels", "evals", "cli"}


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_arrows_run_one_way(path: Path):
    importer = _module_name(path)
    room = _room(importer)
    if room in TOP or path.name == "__main__.py":
        return
    bad = [f"line {line}: {m}" for m, line in _imports(path)
           if m != "archrouter" and _room(m) not in ALLOWED[room]]
    assert not bad, f"{importer} ({room}) may import {sorted(ALLOWED[room])} only: {bad}"


@pytest.mark.parametrize("path", sorted((PACKAGE / "policies").rglob("*.py")),
                         ids=lambda p: p.name)
def test_policies_never_import_torch(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
    assert not [n for n in names if n.split(".")[0] in {"torch", "triton"}]


def test_no_import_cycles_between_modules():
    graph: dict[str, set[str]] = {}
    for path in SOURCES:
        me = _module_name(path)
        deps = set()
        for m, _ in _imports(path):
            # a module depends on the module it names (not on the package __init__s on the way)
            while m != "archrouter" and not _exists(m):
                m = m.rsplit(".", 1)[0]
            if m not in ("archrouter", me):
                deps.add(m)
        graph[me] = deps
    cycles = _strongly_connected(graph)
    assert not cycles, f"modules that import each other: {cycles}"


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan: the components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found
