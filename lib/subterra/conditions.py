"""The conditions: the systems a simulated customer talks to, each writing the next agent turn.

- :class:`Subterranean` — the compiled model with the one-line system prompt, nothing else;
- :class:`Orchestrated` — a graph controller that tracks the current node, routes at decision
  hubs and injects the node's prompt every turn, speaking through the same small model (or,
  offline, through the workflow's own examples);
- :class:`Oracle` — the controller plus what only the business knows: the harness's calibration;
- :class:`InContext` — a frontier model with the whole workflow serialised in its system prompt;
- ``langgraph`` — a frontier model in a LangGraph ``StateGraph`` (:mod:`subterra.langgraph_agent`,
  built on :class:`Condition` from here).

:mod:`subterra.simulation` runs them against the customer and picks them by name
(:func:`~subterra.simulation.build_conditions`).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

from .agent import count_tokens
from .backends import PRICES, Backend, Request, Usage, approx_tokens
from .conformance import extract_values, lookups, matcher_for, read_reply, slot_names
from .customer import LEAVING
from .paths import back_edges, enumerate_paths
from .scenarios import Scenario
from .tools import TOOL_ROLE, ToolCall, answer_values, call_text, tool_schemas
from .workflow import SLOT, SLOT_NAME, Workflow


@dataclass
class AgentTurn:
    text: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    dollars: float
    node: str | None = None      # the node an orchestrator put this turn at (None: no controller)


class Condition:
    """A system under test: the next agent turn from the conversation so far.

    Conditions that speak through a small model split a turn in two, so that the batched
    simulator can answer many conversations with one ``generate``: :meth:`prompt` gives the chat
    the ``speaker`` (anything with ``reply_batch(chats) -> texts``, e.g. an
    :class:`~subterra.agent.Agent`) must answer, or None when this turn needs no model, and
    :meth:`turn` makes the :class:`AgentTurn` from its answer. :meth:`respond` is both, for one
    conversation; the batched simulator calls it for conditions with no ``speaker``. Others (a
    remote API, LangGraph) override :meth:`respond` only.
    """

    name = "condition"
    label = ""                 # who speaks, for tables ("base smollm2-135m-instruct under the controller")
    needs_frontier = False
    speaker = None

    def prompt(self, messages: list[dict]) -> list[dict] | None:
        raise NotImplementedError

    def turn(self, messages: list[dict], chat: list[dict] | None, text: str | None, seconds: float) -> AgentTurn:
        raise NotImplementedError

    def respond(self, messages: list[dict]) -> AgentTurn:
        start = time.perf_counter()
        chat = self.prompt(messages)
        text = self.speaker.reply_batch([chat])[0] if chat is not None else None
        return self.turn(messages, chat, text, time.perf_counter() - start)

    def reset(self, scenario: Scenario) -> None:
        """Called before each conversation (controllers forget their state)."""

    @property
    def batched(self) -> bool:
        """Whether :meth:`prompt` and :meth:`turn` are implemented (else only :meth:`respond`)."""
        return type(self).prompt is not Condition.prompt


def self_hosted_dollars(prompt_tokens: int, completion_tokens: int) -> float:
    """A self-hosted small model priced per GPU-hour as in the paper (A100 at $2.50/h)."""
    price = PRICES["self-hosted"]
    return (prompt_tokens * price.input + completion_tokens * price.output) / 1e6


class Subterranean(Condition):
    """The compiled model: the one-line system prompt and the conversation, no graph at run time."""

    name = "subterranean"

    def __init__(self, agent, workflow: Workflow):
        self.agent, self.workflow = agent, workflow
        self.speaker = agent

    def prompt(self, messages: list[dict]) -> list[dict]:
        return [{"role": "system", "content": self.workflow.system_prompt}] + messages

    def turn(self, messages, chat, text, seconds) -> AgentTurn:
        prompt, completion = count_tokens(self.agent.tokenizer, chat, text)
        return AgentTurn(text, prompt, completion, seconds, self_hosted_dollars(prompt, completion))


class Orchestrated(Condition):
    """A graph controller around a speaker: tracks the node, routes at hubs, injects the node prompt.

    Routing reads only the conversation. The customer's reply is classified among the replies the
    graph expects after the current step (:func:`~subterra.conformance.read_reply`); when it gives
    none of them — an off-topic question, a half answer, a correction — the controller stays and
    asks again, as a router should. Where several steps can follow, the edge whose ``check`` holds
    for what the customer said is taken, and a loop's back edge is taken at most once (the
    workflow's own rule for paths). Values only the business knows (:func:`~subterra.conformance.lookups`:
    the flight a search finds, the policy on file) come from the scenario, as from the business's
    systems. A customer who is leaving gets a polite close.

    The speaker is a small model (``agent``) given the node's prompt in its system prompt, or —
    with no model — the workflow's own example sentences for the node (the *script*).
    """

    name = "orchestrated"

    def __init__(self, workflow: Workflow, agent=None, seed: int = 0):
        self.workflow, self.agent, self.seed = workflow, agent, seed
        self.speaker = agent
        self.lookups = lookups(workflow)
        self.loops = back_edges(workflow)
        self.node: str | None = None

    def reset(self, scenario: Scenario) -> None:
        self.node, self.scenario_id, self.scenario = None, scenario.id, scenario
        self.taken: set[tuple[str, str]] = set()
        self.again = False            # asking the current step again
        self.leaving = False          # the customer is leaving mid-procedure
        self.used: set[str] = set()   # the script's sentences said so far
        self.calling: ToolCall | None = None            # the call this turn makes (a tool the step needs)
        self.deciding: tuple[str, str] | None = None    # (source, reply) of a branch its call's answer decides

    def known(self, messages: list[dict]) -> dict[str, Any]:
        """What the controller may use: values the customer said (later mentions win), look-ups from the
        business's systems (the scenario's), and what its tools answered (the latest answer wins). An outcome
        holds for its own call only (the first card's decline is not the second's): :meth:`prompt` adds the
        one just answered."""
        said = extract_values(self.workflow, "\n".join(m["content"] for m in messages if m["role"] == "user"))
        returned = self.workflow.returned()
        said = {k: v for k, v in said.items() if k not in self.lookups and k not in returned}
        business = {k: v for k, v in self.scenario.values.items() if k in self.lookups and k not in returned}
        answers: dict[str, Any] = {}
        for m in messages:
            if m["role"] == TOOL_ROLE:
                answers.update(answer_values(m["content"]))
        outcomes = self.workflow.outcomes()
        return {**said, **business, **{k: v for k, v in answers.items() if k not in outcomes}}

    def route(self, messages: list[dict], known: dict[str, Any]) -> str:
        """The agent step for this turn, from the customer's last reply and what is ``known`` (:meth:`known`)."""
        wf = self.workflow
        self.again = self.leaving = False
        if self.node is None and wf.nodes[wf.start].role == "agent":
            return wf.start
        reply = messages[-1]["content"] if messages and messages[-1]["role"] == "user" else ""
        expected = [wf.start] if self.node is None else \
            [e.target for e in wf.successors(self.node) if wf.nodes[e.target].role == "user"]
        if not expected:                           # two agent steps in a row
            return self.choose(self.node, known)
        reading = read_reply(wf, reply, expected, known)
        if self.node is not None and ((reading.answered and wf.nodes[reading.node].terminal) or
                                      (not reading.answered and LEAVING.search(reply))):
            self.leaving = True                    # the customer is ending the conversation
            return self.node
        if not reading.answered and self.node is not None:
            self.again = True
            return self.node
        return self.choose(reading.node, known, reply)

    def choose(self, source: str, known: dict[str, Any], reply: str = "") -> str:
        """The next agent step after ``source``: the branch the customer's ``reply`` names where the workflow
        says how each branch is said (an edge's ``examples``), else a check that holds, else a loop not yet
        taken, else the first."""
        wf = self.workflow
        options = [e for e in wf.successors(source) if wf.nodes[e.target].role == "agent"] or wf.successors(source)
        if not options:
            return self.node or wf.start
        if reply and any(e.examples for e in options):
            way = matcher_for(wf, "user").way_on(reply, known, source)
            options = [e for e in options if e.target == way] if way is not None else \
                [e for e in options if not e.examples] or options
        unknown = wf.returned() - set(known)          # a branch on what a tool returns waits for its answer
        waiting = [e for e in options if e.check is not None and e.check.names & unknown]
        if waiting and wf.nodes[waiting[0].target].call:        # the call's answer decides: call, then choose
            self.deciding = (source, reply)
            return waiting[0].target
        chosen = next((e for e in options if e.check is not None and e.check.names <= set(known)
                       and _safe(e.check, known)), None)
        if chosen is None:
            open_ = [e for e in options if e.check is None and (e.source, e.target) not in self.taken]
            chosen = (open_ or [e for e in options if e.check is None] or options)[0]
        self.taken.add((chosen.source, chosen.target))
        return chosen.target

    def prompt(self, messages: list[dict]) -> list[dict] | None:
        self.heard = self.known(messages)               # once per turn: the script and the prompt reuse it
        if messages and messages[-1]["role"] == TOOL_ROLE:      # the answer to this controller's call: speak
            self.heard.update(answer_values(messages[-1]["content"]))
            if self.deciding is not None:
                (source, reply), self.deciding = self.deciding, None
                self.node = self.choose(source, self.heard, reply)
        else:
            self.node = self.route(messages, self.heard)
            tool = self.workflow.tools.get(self.workflow.nodes[self.node].call or "")
            if tool is not None and not (self.again or self.leaving):      # the step calls before it speaks
                self.calling = ToolCall(tool.name, {name: self.heard.get(name) for name in tool.arguments})
                return None
        if self.agent is None:
            return None                           # the script speaks: no model call
        return [{"role": "system", "content": self.system_prompt(self.heard)}] + messages

    def turn(self, messages, chat, text, seconds) -> AgentTurn:
        start = time.perf_counter()
        if self.calling is not None:              # the controller calls the tool itself: no model
            text, self.calling = call_text(self.calling), None
            return AgentTurn(text, 0, 0, seconds + time.perf_counter() - start, 0.0, node=self.node)
        if chat is None:
            text = self.script(messages, self.heard)
            node = self.workflow.nodes[self.node]
            words = len(self.workflow.system_prompt.split()) + len(node.prompt.split()) + sum(
                len(m["content"].split()) for m in messages)
            prompt, completion = approx_tokens(words), approx_tokens(len(text.split()))
        else:
            prompt, completion = count_tokens(self.agent.tokenizer, chat, text)
        return AgentTurn(text, prompt, completion, seconds + time.perf_counter() - start,
                         self_hosted_dollars(prompt, completion), node=self.node)

    def system_prompt(self, known: dict[str, Any]) -> str:
        """The small model's instructions for this turn: the one-line prompt and the current step."""
        if self.leaving:
            step = "The customer is leaving. Close the conversation politely in one sentence."
        else:
            step = _render_known(self.workflow.nodes[self.node].prompt, known)
            if self.again:
                step += " The customer has not answered this yet: reply briefly to what they said, then ask again."
        return f"{self.workflow.system_prompt}\nCurrent step: {step}"

    def script(self, messages: list[dict], known: dict[str, Any]) -> str:
        """The workflow's own sentence for the step, filled from what is known (the offline speaker)."""
        rng = random.Random(f"orchestrated:{self.seed}:{self.scenario_id}:{len(messages)}")
        if self.leaving:
            return rng.choice(CLOSINGS)
        node = self.workflow.nodes[self.node]
        fillable = [e for e in node.examples if slot_names(e) <= set(known)] or list(node.examples)
        fresh = [e for e in fillable if e not in self.used] or fillable      # a step said again reads anew
        template = rng.choice(fresh)
        self.used.add(template)
        text = _render_known(template, known)
        if self.again:
            text = rng.choice(ASK_AGAIN) + text
        return text


