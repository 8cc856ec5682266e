"""The shape of the package that docs/ARCHITECTURE.md promises, checked from the source itself.

import-linter (run by scripts/test.sh) checks who may import whom; this checks what it cannot:
no import cycle at run time, and modules and functions small enough to read."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PKG = SRC / "opencs"
MODULE_LINES, FUNCTION_LINES = 500, 80
# the exceptions, each with the reason it is one piece (docs/ARCHITECTURE.md "Size")
BIG_MODULES = {
    "opencs.providers.local": 566,  # one machine's life on this host: netns, cgroup, mounts, launcher, secrets' files
    "opencs.compose.service_spec": 534,  # the table of compose keys -> Swarm service spec, key by key
    "opencs.routing.router": 512,  # HAProxy config rendering and its reload, one file to read side by side
}
LONG_FUNCTIONS = {
    "opencs.cli.server_cmd:register": 122,  # typer command declarations: options, not logic
}


def _modules() -> dict[str, ast.Module]:
    out = {}
    for f in sorted(PKG.rglob("*.py")):
        if "migrations" in f.parts:
            continue  # Alembic revisions are generated DDL, not modules anyone imports
        name = ".".join(f.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        out[name] = ast.parse(f.read_text(), str(f))
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _import_time_imports(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """opencs modules imported when `name` is imported (module level, not under TYPE_CHECKING)."""
    pkg = name if (PKG / Path(*name.split(".")[1:]) / "__init__.py").exists() else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(stmts: list[ast.stmt]) -> None:
        for s in stmts:
            if isinstance(s, ast.Import):
                found.update(a.name for a in s.names)
            elif isinstance(s, ast.ImportFrom):
                base = s.module or ""
                if s.level:
                    parts = pkg.split(".")
                    base = ".".join(parts[: len(parts) - s.level + 1] + ([base] if base else []))
                found.add(base)
                found.update(f"{base}.{a.name}" for a in s.names)
            elif isinstance(s, ast.If):
                if not _is_type_checking(s):
                    visit(s.body)
                visit(s.orelse)
            elif isinstance(s, ast.Try):
                visit(s.body)
                for h in s.handlers:
                    visit(h.body)
                visit(s.orelse)
                visit(s.finalbody)

    visit(tree.body)
    # importing a.b.c runs a and a.b first
    closed = set()
    for m in found:
        parts = m.split(".")
        closed.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    # the packages that hold `name` are being imported already when `name` runs: no edge back to them
    mine = {name.rsplit(".", i)[0] for i in range(1, name.count(".") + 1)}
    return {m for m in closed if m in known and m != name and m not in mine}


def test_no_import_cycle_at_run_time() -> None:
    mods = _modules()
    graph = {n: _import_time_imports(n, t, set(mods)) for n, t in mods.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []

    def strong(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
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
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            strong(v)
    assert cycles == [], f"import cycles at run time: {cycles}"


def test_cycle_finder_can_fail(tmp_path: Path) -> None:
    a = ast.parse("from opencs import b\n")
    b = ast.parse("import opencs.a\n")
    known = {"opencs", "opencs.a", "opencs.b"}
    assert "opencs.b" in _import_time_imports("opencs.a", a, known)
    assert "opencs.a" in _import_time_imports("opencs.b", b, known)
    assert _import_time_imports("opencs.a", ast.parse("if TYPE_CHECKING:\n    from opencs import b\n"), known) \
        == set()


@pytest.mark.parametrize("limit_kind", ["modules", "functions"])
def test_sizes(limit_kind: str) -> None:
    too_big = []
    for name, tree in _modules().items():
        if limit_kind == "modules":
            lines = max((getattr(n, "end_lineno", 0) or 0) for n in ast.walk(tree)) if tree.body else 0
            if lines > BIG_MODULES.get(name, MODULE_LINES):
                too_big.append(f"{name}: {lines} lines")
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > LONG_FUNCTIONS.get(f"{name}:{node.name}", FUNCTION_LINES):
                    too_big.append(f"{name}:{node.name}: {n} lines")
    assert too_big == [], "over the size limits (split them, or list them above with the reason): " + \
        ", ".join(too_big)
