"""Router checks the workflow cannot keep: ones the loader refuses, and ones no scenario can meet on a path.

Each dropped check is said in a note and in a ``# REVIEW`` comment on its edge; the edge stays.
"""

from __future__ import annotations

import itertools
import re

from ..workflow import WorkflowError, parse_workflow
from .draft import Draft
from .render import render


def satisfiable(d: Draft) -> None:
    """Drop checks that no scenario meets on some path, so that every path can be synthesised.

    A scenario's values are fixed for a conversation, while a graph's state may change: a path
    round a loop can need a check both true and false. The check dropped is one on a loop edge
    (leaving a hub the path revisits first) when that is enough, else the path's last check
    (a branch the code can never take, as it stands). Each is said in a note and a comment.
    """
    from ..paths import enumerate_paths
    from ..scenarios import path_checks

    for _ in range(20):
        workflow = parse_workflow(render(d, fill=True)[0], source=d.origin)
        paths = enumerate_paths(workflow)
        if len(paths) > 20000:
            return
        cycle = cycle_edges(workflow)
        for path in paths:
            checks = path_checks(workflow, path)
            if not checks or any_scenario(workflow, checks):
                continue
            on_path = dict(zip([e for e in path.edges if d.link(*e).check], checks))
            loops = sorted((e for e in on_path if e in cycle),
                           key=lambda e: (-path.nodes.count(e[0]), path.edges.index(e)))
            drop = next((e for e in loops if any_scenario(
                workflow, [c for other, c in on_path.items() if other != e])), None)
            link = d.link(*(drop or list(on_path)[-1]))
            why = ("goes round a loop and would need it both true and false, while a scenario's values stay "
                   "fixed" if drop else "contradicts the checks before it (the code never takes this branch)")
            d.note(f"check `{link.check}` on {link.source} -> {link.target} dropped: path {path.id} {why}")
            link.notes["check"] = f"REVIEW: `{link.check}` dropped: no scenario could take path {path.id}"
            link.check = None
            break
        else:
            return


def valid_checks(d: Draft) -> None:
    """Drop a check the loader refuses (it compares values of different types, say), saying so."""
    for _ in range(len(d.links) + 1):
        try:
            parse_workflow(render(d, fill=True)[0], source=d.origin)
            return
        except WorkflowError as exc:
            index = re.fullmatch(r"edges\[(\d+)\]\.check", exc.field or "")
            if index is None:
                raise
            link = d.links[int(index.group(1))]
            d.note(f"check `{link.check}` on {link.source} -> {link.target} dropped: {exc.message}")
            link.notes["check"] = f"REVIEW: `{link.check}` dropped: {exc.message}"
            link.check = None


def cycle_edges(workflow) -> set[tuple[str, str]]:
    """Edges that lie on a cycle (their target leads back to their source)."""
    import networkx as nx

    graph = nx.DiGraph((e.source, e.target) for e in workflow.edges)
    return {(u, v) for u, v in graph.edges if nx.has_path(graph, v, u)}


def any_scenario(workflow, checks: list) -> bool:
    """Whether some choice of pool values meets every check (exhaustive over the variables they use)."""
    names = sorted({n for c in checks for n in c.names} & set(workflow.variables))
    pools = [workflow.variables[n] for n in names]
    sample = {v: p[0] for v, p in workflow.variables.items()}
    sample.update({t: r[0] for t, r in workflow.catalogue.items()})
    for combo in itertools.islice(itertools.product(*pools), 200000):
        values = {**sample, **dict(zip(names, combo))}
        if all(c.evaluate(values) for c in checks):
            return True
    return False
