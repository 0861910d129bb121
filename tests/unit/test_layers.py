"""The import contract: ``streams/`` is the I/O-free core, ``agents/`` the shell around it.

Read from the source with ``ast`` (nothing is imported), so a forbidden import
fails here whether it sits at the top of a module or inside a function.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Modules that do I/O, run threads or processes, or are the client libraries the shell wraps.
IO_MODULES = frozenset(
    {
        "aiohttp",
        "aiokafka",
        "asyncio",
        "confluent_kafka",
        "faust",
        "mode",
        "prometheus_client",
        "rocksdict",
        "socket",
        "subprocess",
        "threading",
    }
)


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``, at any depth."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            yield node.lineno, module


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _top(module: str) -> str:
    return module.split(".", 1)[0]


@pytest.mark.parametrize("path", _modules("streams"), ids=lambda p: p.name)
def test_the_core_imports_no_io_module_and_nothing_from_the_shell(path: Path) -> None:
    bad = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for line, module in _imports(path)
        if _top(module) in IO_MODULES | {"agents", "bench", "tests", "appservice_streams_synapse"}
    ]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("path", _modules("agents"), ids=lambda p: p.name)
def test_the_shell_imports_neither_the_benchmark_nor_the_tests(path: Path) -> None:
    bad = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for line, module in _imports(path)
        if _top(module) in {"bench", "tests"}
    ]
    assert not bad, "\n".join(bad)


def _graph() -> dict[str, set[str]]:
    """Module → the project modules it imports (``streams.*``, ``agents.*``)."""
    names = {
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
        for package in ("streams", "agents")
        for p in _modules(package)
    }
    graph: dict[str, set[str]] = {}
    for name, path in names.items():
        targets = set()
        for _, module in _imports(path):
            # `from agents import x` names the module agents.x when there is one.
            while module and module not in names:
                module = module.rpartition(".")[0]
            if (
                module
                and module != name
                and _top(module) in {"streams", "agents"}
                and module not in {"streams", "agents"}
            ):
                targets.add(module)
        graph[name] = targets
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle in ``graph``, as the list of modules on it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (found := visit(target)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_no_module_of_the_project_imports_itself_through_others() -> None:
    cycle = _cycle(_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    # The contract above is only as good as the search: a known cycle must be found.
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_io_check_sees_an_import_inside_a_function(tmp_path: Path) -> None:
    source = ROOT / "streams" / "_probe_for_test_layers.py"
    source.write_text("def f():\n    import subprocess\n    return subprocess\n")
    try:
        assert (2, "subprocess") in list(_imports(source))
    finally:
        source.unlink()
