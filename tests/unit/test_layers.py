"""The layout of ``src/axon`` (docs/architecture.md): imports point one way, down the layers,
with no cycle; a worker process imports nothing of the orchestrator.

Every ``import`` of an ``axon`` module counts, at module level or inside a function (a lazy
import is still a dependency), except under ``if TYPE_CHECKING:`` (annotations only).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"

LAYERS: list[tuple[str, ...]] = [
    # 0. vocabulary: errors, exits, the run's events, the wire; pure, no I/O but the channel's
    ("axon.errors", "axon.exits", "axon.stream", "axon.protocol", "axon._version"),
    # 1. the pure supervision decisions, settings and checks
    (
        "axon.supervisor.states",
        "axon.supervisor.policy",
        "axon.conversation_locks",
        "axon.config",
        "axon.validation",
        "axon.status",
        "axon.run_call",
    ),
    # 2. the child side of a worker process
    ("axon.worker",),
    # 3. what the orchestrator is made of
    ("axon.observability", "axon.store", "axon._tasks"),
    ("axon.pool",),
    ("axon.supervisor.spawner", "axon.supervisor.supervisor", "axon.router", "axon.agent"),
    # 4. the runtime
    ("axon.runtime",),
    # 5. what is built on the runtime
    ("axon.http", "axon.client", "axon.loadtest"),
    ("axon.chaos",),
    ("axon.testing",),
    # 6. the command and the demo
    ("axon.cli", "axon.demo", "axon.examples"),
    ("axon",),
]
"""Lower layers first; a module may import from its own layer and those before it."""

OBSERVABILITY_VIEWS = {"axon.observability.metrics", "axon.observability.monitor"}


def modules() -> dict[str, Path]:
    found = {}
    for path in (SRC / "axon").rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def imports_of(path: Path, known: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            test = node.test
            if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
                isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
            ):
                for child in node.orelse:
                    self.visit(child)
                return
            self.generic_visit(node)

        def visit_Import(self, node: ast.Import) -> None:
            found.update(alias.name for alias in node.names)

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            if node.level or not node.module:
                return
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & set(known)
            found.update(submodules)
            if len(submodules) < len(node.names):  # names the package itself defines
                found.add(node.module)

    Visitor().visit(tree)
    return {name for name in found if name in known}


def layer_of(module: str) -> int:
    best = None
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or module.startswith(prefix + ".")
            if matches and (best is None or len(prefix) > best[1]):
                best = (index, len(prefix))
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best[0]


GRAPH = {name: imports_of(path, modules()) - {name} for name, path in modules().items()}


def test_every_module_has_a_layer() -> None:
    for module in GRAPH:
        layer_of(module)


def test_imports_point_down_the_layers() -> None:
    upward = sorted(
        f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})"
        for module, targets in GRAPH.items()
        for target in targets
        if layer_of(target) > layer_of(module) and not _package_of(module, target)
    )
    assert upward == []


def _package_of(module: str, target: str) -> bool:
    """A package's ``__init__`` may re-export what its own modules define."""
    return target.startswith(module + ".")


def test_there_is_no_import_cycle() -> None:
    graph = {m: {t for t in ts if not _package_of(m, t)} for m, ts in GRAPH.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    assert cycles == []


@pytest.mark.parametrize(
    ("module", "must_not_reach"),
    [
        # the child side of a worker knows the wire and its agent, not the orchestrator
        ("axon.worker", ("axon.pool", "axon.supervisor.supervisor", "axon.runtime", "axon.http")),
        # chaos is built on the runtime; the testing helpers may use chaos, never the reverse
        ("axon.chaos", ("axon.testing",)),
        # the pure decisions import nothing that does I/O
        ("axon.supervisor.policy", ("axon.pool", "axon.store", "axon.observability")),
        ("axon.supervisor.states", ("axon.pool", "axon.store", "axon.observability")),
        # the supervision driver knows workers only through its Spawner seam
        ("axon.supervisor.supervisor", ("axon.pool",)),
        # nothing below the HTTP edge knows about HTTP
        ("axon.runtime", ("axon.http", "axon.client", "axon.cli")),
        # the views read the runtime only through the snapshots they are given
        ("axon.observability", ("axon.runtime", "axon.agent")),
    ],
)
def test_what_each_part_must_not_depend_on(module: str, must_not_reach: tuple[str, ...]) -> None:
    reached = _reachable(module)
    assert not {m for m in reached for banned in must_not_reach if _under(m, banned)}


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _reachable(start: str) -> set[str]:
    seen: set[str] = set()
    todo = [m for m in GRAPH if _under(m, start)]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo.extend(GRAPH[module])
    return seen


def test_a_cold_worker_imports_nothing_of_the_orchestrator() -> None:
    """``import axon.worker.host`` (what ``python -m axon.worker`` does) leaves the runtime,
    its HTTP edge and its metrics unimported: the package's top level is lazy."""
    probe = (
        "import sys, axon.worker.host\n"
        "print(sorted(m for m in ('axon.runtime', 'axon.pool.process', 'fastapi', "
        "'prometheus_client', 'uvicorn', 'axon.store.base') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.strip() == "[]"
