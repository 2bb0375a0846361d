"""Bring your own agent: a LangGraph graph imported as a workflow file.

:func:`import_langgraph` reads a LangGraph ``StateGraph`` (or a compiled graph, or a
``file.py:NAME`` spec: a graph or a factory function in that file) and writes a workflow in
this project's format (see :mod:`subterra.workflow`). **Loading a ``.py`` file runs it**,
as ``python file.py`` would apart from the ``__main__`` block: import only code you trust.

What is read, and how (every guess is marked ``# REVIEW`` in the file written):

- **Steps.** Each LangGraph node is a turn. A node that waits for a person — it calls
  ``interrupt(...)``, its name says human / user / customer, or the graph is compiled with
  ``interrupt_before`` / ``interrupt_after`` on it — gives a *customer* turn (a node that asks a
  question through ``interrupt("...")`` is split in two: the agent's question, then the
  customer's reply). A node that writes messages or calls a model is an *agent* turn. A node
  that does neither (a lookup, a tool call) is *silent*: merged into the step before it, or,
  where it decides between branches right after an agent turn, it becomes the customer's turn
  that the decision follows.
- **Edges.** Plain edges stay edges; a conditional edge with its path map makes its source a
  decision hub, one edge per branch. Turns must alternate: two agent turns in a row get a
  proposed customer turn between them, two customer turns in a row are merged.
- **Text.** Prompts come from node docstrings (their first paragraph), else from a system
  prompt the node passes to a model; example utterances from an ``Examples:`` section of the
  docstring and from literal texts the node says (``AIMessage("...")``, f-strings over state
  fields become ``{slots}``). A ``when`` comes from the router's docstring (a ``key: sentence``
  line per branch), a ``check`` from a router that is a plain comparison of state fields.
- **Endings.** A node whose only next step is ``END`` ends the conversation; a branch to
  ``END`` among others gets its own ending turn. Each is typed from its name: hand-off /
  escalate / transfer -> ``escalation``; cancel / abandon / leave -> ``abandonment``; else
  ``success``.

What cannot be read is written as ``TODO``: the loader refuses the file, naming every TODO
line, until a person fills them, or a teacher model does (``teacher=`` a
:class:`~subterra.backends.Backend`; ``--teacher`` on the command line). A graph that cannot
be a workflow at all (a router with no path map, steps that run in parallel) raises
:class:`GraphImportError`, one line.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import json
import re
import sys
import textwrap
import typing
from dataclasses import dataclass, field
from pathlib import Path as FilePath
from typing import Any

import yaml

from .workflow import IDENT, SLOT, WorkflowError, parse_workflow

START, END = "__start__", "__end__"
HUMAN = re.compile(r"^(human|user|customer)(_(input|reply|replies|response|request|message|answer|feedback|turn|node"
                   r"|step|says|choice))?$|_input$|_feedback$")
ESCALATION = re.compile(r"hand_?off|hand_?over|escalat|transfer|human|person|specialist|supervisor|representative"
                        r"|operator|live_agent")
ABANDONMENT = re.compile(r"cancel|abandon|walk_away|leave|quit|give_up|gives_up|declin|hang_?up|drop_?out|churn"
                         r"|not_interested|no_thanks|exit")
SECTION = re.compile(r"^\s*(examples?|replies|args|arguments|parameters|returns?|yields|raises|notes?|see also"
                     r"|attributes|todo)\s*:\s*$", re.I)             # docstring section headers
GUESSED_NUMBERS = [100, 500, 1000]
DEFAULT_SYSTEM_PROMPT = "You are a helpful customer-service assistant."


class GraphImportError(WorkflowError):
    """A graph that cannot be turned into a workflow, described in one line."""


# --------------------------------------------------------------------------- loading a graph

def load_graph(spec: str | FilePath) -> Any:
    """The graph named by ``file.py[:NAME]``: a StateGraph, a compiled graph, or a factory returning one.

    **This runs the file** (as an import, so its ``if __name__ == "__main__"`` block does not run).
    Without ``:NAME`` the file must hold exactly one graph.
    """
    text = str(spec)
    path_text, _, name = text.rpartition(":") if re.search(r"\.py:[\w.]+$", text) else (text, "", "")
    path = FilePath(path_text)
    if not path.is_file():
        raise GraphImportError("no such file", file=str(path))
    module_name = f"_subterra_import_{abs(hash(str(path.resolve())))}"
    spec_ = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec_)
    sys.modules[module_name] = module           # dataclasses and typing look the module up while it runs
    sys.path.insert(0, str(path.resolve().parent))
    try:
        spec_.loader.exec_module(module)
    except BaseException as exc:                # the file's own error, whatever it is, as one line
        if isinstance(exc, KeyboardInterrupt):
            raise
        hint = " (pip install -e '.[langgraph]')" if "langgraph" in str(exc) else ""
        raise GraphImportError(f"running it failed: {type(exc).__name__}: {exc}{hint}", file=str(path)) from None
    finally:
        if str(path.resolve().parent) in sys.path:
            sys.path.remove(str(path.resolve().parent))
    if name:
        obj = module
        for part in name.split("."):
            if not hasattr(obj, part):
                raise GraphImportError(f"defines no '{name}'", file=str(path))
            obj = getattr(obj, part)
        if callable(obj) and _builder(obj) is None:
            try:
                obj = obj()
            except Exception as exc:
                raise GraphImportError(f"'{name}()' failed: {type(exc).__name__}: {exc}", file=str(path)) from None
        if _builder(obj) is None:
            raise GraphImportError(f"'{name}' is a {type(obj).__name__}, not a LangGraph StateGraph or compiled "
                                   "graph", file=str(path))
        return obj
    graphs = {k: v for k, v in vars(module).items() if not k.startswith("_") and _builder(v) is not None}
    compiled = {k: v for k, v in graphs.items() if v is not _builder(v)}
    builders_of_compiled = {id(_builder(v)) for v in compiled.values()}
    found = {**{k: v for k, v in graphs.items() if id(v) not in builders_of_compiled}, **compiled}
    if len(found) != 1:
        listed = ", ".join(sorted(found)) or "none"
        raise GraphImportError(f"holds {len(found)} graphs ({listed}): name one as {path}:NAME (a graph or a "
                               "function that builds one)", file=str(path))
    return next(iter(found.values()))


def _builder(obj: Any):
    """The StateGraph behind ``obj`` (itself, or a compiled graph's builder), or None."""
    try:
        from langgraph.graph import StateGraph
    except ImportError:
        return None
    if isinstance(obj, StateGraph):
        return obj
    builder = getattr(obj, "builder", None)
    return builder if isinstance(builder, StateGraph) else None


# --------------------------------------------------------------------------- reading code statically

def _function(obj: Any):
    """The Python function behind a node or router runnable, or None."""
    for _ in range(5):
        if inspect.isfunction(obj) or inspect.ismethod(obj):
            return obj
        inner = getattr(obj, "func", None) or getattr(obj, "afunc", None)
        if inner is None and callable(obj) and not isinstance(obj, type):
            call = getattr(type(obj), "__call__", None)
            return call if inspect.isfunction(call) else None
        obj = inner
    return None


def _doc_parts(doc: str) -> dict:
    """A docstring's head (its first paragraph is a prompt), ``Examples:`` / ``Replies:`` items, ``key: text`` lines."""
    head, sections, current, pairs = [], {"examples": [], "replies": []}, None, {}
    for line in textwrap.dedent(doc or "").strip().splitlines():
        match = SECTION.match(line)
        if match:
            word = match.group(1).lower()
            current = "examples" if word.startswith("example") else "replies" if word == "replies" else "other"
        elif current is None:
            head.append(line)
            pair = re.match(r"^\s*[-*]?\s*[`'\"]?([\w ]+?)[`'\"]?\s*(?::|->|→)\s+(.+)$", line)
            if pair:
                pairs[pair.group(1).strip()] = pair.group(2).strip()
        elif current in sections and line.strip():
            item = re.sub(r"^\s*[-*]\s*", "", line).strip()
            if len(item) > 1 and item[0] == item[-1] and item[0] in "\"'":
                item = item[1:-1]
            sections[current].append(item)
    return {"prompt": _paragraph(head), "examples": sections["examples"], "replies": sections["replies"],
            "pairs": pairs, "head": head, "text": " ".join(" ".join(head).split())}


def _paragraph(lines: list[str]) -> str | None:
    """The first paragraph of ``lines``, on one line."""
    first = "\n".join(lines).strip().split("\n\n")[0]
    return " ".join(first.split()) or None


class _Code:
    """What can be read from one node or router function without running it."""

    def __init__(self, obj: Any):
        self.func = _function(obj)
        self.kind = type(obj).__name__
        self.name = getattr(self.func, "__name__", self.kind)
        self.doc = _doc_parts(inspect.getdoc(self.func) if self.func is not None and self.func.__doc__ else "")
        self.tree: ast.AST | None = None
        self.names: dict[str, Any] = {}
        self.locals: dict[str, list[ast.AST]] = {}
        self.state = None
        if self.func is None:
            return
        self.names = dict(getattr(self.func, "__globals__", {}))
        try:
            self.names.update(inspect.getclosurevars(self.func).nonlocals)
        except (TypeError, ValueError):
            pass
        try:
            source = textwrap.dedent(inspect.getsource(self.func))
        except (OSError, TypeError):
            return
        self.tree = _parse_function(source, self.name == "<lambda>")
        if self.tree is None:
            return
        params = [a.arg for a in self.tree.args.args if a.arg not in ("self", "cls")]
        self.state = params[0] if params else None
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                self.locals.setdefault(node.targets[0].id, []).append(node.value)

    @property
    def readable(self) -> bool:
        return self.tree is not None

    def walk(self):
        return ast.walk(self.tree) if self.tree is not None else iter(())

    # -- state fields and values ------------------------------------------------------------
    def field(self, node: ast.AST, depth: int = 0) -> str | None:
        """``state["x"]``, ``state.get("x")`` or ``state.x`` -> ``x`` (also through a local name bound once)."""
        if isinstance(node, ast.Name) and len(self.locals.get(node.id, [])) == 1 and depth < 5:
            return self.field(self.locals[node.id][0], depth + 1)
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == self.state:
            key = node.slice
            return key.value if isinstance(key, ast.Constant) and isinstance(key.value, str) else None
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                and isinstance(node.func.value, ast.Name) and node.func.value.id == self.state and node.args
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            return node.args[0].value
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == self.state:
            return node.attr
        return None

    def constant(self, node: ast.AST) -> Any:
        """A literal, or a name bound to one in the function's module or closure; ``...`` when it is not."""
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            items = [self.constant(e) for e in node.elts]
            return ... if ... in items else items
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            value = self.constant(node.operand)
            return -value if isinstance(value, (int, float)) and not isinstance(value, bool) else ...
        if isinstance(node, ast.Name) and node.id not in self.locals and node.id in self.names:
            value = self.names[node.id]
            if isinstance(value, (str, int, float)):
                return value
            if isinstance(value, (list, tuple, set, frozenset)) and all(
                    isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value):
                return sorted(value, key=str) if isinstance(value, (set, frozenset)) else list(value)
        return ...

    def texts(self, node: ast.AST | None, depth: int = 0) -> list[str]:
        """The texts an expression can be, as templates (``{field}`` for state fields); [] if unreadable."""
        if node is None or depth > 5:
            return []
        value = self.constant(node)
        if isinstance(value, str):
            return [value]
        if isinstance(node, ast.Name) and node.id in self.locals:
            return [t for v in self.locals[node.id] for t in self.texts(v, depth + 1)]
        if isinstance(node, ast.JoinedStr):
            out = ""
            for part in node.values:
                if isinstance(part, ast.Constant):
                    out += str(part.value)
                elif isinstance(part, ast.FormattedValue) and self.field(part.value):
                    out += "{" + self.field(part.value) + "}"
                else:
                    return []
            return [out]
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            left, right = self.texts(node.left, depth + 1), self.texts(node.right, depth + 1)
            return [a + b for a in left[:1] for b in right[:1]]
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format"):
            return self.texts(node.func.value, depth + 1)
        return []

    # -- what the node does ------------------------------------------------------------------
    def calls(self, *names: str):
        for node in self.walk():
            if isinstance(node, ast.Call):
                fn = node.func
                called = fn.id if isinstance(fn, ast.Name) else fn.attr if isinstance(fn, ast.Attribute) else None
                if called in names:
                    yield node

    def interrupts(self) -> list[ast.Call]:
        return list(self.calls("interrupt"))

    def messages(self, role: str) -> list[ast.AST]:
        """Expressions the code passes as a message of ``role`` ('assistant' or 'system')."""
        classes = {"assistant": ("AIMessage", "AIMessageChunk"), "system": ("SystemMessage",)}[role]
        tags = {"assistant": ("assistant", "ai"), "system": ("system",)}[role]
        found = []
        for call in self.calls(*classes):
            content = call.args[0] if call.args else next((k.value for k in call.keywords if k.arg == "content"),
                                                          None)
            found.append(content)
        for node in self.walk():
            if (isinstance(node, ast.Tuple) and len(node.elts) == 2 and isinstance(node.elts[0], ast.Constant)
                    and node.elts[0].value in tags):
                found.append(node.elts[1])
            elif isinstance(node, ast.Dict):
                pairs = {k.value: v for k, v in zip(node.keys, node.values) if isinstance(k, ast.Constant)}
                if isinstance(pairs.get("role"), ast.Constant) and pairs["role"].value in tags:
                    found.append(pairs.get("content"))
            elif role == "system" and isinstance(node, ast.Call):
                found.extend(k.value for k in node.keywords if k.arg in ("system", "system_prompt", "instructions"))
        return [f for f in found if f is not None]

    def speaks(self) -> bool:
        """Writes messages or calls a model (``.invoke`` and friends)."""
        if self.messages("assistant") or any(self.calls("invoke", "ainvoke", "stream", "astream", "create",
                                                         "generate", "complete", "reply")):
            return True
        return any(isinstance(n, ast.Dict) and any(isinstance(k, ast.Constant) and k.value == "messages"
                                                   for k in n.keys) for n in self.walk())


def _parse_function(source: str, is_lambda: bool) -> ast.AST | None:
    """The FunctionDef (or Lambda) in ``source``; a lambda's line may hold more than the lambda."""
    if not is_lambda:
        try:
            tree = ast.parse(source)
        except SyntaxError:
            return None
        return next((n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))), None)
    start = source.find("lambda")
    lambdas = []
    for end in range(len(source), start, -1):
        try:
            tree = ast.parse(source[start:end].strip().rstrip(","), mode="eval")
        except SyntaxError:
            continue
        lambdas = [n for n in ast.walk(tree) if isinstance(n, ast.Lambda)]
        break
    return lambdas[0] if len(lambdas) == 1 else None


