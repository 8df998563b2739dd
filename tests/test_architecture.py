"""The package's shape, checked: no import cycle between modules, and the import-linter contracts in pyproject.toml.

The graph is built with grimp (import-linter's own library), which counts imports under `if TYPE_CHECKING:` and
imports inside functions: a cycle hidden there still ties the modules together (a type-only import is a promise
that the lower module knows the upper one), so it counts here too.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent


def import_graph() -> dict[str, set[str]]:
    graph = grimp.build_graph("runcast", include_external_packages=False)  # TYPE_CHECKING imports included
    return {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative): each one is a
    set of modules that import one another, directly or through others."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    component.append(m)
                    if m == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_cycle_finder_finds_a_cycle_and_only_cycles() -> None:
    """The finder itself: a three-module circle is found, a diamond is not a cycle."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b", "c"}, "b": {"d"}, "c": {"d"}, "d": set()}) == []


def test_no_import_cycle_between_modules() -> None:
    edges = import_graph()
    assert "runcast.metrics" in edges and "runcast.hub" in edges  # the graph is the package's, not an empty one
    found = cycles(edges)
    detail = "\n".join(
        " <-> ".join(c) + ":\n" + "\n".join(f"    {a} -> {b}" for a in c for b in sorted(edges[a]) if b in c)
        for c in found
    )
    assert found == [], f"import cycles (TYPE_CHECKING imports count):\n{detail}"


def test_import_linter_contracts_are_kept() -> None:
    """`lint-imports` with pyproject.toml's contracts: the layers, and the sans-I/O core importing no I/O."""
    exe = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(exe), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout
