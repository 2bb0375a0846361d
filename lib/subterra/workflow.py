"""The workflow format: load, validate and hold one conversational procedure.

A workflow is a flowchart F = (N, E, n0, T) written as one YAML file per domain
(see ``data/workflows/`` and docs/workflow-format.md). Loading
either returns a complete, validated :class:`Workflow` or raises
:class:`WorkflowError`, whose message is one line naming the file, the line,
the node and the field. Nothing is ever partially loaded.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path as FilePath
from typing import Any, Mapping, Sequence

import networkx as nx
import yaml

ROLES = ("agent", "user")
TERMINAL_KINDS = ("success", "abandonment", "escalation")
SLOT = re.compile(r"\{([^{}]*)\}")
SLOT_NAME = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:\.([A-Za-z_][A-Za-z0-9_]*))?$")
IDENT = re.compile(r"^[a-z][a-z0-9_]*$")


class WorkflowError(ValueError):
    """A workflow file that cannot be used, described in one line."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 node: str | None = None, field: str | None = None):
        self.message = " ".join(str(message).split())
        self.file, self.line, self.node, self.field = file, line, node, field
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.file or "<workflow>"
        if self.line is not None:
            where += f":{self.line}"
        parts = [where]
        if self.node is not None:
            parts.append(f"node '{self.node}'")
        if self.field is not None:
            parts.append(f"field '{self.field}'")
        return ": ".join(parts) + ": " + self.message


# --------------------------------------------------------------------------- conditions

_ALLOWED_OPS = (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn)


@dataclass(frozen=True)
class Condition:
    """A machine-checkable expression over scenario values, e.g. ``budget >= price``.

    The grammar is a small, safe subset of Python: comparisons, ``and``/``or``/``not``,
    numbers, strings, lists of those, variable names and ``table.field`` for catalogue
    records. It is parsed once, at load time, and evaluated without ``eval``.
    """

    source: str
    tree: ast.Expression = field(repr=False, compare=False)
    names: frozenset[str] = field(repr=False, compare=False)

    @classmethod
    def parse(cls, source: str) -> "Condition":
        try:
            tree = ast.parse(source.strip(), mode="eval")
        except SyntaxError as exc:
            raise ValueError(f"condition does not parse: {source!r} ({exc.msg})") from None
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Name):
                names.add(node.id)
            elif isinstance(node, ast.Attribute):
                if not isinstance(node.value, ast.Name):
                    raise ValueError(f"condition {source!r}: only 'table.field' attribute access is allowed")
            elif isinstance(node, ast.Compare):
                if not all(isinstance(op, _ALLOWED_OPS) for op in node.ops):
                    raise ValueError(f"condition {source!r}: unsupported comparison")
            elif not isinstance(node, (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not,
                                       ast.USub, ast.Constant, ast.List, ast.Tuple, ast.Load) + _ALLOWED_OPS):
                raise ValueError(f"condition {source!r}: '{type(node).__name__}' is not allowed "
                                 "(use comparisons, and/or/not, names and literals)")
            if isinstance(node, ast.UnaryOp) and not isinstance(node.op, (ast.Not, ast.USub)):
                raise ValueError(f"condition {source!r}: unsupported operator")
        return cls(source=source.strip(), tree=tree, names=frozenset(names))

    def evaluate(self, values: Mapping[str, Any]) -> bool:
        """Evaluate against one scenario: variable name -> value, table name -> record."""
        return bool(_eval(self.tree.body, values))

    def reading(self, names: frozenset[str] | set[str]) -> "Condition | None":
        """The part of this condition that reads any of ``names``: its top-level ``and`` terms that do, as one
        condition; None where none does. Of travel_tools' ``booking == 'confirmed' and special_request in [...]``,
        read for what a tool returns: ``booking == 'confirmed'``."""
        body = self.tree.body
        terms = body.values if isinstance(body, ast.BoolOp) and isinstance(body.op, ast.And) else [body]
        kept = [t for t in terms if {n.id for n in ast.walk(t) if isinstance(n, ast.Name)} & names]
        if not kept:
            return None
        return self if len(kept) == len(terms) else Condition.parse(" and ".join(ast.unparse(t) for t in kept))


def _eval(node: ast.AST, values: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return values[node.id]
    if isinstance(node, ast.Attribute):
        return values[node.value.id][node.attr]
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_eval(e, values) for e in node.elts]
    if isinstance(node, ast.UnaryOp):
        operand = _eval(node.operand, values)
        return (not operand) if isinstance(node.op, ast.Not) else -operand
    if isinstance(node, ast.BoolOp):
        results = (_eval(v, values) for v in node.values)
        return all(results) if isinstance(node.op, ast.And) else any(results)
    if isinstance(node, ast.Compare):
        left = _eval(node.left, values)
        for op, comparator in zip(node.ops, node.comparators):
            right = _eval(comparator, values)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    raise TypeError(f"unsupported expression node {type(node).__name__}")  # excluded by parse()


_COMPARE = {
    ast.Eq: lambda a, b: a == b, ast.NotEq: lambda a, b: a != b,
    ast.Lt: lambda a, b: a < b, ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b, ast.GtE: lambda a, b: a >= b,
    ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
}


# --------------------------------------------------------------------------- the model

@dataclass(frozen=True)
class Node:
    """One step of the procedure: a turn spoken by the agent or by the user."""

    id: str
    role: str                      # "agent" | "user"
    label: str                     # short human title, shown in views
    prompt: str                    # template for an LLM teacher / simulator
    examples: tuple[str, ...]      # example utterances with {slots}, for the offline side
    terminal: str | None = None    # "success" | "abandonment" | "escalation" | None
    call: str | None = None        # the tool an agent turn calls before it speaks (its result in hand)

    @property
    def is_terminal(self) -> bool:
        return self.terminal is not None


@dataclass(frozen=True)
class Edge:
    """A transition; ``when`` is a sentence an LLM can follow, ``check`` the machine version.

    ``sets`` renews values on the way: ``(("card_last4", "other_card"),)`` means that from this edge's
    target on, ``{card_last4}`` is the scenario's ``other_card`` (the card offered after a declined one).
    ``examples`` (customer turns only) are what the customer says when its path takes this edge, in place
    of its node's: "It says {upload_error}." on the failed-upload branch, so that the branch is heard.
    """

    source: str
    target: str
    when: str | None = None
    check: Condition | None = None
    sets: tuple[tuple[str, str], ...] = ()
    examples: tuple[str, ...] = ()


@dataclass(frozen=True)
class Tool:
    """One of the business's systems the agent may call: a flight search, a card payment.

    ``arguments`` are the customer's values the call needs; ``results`` the values it looks up (variables or
    catalogue tables: the scenario's, as the business's systems would return them); ``outcome`` a name with
    its own values (travel_tools' ``booking``: confirmed, declined or referred) that each call returns as the
    scenario's path has it there (the first charge declined, the second confirmed), and that edges' checks may
    read.
    """

    name: str
    description: str               # one line, for the model and for people
    arguments: tuple[str, ...] = ()
    results: tuple[str, ...] = ()
    outcome: str | None = None
    outcome_values: tuple[Any, ...] = ()

    @property
    def returns(self) -> tuple[str, ...]:
        """Every name a call of this tool answers with."""
        return self.results + ((self.outcome,) if self.outcome else ())


