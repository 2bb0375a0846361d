"""The LangGraph condition: a frontier model inside a LangGraph ``StateGraph``.

The paper's surface-orchestration baseline: one graph node per workflow agent node, and an
LLM router at decision hubs that reads the conversation and picks the edge. Every agent
turn is one run of the graph: ``route`` decides where the conversation is, then that
node's LLM call writes the turn from the node's prompt, with the catalogue tables the prompt
names (Zoom's error codes for the step that explains one) to look the customer's record up in.
Needs the optional extra ``pip install -e ".[langgraph]"``.

The other way round, :func:`agent_node` puts a compiled model into a LangGraph app as one
node, in place of such an orchestrated graph (and :mod:`subterra.importers` turns a
LangGraph graph into a workflow to compile).
"""

from __future__ import annotations

import re
import time
from typing import TypedDict

from .backends import Backend, Request, Usage
from .conditions import AgentTurn, Condition, catalogue_tables, serialise_catalogue
from .scenarios import Scenario
from .tools import TOOL_ROLE, tool_schemas
from .workflow import Workflow

ROUTER = """You route a customer-service conversation through a procedure. Read the conversation and \
decide which option describes what should happen next. Reply with the option's number only.

Options:
{options}"""


class _State(TypedDict):
    messages: list[dict]
    node: str | None
    reply: str
    usage: Usage
    dollars: float


class LangGraphCondition(Condition):
    name = "langgraph"
    needs_frontier = True

    def __init__(self, workflow: Workflow, backend: Backend):
        from langgraph.graph import END, START, StateGraph

        self.workflow, self.backend = workflow, backend
        self.node: str | None = None
        agent_nodes = [n.id for n in workflow.nodes.values() if n.role == "agent"]
        graph = StateGraph(_State)
        graph.add_node("route", self._route)
        for node_id in agent_nodes:
            graph.add_node(node_id, self._speaker(node_id))
            graph.add_edge(node_id, END)
        graph.add_edge(START, "route")
        graph.add_conditional_edges("route", lambda state: state["node"], {n: n for n in agent_nodes})
        self.graph = graph.compile()

    def reset(self, scenario: Scenario) -> None:
        self.node = None
        self.deciding: str | None = None      # the step whose branch the last call's answer decides

    def options(self, node: str | None) -> list[tuple[str, str]]:
        """(next agent node, description) pairs reachable in one exchange from ``node``."""
        if node is None:
            return [(self.workflow.start, "Start the conversation.")]
        out = []
        for to_user in self.workflow.successors(node):
            for to_agent in self.workflow.successors(to_user.target):
                said = to_user.when or f"The customer: {self.workflow.nodes[to_user.target].prompt}"
                then = f" Then: {to_agent.when}" if to_agent.when else ""
                out.append((to_agent.target, said + then))
        return out or [(node, "Continue.")]

    def _call(self, state: _State, request: Request) -> str:
        completion = self.backend.complete(request)
        state["usage"] = state["usage"] + completion.usage
        state["dollars"] += completion.dollars
        return completion.text.strip()

    def choosing_from(self, messages: list[dict]) -> tuple[bool, str | None]:
        """(whether the last turn is a tool's answer, the step whose branches the router chooses among now):
        after an answer, the step whose branch it decides (None: the calling step speaks on with it)."""
        answered = bool(messages) and messages[-1]["role"] == TOOL_ROLE
        return answered, (self.deciding if answered else self.node)

    def _route(self, state: _State) -> dict:
        answered, source = self.choosing_from(state["messages"])
        if answered and source is None:                 # the step called its tool: it speaks with the answer
            return {"node": state["node"]}
        self.deciding = None
        options = self.options(source)
        if len({target for target, _ in options}) == 1:
            target = options[0][0]
        else:
            listing = "\n".join(f"{i + 1}. {text}" for i, (_, text) in enumerate(options))
            answer = self._call(state, Request(system=ROUTER.format(options=listing), messages=state["messages"],
                                               max_tokens=5, temperature=0.0, tag="langgraph-router"))
            number = re.search(r"\d+", answer)
            pick = int(number.group()) - 1 if number else 0
            target = options[pick if 0 <= pick < len(options) else 0][0]
        if not answered and self._turns_on_a_call(source, target):     # call first; its answer picks the branch
            self.deciding = source
        return {"node": target, "usage": state["usage"],
                "dollars": state["dollars"]}

    def _turns_on_a_call(self, source: str | None, target: str) -> bool:
        """Is the way from ``source`` to ``target`` a branch that reads what the tool ``target`` calls returns
        (the card's charge, a policy's status)? Then the router goes through the call and routes again with its
        answer."""
        returned = self.workflow.returned()
        return bool(self.workflow.nodes[target].call) and any(
            e.target == target and e.check is not None and e.check.names & returned
            for to_user in (self.workflow.successors(source) if source else ())
            for e in self.workflow.successors(to_user.target))

    def _speaker(self, node_id: str):
        node = self.workflow.nodes[node_id]
        schemas = {t["name"]: t for t in tool_schemas(self.workflow)}
        tables = catalogue_tables(self.workflow, node.prompt)       # what the step's words are looked up in
        reference = serialise_catalogue(self.workflow, tables) if tables else ""

        def speak(state: _State) -> dict:
            system = f"{self.workflow.system_prompt}\nCurrent step: {node.prompt}\nSpeak as the assistant.{reference}"
            messages = state["messages"] or [{"role": "user", "content": "(The customer has just connected.)"}]
            tools = ()
            if node.call and not (messages and messages[-1]["role"] == TOOL_ROLE):     # a tool node first
                tools = (schemas[node.call],)
                system += f"\nFirst call the tool {node.call} with the customer's details."
            reply = self._call(state, Request(system=system, messages=messages, max_tokens=400, temperature=0.0,
                                              tag="langgraph-node", tools=tools))
            return {"reply": reply, "usage": state["usage"], "dollars": state["dollars"]}

        return speak

    def respond(self, messages: list[dict]) -> AgentTurn:
        start = time.perf_counter()
        state = self.graph.invoke({"messages": messages, "node": self.node, "reply": "", "usage": Usage(),
                                   "dollars": 0.0})
        self.node = state["node"]
        u = state["usage"]
        return AgentTurn(state["reply"], u.input_tokens + u.cache_read_tokens + u.cache_write_tokens,
                         u.output_tokens, time.perf_counter() - start, state["dollars"], node=self.node)


