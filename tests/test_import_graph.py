"""The package's import graph has no circles: every ``llflow`` module's imports of other ``llflow``
modules — at the top and inside functions alike, leaving out ``if TYPE_CHECKING:`` blocks — form a
directed acyclic graph, and the engines never import the application layer."""
from __future__ import annotations

import ast
from pathlib import Path

import llflow

ROOT = Path(llflow.__file__).resolve().parent
APPLICATION = ("llflow.inference", "llflow.request", "llflow.cli", "llflow.demo", "llflow.evaluation")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: Path, modules: set[str]) -> set[str]:
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    files = sorted(ROOT.rglob("*.py"))
    modules = {_module_name(p) for p in files}
    return {_module_name(p): _imports(p, modules) for p in files}


def _find_cycle(graph: dict[str, set[str]]) -> list[str]:
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = dfs(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state:
            cycle = dfs(node)
            if cycle:
                return cycle
    return []


def _without_parent_packages(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """A module importing its own package's ``__init__`` (re-exports) is how Python loads it; only
    edges between distinct modules that are not each other's package count."""
    return {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}


def test_no_import_circles() -> None:
    graph = _without_parent_packages(import_graph())
    assert len(graph) > 30
    cycle = _find_cycle(graph)
    assert not cycle, " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles() -> None:
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) == []


def test_engines_and_the_model_do_not_import_the_application_layer() -> None:
    graph = import_graph()
    low_level = [m for m in graph if m in ("llflow.engines", "llflow.ort_engine", "llflow.export", "llflow.runtime",
                                           "llflow.preprocess") or m.startswith("llflow.model")]
    for module in low_level:
        bad = {d for d in graph[module] if d.startswith(APPLICATION)}
        assert not bad, f"{module} imports {sorted(bad)}"