@dataclass(frozen=True)
class Workflow:
    name: str
    title: str
    system_prompt: str
    description: str
    variables: dict[str, tuple[Any, ...]]
    held_out: dict[str, tuple[Any, ...]]
    catalogue: dict[str, tuple[dict[str, Any], ...]]
    nodes: dict[str, Node]
    edges: tuple[Edge, ...]
    start: str
    source: str | None = None
    tools: dict[str, Tool] = field(default_factory=dict)
    scenarios_from: str | None = None   # another workflow whose scenarios this one draws (to compare on them)

    @property
    def family(self) -> str:
        """The name scenarios are drawn under: this workflow's, or the one it draws its scenarios from (the
        same values, personas and path numbers, so that runs of the two pair by scenario)."""
        return self.scenarios_from or self.name

    def outcomes(self) -> dict[str, Tool]:
        """Outcome name -> the tool that returns it (``booking`` -> charge_card)."""
        return {t.outcome: t for t in self.tools.values() if t.outcome}

    def returned(self) -> frozenset[str]:
        """Every value a tool returns (its results and its outcome): the business's to say, known to an agent
        once a call has returned it (a flight's price; a policy's status, on which a branch may turn)."""
        return frozenset(name for tool in self.tools.values() for name in tool.returns)

    def tool_hubs(self) -> frozenset[str]:
        """The customer's steps after which the agent's branch reads a value a tool returns (travel's card:
        ``booking``; insurance's policy hubs: ``policy_status``, ``policy``): where an agent without the tool can
        only guess. A branch that is the customer's to take (leaving when the price found is over budget) is
        not one."""
        returned = self.returned()
        return frozenset(e.source for e in self.edges if e.check is not None and e.check.names & returned
                         and self.nodes[e.target].role == "agent")

    def values_of(self, variable: str) -> tuple[Any, ...]:
        """Every value a variable can take: its training pool, then its held-out values (a tool's outcome:
        its values)."""
        tool = self.outcomes().get(variable)
        if tool is not None:
            return tool.outcome_values
        return tuple(self.variables.get(variable, ())) + tuple(self.held_out.get(variable, ()))

    def successors(self, node_id: str) -> list[Edge]:
        return [e for e in self.edges if e.source == node_id]

    def sayings(self, node_id: str, following: str | None = None) -> tuple[str, ...]:
        """What is said at ``node_id`` when the walk goes on to ``following``: that edge's own examples where
        it has them, else the node's."""
        edge = next((e for e in self.edges if e.source == node_id and e.target == following), None)
        return edge.examples if edge is not None and edge.examples else self.nodes[node_id].examples

    def heard_as(self, node_id: str) -> tuple[str, ...]:
        """Every way ``node_id`` can be said: the node's examples, then those of its outgoing edges."""
        return self.nodes[node_id].examples + tuple(x for e in self.successors(node_id) for x in e.examples)

    @property
    def terminals(self) -> dict[str, str]:
        """Terminal node id -> kind."""
        return {n.id: n.terminal for n in self.nodes.values() if n.terminal}

    @property
    def decision_hubs(self) -> list[str]:
        """Nodes with more than one outgoing edge (loop back edges included)."""
        out: dict[str, int] = {}
        for e in self.edges:
            out[e.source] = out.get(e.source, 0) + 1
        return [n for n in self.nodes if out.get(n, 0) > 1]

    def renewals(self) -> dict[str, str]:
        """Variable renewing another on some edge -> the variable it renews (``other_card`` -> ``card_last4``)."""
        return {source: target for e in self.edges for target, source in e.sets}

    def values_along(self, nodes: Sequence[str | None], values: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The values in force at each node of a walk: an edge's ``sets`` hold from its target on.

        ``None`` (a turn off the procedure) keeps the values of the node before it.
        """
        edges = {(e.source, e.target): e.sets for e in self.edges}
        current, previous, out = dict(values), None, []
        for node in nodes:
            if node is not None:
                for target, source in edges.get((previous, node), ()):
                    if source in values:
                        current[target] = values[source]
                previous = node
            out.append(dict(current))
        return out

    def slots(self) -> set[str]:
        """Every name a ``{slot}`` may use: variables and ``table.field`` for catalogue tables."""
        names = set(self.variables)
        for table, records in self.catalogue.items():
            names.update(f"{table}.{key}" for key in records[0])
        return names


# --------------------------------------------------------------------------- loops

class IrreducibleLoop(ValueError):
    """A cycle that can be entered other than through its head."""

    def __init__(self, node: str):
        self.node = node
        super().__init__(f"loop through '{node}' can be entered in the middle; every loop needs a single "
                         "entry node that the back edge returns to")


def back_edges(workflow: Workflow) -> set[tuple[str, str]]:
    """The loop-closing edges (target dominates source); raises :class:`IrreducibleLoop`."""
    graph = nx.DiGraph()
    graph.add_nodes_from(workflow.nodes)
    graph.add_edges_from((e.source, e.target) for e in workflow.edges)
    reachable = nx.descendants(graph, workflow.start) | {workflow.start}
    graph = graph.subgraph(reachable).copy()
    idom = nx.immediate_dominators(graph, workflow.start)

    def dominates(a: str, b: str) -> bool:
        while True:
            if a == b:
                return True
            parent = idom.get(b, b)  # networkx >= 3.5 leaves the start out of the map
            if parent == b:
                return False
            b = parent

    loops = {(u, v) for u, v in graph.edges if dominates(v, u)}
    forward = graph.copy()
    forward.remove_edges_from(loops)
    try:
        cycle = nx.find_cycle(forward)
    except nx.NetworkXNoCycle:
        return loops
    raise IrreducibleLoop(cycle[0][0])


# --------------------------------------------------------------------------- loading

def load_workflow(path: str | FilePath) -> Workflow:
    """Load and validate a workflow file; raise :class:`WorkflowError` on any problem."""
    path = FilePath(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WorkflowError("no such file", file=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkflowError(f"cannot read file ({exc.__class__.__name__})", file=str(path)) from None
    return parse_workflow(text, source=str(path))


def parse_workflow(text: str, source: str | None = None) -> Workflow:
    """Parse and validate workflow YAML text (``source`` names it in errors)."""
    loader = _Loader(text)
    try:
        root = loader.get_single_node()          # parse once: the node tree gives line numbers,
        data = loader.construct_document(root) if root is not None else None   # and the values
        lines = _line_index(root)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise WorkflowError(f"YAML syntax error: {problem}", file=source,
                            line=mark.line + 1 if mark else None) from None
    except RecursionError:
        raise WorkflowError("YAML nesting too deep", file=source) from None
    finally:
        loader.dispose()
    return _Validator(data, lines, source).workflow()


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)   # libyaml when present: the same rules, faster


def _line_index(root: yaml.Node | None) -> dict[tuple, int]:
    """Map each key path, e.g. ("nodes", 3, "examples", 1), to its 1-based line."""
    index: dict[tuple, int] = {}

    def walk(node: yaml.Node, path: tuple) -> None:
        index[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    index[path + (key.value,)] = key.start_mark.line + 1
                    walk(value, path + (key.value,))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, path + (i,))

    if root is not None:
        walk(root, ())
    return index


class _Validator:
    """Turns parsed YAML into a Workflow, checking every field on the way."""

    def __init__(self, data: Any, lines: dict[tuple, int], source: str | None):
        self.data, self.lines, self.source = data, lines, source

    def fail(self, message: str, path: tuple = (), node: str | None = None, field: str | None = None):
        line = None
        for cut in range(len(path), -1, -1):
            if path[:cut] in self.lines:
                line = self.lines[path[:cut]]
                break
        if field is None and path:
            field = _field_name(path)
        raise WorkflowError(message, file=self.source, line=line, node=node, field=field)

    # -- typed getters -------------------------------------------------------------
    def get(self, mapping: dict, key: str, path: tuple, kind: type | tuple, *, node=None,
            required=True, default=None):
        if key not in mapping:
            if required:
                self.fail(f"missing required field '{key}'", path, node=node, field=_field_name(path + (key,)))
            return default
        value = mapping[key]
        if kind is str and isinstance(value, str):
            if not value.strip():
                self.fail("must not be empty", path + (key,), node=node)
            return value.strip()
        if isinstance(value, bool) and bool not in _as_tuple(kind):
            self.fail(f"expected {_kind_name(kind)}, got a boolean (YAML reads unquoted yes/no/on/off as booleans: "
                      "quote it)", path + (key,), node=node)
        if not isinstance(value, kind):
            self.fail(f"expected {_kind_name(kind)}, got {_type_name(value)}", path + (key,), node=node)
        return value

    def check_keys(self, mapping: dict, allowed: set[str], path: tuple, node=None):
        for key in mapping:
            if key not in allowed:
                self.fail(f"unknown field '{key}' (allowed: {', '.join(sorted(allowed))})",
                          path + (key,), node=node, field=_field_name(path + (key,)))

    # -- sections -----------------------------------------------------------------
    def workflow(self) -> Workflow:
        if not isinstance(self.data, dict):
            self.fail(f"a workflow file must be a YAML mapping, got {_type_name(self.data)}")
        top = self.data
        self.check_keys(top, {"name", "title", "description", "system_prompt", "variables", "held_out",
                              "catalogue", "tools", "start", "nodes", "edges", "scenarios_from"}, ())
        self.todos()
        name = self.get(top, "name", (), str)
        if not IDENT.match(name):
            self.fail(f"name {name!r} must be lower_snake_case", ("name",))
        title = self.get(top, "title", (), str, required=False, default=name)
        scenarios_from = self.get(top, "scenarios_from", (), str, required=False)
        if scenarios_from is not None and not IDENT.match(scenarios_from):
            self.fail(f"scenarios_from {scenarios_from!r} must name a workflow (lower_snake_case)", ("scenarios_from",))
        description = self.get(top, "description", (), str, required=False, default="")
        system_prompt = self.get(top, "system_prompt", (), str)
        if "\n" in system_prompt:
            self.fail("the deployment system prompt must be one line", ("system_prompt",))
        variables = self.pools("variables")
        held_out = self.pools("held_out", required=False)
        for var, values in held_out.items():
            if var not in variables:
                self.fail(f"held-out values for undeclared variable '{var}'", ("held_out", var))
            overlap = set(map(str, values)) & set(map(str, variables[var]))
            if overlap:
                self.fail(f"held-out value {sorted(overlap)[0]!r} is also in the training pool",
                          ("held_out", var))
        catalogue = self.catalogue(set(variables))
        tools = self.tools(variables, catalogue)
        nodes = self.nodes(tools)
        start = self.get(top, "start", (), str)
        if start not in nodes:
            self.fail(f"start node '{start}' is not defined", ("start",))
        edges = self.edges(nodes)
        wf = Workflow(name=name, title=title, system_prompt=system_prompt, description=description,
                      variables=variables, held_out=held_out, catalogue=catalogue, nodes=nodes,
                      edges=edges, start=start, source=self.source, tools=tools, scenarios_from=scenarios_from)
        self.slots_and_conditions(wf)
        self.calls(wf)
        self.renewals(wf)
        self.structure(wf)
        return wf

    def todos(self) -> None:
        """A value that starts with ``TODO`` (left by ``subterra import-langgraph``) must be filled first."""
        found: list[tuple] = []

        def walk(value: Any, path: tuple) -> None:
            if isinstance(value, str) and value.lstrip().startswith("TODO"):
                found.append(path)
            elif isinstance(value, dict):
                for key, item in value.items():
                    walk(item, path + (key,))
            elif isinstance(value, list):
                for i, item in enumerate(value):
                    walk(item, path + (i,))

        walk(self.data, ())
        if found:
            lines = [str(self.lines.get(path, "?")) for path in found]
            first = found[0]
            node = None
            if len(first) > 1 and first[0] == "nodes" and isinstance(self.data.get("nodes"), list):
                item = self.data["nodes"][first[1]]
                node = item.get("id") if isinstance(item, dict) and isinstance(item.get("id"), str) else None
            where = f"at line {lines[0]}" if len(found) == 1 else f"at lines {', '.join(lines)}"
            self.fail(f"{len(found)} TODO{'s' * (len(found) > 1)} left to fill, {where}", first, node=node)

    def pools(self, section: str, required: bool = True) -> dict[str, tuple]:
        raw = self.get(self.data, section, (), dict, required=required, default={})
        pools = {}
        for var, values in raw.items():
            path = (section, var)
            if not isinstance(var, str) or not IDENT.match(var):
                self.fail(f"variable name {var!r} must be lower_snake_case", path)
            if not isinstance(values, list) or not values:
                self.fail(f"expected a non-empty list of values, got {_type_name(values)}", path)
            for i, v in enumerate(values):
                if isinstance(v, bool) or not isinstance(v, (str, int, float)):
                    self.fail(f"values must be strings or numbers, got {_type_name(v)}", path + (i,))
            pools[var] = tuple(values)
        return pools

    def catalogue(self, variable_names: set[str]) -> dict[str, tuple[dict, ...]]:
        raw = self.get(self.data, "catalogue", (), dict, required=False, default={})
        tables = {}
        for table, records in raw.items():
            path = ("catalogue", table)
            if not isinstance(table, str) or not IDENT.match(table):
                self.fail(f"catalogue table name {table!r} must be lower_snake_case", path)
            if table in variable_names:
                self.fail(f"catalogue table '{table}' has the same name as a variable", path)
            if not isinstance(records, list) or not records:
                self.fail(f"expected a non-empty list of records, got {_type_name(records)}", path)
            keys = None
            for i, record in enumerate(records):
                if not isinstance(record, dict) or not record:
                    self.fail(f"each record must be a mapping, got {_type_name(record)}", path + (i,))
                for k, v in record.items():
                    if not isinstance(k, str) or not IDENT.match(k):
                        self.fail(f"record field {k!r} must be lower_snake_case", path + (i,))
                    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
                        self.fail(f"record values must be strings or numbers, got {_type_name(v)}",
                                  path + (i, k))
                if keys is None:
                    keys = set(record)
                elif set(record) != keys:
                    self.fail(f"record fields {sorted(record)} differ from the first record's {sorted(keys)}",
                              path + (i,))
            tables[table] = tuple(dict(r) for r in records)
        return tables

    def tools(self, variables: dict[str, tuple], catalogue: dict[str, tuple]) -> dict[str, Tool]:
        raw = self.get(self.data, "tools", (), dict, required=False, default={})
        tools: dict[str, Tool] = {}
        returned: dict[str, str] = {}
        for name, spec in raw.items():
            path = ("tools", name)
            if not isinstance(name, str) or not IDENT.match(name):
                self.fail(f"tool name {name!r} must be lower_snake_case", path)
            if name in variables or name in catalogue:
                self.fail(f"tool '{name}' has the same name as a variable or catalogue table", path)
            if not isinstance(spec, dict):
                self.fail(f"a tool must be a mapping, got {_type_name(spec)}", path)
            self.check_keys(spec, {"description", "arguments", "results", "outcome"}, path)
            description = self.get(spec, "description", path, str)
            if "\n" in description:
                self.fail("a tool's description must be one line", path + ("description",))
            names = {}
            for key, known, what in (("arguments", variables, "a variable"),
                                     ("results", {**variables, **catalogue}, "a variable or catalogue table")):
                items = self.get(spec, key, path, list, required=False, default=[])
                for j, item in enumerate(items):
                    if not isinstance(item, str) or item not in known:
                        self.fail(f"tool '{name}': {item!r} in {key} is not {what}", path + (key, j))
                    if items.index(item) != j:
                        self.fail(f"tool '{name}': {item!r} is listed twice in {key}", path + (key, j))
                names[key] = tuple(items)
            outcome, outcome_values = None, ()
            raw_outcome = self.get(spec, "outcome", path, dict, required=False)
            if raw_outcome is not None:
                if len(raw_outcome) != 1:
                    self.fail(f"tool '{name}': outcome is one name with its values, e.g. {{payment: [approved, "
                              "declined]}", path + ("outcome",))
                (outcome, outcome_values), = raw_outcome.items()
                opath = path + ("outcome", outcome)
                if not isinstance(outcome, str) or not IDENT.match(outcome):
                    self.fail(f"tool '{name}': outcome name {outcome!r} must be lower_snake_case", opath)
                if outcome in variables or outcome in catalogue or outcome in raw:
                    self.fail(f"tool '{name}': outcome '{outcome}' has the name of a variable, table or tool", opath)
                if not isinstance(outcome_values, list) or len(outcome_values) < 2 or any(
                        isinstance(v, bool) or not isinstance(v, (str, int, float)) for v in outcome_values):
                    self.fail(f"tool '{name}': outcome '{outcome}' needs a list of two or more values (strings or "
                              "numbers)", opath)
                outcome_values = tuple(outcome_values)
            if not names["results"] and outcome is None:
                self.fail(f"tool '{name}' returns nothing: give it results, an outcome or both", path)
            for item in names["results"] + ((outcome,) if outcome else ()):
                if item in names["arguments"]:
                    self.fail(f"tool '{name}': {item!r} is both an argument and what it returns", path)
                if item in returned:
                    self.fail(f"tool '{name}' returns {item!r}, which tool '{returned[item]}' returns too: "
                              "one system answers for each value", path)
                returned[item] = name
            tools[name] = Tool(name=name, description=description, arguments=names["arguments"],
                               results=names["results"], outcome=outcome, outcome_values=outcome_values)
        return tools

    def calls(self, wf: Workflow) -> None:
        """Every tool is called, by agent turns only; a check that reads an outcome is taken with it in hand
        (the tool is called by the edge's source or its target)."""
        called = {n.call for n in wf.nodes.values() if n.call}
        for name in wf.tools:
            if name not in called:
                self.fail(f"tool '{name}' is called by no node (give an agent node 'call: {name}')", ("tools", name))
        outcomes = wf.outcomes()
        for i, edge in enumerate(wf.edges):
            for name in sorted((edge.check.names if edge.check else frozenset()) & set(outcomes)):
                tool = outcomes[name].name
                if tool not in (wf.nodes[edge.source].call, wf.nodes[edge.target].call):
                    self.fail(f"edge {edge.source} -> {edge.target} reads {name!r}, the outcome of tool '{tool}', "
                              f"but neither '{edge.source}' nor '{edge.target}' calls it", ("edges", i, "check"),
                              node=edge.source)

    def nodes(self, tools: dict[str, Tool] | None = None) -> dict[str, Node]:
        raw = self.get(self.data, "nodes", (), list)
        if not raw:
            self.fail("a workflow needs at least one node", ("nodes",))
        nodes: dict[str, Node] = {}
        for i, item in enumerate(raw):
            path = ("nodes", i)
            if not isinstance(item, dict):
                self.fail(f"each node must be a mapping, got {_type_name(item)}", path)
            node_id = item.get("id") if isinstance(item.get("id"), str) else None
            self.check_keys(item, {"id", "role", "label", "prompt", "examples", "terminal", "call"}, path,
                            node=node_id)
            node_id = self.get(item, "id", path, str)
            if not IDENT.match(node_id):
                self.fail(f"node id {node_id!r} must be lower_snake_case", path + ("id",), node=node_id)
            if node_id in nodes:
                self.fail("duplicate node id", path + ("id",), node=node_id)
            role = self.get(item, "role", path, str, node=node_id)
            if role not in ROLES:
                self.fail(f"role must be one of {', '.join(ROLES)}, got {role!r}", path + ("role",), node=node_id)
            label = self.get(item, "label", path, str, node=node_id, required=False,
                             default=node_id.replace("_", " "))
            prompt = self.get(item, "prompt", path, str, node=node_id)
            examples = self.get(item, "examples", path, list, node=node_id)
            if not examples:
                self.fail("needs at least one example utterance", path + ("examples",), node=node_id)
            for j, ex in enumerate(examples):
                if not isinstance(ex, str) or not ex.strip():
                    self.fail(f"example utterances must be non-empty strings, got {_type_name(ex)}",
                              path + ("examples", j), node=node_id)
            terminal = self.get(item, "terminal", path, str, node=node_id, required=False)
            if terminal is not None and terminal not in TERMINAL_KINDS:
                self.fail(f"terminal must be one of {', '.join(TERMINAL_KINDS)}, got {terminal!r}",
                          path + ("terminal",), node=node_id)
            call = self.get(item, "call", path, str, node=node_id, required=False)
            if call is not None and call not in (tools or {}):
                self.fail(f"calls unknown tool {call!r} (tools: {', '.join(sorted(tools or {})) or 'none'})",
                          path + ("call",), node=node_id)
            if call is not None and role != "agent":
                self.fail("only an agent turn calls a tool (the customer cannot reach the business's systems)",
                          path + ("call",), node=node_id)
            nodes[node_id] = Node(id=node_id, role=role, label=label, prompt=prompt,
                                  examples=tuple(e.strip() for e in examples), terminal=terminal, call=call)
        return nodes

    def edges(self, nodes: dict[str, Node]) -> tuple[Edge, ...]:
        raw = self.get(self.data, "edges", (), list)
        edges, seen = [], set()
        for i, item in enumerate(raw):
            path = ("edges", i)
            if not isinstance(item, dict):
                self.fail(f"each edge must be a mapping, got {_type_name(item)}", path)
            self.check_keys(item, {"from", "to", "when", "check", "sets", "examples"}, path)
            source = self.get(item, "from", path, str)
            target = self.get(item, "to", path, str, node=source)
            for end, key in ((source, "from"), (target, "to")):
                if end not in nodes:
                    self.fail(f"edge refers to unknown node '{end}'", path + (key,), node=end)
            if (source, target) in seen:
                self.fail(f"duplicate edge {source} -> {target}", path, node=source)
            seen.add((source, target))
            if nodes[source].is_terminal:
                self.fail(f"terminal node has an outgoing edge (to '{target}')", path, node=source)
            if nodes[source].role == nodes[target].role:
                self.fail(f"edge {source} -> {target} joins two {nodes[source].role} nodes; "
                          "turns must alternate between agent and user", path, node=source)
            when = self.get(item, "when", path, str, node=source, required=False)
            check_src = self.get(item, "check", path, str, node=source, required=False)
            check = None
            if check_src is not None:
                if when is None:
                    self.fail("an edge with a 'check' also needs a 'when' sentence for LLMs", path, node=source)
                try:
                    check = Condition.parse(check_src)
                except ValueError as exc:
                    self.fail(str(exc), path + ("check",), node=source)
            sets = self.get(item, "sets", path, dict, node=source, required=False, default={})
            examples = self.get(item, "examples", path, list, node=source, required=False, default=[])
            if examples and nodes[source].role != "user":
                self.fail(f"edge {source} -> {target} has examples, but they speak for its source, and "
                          f"'{source}' is an agent turn: only a customer turn's words can tell its branches apart",
                          path + ("examples",), node=source)
            for j, ex in enumerate(examples):
                if not isinstance(ex, str) or not ex.strip():
                    self.fail(f"example utterances must be non-empty strings, got {_type_name(ex)}",
                              path + ("examples", j), node=source)
            edges.append(Edge(source=source, target=target, when=when, check=check,
                              sets=tuple((str(k), v) for k, v in sets.items()),
                              examples=tuple(e.strip() for e in examples)))
        return tuple(edges)

    def renewals(self, wf: Workflow) -> None:
        """Each ``sets`` renews a variable from another whose values it never shares (a listener tells them
        apart), and a variable renews one variable only (a listener hears its value as that one's)."""
        renews: dict[str, str] = {}
        for i, edge in enumerate(wf.edges):
            for target, source in edge.sets:
                path = ("edges", i, "sets", target)
                if renews.setdefault(source, target) != target:
                    self.fail(f"edge {edge.source} -> {edge.target} sets {target!r} from {source!r}, which another "
                              f"edge uses to renew {renews[source]!r}: a variable renews one variable only", path,
                              node=edge.source)
                for name in (target, source):
                    if not isinstance(name, str) or name not in wf.variables:
                        self.fail(f"edge {edge.source} -> {edge.target} sets {target!r} from {source!r}: "
                                  f"{name!r} is not a variable", path, node=edge.source)
                if target == source:
                    self.fail(f"edge {edge.source} -> {edge.target} sets {target!r} from itself", path,
                              node=edge.source)
                shared = set(map(str, wf.values_of(target))) & set(map(str, wf.values_of(source)))
                if shared:
                    self.fail(f"edge {edge.source} -> {edge.target} sets {target!r} from {source!r}, but both can "
                              f"be {sorted(shared)[0]!r}: a listener could not tell the new value from the old",
                              path, node=edge.source)

    def template(self, text: str, known: set[str], path: tuple, node: str) -> None:
        """Every ``{slot}`` of a prompt or example names a variable or ``table.field``, and braces balance."""
        for slot in SLOT.findall(text):
            if slot not in known:
                self.fail(f"undefined slot {{{slot}}} (known: {', '.join(sorted(known))})", path, node=node)
        if "{" in SLOT.sub("", text) or "}" in SLOT.sub("", text):
            self.fail("unbalanced '{' or '}' in template", path, node=node)

    def slots_and_conditions(self, wf: Workflow) -> None:
        known = wf.slots()
        for i, node in enumerate(wf.nodes.values()):
            self.template(node.prompt, known, ("nodes", i, "prompt"), node.id)
            for j, text in enumerate(node.examples):
                self.template(text, known, ("nodes", i, "examples", j), node.id)
        for i, edge in enumerate(wf.edges):
            for j, text in enumerate(edge.examples):
                self.template(text, known, ("edges", i, "examples", j), edge.source)
        sample = {var: values[0] for var, values in wf.variables.items()}
        sample.update({table: records[0] for table, records in wf.catalogue.items()})
        sample.update({name: tool.outcome_values[0] for name, tool in wf.outcomes().items()})
        for i, edge in enumerate(wf.edges):
            if edge.check is None:
                continue
            path = ("edges", i, "check")
            attribute_bases = set()
            for tree_node in ast.walk(edge.check.tree):
                if isinstance(tree_node, ast.Attribute):
                    attribute_bases.add(id(tree_node.value))
                    name = f"{tree_node.value.id}.{tree_node.attr}"
                    if name not in known:
                        self.fail(f"condition {edge.check.source!r} uses undefined field '{name}'", path,
                                  node=edge.source)
                elif isinstance(tree_node, ast.Name) and id(tree_node) not in attribute_bases:
                    if tree_node.id not in wf.variables and tree_node.id not in wf.outcomes():
                        self.fail(f"condition {edge.check.source!r} uses undefined variable '{tree_node.id}'",
                                  path, node=edge.source)
            for name in edge.check.names & (set(wf.variables) | set(wf.outcomes())):   # every value each can take
                for value in wf.values_of(name):
                    try:
                        edge.check.evaluate({**sample, name: value})
                    except TypeError:
                        self.fail(f"condition {edge.check.source!r} compares values of incompatible types "
                                  f"({name} = {value!r})", path, node=edge.source)
            try:
                edge.check.evaluate(sample)
            except TypeError:
                self.fail(f"condition {edge.check.source!r} compares values of incompatible types", path,
                          node=edge.source)

    def structure(self, wf: Workflow) -> None:
        index = {node_id: i for i, node_id in enumerate(wf.nodes)}
        succ: dict[str, list[str]] = {n: [] for n in wf.nodes}
        pred: dict[str, list[str]] = {n: [] for n in wf.nodes}
        for e in wf.edges:
            succ[e.source].append(e.target)
            pred[e.target].append(e.source)
        if not wf.terminals:
            self.fail("no terminal node (mark at least one node with 'terminal: success|abandonment|escalation')",
                      ("nodes",))
        reachable = _closure([wf.start], succ)
        for node_id in wf.nodes:
            if node_id not in reachable:
                self.fail("node cannot be reached from the start node", ("nodes", index[node_id]), node=node_id)
        can_finish = _closure(list(wf.terminals), pred)
        for node_id in wf.nodes:
            if not succ[node_id] and not wf.nodes[node_id].is_terminal:
                self.fail("node has no outgoing edge and is not marked terminal", ("nodes", index[node_id]),
                          node=node_id)
        for node_id in wf.nodes:
            if node_id not in can_finish:
                self.fail("no terminal can be reached from this node (a cycle with no exit?)",
                          ("nodes", index[node_id]), node=node_id)
        try:
            back_edges(wf)
        except IrreducibleLoop as exc:
            self.fail(str(exc), ("nodes", index[exc.node]), node=exc.node)


def _closure(seeds: list[str], adjacency: dict[str, list[str]]) -> set[str]:
    seen, stack = set(seeds), list(seeds)
    while stack:
        for nxt in adjacency[stack.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def _field_name(path: tuple) -> str | None:
    if not path:
        return None
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _as_tuple(kind) -> tuple:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_name(kind) -> str:
    names = {str: "a string", dict: "a mapping", list: "a list", int: "an integer", bool: "a boolean"}
    return " or ".join(names.get(k, k.__name__) for k in _as_tuple(kind))


def _type_name(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number"}.get(type(value), type(value).__name__)


def render(template: str, values: Mapping[str, Any]) -> str:
    """Fill ``{slot}`` and ``{table.field}`` in a template from one scenario's values."""

    def fill(match: re.Match) -> str:
        name, attr = SLOT_NAME.match(match.group(1)).groups()
        value = values[name]
        return str(value[attr] if attr else value)

    return SLOT.sub(fill, template)


# --------------------------------------------------------------------------- the shipped domains

DOMAINS = ("travel", "zoom", "insurance")


def data_dir() -> FilePath:
    """The project's ``data/`` folder (override with the ``SUBTERRA_DATA`` environment variable)."""
    import os

    return FilePath(os.environ.get("SUBTERRA_DATA") or FilePath(__file__).resolve().parents[2] / "data")


def workflow_file(domain: str | FilePath) -> FilePath:
    """A domain name (``travel``) or a file path -> the workflow file."""
    candidate = FilePath(domain)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        return candidate
    return data_dir() / "workflows" / f"{domain}.yaml"


def load_domain(domain: str | FilePath) -> Workflow:
    """Load a shipped domain by name, or any workflow file by path."""
    return load_workflow(workflow_file(domain))
