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

from .workflow import SLOT, SLOT_NAME, Workflow

WORD = re.compile(r"<v>|[a-z0-9]+(?:'[a-z]+)?")
_CACHE: dict[tuple[int, str], tuple[Workflow, Any]] = {}


def _cached(workflow: Workflow, key: str, build):
    """One ``build(workflow)`` per workflow object (workflows are immutable; the entry keeps it alive)."""
    entry = _CACHE.get((id(workflow), key))
    if entry is None or entry[0] is not workflow:
        entry = _CACHE[(id(workflow), key)] = (workflow, build(workflow))
    return entry[1]


# --------------------------------------------------------------------------- what a listener hears

def slot_names(text: str) -> set[str]:
    """The variables and catalogue tables that ``text``'s ``{slots}`` use (``{desk.name}`` -> ``desk``)."""
    return {m.group(1) for m in map(SLOT_NAME.match, SLOT.findall(text)) if m}


def node_names(workflow: Workflow, node: str) -> set[str]:
    """The variables and tables a node's prompt and examples (its edges' included) speak of."""
    return set().union(*(slot_names(t) for t in (workflow.nodes[node].prompt, *workflow.heard_as(node))))


def lookups(workflow: Workflow) -> frozenset[str]:
    """Values only the business knows: variables and tables the agent must state before the customer can.

    A name is a look-up when, on some walk from the start, an agent node's examples mention it
    before any customer node's do (the flight a search finds, its price, the policy on file). The
    customer cannot know these; every other value is the customer's to give.
    """
    def build(wf: Workflow) -> frozenset[str]:
        said = {n: set().union(*(slot_names(e) for e in wf.heard_as(n))) for n in wf.nodes}
        found = set()
        for name in set(wf.variables) | set(wf.catalogue):
            seen, todo = set(), [wf.start]
            while todo:
                node = todo.pop()
                if node in seen:
                    continue
                seen.add(node)
                if name in said[node]:
                    if wf.nodes[node].role == "agent":
                        found.add(name)
                        break
                    continue                 # the customer said it first on this walk
                todo.extend(e.target for e in wf.successors(node))
        return frozenset(found)
    return _cached(workflow, "lookups", build)


def copied_variables(workflow: Workflow) -> frozenset[str]:
    """Variables whose values the agent copies from the customer: what training may make up (relexicalize).

    A variable is copied when the customer gives it (it is no look-up) and an agent step speaks of it
    (a name, a phone number, an address it repeats). Never copied: a catalogue table (product knowledge,
    known by its record's key: error 5003 and its fix belong together), a variable an edge's ``check``
    reads (the branch turns on its value), or one the agent never repeats. A variable that renews a copied
    one (an edge's ``sets``: the other card after a declined one) is copied like it.
    """
    def build(wf: Workflow) -> frozenset[str]:
        checked = set().union(*(e.check.names for e in wf.edges if e.check))
        agent_says = set().union(*(node_names(wf, n) for n, node in wf.nodes.items() if node.role == "agent"))
        customer_says = set().union(*(node_names(wf, n) for n, node in wf.nodes.items() if node.role == "user"))
        copied = {name for name in wf.variables if name in agent_says and name in customer_says
                  and name not in checked and name not in lookups(wf)}
        copied |= {source for source, target in wf.renewals().items() if target in copied and source not in checked}
        return frozenset(copied)
    return _cached(workflow, "copied", build)


def spoken(value: Any) -> str:
    """A value as it is said: a catalogue record by its first field (an error by its code)."""
    return str(next(iter(value.values()))) if isinstance(value, dict) else str(value)


def value_pattern(value: Any) -> re.Pattern:
    """``value`` as a whole word; capitalised values case-sensitively ("Nice" the city, not "nice"), and a
    number never inside a longer number, a time or an amount ("1" is not in "$1,010" or "1:05 pm")."""
    text = str(value)
    flags = 0 if text[:1].isupper() else re.IGNORECASE
    return re.compile(rf"(?<![\w.,:/]){re.escape(text)}(?!\w|[.,:/]\d)", flags)


