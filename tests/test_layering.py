"""The layering stays: the import graph of jaxviz/ and weights_convert/, built from the source with ``ast``.

Fails on any cycle between files, on any import from weights_convert into jaxviz (jaxviz is the lower
package), and on any import that points up the layers of jaxviz (docs/architecture.md).
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("jaxviz", "weights_convert")
# jaxviz's layers, bottom up; a module may import its own layer and the ones below.
LAYERS = {
    "jaxviz.core": 0, "jaxviz.models": 0,
    "jaxviz.io": 1,
    "jaxviz.scoring": 2,
    "jaxviz.recipes": 3, "jaxviz.lenses": 3,
    "jaxviz.inverse_set": 4,
    "jaxviz.workflows": 5, "jaxviz.training": 5,
    "jaxviz.cli": 6, "jaxviz.__main__": 7, "jaxviz": 7,
}


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def source_modules() -> dict[str, pathlib.Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imported_modules(name: str, path: pathlib.Path, known: set[str]) -> set[str]:
    """The project modules a file imports (``from pkg import sub`` counts as importing ``pkg.sub``)."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = source_modules()
    known = set(modules)
    return {name: imported_modules(name, path, known) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle as a list of modules (first == last), or None; ignores a package importing its own parent."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if node.startswith(nxt + "."):  # importing a submodule runs its package's __init__ first
                continue
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in LAYERS:
            return LAYERS[".".join(parts[:i])]
    return None


def test_no_import_cycle_between_files():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_jaxviz_never_imports_weights_convert():
    bad = sorted(f"{a} imports {b}" for a, deps in import_graph().items() if a.startswith("jaxviz")
                 for b in deps if b.startswith("weights_convert"))
    assert not bad, bad


def test_jaxviz_imports_point_down_the_layers():
    bad = []
    for a, deps in import_graph().items():
        if not a.startswith("jaxviz") or a in ("jaxviz",):
            continue
        for b in deps:
            if b.startswith("jaxviz") and b != "jaxviz" and layer_of(b) > layer_of(a):
                bad.append(f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})")
    assert not bad, bad


def test_core_knows_no_architecture():
    bad = sorted(f"{a} imports {b}" for a, deps in import_graph().items() if a.startswith("jaxviz.core")
                 for b in deps if not b.startswith("jaxviz.core"))
    assert not bad, bad


def test_every_jaxviz_module_has_a_layer():
    assert [m for m in source_modules() if m.startswith("jaxviz") and layer_of(m) is None] == []


def test_imports_sit_at_module_level():
    """Imports inside function bodies hide cycles; the few kept for optional or slow packages are listed."""
    allowed = {("jaxviz.models.checkpoint", "orbax.checkpoint"), ("weights_convert.mean_image", "scipy.io")}
    found = []
    for name, path in source_modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, (ast.Import, ast.ImportFrom)):
                        mod = inner.module if isinstance(inner, ast.ImportFrom) else inner.names[0].name
                        if (name, mod) not in allowed:
                            found.append(f"{name}: {mod}")
    assert not found, found


@pytest.mark.parametrize("graph, cycle", [
    ({"a": {"b"}, "b": {"a"}}, ["a", "b", "a"]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
    ({"p.x": {"p"}, "p": {"p.x"}}, None),  # a package importing its submodule is no cycle
])
def test_cycle_finder_on_small_graphs(graph, cycle):
    assert find_cycle(graph) == cycle