# --------------------------------------------------------------------------- router checks

class _Checks:
    """Reads a router as ``if`` / ``return`` over state fields into one condition per branch key."""

    def __init__(self, code: _Code, types: dict[str, Any]):
        self.code, self.types = code, types
        self.uses: dict[str, dict] = {}         # field -> {"consts": [...], "bool": bool, "keys": [...]}
        self.records: list[tuple[list, Any]] = []
        self.unknown = not code.readable

    def use(self, name: str, **info) -> None:
        entry = self.uses.setdefault(name, {"consts": [], "bool": False, "keys": [], "order": False})
        entry["consts"].extend(info.get("consts", []))
        entry["bool"] |= info.get("bool", False)
        entry["keys"].extend(info.get("keys", []))
        entry["order"] |= info.get("order", False)

    def translate(self, node: ast.AST) -> ast.AST | None:
        """The condition in our grammar (see ``Condition``), or None when it is not a plain comparison."""
        name = self.code.field(node)
        if name is not None:
            if not IDENT.match(name):
                return None
            if _bool_type(self.types.get(name)):        # a yes/no field: compared with 'yes'
                self.use(name, bool=True)
                return ast.Compare(ast.Name(name), [ast.Eq()], [ast.Constant("yes")])
            return None                                 # truthiness of a text or number: not plain
        value = self.code.constant(node)
        if value is not ... and not isinstance(value, bool) and value is not None:
            return ast.List([ast.Constant(v) for v in value]) if isinstance(value, list) else ast.Constant(value)
        if isinstance(node, ast.BoolOp):
            parts = [self.translate(v) for v in node.values]
            return None if None in parts else ast.BoolOp(node.op, parts)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            inner = self.translate(node.operand)
            return None if inner is None else ast.UnaryOp(ast.Not(), inner)
        if isinstance(node, ast.Compare) and len(node.ops) == 1:
            return self.compare(node.left, node.ops[0], node.comparators[0])
        return None

    def compare(self, left: ast.AST, op: ast.cmpop, right: ast.AST) -> ast.AST | None:
        for a, b in ((left, right), (right, left)):       # state.x is True / == False
            name = self.code.field(a)
            value = self.code.constant(b)
            if name and isinstance(value, bool) and isinstance(op, (ast.Is, ast.IsNot, ast.Eq, ast.NotEq)):
                self.use(name, bool=True)
                positive = value == isinstance(op, (ast.Is, ast.Eq))
                test = ast.Compare(ast.Name(name), [ast.Eq()], [ast.Constant("yes")])
                return test if positive else ast.UnaryOp(ast.Not(), test)
        if not isinstance(op, (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn)):
            return None
        sides = []
        for side in (left, right):
            name = self.code.field(side)
            if name is not None:
                if not IDENT.match(name) or _bool_type(self.types.get(name)):
                    return None
                sides.append(("field", name))
                continue
            value = self.code.constant(side)
            if value is ... or value is None or isinstance(value, bool):
                return None
            sides.append(("value", value))
        order = isinstance(op, (ast.Lt, ast.LtE, ast.Gt, ast.GtE))
        for (kind, item), (other_kind, other) in ((sides[0], sides[1]), (sides[1], sides[0])):
            if kind == "field":
                consts = other if isinstance(other, list) else [other] if other_kind == "value" else []
                self.use(item, consts=consts, order=order)
        if all(kind == "value" for kind, _ in sides):
            return None
        nodes = [ast.Name(item) if kind == "field" else
                 ast.List([ast.Constant(v) for v in item]) if isinstance(item, list) else ast.Constant(item)
                 for kind, item in sides]
        return ast.Compare(nodes[0], [op], [nodes[1]])

    def read(self) -> None:
        """Collect (conditions, returned value) records from the router's body."""
        tree = self.code.tree
        if tree is None:
            return
        if isinstance(tree, ast.Lambda):
            self.result([], tree.body)
            return
        self.walk(tree.body, [])

    def walk(self, statements: list[ast.stmt], guard: list) -> bool:
        """True when every way through ``statements`` returns."""
        for statement in statements:
            if isinstance(statement, ast.Return):
                self.result(guard, statement.value)
                return True
            if isinstance(statement, ast.If):
                test = self.translate(statement.test)
                body = self.walk(statement.body, guard + [test])
                other = self.walk(statement.orelse, guard + [_negate(test)]) if statement.orelse else False
                if body and other:
                    return True
                if body:
                    guard = guard + [_negate(test)]
                elif other:
                    guard = guard + [test]
                continue
            if isinstance(statement, (ast.Pass, ast.Assign, ast.AnnAssign)) or (
                    isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant)):
                continue
            guard = guard + [None]          # a loop, a try, a call: what follows depends on it
            if any(isinstance(n, ast.Return) for n in ast.walk(statement)):
                self.unknown = True
        return False

    def result(self, guard: list, value: ast.AST | None) -> None:
        if isinstance(value, ast.IfExp):
            test = self.translate(value.test)
            self.result(guard + [test], value.body)
            self.result(guard + [_negate(test)], value.orelse)
            return
        if isinstance(value, ast.Call) and getattr(value.func, "id", None) == "Command":
            goto = next((k.value for k in value.keywords if k.arg == "goto"), None)
            value = goto
        name = self.code.field(value) if value is not None else None
        if name is not None and IDENT.match(name) and not _bool_type(self.types.get(name)):
            self.records.append((guard, ("field", name)))
            return
        constant = self.code.constant(value) if value is not None else ...
        if constant is not ... and not isinstance(constant, list):
            self.records.append((guard, ("key", constant)))
            return
        test = self.translate(value) if value is not None else None
        if test is not None:
            self.records.append((guard, ("test", test)))
            return
        self.records.append((guard, ("any", None)))         # a call or the like: it may return any key

    def checks(self, keys: list[Any]) -> dict[Any, str | None]:
        """Branch key -> check source (None where the router does not say it plainly)."""
        self.read()
        if self.unknown or not self.records:
            return {k: None for k in keys}
        out = {}
        for key in keys:
            alternatives, readable = [], True
            used = 0
            for guard, (kind, what) in self.records:
                if (kind == "key" and what != key) or (kind == "test" and not isinstance(key, bool)):
                    continue
                used += 1
                if kind == "field":
                    self.use(what, keys=[str(k) for k in keys if k != END])
                    guard = guard + [ast.Compare(ast.Name(what), [ast.Eq()], [ast.Constant(str(key))])]
                if kind == "test":
                    guard = guard + [what if key else _negate(what)]
                known = [g for g in guard if g is not None]     # an unreadable condition is left out: what
                if guard and not known:                         # remains still has to hold (a weaker check)
                    readable = False
                    break
                alternatives.append(known)
            if not readable or not alternatives or used == len(self.records):
                out[key] = None                        # possible whatever the state: nothing to check
            elif any(not g for g in alternatives):
                out[key] = None
            else:
                terms = [g[0] if len(g) == 1 else ast.BoolOp(ast.And(), g) for g in alternatives]
                expr = terms[0] if len(terms) == 1 else ast.BoolOp(ast.Or(), terms)
                out[key] = ast.unparse(expr)
        return out


