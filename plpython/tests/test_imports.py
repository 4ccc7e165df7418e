"""The module's import graph has no cycle (issue 17), counting the imports made
inside functions, which would otherwise hide one."""

import ast
from pathlib import Path

import hybrid_search

PACKAGE = Path(hybrid_search.__file__).parent


def _imports() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (relative imports, at any depth)."""
    graph = {}
    for source in PACKAGE.glob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                found |= {node.module} if node.module else {a.name for a in node.names}
        graph[source.stem] = {name.split(".")[0] for name in found}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}

    def visit(module, path):
        state[module] = "open"
        for imported in sorted(graph.get(module, ())):
            if state.get(imported) == "open":
                return [*path[path.index(imported) :], imported]
            if imported not in state and (found := visit(imported, [*path, imported])):
                return found
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module, [module])):
            return found
    return None


def test_no_import_cycle():
    assert _cycle(_imports()) is None


def test_a_cycle_is_found():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_server_module_holds_no_tooling():
    """Command-line tools live in hybrid_search_tools, which the server never imports."""
    for source in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
                assert not any(n.startswith(("hybrid_search_tools", "argparse")) for n in names), (
                    source.name
                )
