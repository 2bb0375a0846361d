"""Which workflow node does an utterance perform? And did a conversation follow the procedure?

:class:`NodeMatcher` maps a message onto the node whose example utterances it is nearest
to. The scenario's values are masked first (``Lisbon`` and ``{destination}`` both become
``<v>``), so matching judges what a turn *does*, not which city it names. Similarity is
the cosine of TF-IDF weighted word unigrams and bigrams, best example per node.

:func:`conformance` turns a transcript into a trace of nodes and checks it against the
graph: every step must be an edge, and the conversation must end at the terminal the
scenario's path called for. This is an objective procedure-adherence score that an LLM
judge does not give.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from .workflow import SLOT, Workflow

WORD = re.compile(r"<v>|[a-z0-9]+(?:'[a-z]+)?")


def scalar_values(values: Mapping[str, Any]) -> list[str]:
    """A scenario's values as strings (records flattened to their fields), 2+ characters, longest first."""
    out = []
    for value in values.values():
        items = value.values() if isinstance(value, dict) else [value]
        out.extend(str(v) for v in items if len(str(v)) >= 2)
    return sorted(set(out), key=lambda v: (-len(v), v))     # a fixed order, whatever the hash seed


def mask_values(text: str, values: Mapping[str, Any] | None) -> str:
    """Replace every scenario value in ``text`` with ``<v>`` (longest values first)."""
    text = SLOT.sub("<v>", text)
    for value in scalar_values(values or {}):
        text = re.sub(re.escape(value), "<v>", text, flags=re.IGNORECASE)
    return text


def _features(text: str) -> Counter:
    words = WORD.findall(text.lower())
    return Counter(words + [f"{a} {b}" for a, b in zip(words, words[1:])])


@dataclass(frozen=True)
class Match:
    node: str
    score: float            # cosine similarity in [0, 1]
    runner_up: str | None
    margin: float           # best score minus the runner-up's


class NodeMatcher:
    """Nearest-example classifier over a workflow's nodes (one role, or both)."""

    def __init__(self, workflow: Workflow, role: str | None = "agent"):
        self.workflow = workflow
        self.nodes = [n for n in workflow.nodes.values() if role is None or n.role == role]
        docs = [(n.id, _features(mask_values(e, None))) for n in self.nodes for e in n.examples]
        self._texts = [e for n in self.nodes for e in n.examples]
        df = Counter(f for _, feats in docs for f in feats)
        self._idf = {f: math.log((1 + len(docs)) / (1 + c)) + 1 for f, c in df.items()}
        self._examples = [(node_id, self._vector(feats)) for node_id, feats in docs]

    def _vector(self, feats: Counter) -> dict[str, float]:
        vec = {f: c * self._idf.get(f, 1.0) for f, c in feats.items()}
        norm = math.sqrt(sum(v * v for v in vec.values())) or 1.0
        return {f: v / norm for f, v in vec.items()}

    def scores(self, text: str, values: Mapping[str, Any] | None = None) -> dict[str, float]:
        """Best cosine per node."""
        vec = self._vector(_features(mask_values(text, values)))
        best: dict[str, float] = {}
        for node_id, example in self._examples:
            score = sum(w * example.get(f, 0.0) for f, w in vec.items())
            if score > best.get(node_id, -1.0):
                best[node_id] = score
        return best

    def nearest_example(self, text: str, values: Mapping[str, Any] | None, node: str) -> str:
        """The example utterance of ``node`` that ``text`` reads most like."""
        vec = self._vector(_features(mask_values(text, values)))
        scored = [(sum(w * example.get(f, 0.0) for f, w in vec.items()), k)
                  for k, (node_id, example) in enumerate(self._examples) if node_id == node]
        if not scored:
            raise KeyError(f"no examples for node {node!r} among this matcher's nodes")
        return self._texts[max(scored)[1]]

    def match(self, text: str, values: Mapping[str, Any] | None = None,
              candidates: Iterable[str] | None = None) -> Match:
        """The node ``text`` performs; ``candidates`` restricts the choice (e.g. a node's successors)."""
        scores = self.scores(text, values)
        if candidates is not None:
            allowed = set(candidates)
            scores = {k: v for k, v in scores.items() if k in allowed} or scores
        ranked = sorted(scores.items(), key=lambda kv: kv[1], reverse=True)
        best, second = ranked[0], (ranked[1] if len(ranked) > 1 else (None, 0.0))
        return Match(node=best[0], score=best[1], runner_up=second[0], margin=best[1] - second[1])


@dataclass
class Trace:
    """A conversation mapped onto the workflow."""

    nodes: list[str]                        # one node per turn
    start: str                              # the workflow's start node
    invalid_steps: list[tuple[int, str, str]] = field(default_factory=list)   # (turn, from, to) not an edge
    ended_at: str | None = None             # terminal kind reached, if the last node is terminal
    expected_end: str | None = None         # terminal kind the scenario's path called for

    @property
    def valid_path(self) -> bool:
        return not self.invalid_steps and bool(self.nodes) and self.nodes[0] == self.start

    @property
    def right_ending(self) -> bool:
        return self.expected_end is not None and self.ended_at == self.expected_end

    @property
    def adherent(self) -> bool:
        return self.valid_path and self.right_ending


def conformance(workflow: Workflow, messages: list[dict], values: Mapping[str, Any] | None = None,
                expected_end: str | None = None, matcher: NodeMatcher | None = None) -> Trace:
    """Map each non-system message onto a node (agent turns among agent nodes, user turns among user
    nodes, preferring successors of the previous node) and check the walk against the graph."""
    matcher = matcher or NodeMatcher(workflow, role=None)
    succ = {n: {e.target for e in workflow.successors(n)} for n in workflow.nodes}
    edges = {(e.source, e.target) for e in workflow.edges}
    role_of = {"assistant": "agent", "user": "user"}
    nodes: list[str] = []
    for message in messages:
        role = role_of.get(message["role"])
        if role is None:
            continue
        same_role = [n for n, node in workflow.nodes.items() if node.role == role]
        preferred = [n for n in (succ[nodes[-1]] if nodes else {workflow.start}) if n in same_role]
        best_any = matcher.match(message["content"], values, same_role)
        best_next = matcher.match(message["content"], values, preferred) if preferred else best_any
        # follow the graph unless the text clearly performs another node
        chosen = best_next if best_next.score >= best_any.score - 0.05 else best_any
        nodes.append(chosen.node)
    invalid = [(i, a, b) for i, (a, b) in enumerate(zip(nodes, nodes[1:]), start=1) if (a, b) not in edges]
    last = workflow.nodes[nodes[-1]] if nodes else None
    return Trace(nodes=nodes, start=workflow.start, invalid_steps=invalid,
                 ended_at=last.terminal if last else None, expected_end=expected_end)
