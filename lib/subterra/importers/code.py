"""Reading a node's or a router's code without running it: its docstring, the texts it says, what it calls."""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from typing import Any

SECTION = re.compile(r"^\s*(examples?|replies|args|arguments|parameters|returns?|yields|raises|notes?|see also"
                     r"|attributes|todo)\s*:\s*$", re.I)             # docstring section headers


def function_of(obj: Any):
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
def doc_parts(doc: str) -> dict:
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
    return {"prompt": paragraph(head), "examples": sections["examples"], "replies": sections["replies"],
            "pairs": pairs, "head": head, "text": " ".join(" ".join(head).split())}


def paragraph(lines: list[str]) -> str | None:
    """The first paragraph of ``lines``, on one line."""
    first = "\n".join(lines).strip().split("\n\n")[0]
    return " ".join(first.split()) or None


class NodeCode:
    """What can be read from one node or router function without running it."""

    def __init__(self, obj: Any):
        self.func = function_of(obj)
        self.kind = type(obj).__name__
        self.name = getattr(self.func, "__name__", self.kind)
        # a ToolNode's tools: (name, one-line description, argument names), read from the tool objects
        self.tools = [(t.name, " ".join((t.description or t.name).split()), list(getattr(t, "args", None) or {}))
                      for t in (getattr(obj, "tools_by_name", None) or {}).values()]
        self.doc = doc_parts(inspect.getdoc(self.func) if self.func is not None and self.func.__doc__ else "")
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
        self.tree = parse_function(source, self.name == "<lambda>")
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

    @property
    def silent(self) -> bool:
        """Says nothing: no docstring, no message, no model call (a look-up; a ToolNode always)."""
        if self.kind == "ToolNode":
            return True
        return self.readable and not self.doc["prompt"] and not self.speaks()

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


def parse_function(source: str, is_lambda: bool) -> ast.AST | None:
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