FLIP = {ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Lt: ast.GtE, ast.GtE: ast.Lt, ast.Gt: ast.LtE, ast.LtE: ast.Gt,
        ast.In: ast.NotIn, ast.NotIn: ast.In}


def _negate(test: ast.AST | None) -> ast.AST | None:
    if test is None:
        return None
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        return test.operand
    if isinstance(test, ast.Compare) and len(test.ops) == 1 and type(test.ops[0]) in FLIP:
        return ast.Compare(test.left, [FLIP[type(test.ops[0])]()], test.comparators)
    return ast.UnaryOp(ast.Not(), test)


def _bool_type(hint: Any) -> bool:
    return hint is bool or (typing.get_origin(hint) is typing.Union and bool in typing.get_args(hint))


def _state_types(builder) -> dict[str, Any]:
    try:
        hints = typing.get_type_hints(builder.state_schema, include_extras=False)
    except Exception:
        hints = dict(getattr(builder.state_schema, "__annotations__", {}))
    return hints


# --------------------------------------------------------------------------- the import

@dataclass
class _Turn:
    id: str
    role: str                                   # agent | user | silent
    label: str
    code: _Code | None = None
    origin: str | None = None                   # the LangGraph node it comes from
    prompt: str | None = None
    examples: list[str] = field(default_factory=list)
    terminal: str | None = None
    notes: dict[str, str] = field(default_factory=dict)   # YAML field -> comment


