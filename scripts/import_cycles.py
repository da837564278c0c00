"""Report import cycles between CodeSuture's modules, imports inside functions included.

    python scripts/import_cycles.py [src/codesuture]

Every ``import codesuture.x`` / ``from codesuture.x import y`` anywhere in a module
(module level, functions, ``if TYPE_CHECKING:`` blocks excepted) is an edge, and so is
the implicit import of every package above a module (Python imports ``a`` and ``a.b``
before ``a.b.c``); a package ``__init__`` counts as its package. Exit 1 and print each
cycle when there is one.
"""

from __future__ import annotations

import ast
import os
import sys


def module_name(root: str, path: str) -> str:
    rel = os.path.relpath(path, os.path.dirname(root))[: -len(".py")].replace(os.sep, ".")
    return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def edges(root: str) -> dict[str, set[str]]:
    names: dict[str, str] = {}
    for d, _, files in os.walk(root):
        for f in files:
            if f.endswith(".py"):
                names[module_name(root, os.path.join(d, f))] = os.path.join(d, f)
    graph: dict[str, set[str]] = {m: set() for m in names}
    for mod, path in names.items():
        tree = ast.parse(open(path, encoding="utf-8").read())
        skip: set[int] = set()
        for node in ast.walk(tree):  # `if TYPE_CHECKING:` bodies are not imports at run time
            if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
                skip.update(id(n) for b in node.body for n in ast.walk(b))
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for t in targets:
                while t and t not in names:
                    t = t.rpartition(".")[0]
                while t:  # the module and every package above it
                    if t != mod and not mod.startswith(t + "."):
                        graph[mod].add(t)
                    t = t.rpartition(".")[0]
        parent = mod.rpartition(".")[0]
        while parent:  # importing a module imports its packages first
            graph[mod].add(parent)
            parent = parent.rpartition(".")[0]
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


if __name__ == "__main__":
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "src", "codesuture")
    found = cycles(edges(os.path.abspath(root)))
    for comp in found:
        print("import cycle:", " <-> ".join(comp))
    print(f"{len(found)} import cycle(s)")
    sys.exit(1 if found else 0)
