"""The shape of the ``server`` package: no import cycles, domains that never reach into the transport, no back-doors.

Read from the source with ``ast``, so that every import counts: those inside functions and those under
``if TYPE_CHECKING:`` too, since a cycle that only the type checker sees still binds the modules together.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parent.parent
SERVER: Final = ROOT / "server"
DOMAINS: Final = ("server.llm", "server.chat", "server.admin")
TRANSPORT: Final = ("server.rpc", "server.procedures", "server.app")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(SERVER.rglob("*.py"))}


def _within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == package or module.startswith(package + ".") for package in packages)


def _imported(module: str, path: Path, known: Mapping[str, Path]) -> Iterator[str]:
    """The modules ``module`` imports: ``from server.x import y`` is ``server.x.y`` when that is a module."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                yield submodule if submodule in known else base


def _graph() -> dict[str, set[str]]:
    known = _modules()
    return {
        module: {target for target in _imported(module, path, known) if target in known}
        for module, path in known.items()
    }


def _cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module, and modules that import themselves (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_imports_in_functions_and_under_type_checking() -> None:
    graph = _graph()
    assert "server.rpc.errors" in graph["server.rpc.dispatch"]
    assert len(graph) > 40


def test_the_cycle_finder_finds_a_cycle_and_a_self_import() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d"}, "e": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"], ["d"]]


def test_server_modules_import_each_other_without_cycles() -> None:
    cycles = _cycles(_graph())
    assert not cycles, "import cycles among server modules:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_domains_never_import_the_transport() -> None:
    graph = _graph()
    offending = sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        if _within(module, DOMAINS)
        for target in targets
        if _within(target, TRANSPORT)
    )
    assert not offending, "\n".join(offending)


def test_no_server_module_reaches_into_a_private_pool_method() -> None:
    offending = sorted(module for module, path in _modules().items() if "_run_in_pool" in path.read_text())
    assert not offending, f"these modules call PostgresEngine._run_in_pool: {', '.join(offending)}"