def _patterns(workflow: Workflow):
    def build(wf: Workflow):
        variables = {name: [(v, value_pattern(v), str(v).lower()) for v in wf.values_of(name)]
                     for name in wf.variables}
        tables = {}
        for table, records in wf.catalogue.items():
            firsts = [next(iter(r.values())) for r in records]
            needles = [str(v).lower() for v in firsts]
            shared = Counter(needles)
            # a record is heard by its first field only where that names it alone: Zoom's error code 5003 does,
            # insurance's policy type "auto" (ten policies) does not, and hearing one would be a guess
            tables[table] = [(r, value_pattern(v), needle) for r, v, needle in zip(records, firsts, needles)
                             if shared[needle] == 1]
        return variables, tables
    return _cached(workflow, "patterns", build)


def extract_values(workflow: Workflow, text: str, names: Iterable[str] | None = None) -> dict[str, Any]:
    """Values that ``text`` states, by variable (a catalogue record by its first field, where no other record
    shares it): what a listener hears.

    A value inside a longer value is not heard on its own (the 6 of "February 6" is no party of 6).
    Where a text names two values of one variable, the later one counts ("I said Porto, but it's
    Lisbon"). ``names`` limits listening to some variables and tables, e.g. those the step being
    performed speaks of, so that a price of 2700 is not also heard as a budget of 2700. A value of a
    variable that renews another (an edge's ``sets``: the other card after a declined one) is heard as
    both, and as the renewed one's value it wins over the old wherever it stands ("2323, not 7768").
    """
    variables, tables = _patterns(workflow)
    hits = []                                             # (start, end, name, value)
    lowered = text.lower()
    for pool in (variables, tables):
        for name, candidates in pool.items():
            for value, pattern, needle in candidates:
                if needle in lowered:                     # a match needs the words: most values are not there
                    hits.extend((m.start(), m.end(), name, value) for m in pattern.finditer(text))
    kept: list[tuple[int, int, str, Any]] = []
    for hit in sorted(hits, key=lambda h: (h[0] - h[1], h[0])):          # longest first
        if all(hit[1] <= k[0] or hit[0] >= k[1] or (hit[0], hit[1]) == (k[0], k[1]) for k in kept):
            kept.append(hit)
    wanted = None if names is None else set(names)
    found: dict[str, Any] = {}
    renews = _cached(workflow, "renewals", Workflow.renewals)
    ordered = sorted(kept, key=lambda k: k[:2])
    for start, end, name, value in ordered:
        if wanted is None or name in wanted:
            found[name] = dict(value) if isinstance(value, dict) else value
    for start, end, name, value in ordered:
        if name in renews and (wanted is None or renews[name] in wanted):
            found[renews[name]] = value
    return found


FACT_WORDS = 3           # a record's value is a fact worth checking from this many words on ("network" is not)
FACT_COVERAGE = 0.8      # a turn states a fact when it holds this share of the fact's word pairs


def _pairs(text: str) -> set[tuple[str, str]]:
    words = WORD.findall(text.lower())
    return set(zip(words, words[1:]))


def _facts(workflow: Workflow):
    """Per catalogue table and field that tells its records apart (three in four of its values distinct): each
    record's word pairs, empty for a value under :data:`FACT_WORDS` words."""
    def build(wf: Workflow):
        out = {}
        for table, records in wf.catalogue.items():
            for name in list(records[0])[1:]:                  # the first field is the key the record is said by
                texts = [str(r.get(name, "")) for r in records]
                if len(set(texts)) >= 0.75 * len(texts):     # a field that tells records apart
                    out[(table, name)] = [_pairs(t) if len(WORD.findall(t.lower())) >= FACT_WORDS else set()
                                          for t in texts]
        return out
    return _cached(workflow, "facts", build)


AMOUNT = r"\$?(\d[\d,]*(?:\.\d+)?)"
#: After an amount: not more of the number, and no unit that makes it a count ("a limit of 30 days").
NOT_A_COUNT = r"(?!\d|[.,]\d)(?!\s*(?:%|percent\b|(?:day|week|month|year|hour|minute|time)s?\b))"


def _amounts(workflow: Workflow):
    """Per catalogue table and field whose every value is a number (insurance's deductible and limit): the
    pattern of an amount said *as* that field, by its name next to it ("your $500 deductible", "a limit of
    $45,000"; not "$2,500 express limit", nor "a limit of 30 days"), and each record's value."""
    def build(wf: Workflow):
        out = {}
        for table, records in wf.catalogue.items():
            for name in list(records[0])[1:]:
                values = [r.get(name) for r in records]
                if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                    word = re.escape(name.replace("_", " "))
                    said = rf"{AMOUNT}\s+{word}\b|\b{word}(?:\s+[a-z]+){{0,2}}\s+{AMOUNT}{NOT_A_COUNT}"
                    out[(table, name)] = (re.compile(said, re.IGNORECASE), values)
        return out
    return _cached(workflow, "amounts", build)


