"""The package's import structure: every module imports on its own, and no import circle.

The graph counts every ``import`` of a neuronmap module, at module level or inside a function
(a lazy import still ties the two modules together), except those under ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import neuronmap

ROOT = Path(neuronmap.__file__).parent

def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    return ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")


def _imports(tree: ast.AST, package: str) -> Iterator[str]:
    """Every imported name (``module`` or ``module.attribute``) outside ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            for other in node.orelse:
                yield from _imports(ast.Module(body=[other], type_ignores=[]), package)
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import sub` ties to pkg.sub, `from mod import name` to mod (resolved below)
            yield from (f"{base}.{alias.name}" for alias in node.names)
        else:
            yield from _imports(node, package)


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for imported in _imports(ast.parse(path.read_text(encoding="utf-8")), package):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                edges.add(imported)
        graph[name] = edges
    return graph


def circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan 1972), iteratively."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
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
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def test_the_graph_sees_lazy_imports_and_skips_type_checking() -> None:
    graph = import_graph()
    assert "neuronmap.compliance.audit" in graph["neuronmap.compliance.gates"]  # a lazy import
    assert "neuronmap.compliance.gates" not in graph["neuronmap.compliance.audit"]  # TYPE_CHECKING only
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]


def test_no_import_circle() -> None:
    found = [sorted(c) for c in circles(import_graph())]
    assert found == [], f"modules that import each other: {found}"


def test_compliance_cli_runs_and_reporters_are_circle_free() -> None:
    found = circles(import_graph())
    areas = ("neuronmap.compliance", "neuronmap.cli", "neuronmap.runs", "neuronmap.reporters", "neuronmap.gates",
             "neuronmap.audit", "neuronmap.cards", "neuronmap.callbacks", "neuronmap.capture", "neuronmap.metrics")
    assert [sorted(c) for c in found if any(m.startswith(areas) for m in c)] == []


def test_numerics_import_only_numerics() -> None:
    """``metrics`` and ``stats`` are pure functions on arrays: they import no analysis, capture or results."""
    graph = import_graph()
    numerics = ("neuronmap.metrics", "neuronmap.stats", "neuronmap._stats_cv", "neuronmap._stats_base")
    allowed = (*numerics, "neuronmap.errors", "neuronmap._imports")
    offenders = {m: sorted(e for e in edges if not e.startswith(allowed))
                 for m, edges in graph.items() if m.startswith(numerics)}
    assert {m: e for m, e in offenders.items() if e} == {}


def test_no_domain_module_imports_the_cli() -> None:
    graph = import_graph()
    front_ends = ("neuronmap.cli", "neuronmap.service")  # the service reads the analyze config
    offenders = {m: sorted(e for e in edges if e.startswith("neuronmap.cli"))
                 for m, edges in graph.items() if not m.startswith(front_ends)}
    assert {m: e for m, e in offenders.items() if e} == {}


def _loaded_by_parent(name: str, modules: dict[str, Path]) -> bool:
    """Whether the parent package's ``__init__`` imports ``name`` at module level: importing
    ``name`` alone then runs exactly what importing the parent runs, so one child covers both."""
    parent = name.rpartition(".")[0]
    if parent not in modules:
        return False
    body = ast.parse(modules[parent].read_text(encoding="utf-8")).body
    imported = {f"{n.module}.{a.name}" for n in body if isinstance(n, ast.ImportFrom) for a in n.names}
    imported |= {a.name for n in body if isinstance(n, ast.Import) for a in n.names}
    return name in imported or any(i.startswith(name + ".") for i in imported)


def test_every_module_imports_alone_in_a_fresh_interpreter() -> None:
    modules = _modules()
    names = sorted(n for n in modules if not n.endswith("__main__") and not _loaded_by_parent(n, modules))
    # A fresh interpreter per module costs minutes (torch each time). Instead one fresh interpreter
    # loads the third-party libraries, then forks a child per module: each child starts with no
    # neuronmap module loaded, so an import that only works after another module would fail there.
    code = (
        "import json, os, sys, traceback\n"
        "import matplotlib; matplotlib.use('Agg')\n"
        "import importlib\n"
        "for lib in ('numpy', 'pandas', 'scipy.stats', 'sklearn.linear_model', 'torch', 'yaml', 'jinja2',\n"
        "            'transformers', 'lightning', 'mlflow', 'fastapi', 'plotly', 'matplotlib.pyplot'):\n"
        "    try:\n"
        "        importlib.import_module(lib)\n"
        "    except ImportError:\n"
        "        pass\n"
        f"names = {names!r}\n"
        "failures = []\n"
        "for name in names:\n"
        "    read, write = os.pipe()\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        os.close(read)\n"
        "        try:\n"
        "            __import__(name)\n"
        "            os._exit(0)\n"
        "        except BaseException:\n"
        "            os.write(write, traceback.format_exc().strip().splitlines()[-1].encode()[:500])\n"
        "            os._exit(1)\n"
        "    os.close(write)\n"
        "    message = os.read(read, 1000).decode()\n"
        "    os.close(read)\n"
        "    if os.waitpid(pid, 0)[1] != 0:\n"
        "        failures.append([name, message])\n"
        "print(json.dumps(failures))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300,
                         env={**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"})
    failures = json.loads(out.stdout.strip().splitlines()[-1])
    assert failures == [], failures