ASK_AGAIN = ("No problem. ", "Sure, happy to help with that. ", "Of course. ", "Thanks. ")
CLOSINGS = ("I understand. Nothing has been changed, and you're welcome back any time. Goodbye!",
            "No problem at all. If you'd like to pick this up later, just start a new chat. Take care!")


class Oracle(Orchestrated):
    """The harness's calibration: always a right next step, with the values the customer actually gave.

    It is the script controller plus what only the business can know: where the graph leaves the
    choice to the business (the bank declines the card, there is another fix worth trying) it takes
    the step the scenario's path took. Whatever it loses is the harness's error, not an agent's.
    """

    name = "oracle"

    def __init__(self, workflow: Workflow, seed: int = 0):
        super().__init__(workflow, None, seed)
        self.paths = {p.id: p for p in enumerate_paths(workflow)}

    def reset(self, scenario: Scenario) -> None:
        super().reset(scenario)
        self.plan, self.at = list(self.paths[scenario.path_id].nodes), 0

    def choose(self, source: str, known: dict[str, Any], reply: str = "") -> str:
        targets = {e.target for e in self.workflow.successors(source)}
        for k in range(self.at, len(self.plan) - 1):
            if self.plan[k] == source and self.plan[k + 1] in targets:
                self.at = k + 1
                self.taken.add((source, self.plan[k + 1]))
                return self.plan[k + 1]
        return super().choose(source, known, reply)


