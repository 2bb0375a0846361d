"""Bring your own agent: a LangGraph graph imported as a workflow file.

:func:`import_langgraph` reads a LangGraph ``StateGraph`` (or a compiled graph, or a
``file.py[:NAME]`` spec) and writes a workflow in this project's format (see
:mod:`subterra.workflow`). **Loading a ``.py`` file runs it**, as ``python file.py`` would apart
from the ``__main__`` block: import only code you trust.

What is read, and how (every guess is marked ``# REVIEW`` in the file written), one module each:

- :mod:`.loading` finds the graph in a file: ``:NAME``, else the file's one graph, else its one
  function of no arguments that builds a graph.
- :mod:`.code` and :mod:`.routers` read node and router functions without running them.
- :mod:`.building` makes a turn of each node, a link of each edge and branch, and says who speaks:
  a node that waits for a person is a *customer* turn (one that asks through
  ``interrupt("...")`` is the agent's question, then the customer's reply); a node with a
  docstring, or that writes messages or calls a model, is an *agent* turn; any other is *silent*.
- :mod:`.turns` keeps the graph's shape: silent steps merge only where no branch or ending
  changes; endings are typed from their names; turns alternate (proposed customer turns between
  agent turns, customer turns in a row merged).
- :mod:`.texts` gives prompts, examples and variables' values; :mod:`.conditions` drops router
  checks that cannot hold; :mod:`.teacher` fills gaps with a teacher model; :mod:`.render` writes
  the file.
- :mod:`.shape` checks the result: the graph's routers, ways to ``END`` and walks against the
  workflow's decision hubs, endings and paths. A conversion that would lose one raises
  :class:`GraphImportError` naming it, unless ``allow_lossy=True``.

What cannot be read is written as ``TODO``: the loader refuses the file, naming every TODO line,
until a person fills them, or a teacher model does (``teacher=`` a
:class:`~subterra.backends.Backend`; ``--teacher`` on the command line). A graph that cannot be
a workflow at all (a router with no path map, steps that run in parallel) raises
:class:`GraphImportError`, one line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path as FilePath
from typing import Any

from ..paths import enumerate_paths
from ..workflow import WorkflowError, parse_workflow
from .building import classify, read_graph
from .conditions import satisfiable, valid_checks
from .draft import Draft
from .loading import FoundGraph, GraphImportError, graph_builder, load_graph
from .render import render
from .shape import GraphShape, graph_shape, lost
from .teacher import teach
from .texts import find_system_prompt, pools, texts
from .turns import alternate, dedupe, ends, order, resolve_silent

__all__ = ["FoundGraph", "GraphImportError", "GraphShape", "ImportedWorkflow", "graph_shape", "import_langgraph",
           "load_graph"]


@dataclass
class ImportedWorkflow:
    """The workflow file an import wrote (``text``), what was inferred, and what is left TODO."""

    name: str
    text: str
    notes: list[str]
    todos: list[tuple[int, str]]                # (line, field) of every value left TODO
    origin: str
    nodes: int
    decision_hubs: int
    paths: int
    shape: GraphShape | None = None             # the graph's own shape, which the workflow was checked against
    losses: list[str] = field(default_factory=list)     # what it lacks of that shape (only with allow_lossy)
    found: FoundGraph | None = None             # the graph taken from a file, and how

    path: FilePath | None = None

    def workflow(self):
        """The loaded workflow; raises :class:`WorkflowError` naming every TODO line while any is left."""
        return parse_workflow(self.text, source=str(self.path or f"{self.name}.yaml"))

    def write(self, path: str | FilePath) -> FilePath:
        """Write the file (atomically); later :meth:`workflow` errors name it."""
        from ..store import write_atomic

        self.path = FilePath(path)
        write_atomic(self.path, self.text)
        return self.path

    def summary(self) -> str:
        todo = f", {len(self.todos)} TODO to fill" if self.todos else ", nothing left TODO"

        def count(n: int, word: str) -> str:
            return f"{n} {word}{'s' * (n != 1)}"

        return (f"{count(self.nodes, 'node')}, {count(self.decision_hubs, 'decision hub')}, "
                f"{count(self.paths, 'path')}{todo}")


def import_langgraph(graph: Any, name: str | None = None, *, title: str | None = None,
                     system_prompt: str | None = None, teacher=None, origin: str | None = None,
                     allow_lossy: bool = False) -> ImportedWorkflow:
    """Import ``graph`` (a StateGraph, a compiled graph, or a ``file.py[:NAME]`` spec) as a workflow.

    ``teacher`` (a :class:`~subterra.backends.Backend`) writes what the code does not say; without
    one, those values are left ``TODO``. Raises :class:`GraphImportError` for a graph that cannot
    be a workflow, and for one whose workflow would lack a router's branch, a way to ``END`` or a
    walk of the graph, unless ``allow_lossy`` (then :attr:`ImportedWorkflow.losses` says what).
    """
    found = None
    if isinstance(graph, (str, FilePath)):
        found = load_graph(graph)
        origin = origin or found.spec
        graph = found.graph
    builder = graph_builder(graph)
    if builder is None:
        raise GraphImportError(f"a {type(graph).__name__} is not a LangGraph StateGraph or compiled graph "
                               "(the functional API's @entrypoint has no graph to read)", file=origin)
    d = Draft(graph, builder, name, title, system_prompt, teacher, origin)
    read_graph(d)
    classify(d)
    shape = graph_shape(builder, d.silent)
    resolve_silent(d)
    dedupe(d)
    ends(d)
    dedupe(d)
    alternate(d)
    order(d)
    texts(d)
    d.pool_values = pools(d)
    for variable, pool in d.tool_pools.items():            # a tool's arguments and results the state does not hold
        d.pool_values.setdefault(variable, pool)
    guessed = [v for v, (_, comment) in d.pool_values.items() if comment.startswith("REVIEW")]
    if guessed:
        d.note(f"values guessed for {', '.join(guessed)}")
    d.system_text, d.system_note = find_system_prompt(d)
    if d.system_note and d.system_note.startswith("REVIEW"):
        d.note("a generic one-line system prompt (no SYSTEM_PROMPT in the graph's module)")
    try:
        valid_checks(d)
        satisfiable(d)
        workflow = parse_workflow(render(d, fill=True)[0], source=d.origin)
    except GraphImportError:
        raise
    except WorkflowError as exc:
        raise GraphImportError(f"the imported graph is not a valid workflow: {exc.message}", file=d.origin,
                               node=exc.node) from None
    d.losses = lost(shape, d, workflow)
    if d.losses and not allow_lossy:
        raise GraphImportError("the workflow would not keep the graph's shape: " + "; ".join(d.losses)
                               + " (allow_lossy=True, or --allow-lossy, writes it anyway)", file=d.origin)
    if teacher is not None:
        teach(d, d.pool_values)
    text, todos = render(d)
    return ImportedWorkflow(name=d.name, text=text, notes=list(dict.fromkeys(d.notes)), todos=todos,
                            origin=d.origin, nodes=len(workflow.nodes), decision_hubs=len(workflow.decision_hubs),
                            paths=len(enumerate_paths(workflow)), shape=shape, losses=d.losses, found=found)