def stated_amounts(workflow: Workflow, text: str) -> dict[tuple[str, str], set[float]]:
    """The amounts ``text`` states as a catalogue record's numeric field: (table, field) -> the amounts."""
    out: dict[tuple[str, str], set[float]] = {}
    for key, (pattern, _) in _amounts(workflow).items():
        said = {float((a or b).rstrip(",").replace(",", "")) for a, b in pattern.findall(text)}
        if said:
            out[key] = said
    return out


def stated_facts(workflow: Workflow, text: str) -> dict[tuple[str, str], set[int]]:
    """The catalogue facts ``text`` states: (table, field) -> indices of the records whose value it states.

    Product knowledge: what an error code means, its cause and fix, where a feature sits in the menus.
    A fact is stated when the text holds :data:`FACT_COVERAGE` of its word pairs (a fix said with a
    word changed still counts); a value that several records share is stated for all of them. Neither a
    short value nor a field most records share (a category, "join a meeting") is a fact here: they cannot
    tell one record from another.
    """
    said = _pairs(text)
    out: dict[tuple[str, str], set[int]] = {}
    for key, records in _facts(workflow).items():
        hits = {i for i, pairs in enumerate(records) if pairs and len(pairs & said) >= FACT_COVERAGE * len(pairs)}
        if hits:
            out[key] = hits
    return out


def fact_checks(workflow: Workflow, text: str, expected: Mapping[str, int]
                ) -> list[tuple[tuple[str, str], bool]]:
    """The catalogue facts ``text`` states (:func:`stated_facts`), per table and field, as ``((table, field),
    verdict)``: True where it states the fact of the record the scenario is about (``expected``: table ->
    record index), False where it states another record's (instead or beside it; a value both records share
    is no other fact). Nor is a fact whose words the right facts in ``text`` already hold (80% of its word
    pairs): the "where" of Zoom's error 10004 names the menu path of the "check for app updates" feature, and
    two causes that differ by a word or two ("blocking Zoom", "blocking the connection") are heard together.
    Then the amounts it states as a numeric field (:func:`stated_amounts`: a policy's deductible and limit):
    True where one is the record's, False where one is not (another record's, or one no record has)."""
    facts = _facts(workflow)
    stated = stated_facts(workflow, text)
    right = set().union(*(facts[key][expected[key[0]]] for key, records in stated.items()
                          if key[0] in expected and expected[key[0]] in records))
    out: list[tuple[tuple[str, str], bool]] = []
    for key, records in stated.items():
        if key[0] not in expected:
            continue
        own = facts[key][expected[key[0]]]
        if expected[key[0]] in records:
            out.append((key, True))
        if any(facts[key][i] != own and len(facts[key][i] & right) < FACT_COVERAGE * len(facts[key][i])
               for i in records):
            out.append((key, False))          # another record's fact, beside the right one or instead of it
    amounts = _amounts(workflow)
    for key, said in stated_amounts(workflow, text).items():
        if key[0] not in expected:
            continue
        own = amounts[key][1][expected[key[0]]]
        if own in said:
            out.append((key, True))
        if said - {own}:
            out.append((key, False))          # an amount the record does not have: another's, or made up
    return out


def knowledge_fields(workflow: Workflow) -> frozenset[tuple[str, str]]:
    """The catalogue fields checked as facts (:func:`stated_facts`, :func:`stated_amounts`) that no customer step
    says: product knowledge, which only the weights hold. Insurance's incident is the policy's field, but the
    customer describes it; the agent that repeats it knows nothing by that."""
    def build(wf: Workflow) -> frozenset[tuple[str, str]]:
        said = {m.groups() for n, node in wf.nodes.items() if node.role == "user"
                for text in wf.heard_as(n) for m in map(SLOT_NAME.match, SLOT.findall(text)) if m and m.group(2)}
        return frozenset((set(_facts(wf)) | set(_amounts(wf))) - said)
    return _cached(workflow, "knowledge", build)


