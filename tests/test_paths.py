"""Notebook 02 / subterra.paths: path enumeration, cross-checked against networkx."""

import random

import networkx as nx
import pytest

from subterra import back_edges, enumerate_paths, load_domain, parse_workflow, path_stats, to_networkx

# The paper's domain table (PAPER.md): nodes, decision hubs, unique paths, turns per conversation.
PAPER_SIZES = {
    "travel": dict(nodes=14, decision_hubs=3, paths=86, min_turns=4, max_turns=17),
    "zoom": dict(nodes=14, decision_hubs=3, paths=60, min_turns=4, max_turns=17),
    "insurance": dict(nodes=55, decision_hubs=6, paths=2381, min_turns=9, max_turns=39),
}


def networkx_count(workflow) -> int:
    """Count paths independently: simple paths in networkx over (node, back edges used) states."""
    loops = back_edges(workflow)
    states = nx.DiGraph()
    start = (workflow.start, frozenset())
    frontier, seen = [start], {start}
    while frontier:
        node, used = frontier.pop()
        for edge in workflow.successors(node):
            key = (edge.source, edge.target)
            if key in loops and key in used:
                continue
            nxt = (edge.target, used | {key} if key in loops else used)
            states.add_edge((node, used), nxt)
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    ends = [s for s in seen if s[0] in workflow.terminals]
    return sum(1 for _ in nx.all_simple_paths(states, start, ends))


def test_toy_paths_are_exactly_these(toy_file):
    from subterra import load_workflow

    wf = load_workflow(toy_file)
    assert back_edges(wf) == {("change", "offer")}
    got = [p.nodes for p in enumerate_paths(wf)]
    head = ("greet", "ask", "offer")
    assert got == [head + ("accept", "done"), head + ("decline", "goodbye"),
                   head + ("change", "offer", "accept", "done"), head + ("change", "offer", "decline", "goodbye"),
                   head + ("change", "offer", "human", "handoff"), head + ("human", "handoff")]
    stats = path_stats(wf)
    assert (stats.paths, stats.min_turns, stats.max_turns) == (6, 5, 7)
    assert stats.terminals == {"success": 2, "abandonment": 2, "escalation": 2}
    assert [p.id for p in enumerate_paths(wf)][:2] == ["p0000", "p0001"]


@pytest.mark.parametrize("domain", PAPER_SIZES)
def test_domains_match_the_paper(domain):
    stats = path_stats(load_domain(domain))
    assert {k: getattr(stats, k) for k in PAPER_SIZES[domain]} == PAPER_SIZES[domain]


def test_insurance_has_nested_loops_and_five_terminals():
    wf = load_domain("insurance")
    assert len(wf.terminals) == 5
    graph = to_networkx(wf)
    loops = [(u, v) for u, v, back in graph.edges(data="back") if back]
    # nested: some loop's body (nodes between head and tail) contains another loop
    bodies = []
    forward = graph.edge_subgraph([(u, v) for u, v, back in graph.edges(data="back") if not back])
    for tail, head in loops:
        body = {n for n in nx.descendants(forward, head) | {head} if n == tail or tail in nx.descendants(forward, n)}
        bodies.append(body)
    assert any(a < b for a in bodies for b in bodies), "expected a loop inside a loop"


@pytest.mark.parametrize("domain", PAPER_SIZES)
def test_paths_are_valid_walks(domain):
    wf = load_domain(domain)
    edges = {(e.source, e.target) for e in wf.edges}
    loops = back_edges(wf)
    paths = enumerate_paths(wf)
    assert len({p.nodes for p in paths}) == len(paths)
    for p in paths:
        assert p.nodes[0] == wf.start and p.nodes[-1] in wf.terminals
        assert all(e in edges for e in p.edges)
        taken = [e for e in p.edges if e in loops]
        assert len(taken) == len(set(taken)), "a back edge was taken twice"
        roles = [wf.nodes[n].role for n in p.nodes]
        assert all(a != b for a, b in zip(roles, roles[1:])), "turns must alternate"


@pytest.mark.parametrize("domain", PAPER_SIZES)
def test_counts_agree_with_networkx(domain):
    wf = load_domain(domain)
    assert networkx_count(wf) == len(enumerate_paths(wf))


def random_dag_workflow(rng: random.Random, n: int) -> str:
    """A random loop-free alternating workflow as YAML text (n odd: starts and ends on an agent)."""
    roles = ["agent" if i % 2 == 0 else "user" for i in range(n)]
    edges = {(f"n{i}", f"n{i + 1}") for i in range(n - 1)}
    for _ in range(n):
        a = rng.randrange(n - 1)
        b = rng.randrange(a + 1, n)
        if roles[a] != roles[b]:
            edges.add((f"n{a}", f"n{b}"))
    edges |= {(f"n{i}", "bye") for i in range(1, n, 2) if rng.random() < 0.3}
    nodes = "\n".join(f"  - {{id: n{i}, role: {roles[i]}, prompt: p, examples: [e]"
                      + (", terminal: success}" if i == n - 1 else "}") for i in range(n))
    nodes += "\n  - {id: bye, role: agent, prompt: p, examples: [e], terminal: abandonment}"
    if not any(b == "bye" for _, b in edges):
        edges.add(("n1", "bye"))
    edge_text = "\n".join(f"  - {{from: {a}, to: {b}}}" for a, b in sorted(edges))
    return f"name: rand\nsystem_prompt: s\nvariables: {{x: [1]}}\nstart: n0\nnodes:\n{nodes}\nedges:\n{edge_text}\n"


def test_loop_free_paths_are_networkx_simple_paths():
    rng = random.Random(11)
    checked = 0
    for _ in range(30):
        wf = parse_workflow(random_dag_workflow(rng, rng.randrange(3, 17) | 1))
        assert not back_edges(wf)
        graph = to_networkx(wf)
        expected = {tuple(p) for t in wf.terminals for p in nx.all_simple_paths(graph, wf.start, t)}
        assert {p.nodes for p in enumerate_paths(wf)} == expected
        checked += len(expected)
    assert checked > 30
