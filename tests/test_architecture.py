"""The import graph inside ``jaxgru/`` has no cycle, counting every import: module level,
``TYPE_CHECKING`` blocks and imports inside functions (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "jaxgru"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The jaxgru modules ``path`` imports, wherever the import statement stands."""
    found = set()
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path.parent)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))  # fmt: skip
            # ``from a import b``: the module a.b where there is one, else a's own names
            subs = [f"{base}.{alias.name}" for alias in node.names]
            names = [sub if sub in modules else base for sub in subs]
        else:
            continue
        found |= {name for name in names if name in modules}
    return found - {_module_name(path)}


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    return {_module_name(p): _imports(p, modules) for p in paths}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return [*path, node, nxt]
            if nxt not in state and (found := visit(nxt, [*path, node])):
                return found
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node, [])):
            return found
    return None


def test_no_import_cycle_inside_jaxgru():
    graph = import_graph()
    # the package's __init__ only re-exports: nothing inside jaxgru imports it back, but the
    # command that sits on top of the public API
    importers = sorted(m for m, deps in graph.items() if "jaxgru" in deps)
    assert importers == ["jaxgru.cli"] and "jaxgru.cli" not in graph["jaxgru"]
    importers.remove("jaxgru.cli")
    assert importers == [], f"modules that import the jaxgru package itself: {importers}"
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_core_imports_point_one_way():
    graph = import_graph()
    leaves = {"jaxgru.errors"}  # the error family imports nothing
    assert graph["jaxgru.errors"] == set()
    assert graph["jaxgru.cell"] <= {"jaxgru.activations", "jaxgru.initializers", *leaves}
    assert graph["jaxgru.recurrence"] <= {
        "jaxgru.cell", "jaxgru.execution", "jaxgru.activations", "jaxgru.onednn", *leaves,
    }  # fmt: skip
    assert graph["jaxgru.execution"] <= {"jaxgru.onednn", *leaves}
    assert graph["jaxgru.onednn"] == set()  # the oneDNN kernel: jax and ctypes only
    below_gru = ("jaxgru.cell", "jaxgru.recurrence", "jaxgru.execution", "jaxgru.onednn")
    assert not any("jaxgru.gru" in graph[m] for m in below_gru)


def test_the_model_and_the_layer_protocol_name_no_layer_class():
    graph = import_graph()
    assert graph["jaxgru.layer"] <= {"jaxgru._naming", "jaxgru.errors"}
    assert not graph["jaxgru.model"] & {"jaxgru.gru", "jaxgru.layers"}
    for module in ("jaxgru.keras_io.h5", "jaxgru.keras_io.files"):
        assert not graph[module] & {"jaxgru.gru", "jaxgru.layers"}, module


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
