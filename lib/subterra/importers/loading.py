"""Finding the graph: a ``file.py[:NAME]`` spec run as an import, and the LangGraph graph taken from it.

Without ``:NAME`` the file's graph is found: a module-level compiled graph or ``StateGraph`` (a
builder and the graph compiled from it are one), or else the one function of the file that takes
no argument and builds a graph (it calls ``StateGraph(...)`` or ``.compile()``). Several
candidates are refused in one line that lists them.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path as FilePath
from typing import Any

from ..workflow import WorkflowError

START, END = "__start__", "__end__"


class GraphImportError(WorkflowError):
    """A graph that cannot be turned into a workflow, or would lose its shape, described in one line."""


@dataclass
class FoundGraph:
    """A graph taken from a file: the object, its ``file.py:NAME`` spec, and how it was found."""

    graph: Any
    spec: str
    how: str            # "named", "the one graph in the file", "the one function in the file that builds a graph"


def graph_builder(obj: Any):
    """The StateGraph behind ``obj`` (itself, or a compiled graph's builder), or None."""
    try:
        from langgraph.graph import StateGraph
    except ImportError:
        return None
    if isinstance(obj, StateGraph):
        return obj
    builder = getattr(obj, "builder", None)
    return builder if isinstance(builder, StateGraph) else None


def load_graph(spec: str | FilePath) -> FoundGraph:
    """The graph named by ``file.py[:NAME]``: a StateGraph, a compiled graph, or a function returning one.

    **This runs the file** (as an import, so its ``if __name__ == "__main__"`` block does not run).
    """
    text = str(spec)
    path_text, _, name = text.rpartition(":") if re.search(r"\.py:[\w.]+$", text) else (text, "", "")
    path = FilePath(path_text)
    if not path.is_file():
        raise GraphImportError("no such file", file=str(path))
    module = _run(path)
    if name:
        obj = module
        for part in name.split("."):
            if not hasattr(obj, part):
                raise GraphImportError(f"defines no '{name}'", file=str(path))
            obj = getattr(obj, part)
        return FoundGraph(_graph_of(obj, name, path), f"{path}:{name}", "named")
    graphs = {k: v for k, v in vars(module).items() if not k.startswith("_") and graph_builder(v) is not None}
    compiled = {k: v for k, v in graphs.items() if v is not graph_builder(v)}
    builders_of_compiled = {id(graph_builder(v)) for v in compiled.values()}
    found = {**{k: v for k, v in graphs.items() if id(v) not in builders_of_compiled}, **compiled}
    if len(found) == 1:
        (key, graph), = found.items()
        return FoundGraph(graph, f"{path}:{key}", "the one graph in the file")
    if found:
        raise GraphImportError(f"holds {len(found)} graphs ({', '.join(sorted(found))}): name one as "
                               f"{path}:NAME", file=str(path))
    factories = sorted(k for k, v in vars(module).items() if _builds_a_graph(v, module.__name__))
    if len(factories) == 1:
        key = factories[0]
        return FoundGraph(_graph_of(getattr(module, key), key, path), f"{path}:{key}",
                          "the one function in the file that builds a graph")
    if factories:
        raise GraphImportError(f"holds no graph and {len(factories)} functions that build one "
                               f"({', '.join(f'{f}()' for f in factories)}): name one as {path}:NAME",
                               file=str(path))
    raise GraphImportError("holds no graph and no function that builds one (a function of no arguments that "
                           f"calls StateGraph(...) or .compile()): name one as {path}:NAME", file=str(path))


def _run(path: FilePath):
    """The file run as a module (its own error, whatever it is, as one line)."""
    module_name = f"_subterra_import_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module           # dataclasses and typing look the module up while it runs
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        hint = " (pip install -e '.[langgraph]')" if "langgraph" in str(exc) else ""
        raise GraphImportError(f"running it failed: {type(exc).__name__}: {exc}{hint}", file=str(path)) from None
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
    return module


def _graph_of(obj: Any, name: str, path: FilePath) -> Any:
    """``obj`` if it is a graph, else what calling it returns, if that is one."""
    if callable(obj) and graph_builder(obj) is None:
        try:
            obj = obj()
        except Exception as exc:
            raise GraphImportError(f"'{name}()' failed: {type(exc).__name__}: {exc}", file=str(path)) from None
        if graph_builder(obj) is None:
            raise GraphImportError(f"'{name}()' returned a {type(obj).__name__}, not a LangGraph StateGraph or "
                                   "compiled graph", file=str(path))
    if graph_builder(obj) is None:
        raise GraphImportError(f"'{name}' is a {type(obj).__name__}, not a LangGraph StateGraph or compiled "
                               "graph", file=str(path))
    return obj


def _builds_a_graph(obj: Any, module_name: str) -> bool:
    """A function of the file, callable with no argument, whose code calls ``StateGraph(...)`` or ``.compile()``."""
    if not inspect.isfunction(obj) or obj.__module__ != module_name or obj.__name__.startswith("_"):
        return False
    needed = [p for p in inspect.signature(obj).parameters.values()
              if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if needed:
        return False
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(obj)))
    except (OSError, TypeError, SyntaxError):
        return False
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            called = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
            if called == "StateGraph" or (called == "compile" and not node.args):
                return True
    return False