def scenario_records(workflow: Workflow, values: Mapping[str, Any]) -> dict[str, int]:
    """The catalogue records a scenario is about, table -> index (the error the customer has, their policy)."""
    return {table: workflow.catalogue[table].index(values[table])
            for table in workflow.catalogue if values.get(table) in workflow.catalogue[table]}


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
        said = [(n.id, None, e) for n in self.nodes for e in n.examples] + [
            (n.id, edge.target, e) for n in self.nodes for edge in workflow.successors(n.id) for e in edge.examples]
        docs = [(node_id, _features(mask_values(e, None))) for node_id, _, e in said]
        self._texts = [e for _, _, e in said]
        self._ways = [way for _, way, _ in said]        # the edge an example speaks for (None: the node's own)
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

    def _nearest(self, text: str, values: Mapping[str, Any] | None, node: str) -> int:
        vec = self._vector(_features(mask_values(text, values)))
        scored = [(sum(w * example.get(f, 0.0) for f, w in vec.items()), k)
                  for k, (node_id, example) in enumerate(self._examples) if node_id == node]
        if not scored:
            raise KeyError(f"no examples for node {node!r} among this matcher's nodes")
        return max(scored)[1]

    def nearest_example(self, text: str, values: Mapping[str, Any] | None, node: str) -> str:
        """The example utterance of ``node`` that ``text`` reads most like."""
        return self._texts[self._nearest(text, values, node)]

    def way_on(self, text: str, values: Mapping[str, Any] | None, node: str) -> str | None:
        """Where ``text``, said at ``node``, goes on: the target of the edge whose own examples it reads most
        like, or None when it reads most like the node's own (the branches without examples of their own)."""
        return self._ways[self._nearest(text, values, node)]

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


def matcher_for(workflow: Workflow, role: str | None = "agent") -> NodeMatcher:
    """The :class:`NodeMatcher` of a workflow's nodes of one role, built once per workflow."""
    return _cached(workflow, f"matcher:{role}", lambda wf: NodeMatcher(wf, role))


ANSWER_SCORE = 0.3          # a customer message nearer than this to none of the expected replies answers nothing


def required_values(workflow: Workflow, node: str) -> set[str]:
    """What a customer turn must carry to answer its step: the customer's values every example of it states."""
    said = [slot_names(e) for e in workflow.heard_as(node)]
    return (set.intersection(*said) if said else set()) - lookups(workflow)


@dataclass(frozen=True)
class Reading:
    """How a customer message reads against the replies the graph expects after an agent step."""

    node: str                # the nearest expected reply
    answered: bool           # near enough, and carrying the values that reply needs
    missing: frozenset[str] = frozenset()


def read_reply(workflow: Workflow, text: str, expected: Iterable[str],
               values: Mapping[str, Any] | None = None) -> Reading:
    """Does ``text`` give one of the ``expected`` customer replies? An off-topic question, a half answer
    or a message that answers nothing is not an answer: a router stays and asks again."""
    best = matcher_for(workflow, "user").match(text, values, expected)
    missing = required_values(workflow, best.node) - set(extract_values(workflow, text))
    return Reading(best.node, best.score >= ANSWER_SCORE and not missing, frozenset(missing))


@dataclass
class Trace:
    """A conversation mapped onto the workflow."""

    nodes: list[str | None]                 # one node per turn; None: a customer turn that answered nothing
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

    @property
    def asides(self) -> int:
        """Customer turns that answered nothing (a question off the procedure, a half answer)."""
        return sum(n is None for n in self.nodes)