# --------------------------------------------------------------------------- the compiled model as a LangGraph node

_ROLES = {"human": "user", "user": "user", "ai": "assistant", "assistant": "assistant"}


def agent_node(agent, system_prompt: str, messages_key: str = "messages"):
    """The compiled model as a LangGraph node: ``builder.add_node("agent", agent_node(agent, prompt))``.

    ``agent`` is an :class:`~subterra.agent.Agent` (or a model folder to load one from) and
    ``system_prompt`` the workflow's one line, the only instruction the model was trained with.
    The node reads the conversation from ``state[messages_key]`` (LangChain messages or
    ``{"role", "content"}`` dicts; system and tool messages are left out), and returns the next
    assistant turn as one new message for the ``add_messages`` reducer to append: an
    ``AIMessage`` when the state holds LangChain messages, else a dict. No node prompts, no
    router: the procedure is in the weights.
    """
    if not hasattr(agent, "reply"):
        from .agent import Agent

        agent = Agent(agent)

    def subterranean(state) -> dict:
        history = list(state.get(messages_key) or [])
        chat = [{"role": "system", "content": system_prompt}]
        for message in history:
            role, content = _role_and_text(message)
            if role in ("user", "assistant"):
                chat.append({"role": role, "content": content})
        reply = agent.reply(chat)
        if history and isinstance(history[-1], dict):
            return {messages_key: [{"role": "assistant", "content": reply}]}
        from langchain_core.messages import AIMessage

        return {messages_key: [AIMessage(content=reply)]}

    return subterranean


def _role_and_text(message) -> tuple[str, str]:
    """(user|assistant|other, text) of a dict message or a LangChain message."""
    if isinstance(message, dict):
        role, content = message.get("role", ""), message.get("content", "")
    else:
        role, content = getattr(message, "type", ""), getattr(message, "content", "")
    if isinstance(content, list):                     # content blocks: keep the text ones
        content = " ".join(b.get("text", "") if isinstance(b, dict) else str(b) for b in content)
    return _ROLES.get(role, role), str(content)