@dataclass
class _Link:
    source: str
    target: str
    key: str | None = None
    when: str | None = None
    check: str | None = None
    notes: dict[str, str] = field(default_factory=dict)


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

    path: FilePath | None = None

    def workflow(self):
        """The loaded workflow; raises :class:`WorkflowError` naming every TODO line while any is left."""
        return parse_workflow(self.text, source=str(self.path or f"{self.name}.yaml"))

    def write(self, path: str | FilePath) -> FilePath:
        """Write the file (atomically); later :meth:`workflow` errors name it."""
        from .store import write_atomic

        self.path = FilePath(path)
        write_atomic(self.path, self.text)
        return self.path

    def summary(self) -> str:
        todo = f", {len(self.todos)} TODO to fill" if self.todos else ", nothing left TODO"
        def count(n: int, word: str) -> str:
            return f"{n} {word}{'s' * (n != 1)}"

        return f"{count(self.nodes, 'node')}, {count(self.decision_hubs, 'decision hub')}, {count(self.paths, 'path')}{todo}"


def import_langgraph(graph: Any, name: str | None = None, *, title: str | None = None,
                     system_prompt: str | None = None, teacher=None, origin: str | None = None
                     ) -> ImportedWorkflow:
    """Import ``graph`` (a StateGraph, a compiled graph, or a ``file.py[:NAME]`` spec) as a workflow.

    ``teacher`` (a :class:`~subterra.backends.Backend`) writes what the code does not say; without
    one, those values are left ``TODO``. Raises :class:`GraphImportError` for a graph that cannot
    be a workflow.
    """
    if isinstance(graph, (str, FilePath)):
        origin = origin or str(graph)
        graph = load_graph(graph)
    builder = _builder(graph)
    if builder is None:
        raise GraphImportError(f"a {type(graph).__name__} is not a LangGraph StateGraph or compiled graph "
                               "(the functional API's @entrypoint has no graph to read)", file=origin)
    return _Importer(graph, builder, name, title, system_prompt, teacher, origin).run()


