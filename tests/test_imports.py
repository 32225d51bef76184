"""Import hygiene of the two packages: no import cycle between modules, and no private name
(``_x``) imported from another module. Imports inside functions count too: a lazy import
hides a cycle from Python, not from the reader."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import ROOT

PACKAGES = {"facedapt": ROOT / "facedapt", "facedapt_plugins": ROOT / "plugins"}


def module_files(packages: dict[str, Path]) -> dict[str, Path]:
    mods = {}
    for pkg, root in packages.items():
        for f in root.rglob("*.py"):
            parts = [pkg, *f.relative_to(root).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = f
    return mods


def import_graph(mods: dict[str, Path]) -> tuple[dict[str, set[str]], list[str]]:
    """Module -> modules of the project it imports; plus every private name imported across modules."""

    def owner(name: str) -> str:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name

    edges: dict[str, set[str]] = {m: set() for m in mods}
    private = []
    for m, f in mods.items():
        is_pkg = f.name == "__init__.py"
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"), str(f))):
            if isinstance(node, ast.Import):
                pairs = [(a.name, None) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = m.split(".") if is_pkg else m.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    src = ".".join(base + ([node.module] if node.module else []))
                else:
                    src = node.module or ""
                pairs = [(f"{src}.{a.name}" if f"{src}.{a.name}" in mods else src, a.name) for a in node.names]
            else:
                continue
            for target, name in pairs:
                t = owner(target)
                if not t or t == m or m.startswith(t + "."):
                    continue  # outside the project, the module itself, or its own package
                edges[m].add(t)
                if name and name.startswith("_") and not name.startswith("__"):
                    private.append(f"{f}:{node.lineno}: {name} from {t}")
    return edges, private


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}

    def visit(u: str, stack: list[str]) -> None:
        state[u] = 1
        stack.append(u)
        for v in sorted(edges[u]):
            if state.get(v) == 1:
                found.append(stack[stack.index(v):] + [v])
            elif not state.get(v):
                visit(v, stack)
        stack.pop()
        state[u] = 2

    for u in sorted(edges):
        if not state.get(u):
            visit(u, [])
    return found


def test_no_import_cycle() -> None:
    edges, _ = import_graph(module_files(PACKAGES))
    assert [" -> ".join(c) for c in cycles(edges)] == []


def test_no_private_name_imported_across_modules() -> None:
    _, private = import_graph(module_files(PACKAGES))
    assert private == []


@pytest.fixture
def tangled(tmp_path: Path) -> dict[str, Path]:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.b import thing\n")
    (pkg / "b.py").write_text("def f():\n    from .sub.c import _hidden\n")  # lazy and relative: still seen
    (pkg / "sub" / "c.py").write_text("import pkg.a\n_hidden = 1\n")
    return {"pkg": pkg}


def test_the_checks_find_a_lazy_relative_cycle_and_a_private_import(tangled: dict[str, Path]) -> None:
    edges, private = import_graph(module_files(tangled))
    assert cycles(edges) == [["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]]
    assert len(private) == 1 and "_hidden from pkg.sub.c" in private[0]
