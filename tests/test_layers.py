"""The package reads bottom-up: no import circle among the modules of lib/subterra.

Every ``import`` and ``from ... import`` statement counts, also one inside a function: a lazy import
defers the cost, not the dependency, and a reader following the names still goes round in a circle.
What does not count is the package above a module, which Python runs first when the module is
imported (``subterra.backends`` before ``subterra.backends.claude``): that is where a module lives,
not a name it reads.
"""

import ast
from pathlib import Path

import networkx as nx

PACKAGE = Path(__file__).resolve().parents[1] / "lib" / "subterra"


def module_name(file: Path, root: Path) -> str:
    parts = [root.name, *file.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(root: Path = PACKAGE) -> nx.DiGraph:
    """Module -> module it imports, within the package at ``root``; each edge keeps the line of its first import."""
    files = {module_name(f, root): f for f in sorted(root.rglob("*.py"))}
    graph = nx.DiGraph()
    graph.add_nodes_from(files)
    for module, file in files.items():
        package = module if file.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"), str(file))):
            if isinstance(node, ast.Import):
                named = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                # `from . import name` reads a module when name is one, else the package itself
                named = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base for alias in node.names]
            else:
                continue
            for target in named:
                while target and target not in files:          # `import subterra.backends.claude.x`: the module
                    target = target.rpartition(".")[0]
                if target and target != module and not graph.has_edge(module, target):
                    graph.add_edge(module, target, line=node.lineno)
    return graph


def circles(graph: nx.DiGraph) -> list[str]:
    """Each import circle as one line: ``a (line 3) -> b (line 40) -> a``."""
    found = []
    for cycle in nx.simple_cycles(graph):
        start = cycle.index(min(cycle))
        cycle = cycle[start:] + cycle[:start]
        steps = [f"{a} (line {graph.edges[a, b]['line']})" for a, b in zip(cycle, cycle[1:] + cycle[:1])]
        found.append(" -> ".join(steps + [cycle[0]]))
    return sorted(found)


def test_no_import_circle_in_the_package():
    graph = imports()
    assert len(graph) > 20 and graph.has_edge("subterra.next_step", "subterra.agent")
    assert not circles(graph), "import circles:\n" + "\n".join(circles(graph))


def test_a_circle_through_a_function_level_import_is_found(tmp_path):
    root = tmp_path / "pkg"
    (root / "inner").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "low.py").write_text("def f():\n    from .inner import high\n    return high\n")
    (root / "inner" / "__init__.py").write_text("from .. import low\n")
    (root / "inner" / "high.py").write_text("import os\n\nfrom ..low import f\n")
    (root / "alone.py").write_text("from pkg.inner.high import f\n")
    graph = imports(root)
    assert graph.has_edge("pkg.inner", "pkg.low") and graph.has_edge("pkg.alone", "pkg.inner.high")
    assert not graph.has_edge("pkg.inner.high", "pkg.inner")          # the package above is not a name read
    assert circles(graph) == ["pkg.inner.high (line 3) -> pkg.low (line 2) -> pkg.inner.high"]
