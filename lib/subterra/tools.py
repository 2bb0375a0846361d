"""The business's systems: the tools a workflow declares, answered for one scenario.

A workflow may declare tools (a flight search, a card payment; docs/workflow-format.md, "Tools"); an agent
turn that ``call``s one asks it before it speaks, and speaks with its answer in hand. :class:`Environment`
plays the business's systems for one scenario: a look-up returns the scenario's values as they stand at
that point of its path (the flight for the date the customer last asked for), an outcome returns what the
path has there (the first charge declined, the second confirmed). A real deployment plugs in its own
functions (``handlers``) behind the same calls.

Nothing a model writes can crash a conversation: a call that is not JSON, names no known tool, lacks an
argument or brings one the tool does not take, or a handler that raises, is answered with an ``error``
the agent sees (:func:`read_call`, :meth:`Environment.answer`).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .paths import Path
from .scenarios import Scenario
from .workflow import Tool, Workflow


# The text form of a call (a chat template without tool support, such as SmolLM2's, renders it as it renders
# any turn): the agent's turn is the call alone, between these tags; the answer comes back as a "tool" turn.
CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
TOOL_ROLE = "tool"


class ToolError(ValueError):
    """A call the business's systems cannot answer; its message is what the agent is told."""


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict, hash=False)

    def to_json(self) -> str:
        return json.dumps({"name": self.name, "arguments": self.arguments}, ensure_ascii=False)


def call_text(call: ToolCall) -> str:
    """A call as the agent writes it (the text form)."""
    return f"{CALL_OPEN}\n{call.to_json()}\n{CALL_CLOSE}"


def call_in(reply: str) -> str | None:
    """The call an agent's reply makes (the text between the tags, for :func:`read_call`), or None when the
    reply speaks to the customer. A reply cut off before its closing tag is still a call."""
    text = reply.strip()
    if not text.startswith(CALL_OPEN):
        return None
    return text[len(CALL_OPEN):].split(CALL_CLOSE, 1)[0].strip()


def answer_text(answer: Mapping[str, Any]) -> str:
    """An answer as the agent reads it, in a "tool" turn."""
    return json.dumps(dict(answer), ensure_ascii=False)


def is_tool_turn(message: Mapping[str, Any]) -> bool:
    """Is this message a call or a tool's answer (not said between the agent and the customer)?"""
    return message["role"] == TOOL_ROLE or (message["role"] == "assistant" and call_in(message["content"]) is not None)


def without_tools(messages: list[dict]) -> list[dict]:
    """The conversation as the customer has it: calls and answers left out."""
    return [m for m in messages if not is_tool_turn(m)]


def conversation_line(message: Mapping[str, Any]) -> str:
    """One message as a line of a conversation shown to a model (a teacher, a judge): who says it, or which
    call the agent makes and what the business's system answers."""
    if message["role"] == TOOL_ROLE:
        return f"(The business's system answers: {message['content']})"
    call = call_in(message["content"]) if message["role"] == "assistant" else None
    if call is not None:
        return f"(The assistant calls a tool: {call})"
    return f"{'Assistant' if message['role'] == 'assistant' else 'Customer'}: {message['content']}"


def answer_values(content: str) -> dict[str, Any]:
    """The values a tool's answer holds: none for an error, or for an answer that is not a JSON object."""
    try:
        answer = json.loads(content)
    except json.JSONDecodeError:
        return {}
    return {k: v for k, v in answer.items() if k != "error"} if isinstance(answer, dict) else {}


MADE_UP = "(stated before any tool returned it)"        # what a look-up stated without its call is checked against


def answers_before(messages: list[dict]) -> tuple[list[dict], list[dict[str, Any]]]:
    """The conversation as said (:func:`without_tools`), and for each of its messages the values the tools had
    returned before it (the latest answer wins; an error returns nothing)."""
    said, before, returned = [], [], {}
    for m in messages:
        if m["role"] == TOOL_ROLE:
            returned.update(answer_values(m["content"]))
        elif not is_tool_turn(m):
            said.append(m)
            before.append(dict(returned))
    return said, before


def tool_schemas(workflow: Workflow) -> tuple[dict, ...]:
    """The workflow's tools as the APIs take them: name, description and a JSON schema of the arguments (a
    number where every value of the variable is one, else a string)."""
    def kind(name: str) -> str:
        values = workflow.values_of(name)
        return "number" if values and all(isinstance(v, (int, float)) for v in values) else "string"

    return tuple({"name": t.name, "description": t.description,
                  "parameters": {"type": "object", "properties": {a: {"type": kind(a)} for a in t.arguments},
                                 "required": list(t.arguments)}}
                 for t in workflow.tools.values())