class _Importer:
    def __init__(self, graph, builder, name, title, system_prompt, teacher, origin):
        self.graph, self.builder, self.teacher = graph, builder, teacher
        self.types = _state_types(builder)
        funcs = [_function(spec.runnable) for spec in builder.nodes.values()]
        module = sys.modules.get(getattr(next((f for f in funcs if f), None), "__module__", None) or "")
        own = module is not None and module.__name__ != "__main__"     # a notebook's or script's doc is not the graph's
        self.module_doc = _doc_parts((getattr(module, "__doc__", None) if own else None) or "")
        self.module = module
        self.origin = origin or getattr(module, "__file__", None) or "<langgraph>"
        self.name = _ident(name or FilePath(self.origin).stem or "imported")
        self.title, self.system_prompt = title, system_prompt
        self.turns: dict[str, _Turn] = {}
        self.links: list[_Link] = []
        self.notes: list[str] = []
        self.uses: dict[str, dict] = {}
        self.start: str | None = None
        self.commands: set[str] = set()

    def fail(self, message: str, node: str | None = None):
        raise GraphImportError(message, file=self.origin, node=node)

    def note(self, text: str) -> str:
        self.notes.append(text)
        return text

    # -- helpers ----------------------------------------------------------------------------
    def new_id(self, base: str) -> str:
        base = _ident(base)
        candidate, n = base, 2
        while candidate in self.turns:
            candidate, n = f"{base}_{n}", n + 1
        return candidate

    def add(self, base: str, role: str, **fields) -> _Turn:
        turn = _Turn(id=self.new_id(base), role=role, label=fields.pop("label", None) or _label(base), **fields)
        self.turns[turn.id] = turn
        return turn

    def out(self, turn_id: str) -> list[_Link]:
        return [link for link in self.links if link.source == turn_id]

    def into(self, turn_id: str) -> list[_Link]:
        return [link for link in self.links if link.target == turn_id]

    def role(self, turn_id: str) -> str:
        return self.turns[turn_id].role if turn_id in self.turns else turn_id

    # -- 1: nodes and edges ------------------------------------------------------------------
    def read(self) -> None:
        if not self.builder.nodes:
            self.fail("has no nodes")
        ids = {START: START, END: END}
        for node_name, spec in self.builder.nodes.items():
            code = _Code(spec.runnable)
            turn = self.add(node_name, "agent", code=code, origin=node_name)
            ids[node_name] = turn.id
        plain: dict[str, list[str]] = {}
        for source, target in sorted(self.builder.edges, key=lambda e: list(ids).index(e[0])):
            plain.setdefault(source, []).append(target)
        routed: dict[str, list] = {}
        for source, branches in self.builder.branches.items():
            for router_name, branch in branches.items():
                if branch.ends is None:
                    self.fail(f"its router '{router_name}' has no path map and no Literal return type naming its "
                              "targets, so its branches cannot be read (pass path_map= to add_conditional_edges)",
                              node=source if source != START else None)
                routed.setdefault(source, []).append((_Code(branch.path), dict(branch.ends)))
        for node_name, spec in self.builder.nodes.items():
            ends = getattr(spec, "ends", None)
            if ends:
                routed.setdefault(node_name, []).append(         # Command(goto=...): the node routes itself
                    (self.turns[ids[node_name]].code, dict(ends) if isinstance(ends, dict) else {e: e for e in ends}))
                self.commands.add(ids[node_name])
        if getattr(self.builder, "waiting_edges", None):
            starts, end = next(iter(self.builder.waiting_edges))
            self.fail(f"waits for {', '.join(starts)} to finish together (a join of parallel steps); a workflow "
                      "is one conversation, one step at a time", node=end)
        for source in [s for s in ids if s in plain or s in routed]:     # node order: a stable file
            targets = plain.get(source, [])
            if len(targets) + len(routed.get(source, [])) > 1:
                parts = targets + ["a router" for _ in routed.get(source, [])]
                self.fail(f"runs {' and '.join(parts)} in parallel after it; a workflow is one conversation, one "
                          "step at a time (merge them, or route with one add_conditional_edges)",
                          node=source if source != START else "START")
            for target in targets:
                self.links.append(_Link(ids[source], ids[target]))
            for router, ends in routed.get(source, []):
                self.branches(ids[source], router, ends, ids)
        if not any(link.source == START for link in self.links):
            self.fail("has no entry point (add_edge(START, ...))")

    def branches(self, source: str, router: _Code, ends: dict, ids: dict) -> None:
        reader = _Checks(router, self.types)
        checks = reader.checks(list(ends))
        for var, use in reader.uses.items():
            entry = self.uses.setdefault(var, {"consts": [], "bool": False, "keys": [], "order": False})
            for k in ("consts", "keys"):
                entry[k].extend(use[k])
            entry["bool"] |= use["bool"]
            entry["order"] |= use["order"]
        keys = {str(k) for k in ends}
        general = None if source in self.commands else _paragraph(   # a Command node's docstring is its prompt
            [line for line in router.doc["head"]
             if not any(re.match(rf"^\s*[-*]?\s*[`'\"]?{re.escape(k)}\b", line) for k in keys)])
        where = "START" if source == START else source
        for key, target in ends.items():
            if target not in ids:
                self.fail(f"its router '{router.name}' names '{target}', which is not a node", node=source)
            words = "end" if key == END else str(key).replace("_", " ").strip()
            link = _Link(source, ids[target], key=None if key == END else str(key))
            if str(key) in router.doc["pairs"]:
                link.when = _sentence(router.doc["pairs"][str(key)])
                link.notes["when"] = f"from the docstring of {router.name}()"
            else:
                link.when = _sentence(f"{general.rstrip('.')}: {words}" if general else
                                      f"The conversation takes the '{words}' branch")
                link.notes["when"] = (f"REVIEW: guessed from {router.name}()'s "
                                      f"{'docstring' if general else 'name'} and the branch '{key}'")
            if checks.get(key):
                link.check = checks[key]
                link.notes["check"] = f"read from {router.name}(), a plain comparison of state fields"
            self.links.append(link)
        if not any(checks.values()):
            reason = "no source" if not router.readable else "not a plain comparison of state fields"
            self.note(f"router {router.name}() at '{where}' gives no check ({reason}): its branches have a `when` only")
        else:
            self.note(f"router {router.name}() at '{where}': a check read for {sum(map(bool, checks.values()))} of "
                      f"its {len(checks)} branches")

    # -- 2: who speaks -------------------------------------------------------------------------
    def classify(self) -> None:
        before = self.interrupt_list("interrupt_before_nodes")
        after = self.interrupt_list("interrupt_after_nodes")
        for turn in list(self.turns.values()):
            code = turn.code
            if HUMAN.search(turn.id):
                turn.role = "user"
                self.note(f"'{turn.id}' is the customer's turn (its name says so)")
            elif code.interrupts():
                call = code.interrupts()[0]
                payload = code.texts(call.args[0] if call.args else None)
                if payload:
                    reply = self.split(turn, payload[0])
                    self.note(f"'{turn.id}' asks through interrupt(): the agent's question, then the customer's "
                              f"reply '{reply.id}'")
                else:
                    turn.role = "user"
                    self.note(f"'{turn.id}' waits for a person (interrupt()): the customer's turn")
            elif code.kind == "ToolNode":
                turn.role = "silent"
            elif not code.readable:
                turn.notes["prompt"] = (f"REVIEW: the source of '{turn.origin}' (a {code.kind}) cannot be read: "
                                        "imported as one agent step")
            elif not code.speaks():
                turn.role = "silent"
        for turn_id in before:
            if self.role(turn_id) != "user":
                wait = self.add(f"before_{turn_id}", "user")
                for link in self.into(turn_id):
                    link.target = wait.id
                self.links.append(_Link(wait.id, turn_id))
                wait.notes["id"] = f"the graph is compiled with interrupt_before=['{self.turns[turn_id].origin}']"
                self.note(f"customer's turn '{wait.id}' inserted: interrupt_before on '{turn_id}'")
        for turn_id in after:
            if self.role(turn_id) != "user":
                wait = self.add(f"after_{turn_id}", "user")
                for link in self.out(turn_id):
                    link.source = wait.id
                self.links.append(_Link(turn_id, wait.id))
                wait.notes["id"] = f"the graph is compiled with interrupt_after=['{self.turns[turn_id].origin}']"
                self.note(f"customer's turn '{wait.id}' inserted: interrupt_after on '{turn_id}'")

    def interrupt_list(self, attribute: str) -> list[str]:
        names = getattr(self.graph, attribute, None) or []
        if names == "*":
            names = list(self.builder.nodes)
        by_origin = {t.origin: t.id for t in self.turns.values()}
        return [by_origin[n] for n in names if n in by_origin]

    def split(self, turn: _Turn, question: str) -> _Turn:
        """The agent's question (``turn``), then the customer's reply: ``turn``'s next steps move to the reply."""
        reply = self.add(f"{turn.id}_reply", "user", label=f"Reply to {turn.label.lower()}")
        for link in self.out(turn.id):
            link.source = reply.id
        self.links.append(_Link(turn.id, reply.id))
        turn.examples.append(question)
        turn.notes["examples"] = f"the question {turn.code.name}() asks through interrupt()"
        reply.prompt = _sentence(f"Answer the assistant's question: {question}")
        reply.notes["prompt"] = f"REVIEW: guessed from the question {turn.code.name}() asks"
        reply.examples = list(turn.code.doc["replies"])
        if reply.examples:
            reply.notes["examples"] = f"from the Replies section of {turn.code.name}()'s docstring"
        return reply

    # -- 3: silent steps -------------------------------------------------------------------------
    def resolve_silent(self) -> None:
        changed = True
        while changed:
            changed = False
            for turn in [t for t in self.turns.values() if t.role == "silent"]:
                ins, outs = self.into(turn.id), self.out(turn.id)
                sources = {link.source for link in ins}
                targets = {link.target for link in outs}
                if any(self.role(s) == "silent" and s != turn.id for s in sources):
                    continue
                if targets and targets <= sources and len(sources) == 1:
                    self.links = [link for link in self.links if turn.id not in (link.source, link.target)]
                    del self.turns[turn.id]
                    what = "a ToolNode" if turn.code.kind == "ToolNode" else "it says nothing"
                    self.note(f"'{turn.id}' ({what}) is an inner step of '{next(iter(sources))}': merged into it")
                elif (len(outs) > 1 or len(sources) > 1) and targets != {END} and all(
                        self.role(s) in ("agent", START) for s in sources):
                    turn.role = "user"
                    turn.notes["id"] = (f"REVIEW: '{turn.origin}' says nothing and decides what comes next after an "
                                        "agent turn: the customer's turn, which it reacts to")
                    self.note(f"'{turn.id}' (silent, after agent turns) becomes the customer's turn it reacts to")
                else:
                    self.contract(turn, ins, outs)
                changed = True
                break
        for turn in self.turns.values():
            if turn.role == "silent":
                turn.role = "agent"
                self.note(f"'{turn.id}' is in a loop of silent steps: imported as an agent turn")

    def dedupe(self) -> None:
        """One edge per (from, to): the `when` sentences joined, the checks or-ed (dropped if one has none)."""
        kept: dict[tuple[str, str], _Link] = {}
        for link in self.links:
            first = kept.setdefault((link.source, link.target), link)
            if first is link:
                continue
            if link.when and link.when != first.when:
                first.when = f"{first.when} Or: {link.when}" if first.when else link.when
                first.notes["when"] = "REVIEW: two branches lead here; their `when` sentences are joined"
            first.check = f"({first.check}) or ({link.check})" if first.check and link.check else None
        self.links = list(kept.values())

    def contract(self, turn: _Turn, ins: list[_Link], outs: list[_Link]) -> None:
        self.links = [link for link in self.links if turn.id not in (link.source, link.target)]
        del self.turns[turn.id]
        for before in ins:
            for after in outs:
                if before.source == after.target and after.target != END:
                    continue                    # a detour that comes back: nothing to keep
                check = (f"({before.check}) and ({after.check})" if before.check and after.check
                         else before.check or after.check)
                link = _Link(before.source, after.target, key=after.key or before.key,
                             when=after.when or before.when, check=check,
                             notes={**before.notes, **after.notes})
                self.links.append(link)
        self.note(f"'{turn.id}' says nothing: merged into the steps around it")

    # -- 4: start and endings -----------------------------------------------------------------------
    def ends(self) -> None:
        starts = self.out(START)
        if len(starts) == 1 and starts[0].target != END:
            self.start = starts[0].target
        else:
            opening = self.add("opening", "user", label="The customer's first message")
            opening.notes["id"] = "REVIEW: the graph routes on its input: the customer opens the conversation"
            for link in starts:
                link.source = opening.id
            self.start = opening.id
            self.note("the graph routes on its input: the customer's opening message 'opening' is the start")
        self.links = [link for link in self.links if link.source != START]
        shared: dict[tuple[str, str], str] = {}
        for turn in list(self.turns.values()):
            outs = self.out(turn.id)
            if len(outs) == 1 and outs[0].target == END:
                self.links.remove(outs[0])
                turn.terminal = self.kind(turn, outs[0])
                continue
            for link in [link for link in outs if link.target == END]:
                role = "user" if turn.role == "agent" else "agent"
                base = _ident(link.key or f"{turn.id}_end")
                if (base, role) not in shared or shared[(base, role)] not in self.turns:
                    ending = self.add(base, role)
                    ending.terminal = self.kind(ending, link)
                    ending.notes["id"] = f"REVIEW: the branch '{link.key or 'END'}' of '{turn.id}' ends the conversation"
                    shared[(base, role)] = ending.id
                link.target = shared[(base, role)]
        self.note("endings typed from their names: " + ", ".join(
            f"{t.id} {t.terminal}" for t in self.turns.values() if t.terminal))
        for turn in self.turns.values():
            if turn.terminal:
                turn.notes["terminal"] = (f"REVIEW: typed '{turn.terminal}' from its name and the branches to it" +
                                          (" (it names no hand-off or cancel)" if turn.terminal == "success" else ""))

    def kind(self, turn: _Turn, link: _Link) -> str:
        """The ending's kind, from its name and the names of the branches that lead to it."""
        keys = [link.key or ""] + [l.key or "" for l in self.into(turn.id)]
        names = " ".join(filter(None, [turn.id, turn.origin or "", *keys])).lower()
        names = re.sub(r"[^a-z0-9]+", "_", names)
        if ESCALATION.search(names):
            return "escalation"
        if ABANDONMENT.search(names):
            return "abandonment"
        return "success"

    # -- 5: turns alternate ------------------------------------------------------------------------------
    def alternate(self) -> None:
        for link in list(self.links):
            if link not in self.links:
                continue
            source, target = self.turns[link.source], self.turns[link.target]
            if source.role != target.role:
                continue
            if source.role == "agent":
                keyed = link.key and len(self.out(source.id)) > 1
                base = (link.key if keyed and _ident(link.key) not in self.turns else
                        f"{source.id}_to_{target.id}" if keyed else f"{source.id}_reply")
                wait = self.add(base, "user", label=_label(link.key) if keyed else f"Reply to {source.label.lower()}")
                wait.notes["id"] = (f"REVIEW: proposed: the customer's move that takes the branch '{link.key}' "
                                    f"of '{source.id}'" if keyed else
                                    f"REVIEW: proposed: '{source.id}' and '{target.id}' are two agent turns in a row; "
                                    "the customer speaks between them")
                self.links.append(_Link(wait.id, target.id))
                link.target = wait.id
                self.note(f"customer's turn '{wait.id}' proposed between agent turns '{source.id}' and '{target.id}'")
            elif len(self.out(source.id)) == 1 and len(self.into(target.id)) == 1 and target.id != self.start \
                    and target.id != source.id:
                self.merge(source, target, link)
            else:
                ack = self.add(f"{source.id}_to_{target.id}", "agent")
                ack.notes["id"] = f"REVIEW: proposed: two customer turns in a row ('{source.id}', '{target.id}')"
                self.links.append(_Link(ack.id, target.id))
                link.target = ack.id
                self.note(f"agent turn '{ack.id}' proposed between customer turns '{source.id}' and '{target.id}'")

    def merge(self, first: _Turn, second: _Turn, link: _Link) -> None:
        self.links.remove(link)
        for out in self.out(second.id):
            out.source = first.id
        first.prompt = " ".join(filter(None, [first.prompt, second.prompt])) or None
        if first.examples and second.examples:
            first.examples = [f"{a} {b}" for a, b in zip(first.examples, second.examples)]
        else:
            first.examples = first.examples or second.examples
        first.terminal = second.terminal
        first.notes.update({k: v for k, v in second.notes.items() if k not in first.notes})
        first.notes["id"] = f"REVIEW: merged with '{second.id}' (two customer turns in a row are one message)"
        del self.turns[second.id]
        self.note(f"customer turns '{first.id}' and '{second.id}' merged (two in a row)")

    # -- 6: what each turn says -----------------------------------------------------------------------
    def texts(self) -> None:
        for turn in self.turns.values():
            code = turn.code
            if code is not None and code.func is not None and turn.origin:
                who = f"{code.name}()"
                if turn.prompt is None and code.doc["prompt"]:
                    turn.prompt = code.doc["prompt"]
                    turn.notes["prompt"] = f"from the docstring of {who}"
                if turn.prompt is None and turn.role == "agent":
                    systems = [t for node in code.messages("system") for t in code.texts(node)]
                    if systems:
                        turn.prompt = systems[0]
                        turn.notes["prompt"] = f"from the system prompt {who} passes to its model"
                said = [t for node in code.messages("assistant") for t in code.texts(node)] \
                    if turn.role == "agent" else []
                new = [t for t in code.doc["examples"] + said if t not in turn.examples]
                if new:
                    turn.examples += new
                    turn.notes.setdefault("examples", f"from {who}: " + " and ".join(
                        part for part, has in (("its docstring's Examples", code.doc["examples"]),
                                               ("the texts it says", said)) if has))
            if turn.prompt is None and turn.role == "user":
                told = next((link for link in self.into(turn.id)
                             if link.when and link.notes.get("when", "").startswith("from the docstring")), None)
                if told is not None:
                    turn.prompt = told.when
                    turn.notes["prompt"] = "REVIEW: the `when` sentence of the branch that leads here"
            if turn.prompt:
                turn.prompt = self.slots(turn.prompt)
            turn.examples = list(dict.fromkeys(self.slots(e) for e in turn.examples if e.strip()))

    def slots(self, text: str, allowed: set[str] | None = None) -> str:
        """Keep ``{x}`` where x is a state field (it becomes a variable); drop every other brace."""
        allowed = set(self.types) if allowed is None else allowed
        parts, last = [], 0
        for match in SLOT.finditer(text):
            parts.append(text[last:match.start()].replace("{", "").replace("}", ""))
            inner = match.group(1)
            if IDENT.match(inner) and inner in allowed:
                self.uses.setdefault(inner, {"consts": [], "bool": False, "keys": [], "order": False})
                parts.append(match.group(0))
            else:
                parts.append(inner)
            last = match.end()
        parts.append(text[last:].replace("{", "").replace("}", ""))
        return " ".join("".join(parts).split())

    def pools(self) -> dict[str, tuple[list, str]]:
        """Variable -> (values, comment)."""
        out = {}
        for var, use in sorted(self.uses.items()):
            hint = self.types.get(var)
            if typing.get_origin(hint) is typing.Literal and all(
                    isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in typing.get_args(hint)):
                out[var] = (list(typing.get_args(hint)), f"from the Literal type of the state field '{var}'")
            elif use["bool"] or _bool_type(hint):
                out[var] = (["yes", "no"], f"REVIEW: '{var}' is a yes/no field; checks compare it with 'yes'")
            elif use["keys"]:
                out[var] = (list(dict.fromkeys(use["keys"])), f"the branch keys of the router that returns '{var}'")
            elif use["consts"] and all(isinstance(c, (int, float)) for c in use["consts"]):
                values = sorted({v for c in use["consts"] for v in
                                 ((c // 2 if isinstance(c, int) else c / 2) if c else -1, c, c * 2 if c else 1)})
                out[var] = (values, f"REVIEW: guessed around the numbers the router compares '{var}' with")
            elif use["consts"] and all(isinstance(c, str) for c in use["consts"]):
                out[var] = (list(dict.fromkeys(use["consts"])) + ["other"],
                            f"REVIEW: the texts the router compares '{var}' with, and one other")
            elif use["order"] or hint in (int, float):
                out[var] = (list(GUESSED_NUMBERS), f"REVIEW: guessed numbers for '{var}': replace with real ones")
            else:
                out[var] = ([f"TODO: values for {var}"], f"the values '{var}' takes (the code does not say)")
        return out

    # -- 7: checks that no scenario can meet -------------------------------------------------------------
    def satisfiable(self) -> None:
        """Drop checks that no scenario meets on some path, so that every path can be synthesised.

        A scenario's values are fixed for a conversation, while a graph's state may change: a path
        round a loop can need a check both true and false. The check dropped is one on a loop edge
        (leaving a hub the path revisits first) when that is enough, else the path's last check
        (a branch the code can never take, as it stands). Each is said in a note and a comment.
        """
        from .paths import enumerate_paths
        from .scenarios import path_checks

        for _ in range(20):
            workflow = parse_workflow(self.render(fill=True)[0], source=self.origin)
            paths = enumerate_paths(workflow)
            if len(paths) > 20000:
                return
            cycle = _cycle_edges(workflow)
            for path in paths:
                checks = path_checks(workflow, path)
                if not checks or _any_scenario(workflow, checks):
                    continue
                on_path = dict(zip([e for e in path.edges if self.link(*e).check], checks))
                loops = sorted((e for e in on_path if e in cycle),
                               key=lambda e: (-path.nodes.count(e[0]), path.edges.index(e)))
                drop = next((e for e in loops if _any_scenario(
                    workflow, [c for other, c in on_path.items() if other != e])), None)
                link = self.link(*(drop or list(on_path)[-1]))
                why = ("goes round a loop and would need it both true and false, while a scenario's values stay "
                       "fixed" if drop else "contradicts the checks before it (the code never takes this branch)")
                self.note(f"check `{link.check}` on {link.source} -> {link.target} dropped: path {path.id} {why}")
                link.notes["check"] = f"REVIEW: `{link.check}` dropped: no scenario could take path {path.id}"
                link.check = None
                break
            else:
                return

    def valid_checks(self) -> None:
        """Drop a check the loader refuses (it compares values of different types, say), saying so."""
        for _ in range(len(self.links) + 1):
            try:
                parse_workflow(self.render(fill=True)[0], source=self.origin)
                return
            except WorkflowError as exc:
                index = re.fullmatch(r"edges\[(\d+)\]\.check", exc.field or "")
                if index is None:
                    raise
                link = self.links[int(index.group(1))]
                self.note(f"check `{link.check}` on {link.source} -> {link.target} dropped: {exc.message}")
                link.notes["check"] = f"REVIEW: `{link.check}` dropped: {exc.message}"
                link.check = None

    def link(self, source: str, target: str) -> _Link:
        return next(link for link in self.links if (link.source, link.target) == (source, target))

    # -- 8: the teacher ----------------------------------------------------------------------------------
    def teach(self, pools: dict) -> None:
        from .backends import Request

        who = f"{self.teacher.name} {self.teacher.model}"
        outline = self.outline(pools)
        slots = ", ".join("{" + v + "}" for v in pools) or "none"
        for turn in self.turns.values():
            if turn.prompt and turn.examples:
                continue
            speaker = "assistant" if turn.role == "agent" else "customer"
            ask = (f"{outline}\n\nWrite the {speaker}'s turn at step '{turn.id}' ({turn.label}). Reply with JSON "
                   f'only: {{"prompt": "one or two sentences telling the {speaker} what to say at this step", '
                   f'"examples": ["4 short example utterances the {speaker} could say"]}}. Slots you may use in '
                   f"both: {slots}.")
            answer = _json_reply(self.teacher.complete(Request(
                system=TEACHER_SYSTEM, messages=[{"role": "user", "content": ask}], max_tokens=600,
                temperature=0.7, tag="import-teacher", sample=turn.id)).text)
            prompt = answer.get("prompt") if isinstance(answer.get("prompt"), str) else None
            examples = [e for e in answer.get("examples", []) if isinstance(e, str) and e.strip()] \
                if isinstance(answer.get("examples"), list) else []
            if not turn.prompt and prompt:
                turn.prompt = self.slots(prompt, set(pools))
                turn.notes["prompt"] = f"REVIEW: written by the teacher ({who})"
            if not turn.examples and examples:
                turn.examples = [self.slots(e, set(pools)) for e in examples]
                turn.notes["examples"] = f"REVIEW: written by the teacher ({who})"
            if not (turn.prompt and turn.examples):
                self.note(f"the teacher's answer for '{turn.id}' could not be used: left TODO")
        missing = [v for v, (values, _) in pools.items() if str(values[0]).startswith("TODO")]
        if missing:
            ask = (f"{outline}\n\nGive 6 realistic values for each of these variables of the conversation: "
                   f"{', '.join(missing)}. Reply with JSON only: {{\"variable\": [values, ...], ...}}.")
            answer = _json_reply(self.teacher.complete(Request(
                system=TEACHER_SYSTEM, messages=[{"role": "user", "content": ask}], max_tokens=600,
                temperature=0.7, tag="import-teacher", sample="variables")).text)
            for var in missing:
                values = answer.get(var)
                if isinstance(values, list) and values and all(
                        isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in values):
                    self.teacher_pools[var] = (values, f"REVIEW: written by the teacher ({who})")

    def outline(self, pools: dict) -> str:
        lines = [f"A customer-service procedure imported from a LangGraph graph: {self.title_text()}."]
        if self.module_doc["text"]:
            lines.append(self.module_doc["text"])
        lines.append("Steps (role, id: what is known):")
        for turn in self.turns.values():
            said = turn.prompt or (turn.code.doc["text"] if turn.code else "") or "(nothing known)"
            lines.append(f"- {'assistant' if turn.role == 'agent' else 'customer'}, {turn.id}: {said}")
        lines.append("Transitions:")
        lines += [f"- {l.source} -> {l.target}" + (f" when {l.when}" if l.when else "") for l in self.links]
        return "\n".join(lines)

    def title_text(self) -> str:
        return self.title or (self.module_doc["prompt"] or "").rstrip(".") or _label(self.name)

    # -- 9: the file ---------------------------------------------------------------------------------------
    def render(self, fill: bool = False) -> tuple[str, list[tuple[int, str]]]:
        """The YAML text with its comments; with ``fill`` every TODO is a placeholder (same lines)."""
        lines: list[str] = []
        todos: list[str] = []

        def put(indent: int, text: str, comment: str | None = None):
            if comment:
                lines.append(" " * indent + "# " + comment)
            lines.append(" " * indent + text)

        def value(v: Any, where: str, flow: bool = False) -> str:
            if isinstance(v, str) and v.startswith("TODO"):
                todos.append(where)
                if fill:
                    v = "placeholder"
            return _scalar(v, flow)

        pools = {**self.pool_values, **self.teacher_pools}
        lines += [f"# Imported from the LangGraph graph in {self.origin} by `subterra import-langgraph`.",
                  "# A '# REVIEW' comment marks a guess to check; every TODO must be filled before the file loads",
                  "# (`subterra validate FILE` names each TODO line).", "#", "# Inferred:"]
        lines += [f"#   - {n}" for n in dict.fromkeys(self.notes)] or ["#   (nothing)"]
        lines.append("")
        put(0, f"name: {self.name}")
        put(0, f"title: {_scalar(self.title_text())}")
        prompt_note = None if self.system_prompt else self.system_note
        put(0, f"system_prompt: {_scalar(self.system_text)}", prompt_note)
        description = self.module_doc["text"] or f"Imported from the LangGraph graph in {FilePath(self.origin).name}."
        put(0, f"description: {_scalar(description)}")
        if pools:
            put(0, "variables:")
            for var, (values, comment) in pools.items():
                items = ", ".join(value(v, f"variables.{var}[{i}]", flow=True) for i, v in enumerate(values))
                put(2, f"{var}: [{items}]", comment)
        else:
            put(0, "variables: {}")
        put(0, f"start: {self.start}")
        lines.append("")
        put(0, "nodes:")
        for i, turn in enumerate(self.turns.values()):
            put(2, f"- id: {turn.id}", turn.notes.get("id"))
            put(4, f"role: {turn.role}")
            put(4, f"label: {_scalar(turn.label)}")
            if turn.terminal:
                put(4, f"terminal: {turn.terminal}", turn.notes.get("terminal"))
            speaker = "assistant" if turn.role == "agent" else "customer"
            prompt = turn.prompt or f"TODO: what the {speaker} says at this step"
            put(4, f"prompt: {value(prompt, f'nodes[{i}].prompt')}", turn.notes.get("prompt"))
            examples = turn.examples or [f"TODO: an example of what the {speaker} says here"]
            put(4, "examples:", turn.notes.get("examples"))
            for j, example in enumerate(examples):
                put(6, f"- {value(example, f'nodes[{i}].examples[{j}]')}")
        lines.append("")
        put(0, "edges:" if self.links else "edges: []")
        for link in self.links:
            put(2, f"- from: {link.source}")
            put(4, f"to: {link.target}")
            if link.when:
                put(4, f"when: {_scalar(link.when)}", link.notes.get("when"))
            if link.check:
                put(4, f"check: {_scalar(link.check)}", link.notes.get("check"))
        at = [i + 1 for i, line in enumerate(lines) if not line.lstrip().startswith("#")
              and re.search(r"(: |- |\[)\"?(TODO|placeholder)", line)]
        return "\n".join(lines) + "\n", list(zip(at, todos))

    def order(self) -> None:
        """Turns in the order a walk from the start meets them; edges grouped by their source."""
        seen, queue = [self.start], [self.start]
        while queue:
            for link in self.out(queue.pop(0)):
                if link.target not in seen:
                    seen.append(link.target)
                    queue.append(link.target)
        seen += [t for t in self.turns if t not in seen]
        self.turns = {t: self.turns[t] for t in seen}
        self.links = [link for t in seen for link in self.out(t)]

    def run(self) -> ImportedWorkflow:
        self.read()
        self.classify()
        self.resolve_silent()
        self.dedupe()
        self.ends()
        self.dedupe()
        self.alternate()
        self.order()
        self.texts()
        self.teacher_pools: dict = {}
        self.pool_values = self.pools()
        guessed = [v for v, (_, comment) in self.pool_values.items() if comment.startswith("REVIEW")]
        if guessed:
            self.note(f"values guessed for {', '.join(guessed)}")
        self.system_text, self.system_note = self.find_system_prompt()
        if self.system_note and self.system_note.startswith("REVIEW"):
            self.note("a generic one-line system prompt (no SYSTEM_PROMPT in the graph's module)")
        try:
            self.valid_checks()
            self.satisfiable()
            if self.teacher is not None:
                self.teach(self.pool_values)
            text, todos = self.render()
            workflow = parse_workflow(self.render(fill=True)[0], source=self.origin)
        except GraphImportError:
            raise
        except WorkflowError as exc:
            raise GraphImportError(f"the imported graph is not a valid workflow: {exc.message}", file=self.origin,
                                   node=exc.node) from None
        from .paths import enumerate_paths

        return ImportedWorkflow(name=self.name, text=text, notes=list(dict.fromkeys(self.notes)), todos=todos,
                                origin=self.origin, nodes=len(workflow.nodes),
                                decision_hubs=len(workflow.decision_hubs), paths=len(enumerate_paths(workflow)))

    def find_system_prompt(self) -> tuple[str, str | None]:
        if self.system_prompt:
            return " ".join(self.system_prompt.split()), None
        for key, value in vars(self.module or object()).items():
            if isinstance(value, str) and re.fullmatch(r"(?i)[a-z_]*system_prompt[a-z_]*", key) \
                    and value.strip() and "\n" not in value.strip():
                return SLOT.sub(lambda m: m.group(1), value.strip()), f"from {key} in the graph's module"
        return DEFAULT_SYSTEM_PROMPT, "REVIEW: a generic one-line system prompt: say who the assistant is"


TEACHER_SYSTEM = ("You help turn a LangGraph customer-service graph into a training workflow: for one step you "
                  "write what the speaker is told to say and a few example utterances. Keep to the procedure; "
                  "reply with JSON only.")


# --------------------------------------------------------------------------- small helpers

def _ident(name: str) -> str:
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", str(name))
    text = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "step"
    return text if text[0].isalpha() else f"n_{text}"


def _label(name: str) -> str:
    words = str(name).replace("_", " ").strip()
    return words[:1].upper() + words[1:]


def _sentence(text: str) -> str:
    text = " ".join(str(text).split())
    return text if text.endswith((".", "?", "!")) else text + "."


def _scalar(value: Any, flow: bool = False) -> str:
    """One YAML scalar: plain where that reads back the same, else double-quoted (JSON's escaping)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value)
    text = str(value)
    try:
        plain = (yaml.safe_load(text) == text and text == text.strip() and "\n" not in text
                 and not re.search(r"^[-?:,\[\]{}#&*!|>'\"%@`]|: | #|:$", text)
                 and not (flow and re.search(r"[,\[\]{}]", text)))
    except yaml.YAMLError:
        plain = False
    return text if plain else json.dumps(text, ensure_ascii=False)


def _json_reply(text: str) -> dict:
    match = re.search(r"\{.*\}", text, re.S)
    try:
        data = json.loads(match.group(0)) if match else {}
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def _cycle_edges(workflow) -> set[tuple[str, str]]:
    """Edges that lie on a cycle (their target leads back to their source)."""
    import networkx as nx

    graph = nx.DiGraph((e.source, e.target) for e in workflow.edges)
    return {(u, v) for u, v in graph.edges if nx.has_path(graph, v, u)}


def _any_scenario(workflow, checks: list) -> bool:
    """Whether some choice of pool values meets every check (exhaustive over the variables they use)."""
    import itertools

    names = sorted({n for c in checks for n in c.names} & set(workflow.variables))
    pools = [workflow.variables[n] for n in names]
    sample = {v: p[0] for v, p in workflow.variables.items()}
    sample.update({t: r[0] for t, r in workflow.catalogue.items()})
    for combo in itertools.islice(itertools.product(*pools), 200000):
        values = {**sample, **dict(zip(names, combo))}
        if all(c.evaluate(values) for c in checks):
            return True
    return False
