"""What each turn says: prompts and examples read from the code, the variables' values, the system prompt.

Prompts come from node docstrings (their first paragraph), else from a system prompt the node
passes to a model; examples from an ``Examples:`` section of the docstring and from literal texts
the node says (``AIMessage("...")``; f-strings over state fields become ``{slots}``). A variable's
values come from its ``Literal`` type, else from what the routers compare it with.
"""

from __future__ import annotations

import re
import typing

from ..workflow import IDENT, SLOT
from .draft import Draft
from .routers import bool_type

GUESSED_NUMBERS = [100, 500, 1000]
DEFAULT_SYSTEM_PROMPT = "You are a helpful customer-service assistant."


def texts(d: Draft) -> None:
    """Each turn's prompt and examples, from its code; a customer turn's prompt from the branch that leads to it."""
    for turn in d.turns.values():
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
            told = next((link for link in d.into(turn.id)
                         if link.when and link.notes.get("when", "").startswith("from the docstring")), None)
            if told is not None:
                turn.prompt = told.when
                turn.notes["prompt"] = "REVIEW: the `when` sentence of the branch that leads here"
        if turn.prompt:
            turn.prompt = slots(d, turn.prompt)
        turn.examples = list(dict.fromkeys(slots(d, e) for e in turn.examples if e.strip()))


def slots(d: Draft, text: str, allowed: set[str] | None = None) -> str:
    """Keep ``{x}`` where x is a state field (it becomes a variable); drop every other brace."""
    allowed = set(d.types) if allowed is None else allowed
    parts, last = [], 0
    for match in SLOT.finditer(text):
        parts.append(text[last:match.start()].replace("{", "").replace("}", ""))
        inner = match.group(1)
        if IDENT.match(inner) and inner in allowed:
            d.use(inner)
            parts.append(match.group(0))
        else:
            parts.append(inner)
        last = match.end()
    parts.append(text[last:].replace("{", "").replace("}", ""))
    return " ".join("".join(parts).split())


def pools(d: Draft) -> dict[str, tuple[list, str]]:
    """Variable -> (values, comment)."""
    out = {}
    for var, use in sorted(d.uses.items()):
        hint = d.types.get(var)
        if typing.get_origin(hint) is typing.Literal and all(
                isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in typing.get_args(hint)):
            out[var] = (list(typing.get_args(hint)), f"from the Literal type of the state field '{var}'")
        elif use["bool"] or bool_type(hint):
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


def find_system_prompt(d: Draft) -> tuple[str, str | None]:
    """The system prompt given, else a one-line *SYSTEM_PROMPT* string of the graph's module, else a generic one."""
    if d.system_prompt:
        return " ".join(d.system_prompt.split()), None
    for key, value in vars(d.module or object()).items():
        if isinstance(value, str) and re.fullmatch(r"(?i)[a-z_]*system_prompt[a-z_]*", key) \
                and value.strip() and "\n" not in value.strip():
            return SLOT.sub(lambda m: m.group(1), value.strip()), f"from {key} in the graph's module"
    return DEFAULT_SYSTEM_PROMPT, "REVIEW: a generic one-line system prompt: say who the assistant is"