def _safe(check, values) -> bool:
    try:
        return check.evaluate(values)
    except (KeyError, TypeError):
        return False


def _render_known(template: str, values: dict[str, Any]) -> str:
    """Fill the slots whose values are known; describe the others ("the destination")."""
    def fill(match):
        name, attr = SLOT_NAME.match(match.group(1)).groups()
        if name in values:
            value = values[name]
            return str(value[attr] if attr and isinstance(value, dict) else value)
        return f"the {(attr or name).replace('_', ' ')}"
    return SLOT.sub(fill, template)


def serialise_workflow(workflow: Workflow) -> str:
    """The whole flowchart as text, for the in-context condition's system prompt."""
    lines = [workflow.system_prompt, "", f"Follow this procedure ({workflow.title}). Steps:"]
    for node in workflow.nodes.values():
        who = "You" if node.role == "agent" else "The customer"
        end = f" [conversation ends: {node.terminal}]" if node.terminal else ""
        call = f" [first call the tool {node.call}, then speak with its answer]" if node.call else ""
        lines.append(f"- {node.id} ({who}): {node.prompt}{call}{end}")
        for edge in workflow.successors(node.id):
            lines.append(f"    -> {edge.target}" + (f" if {edge.when}" if edge.when else ""))
    if workflow.catalogue:
        lines.append(serialise_catalogue(workflow, workflow.catalogue))
    lines.append(f"\nStart at {workflow.start}. Speak only as the assistant; never mention step names.")
    return "\n".join(lines)