def read_call(workflow: Workflow, call: str | Mapping | ToolCall) -> ToolCall:
    """A call as the agent wrote it (JSON text, or a mapping), checked against the workflow's tools.

    Raises :class:`ToolError` with a one-line reason: not JSON, not an object, no tool of that name, an
    argument missing or one the tool does not take.
    """
    if isinstance(call, ToolCall):
        name, arguments = call.name, call.arguments
    else:
        if isinstance(call, str):
            try:
                call = json.loads(call)
            except json.JSONDecodeError as exc:
                raise ToolError(f"the call is not valid JSON ({exc.msg} at character {exc.pos})") from None
        if not isinstance(call, Mapping):
            raise ToolError('a call is a JSON object: {"name": ..., "arguments": {...}}')
        name, arguments = call.get("name"), call.get("arguments", {})
        if isinstance(arguments, str):                       # some APIs send the arguments as JSON text
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                raise ToolError("the call's arguments are not valid JSON") from None
    if not isinstance(name, str) or name not in workflow.tools:
        known = ", ".join(sorted(workflow.tools)) or "none"
        raise ToolError(f"unknown tool {name!r} (tools: {known})")
    if not isinstance(arguments, Mapping):
        raise ToolError(f"{name}: the arguments must be a JSON object")
    tool = workflow.tools[name]
    missing = [a for a in tool.arguments if a not in arguments]
    if missing:
        raise ToolError(f"{name}: missing argument{'s' * (len(missing) > 1)} {', '.join(missing)}")
    extra = sorted(set(arguments) - set(tool.arguments))
    if extra:
        raise ToolError(f"{name}: unexpected argument{'s' * (len(extra) > 1)} {', '.join(extra)} "
                        f"(it takes {', '.join(tool.arguments) or 'none'})")
    return ToolCall(name, dict(arguments))


@dataclass
class Answered:
    """One call and its answer, as the conversation saw them."""

    call: ToolCall | str                 # the call as read, or the text that could not be read
    answer: dict[str, Any]               # the values returned, or {"error": reason}

    @property
    def failed(self) -> bool:
        return "error" in self.answer


Handler = Callable[..., Mapping[str, Any]]


class Environment:
    """The business's systems for one scenario on one path (see the module docstring).

    The k-th call of a tool gets the answer of the path's k-th call of it; calls beyond the path's get
    its last answer (a search asked again finds the same flight). ``handlers`` (tool name -> function of
    the arguments, returning the answer's values) replace the scenario for those tools.
    """

    def __init__(self, workflow: Workflow, scenario: Scenario, path: Path,
                 handlers: Mapping[str, Handler] | None = None):
        self.workflow, self.path, self.handlers = workflow, path, dict(handlers or {})
        along = workflow.values_along(path.nodes, scenario.values)
        self.planned: dict[str, list[dict[str, Any]]] = {name: [] for name in workflow.tools}
        for i, node in enumerate(path.nodes):
            tool = workflow.nodes[node].call
            if tool:
                self.planned[tool].append(self._answer_at(workflow.tools[tool], path, i, along[i]))
        self.ending = along[-1] if along else dict(scenario.values)
        self.made: Counter = Counter()
        self.log: list[Answered] = []

    def _answer_at(self, tool: Tool, path: Path, i: int, values: dict[str, Any]) -> dict[str, Any]:
        answer = {name: values[name] for name in tool.results}
        if tool.outcome:
            nodes = path.nodes
            edges = {(nodes[i - 1], nodes[i])} if i > 0 else set()          # i = -1: a call the path never makes
            edges |= {(nodes[i], nodes[i + 1])} if 0 <= i < len(nodes) - 1 else set()
            checks = [e.check for e in self.workflow.edges
                      if (e.source, e.target) in edges and e.check is not None and tool.outcome in e.check.names]
            fits = [v for v in tool.outcome_values if all(c.evaluate({**values, tool.outcome: v}) for c in checks)]
            answer[tool.outcome] = (fits or tool.outcome_values)[0]
        return answer

    def answer(self, call: str | Mapping | ToolCall) -> dict[str, Any]:
        """The answer to one call: the values it returns, or ``{"error": reason}``. Never raises."""
        try:
            read = read_call(self.workflow, call)
        except ToolError as exc:
            self.log.append(Answered(call if isinstance(call, (str, ToolCall)) else json.dumps(call, default=str),
                                     {"error": str(exc)}))
            return self.log[-1].answer
        k = self.made[read.name]
        self.made[read.name] += 1
        if read.name in self.handlers:
            try:
                answer = dict(self.handlers[read.name](**read.arguments))
            except Exception as exc:               # a business system failing is an answer, not a crash
                answer = {"error": f"{read.name} failed: {exc.__class__.__name__}: {exc}"}
        else:
            planned = self.planned[read.name]
            answer = dict(planned[min(k, len(planned) - 1)]) if planned else \
                self._answer_at(self.workflow.tools[read.name], self.path, -1, self.ending)
        self.log.append(Answered(read, answer))
        return answer
