"""The workflow while it is being built: turns, the links between them, and what was inferred on the way."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path as FilePath
from typing import Any

from .code import NodeCode, doc_parts, function_of
from .loading import GraphImportError
from .routers import state_types


@dataclass
class Turn:
    id: str
    role: str                                   # agent | user | silent
    label: str
    code: NodeCode | None = None
    origin: str | None = None                   # the LangGraph node it comes from
    prompt: str | None = None
    examples: list[str] = field(default_factory=list)
    terminal: str | None = None
    call: str | None = None                     # the tool this turn calls before it speaks (from a ToolNode)
    ends_for: set[str] = field(default_factory=set)      # the graph's nodes whose way to END this ending is
    notes: dict[str, str] = field(default_factory=dict)   # YAML field -> comment


@dataclass
class Link:
    source: str
    target: str
    key: str | None = None
    when: str | None = None
    check: str | None = None
    notes: dict[str, str] = field(default_factory=dict)
    router: str | None = None                   # the graph's node (or START) whose router this is a branch of
    edge_from: str | None = None                # the graph's node whose way out this link carries on


class Draft:
    """The state every step of the import reads and changes."""

    def __init__(self, graph, builder, name, title, system_prompt, teacher, origin):
        self.graph, self.builder, self.teacher = graph, builder, teacher
        self.types = state_types(builder)
        funcs = [function_of(spec.runnable) for spec in builder.nodes.values()]
        module = sys.modules.get(getattr(next((f for f in funcs if f), None), "__module__", None) or "")
        own = module is not None and module.__name__ != "__main__"     # a notebook's or script's doc is not the graph's
        self.module_doc = doc_parts((getattr(module, "__doc__", None) if own else None) or "")
        self.module = module
        self.origin = origin or getattr(module, "__file__", None) or "<langgraph>"
        self.name = ident(name or FilePath(self.origin).stem or "imported")
        self.title, self.system_prompt = title, system_prompt
        self.turns: dict[str, Turn] = {}
        self.links: list[Link] = []
        self.notes: list[str] = []
        self.uses: dict[str, dict] = {}         # state field -> how routers and texts use it (its values)
        self.start: str | None = None
        self.commands: set[str] = set()         # turns whose node routes itself with Command(goto=...)
        self.silent: set[str] = set()           # the graph's nodes that say nothing
        self.gone: dict[str, str] = {}          # the graph's node -> why no turn stands for it
        self.losses: list[str] = []             # what the workflow lacks of the graph's shape (allow_lossy)
        self.teacher_pools: dict[str, tuple[list, str]] = {}
        self.tools: dict[str, dict] = {}       # a ToolNode's tools: name -> description, arguments, results
        self.tool_pools: dict[str, tuple[list, str]] = {}     # their arguments' and results' variables
        self.pool_values: dict[str, tuple[list, str]] = {}
        self.system_text, self.system_note = "", None

    def fail(self, message: str, node: str | None = None):
        raise GraphImportError(message, file=self.origin, node=node)

    def take_tools(self, turn: Turn, speakers: list[Turn]) -> None:
        """A ``ToolNode`` turn goes: its tools become the workflow's, called by the agent turns that speak with
        their answers (``speakers``). What a tool returns is not in its code: a variable to describe (TODO)."""
        names = []
        for name, description, arguments in turn.code.tools if turn.code is not None else []:
            name = ident(name)
            names.append(name)
            result = f"{name}_result"
            self.tools.setdefault(name, {"description": description, "arguments": [ident(a) for a in arguments],
                                         "results": [result]})
            for variable in self.tools[name]["arguments"]:
                self.tool_pools.setdefault(variable, ([f"TODO: values the customer may give for {variable}"],
                                                      f"REVIEW: an argument of the tool {name}"))
            self.tool_pools.setdefault(result, ([f"TODO: what {name} returns (a value, or list the variables)"],
                                                f"REVIEW: what the tool {name} returns"))
        if not names:
            return
        for speaker in speakers:
            if speaker.call is None:
                speaker.call = names[0]
                if len(names) > 1:
                    speaker.notes["call"] = (f"REVIEW: '{turn.origin}' holds {len(names)} tools "
                                             f"({', '.join(names)}); a step calls one")
        self.note(f"'{turn.origin}' (a ToolNode) gives the tool{'s' * (len(names) > 1)} {', '.join(names)}, called "
                  f"by {', '.join(repr(s.id) for s in speakers) or 'no step'}")

    def note(self, text: str) -> str:
        self.notes.append(text)
        return text

    def new_id(self, base: str) -> str:
        base = ident(base)
        candidate, n = base, 2
        while candidate in self.turns:
            candidate, n = f"{base}_{n}", n + 1
        return candidate

    def add(self, base: str, role: str, **fields) -> Turn:
        turn = Turn(id=self.new_id(base), role=role, label=fields.pop("label", None) or label(base), **fields)
        self.turns[turn.id] = turn
        return turn

    def out(self, turn_id: str) -> list[Link]:
        return [link for link in self.links if link.source == turn_id]

    def into(self, turn_id: str) -> list[Link]:
        return [link for link in self.links if link.target == turn_id]

    def role(self, turn_id: str) -> str:
        return self.turns[turn_id].role if turn_id in self.turns else turn_id

    def link(self, source: str, target: str) -> Link:
        return next(link for link in self.links if (link.source, link.target) == (source, target))

    def title_text(self) -> str:
        return self.title or (self.module_doc["prompt"] or "").rstrip(".") or label(self.name)

    def use(self, var: str, consts=(), keys=(), bool_: bool = False, order: bool = False) -> None:
        entry = self.uses.setdefault(var, {"consts": [], "bool": False, "keys": [], "order": False})
        entry["consts"].extend(consts)
        entry["keys"].extend(keys)
        entry["bool"] |= bool_
        entry["order"] |= order


def ident(name: Any) -> str:
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", str(name))
    text = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "step"
    return text if text[0].isalpha() else f"n_{text}"


def label(name: Any) -> str:
    words = str(name).replace("_", " ").strip()
    return words[:1].upper() + words[1:]


def sentence(text: str) -> str:
    text = " ".join(str(text).split())
    return text if text.endswith((".", "?", "!")) else text + "."