def conformance(workflow: Workflow, messages: list[dict], values: Mapping[str, Any] | None = None,
                expected_end: str | None = None, matcher: NodeMatcher | None = None) -> Trace:
    """Map each non-system message onto a node and check the walk against the graph.

    Agent turns are matched among agent nodes, preferring what the graph allows next unless the text
    clearly performs another node. A customer turn is read as the nearest reply the graph expects (a
    customer who also answers the next question still answers this one). A customer turn that does
    not answer the step it follows (see :func:`read_reply`) is an *aside* when the agent then asks its
    step again: its node is None and the repeated step is no violation. If the agent instead moves
    on, the turn is read as the nearest reply it resembled.
    """
    matcher = matcher or matcher_for(workflow, None)
    succ = {n: {e.target for e in workflow.successors(n)} for n in workflow.nodes}
    role_of = {"assistant": "agent", "user": "user"}
    agents = [n for n, node in workflow.nodes.items() if node.role == "agent"]
    users = [n for n, node in workflow.nodes.items() if node.role == "user"]
    nodes: list[str | None] = []
    pending: Reading | None = None           # the last customer turn, when it answered nothing
    last_agent: str | None = None
    for message in messages:
        role = role_of.get(message["role"])
        if role is None:
            continue
        text = message["content"]
        previous = next((n for n in reversed(nodes) if n is not None), None)
        if role == "user":
            expected = [n for n in (succ[previous] if previous else ()) if n in users]
            reading = read_reply(workflow, text, expected or users, values)
            if expected and not reading.answered:
                pending = reading
                nodes.append(None)
                continue
            pending = None
            chosen = reading.node if expected else _prefer(matcher, text, values, users, [])
        else:
            if pending is not None:                  # re-asked, or moved on as if answered?
                onward = [n for n in succ[pending.node] if n in agents]
                chosen = _prefer(matcher, text, values, agents, [last_agent, *onward])
                if chosen != last_agent:
                    nodes[-1] = pending.node
                pending = None
            else:
                expected = [n for n in (succ[previous] if previous else {workflow.start}) if n in agents]
                chosen = _prefer(matcher, text, values, agents, expected)
            last_agent = chosen
        nodes.append(chosen)
    steps = [n for n in nodes if n is not None]
    last = workflow.nodes[steps[-1]] if steps else None
    return Trace(nodes=nodes, start=workflow.start, invalid_steps=invalid_steps(workflow, nodes),
                 ended_at=last.terminal if last else None, expected_end=expected_end)


def invalid_steps(workflow: Workflow, nodes: list[str | None]) -> list[tuple[int, str, str]]:
    """``(turn, from, to)`` for each step of a trace that is no edge of the graph. Asides (None) are
    skipped, and an agent step asked again after one is no violation."""
    edges = {(e.source, e.target) for e in workflow.edges}
    steps = [(i, n) for i, n in enumerate(nodes) if n is not None]
    return [(i, a, b) for (_, a), (i, b) in zip(steps, steps[1:])
            if (a, b) not in edges and not (a == b and workflow.nodes[a].role == "agent")]


def loops(workflow: Workflow) -> dict[tuple[str, str], frozenset[str]]:
    """Each loop of the graph by its back edge ``(u, v)`` (:func:`subterra.paths.back_edges`): the entry ``v``
    and every node that reaches ``u`` without passing through ``v`` (the natural loop). Insurance has two, the
    document loop ``upload_attempt -> ask_evidence`` inside the item loop ``another_item -> ask_item``."""
    from .paths import back_edges

    def build(wf: Workflow) -> dict[tuple[str, str], frozenset[str]]:
        predecessors: dict[str, set[str]] = {n: set() for n in wf.nodes}
        for edge in wf.edges:
            predecessors[edge.target].add(edge.source)
        found = {}
        for source, entry in sorted(back_edges(wf)):
            body, stack = {entry, source}, [source]
            while stack:
                for before in predecessors[stack.pop()] - body:
                    body.add(before)
                    stack.append(before)
            found[(source, entry)] = frozenset(body)
        return found

    return _cached(workflow, "loops", build)


@dataclass(frozen=True)
class LoopRun:
    """How a conversation went through one loop."""

    rounds: int                 # 0: never in the loop; else 1 + the times it came back to the entry from inside
    exit: str | None            # the first node after the loop's last node in it; None: it ended in the loop


def loop_runs(workflow: Workflow, nodes: list[str | None]) -> dict[tuple[str, str], LoopRun]:
    """For each loop (:func:`loops`), the rounds a trace's walk made through it and where it left."""
    steps = [n for n in nodes if n is not None]
    runs = {}
    for edge, body in loops(workflow).items():
        inside = [i for i, n in enumerate(steps) if n in body]
        after = inside[-1] + 1 if inside else len(steps)
        entry = edge[1]
        again = sum(a in body and a != entry and b == entry for a, b in zip(steps, steps[1:]))
        runs[edge] = LoopRun(rounds=(entry in steps) + again, exit=steps[after] if after < len(steps) else None)
    return runs


def _prefer(matcher: NodeMatcher, text: str, values, same_role: list[str], preferred: list[str]) -> str:
    """Follow the graph unless the text clearly performs another node."""
    best_any = matcher.match(text, values, same_role)
    if not preferred:
        return best_any.node
    best_next = matcher.match(text, values, preferred)
    return (best_next if best_next.score >= best_any.score - 0.05 else best_any).node
