"""The package's shape: no import cycle among its modules (run as a script, it prints the graph).

Counted are the imports a module runs when it loads: top-level ``import``/``from`` statements of
kernel_bridge modules, outside ``if TYPE_CHECKING:``. Imports inside functions are how a module
reaches an optional or heavy one when used; they cannot make loading circular.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "kernel_bridge"


def module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def load_time_imports(path: Path, known: set[str], everywhere: bool = False) -> set[str]:
    """The kernel_bridge modules ``path`` imports when it loads (``everywhere``: also inside
    functions and for type checkers, every module it depends on)."""
    found: set[str] = set()

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
                continue
            if isinstance(node, (ast.If, ast.Try, ast.With)):
                for block in ("body", "orelse", "finalbody", "handlers"):
                    for part in getattr(node, block, []):
                        visit(part.body if isinstance(part, ast.ExceptHandler) else [part])
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [f"{node.module}.{alias.name}" for alias in node.names]
                targets = [n for n in names if n in known] or [node.module]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            found.update(t for t in targets if t.startswith("kernel_bridge") and t in known)

    tree = ast.parse(path.read_text(encoding="utf-8"))
    if everywhere:
        visit([n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))])
    else:
        visit(tree.body)
    return found


def import_graph(package: Path = PACKAGE, everywhere: bool = False) -> dict[str, set[str]]:
    files = sorted(package.rglob("*.py"))
    known = {module_name(f, package) for f in files}
    graph = {module_name(f, package): load_time_imports(f, known, everywhere) for f in files}
    for name, deps in graph.items():
        deps.discard(name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        if state.get(node) == 1:
            return [*path[path.index(node) :], node]
        if state.get(node) == 2:
            return None
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if cycle := visit(dep, [*path, node]):
                return cycle
        state[node] = 2
        return None

    for node in sorted(graph):
        if cycle := visit(node, []):
            return cycle
    return None


def test_the_package_loads_without_an_import_cycle():
    graph = import_graph()
    assert "kernel_bridge.execution.kernel" in graph  # the walk saw the package
    assert find_cycle(graph) is None


def test_the_execution_stage_has_no_circle_even_through_imports_inside_functions():
    graph = import_graph(everywhere=True)
    stage = {n: {d for d in deps if d.startswith("kernel_bridge.execution.")}
             for n, deps in graph.items() if n.startswith("kernel_bridge.execution.")}  # fmt: skip
    assert len(stage) >= 8
    assert find_cycle(stage) is None


def test_the_execution_stage_imports_no_front_end_and_no_reasoner():
    graph = import_graph(everywhere=True)
    above = ("kernel_bridge.reasoner", "kernel_bridge.magic", "kernel_bridge.cli",
             "kernel_bridge.lab", "kernel_bridge.render", "kernel_bridge.events")  # fmt: skip
    for name, deps in graph.items():
        if name.startswith("kernel_bridge.execution"):
            assert not {d for d in deps if d.startswith(above)}, name


def test_a_cycle_is_found_where_there_is_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


if __name__ == "__main__":  # python tests/test_structure.py [PACKAGE_DIR] [--everywhere]
    args = [a for a in sys.argv[1:] if a != "--everywhere"]
    graph = import_graph(
        Path(args[0]).resolve() if args else PACKAGE, everywhere="--everywhere" in sys.argv
    )
    for name in sorted(graph):
        short = ", ".join(sorted(d.removeprefix("kernel_bridge.") for d in graph[name]))
        print(f"{name.removeprefix('kernel_bridge.') or '__init__':28} -> {short or '-'}")
    print("cycle:", " -> ".join(find_cycle(graph) or []) or "none")
