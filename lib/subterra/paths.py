"""Every path through a workflow, and the statistics of the set.

What a path is
--------------
A *back edge* is an edge ``u -> v`` whose target ``v`` dominates its source ``u``
(every walk from the start to ``u`` passes through ``v``): it closes a loop, such as
"the customer changes the dates, search again". Removing the back edges leaves an
acyclic graph; a workflow where it does not (a loop that can be entered in the middle)
is rejected as irreducible. Loading a workflow already checks this, so :func:`back_edges`
and :class:`IrreducibleLoop` live with the format (:mod:`subterra.workflow`); they are
imported here too, as the vocabulary of paths.

A **path** is a walk from the start node to a terminal node that follows edges and
takes **each back edge at most once**. So a loop body can be run a second time, once,
and nested loops multiply. In a workflow without loops the paths are exactly the
simple paths from the start to the terminals. Paths are enumerated depth-first with
edges in file order, so their numbering is stable.

A **turn** is one message: one node on the path. ``len(path)`` is its turn count.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Iterator

import networkx as nx

from .workflow import IrreducibleLoop, Workflow, back_edges  # noqa: F401 - the loop rules, for readers of paths


@dataclass(frozen=True)
class Path:
    """One walk from the start to a terminal; ``nodes`` includes both ends."""

    index: int
    nodes: tuple[str, ...]
    terminal: str           # kind of the final node

    @property
    def id(self) -> str:
        return f"p{self.index:04d}"

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def edges(self) -> list[tuple[str, str]]:
        return list(zip(self.nodes, self.nodes[1:]))


def to_networkx(workflow: Workflow) -> nx.DiGraph:
    """A ``networkx.DiGraph`` of the workflow, with node and edge attributes."""
    graph = nx.DiGraph(name=workflow.name, start=workflow.start)
    for node in workflow.nodes.values():
        graph.add_node(node.id, role=node.role, label=node.label, prompt=node.prompt,
                       examples=list(node.examples), terminal=node.terminal)
    loops = back_edges(workflow)
    for edge in workflow.edges:
        graph.add_edge(edge.source, edge.target, when=edge.when,
                       check=edge.check.source if edge.check else None,
                       back=(edge.source, edge.target) in loops)
    return graph


def iter_paths(workflow: Workflow) -> Iterator[Path]:
    """Yield every path (see the module docstring), depth-first in file order."""
    loops = back_edges(workflow)
    successors: dict[str, list[tuple[str, bool]]] = {n: [] for n in workflow.nodes}
    for edge in workflow.edges:
        successors[edge.source].append((edge.target, (edge.source, edge.target) in loops))
    terminals = workflow.terminals
    walk: list[str] = [workflow.start]
    used: set[tuple[str, str]] = set()
    count = 0

    def extend(node: str) -> Iterator[Path]:
        nonlocal count
        if node in terminals:
            yield Path(index=count, nodes=tuple(walk), terminal=terminals[node])
            count += 1
            return
        for target, is_back in successors[node]:
            if is_back:
                if (node, target) in used:
                    continue
                used.add((node, target))
            walk.append(target)
            yield from extend(target)
            walk.pop()
            if is_back:
                used.discard((node, target))

    yield from extend(workflow.start)


def enumerate_paths(workflow: Workflow) -> list[Path]:
    """Every path through the workflow, as a list (see :func:`iter_paths`)."""
    return list(iter_paths(workflow))


@dataclass(frozen=True)
class PathStats:
    nodes: int
    decision_hubs: int
    paths: int
    min_turns: int
    max_turns: int
    terminals: dict[str, int]           # terminal kind -> number of paths ending there
    turns: dict[int, int]               # turn count -> number of paths

    def as_dict(self) -> dict:
        return {"nodes": self.nodes, "decision_hubs": self.decision_hubs, "paths": self.paths,
                "min_turns": self.min_turns, "max_turns": self.max_turns, "terminals": dict(self.terminals),
                "turns": {str(k): v for k, v in sorted(self.turns.items())}}


def path_stats(workflow: Workflow, paths: list[Path] | None = None) -> PathStats:
    """Counts that describe a workflow's path set (the numbers in the paper's domain table)."""
    paths = enumerate_paths(workflow) if paths is None else paths
    lengths = Counter(len(p) for p in paths)
    kinds = Counter(p.terminal for p in paths)
    return PathStats(nodes=len(workflow.nodes), decision_hubs=len(workflow.decision_hubs), paths=len(paths),
                     min_turns=min(lengths), max_turns=max(lengths),
                     terminals={k: kinds.get(k, 0) for k in ("success", "abandonment", "escalation")},
                     turns=dict(sorted(lengths.items())))
