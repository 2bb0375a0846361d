"""The structure check: the graph's own shape against the workflow's, and what the workflow lost.

The graph's shape is read from its nodes and edges alone: its **routers** (a node, or the start,
whose conditional edges or ``Command(goto=...)`` reach two or more steps; ``END`` counts once), its
**ways to END** (the nodes with an edge to ``END``) and its **walks** from start to end, counted as
paths are (:mod:`subterra.paths`: each loop once). Human turns the import adds (a question's
reply, a proposed customer turn) sit on edges and change none of these. A silent step that only
returns to the one step that leads to it (a ``ToolNode`` called in a loop) is that step's inner
work, not a branch: it is left out.

The workflow keeps the shape when each router is a decision hub with as many branches, each way to
END is an ending, and it has as many paths as the graph has walks.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from types import SimpleNamespace

from ..paths import iter_paths
from ..workflow import IrreducibleLoop
from .draft import Draft
from .loading import END, START, graph_builder

MAX_WALKS = 100_000


@dataclass
class GraphShape:
    """What a workflow imported from the graph must keep."""

    routers: dict[str, list[str]]                           # node (or START) -> the steps its branches reach
    endings: list[str]                                      # the nodes with an edge to END
    walks: int | None                                       # start-to-end walks, each loop once (None: a loop
                                                            # that can be entered in the middle)
    inner: list[str] = field(default_factory=list)          # silent steps left out (inner work of a step)
    nested: dict[str, int] = field(default_factory=dict)    # subgraph node -> the routers inside it

    def summary(self) -> str:
        routers = f"{len(self.routers)} router{'s' * (len(self.routers) != 1)}"
        ways = f"{len(self.endings)} way{'s' * (len(self.endings) != 1)} to END"
        walks = "walks not counted (a loop entered in the middle)" if self.walks is None else \
            f"{_count(self.walks)} walk{'s' * (self.walks != 1)}"
        return f"{routers}, {ways}, {walks}"


def graph_shape(builder, silent: set[str]) -> GraphShape:
    """The shape of ``builder`` (a StateGraph); ``silent``: its nodes that say nothing."""
    succ = {START: [], **{n: [] for n in builder.nodes}}
    for source, target in builder.edges:
        succ[source].append(target)
    for source, branches in builder.branches.items():
        for branch in branches.values():
            succ[source].extend((branch.ends or {}).values())
    for node, spec in builder.nodes.items():
        ends = getattr(spec, "ends", None) or ()
        succ[node].extend(ends.values() if isinstance(ends, dict) else ends)
    succ = {n: list(dict.fromkeys(targets)) for n, targets in succ.items()}
    inner = _inner_steps(succ, silent)
    succ = {n: [t for t in targets if t not in inner] for n, targets in succ.items() if n not in inner}
    routers = {n: targets for n, targets in succ.items() if len(targets) > 1}
    endings = [n for n, targets in succ.items() if END in targets]
    nested = {}
    for node, spec in builder.nodes.items():
        sub = graph_builder(spec.runnable)
        if sub is not None and node not in inner:
            count = len(graph_shape(sub, set()).routers)
            if count:
                nested[node] = count
    return GraphShape(routers, endings, _walks(succ), sorted(inner), nested)


def _inner_steps(succ: dict[str, list[str]], silent: set[str]) -> set[str]:
    """Chains of silent steps that leave one step and only return to it (a tool called in a loop)."""
    pred: dict[str, set[str]] = {}
    for source, targets in succ.items():
        for target in targets:
            pred.setdefault(target, set()).add(source)
    inner: set[str] = set()
    for first in silent:
        if len(pred.get(first, ())) != 1:
            continue
        (caller,) = pred[first]
        chain, node = [first], first
        while True:
            nexts = succ.get(node, [])
            if nexts == [caller]:
                inner.update(chain)
                break
            if len(nexts) != 1:
                break
            node = nexts[0]
            if node not in silent or node in chain or len(pred.get(node, ())) != 1:
                break
            chain.append(node)
    return inner


def _walks(succ: dict[str, list[str]]) -> int | None:
    """Walks from START to END, each back edge at most once (as :func:`subterra.paths.iter_paths` counts)."""
    edge = SimpleNamespace
    view = SimpleNamespace(nodes={**{n: None for n in succ}, END: None}, start=START, terminals={END: "end"},
                           edges=[edge(source=s, target=t) for s, targets in succ.items() for t in targets])
    try:
        return sum(1 for _ in itertools.islice(iter_paths(view), MAX_WALKS + 1))
    except IrreducibleLoop:
        return None


def lost(shape: GraphShape, d: Draft, workflow) -> list[str]:
    """What the workflow lacks of the graph's shape, each with why (empty when it keeps it)."""
    out = []
    for node, targets in shape.routers.items():
        reached: dict[str, set[str]] = {}
        for link in d.links:
            if link.router == node:
                reached.setdefault(link.source, set()).add(link.target)
        kept = max(map(len, reached.values()), default=0)
        if kept < len(targets):
            where = "the start" if node == START else f"'{node}'"
            steps = ", ".join("END" if t == END else t for t in targets)
            out.append(f"the router at {where} reaches {len(targets)} steps ({steps}), the workflow's decision "
                       f"hub {kept}" + _why(d, shape, [node, *targets]))
    ended = set().union(*(t.ends_for for t in d.turns.values() if t.terminal))
    for node in shape.endings:
        if node not in ended:
            where = "the start" if node == START else f"'{node}'"
            out.append(f"the way to END after {where} is no ending of the workflow" + _why(d, shape, [node]))
    paths = sum(1 for _ in itertools.islice(iter_paths(workflow), MAX_WALKS + 1))
    if shape.walks is not None and shape.walks != paths and min(shape.walks, paths) <= MAX_WALKS:
        out.append(f"the graph has {_count(shape.walks)} walks from start to end (each loop once), the workflow "
                   f"{_count(paths)} paths" + _why(d, shape, list(d.gone)))
    for node, count in shape.nested.items():
        out.append(f"'{node}' is a subgraph with {count} router{'s' * (count != 1)} of its own, imported as one "
                   "step (add its nodes to this graph to keep them)")
    return out


def _count(walks: int) -> str:
    return f"over {MAX_WALKS}" if walks > MAX_WALKS else str(walks)


def _why(d: Draft, shape: GraphShape, nodes: list[str]) -> str:
    """Why the graph's ``nodes`` have no turn of their own, as far as the import knows."""
    reasons = [f"'{n}': {d.gone[n]}" for n in dict.fromkeys(nodes) if n in d.gone and n not in shape.inner]
    return f" ({'; '.join(reasons)})" if reasons else ""