def serialise_catalogue(workflow: Workflow, tables) -> str:
    """The business's reference records of ``tables`` as text ("Reference: error" and a line a record): what a
    model given the procedure in its prompt must look a record up in (an error code's meaning and fix)."""
    lines = []
    for table in tables:
        lines.append(f"\nReference: {table}")
        lines += ["- " + "; ".join(f"{k}: {v}" for k, v in r.items()) for r in workflow.catalogue[table]]
    return "\n".join(lines)


def catalogue_tables(workflow: Workflow, template: str) -> list[str]:
    """The catalogue tables a prompt's slots read (``{error.message}``: ``error``), in the catalogue's order."""
    named = slot_names(template)
    return [table for table in workflow.catalogue if table in named]


class InContext(Condition):
    """A frontier model with the whole workflow serialised into its system prompt (the quality ceiling).

    On a :class:`~subterra.backends.local.LocalBackend` (no key: a small model standing in for the
    frontier model) its turns are batched like the small-model conditions and priced at the
    backend's ``priced_as`` list prices.
    """

    name = "in_context"
    needs_frontier = True
    max_tokens = 400
    opening = [{"role": "user", "content": "(The customer has just connected. Greet them.)"}]

    def __init__(self, workflow: Workflow, backend: Backend):
        self.workflow, self.backend = workflow, backend
        self.system = serialise_workflow(workflow)
        self.speaker = getattr(backend, "agent", None) if hasattr(backend, "complete_batch") else None

    def prompt(self, messages: list[dict]) -> list[dict] | None:
        if self.speaker is None:
            return None
        return [{"role": "system", "content": self.system}] + (messages or self.opening)

    def respond(self, messages: list[dict]) -> AgentTurn:
        if self.speaker is not None:
            return super().respond(messages)
        start = time.perf_counter()
        completion = self.backend.complete(Request(system=self.system, messages=messages or self.opening,
                                                   max_tokens=self.max_tokens, temperature=0.0, tag="in_context",
                                                   tools=tool_schemas(self.workflow)))
        u = completion.usage
        return AgentTurn(completion.text.strip(), u.input_tokens + u.cache_read_tokens + u.cache_write_tokens,
                         u.output_tokens, time.perf_counter() - start, completion.dollars)

    def turn(self, messages, chat, text, seconds) -> AgentTurn:
        prompt, completion = count_tokens(self.speaker.tokenizer, chat, text)
        dollars = Usage(input_tokens=prompt, output_tokens=completion).dollars(self.backend.priced_as)
        return AgentTurn(text, prompt, completion, seconds, dollars)
