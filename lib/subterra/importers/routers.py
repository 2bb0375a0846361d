"""Reading a router's ``if`` / ``return`` over state fields as one condition (a workflow ``check``) per branch."""

from __future__ import annotations

import ast
import typing
from typing import Any

from ..workflow import IDENT
from .code import NodeCode
from .loading import END


class RouterChecks:
    """Reads a router as ``if`` / ``return`` over state fields into one condition per branch key."""

    def __init__(self, code: NodeCode, types: dict[str, Any]):
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
            if bool_type(self.types.get(name)):        # a yes/no field: compared with 'yes'
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
                if not IDENT.match(name) or bool_type(self.types.get(name)):
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
                other = self.walk(statement.orelse, guard + [negate(test)]) if statement.orelse else False
                if body and other:
                    return True
                if body:
                    guard = guard + [negate(test)]
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
            self.result(guard + [negate(test)], value.orelse)
            return
        if isinstance(value, ast.Call) and getattr(value.func, "id", None) == "Command":
            goto = next((k.value for k in value.keywords if k.arg == "goto"), None)
            value = goto
        name = self.code.field(value) if value is not None else None
        if name is not None and IDENT.match(name) and not bool_type(self.types.get(name)):
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
                    guard = guard + [what if key else negate(what)]
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


def negate(test: ast.AST | None) -> ast.AST | None:
    if test is None:
        return None
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        return test.operand
    if isinstance(test, ast.Compare) and len(test.ops) == 1 and type(test.ops[0]) in FLIP:
        return ast.Compare(test.left, [FLIP[type(test.ops[0])]()], test.comparators)
    return ast.UnaryOp(ast.Not(), test)


def bool_type(hint: Any) -> bool:
    return hint is bool or (typing.get_origin(hint) is typing.Union and bool in typing.get_args(hint))


def state_types(builder) -> dict[str, Any]:
    try:
        hints = typing.get_type_hints(builder.state_schema, include_extras=False)
    except Exception:
        hints = dict(getattr(builder.state_schema, "__annotations__", {}))
    return hints
