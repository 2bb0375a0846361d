"""Simulation: a simulated customer talks to each condition over the same evaluation scenarios.

The customer (:class:`OfflineUser`, or :class:`LLMUser` on a real backend) sees only its
scenario and persona, never the flowchart's state. Each *condition* is a small class whose
:meth:`~Condition.respond` writes the next agent turn:

- :class:`Subterranean` — the compiled model with the one-line system prompt, nothing else;
- :class:`Orchestrated` — a graph controller that tracks the current node, routes at decision
  hubs and injects the node's prompt every turn, speaking through the same small model (or,
  offline, through the workflow's own examples);
- :class:`InContext` — a frontier model with the whole workflow serialised in its system prompt;
- ``langgraph`` — a frontier model in a LangGraph ``StateGraph`` (see :mod:`subterra.langgraph_agent`).

:func:`simulate` runs every scenario against every condition, resumably, and stores the
transcripts — turns, per-turn latency, tokens, dollars, stop reason and a conformance
trace — one ``datasets`` corpus per condition.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path as FilePath
from typing import Any, Iterable

from .backends import PRICES, Backend, ModelNotFound, Request, Usage, approx_tokens
from .conformance import NodeMatcher, conformance
from .paths import Path, enumerate_paths
from .scenarios import Scenario, sample_scenario
from .store import append_jsonl, read_jsonl, save_dataset
from .synthesis import offline_turn
from .workflow import SLOT, SLOT_NAME, Workflow, render

STOP = "<<END>>"           # what a simulated customer says to end the conversation
N_SCENARIOS = 200          # per domain and condition, as in the paper


# --------------------------------------------------------------------------- evaluation scenarios

def evaluation_scenarios(workflow: Workflow, n: int = N_SCENARIOS, seed: int = 0) -> list[Scenario]:
    """``n`` scenarios with held-out values, identical for every condition (paired by id)."""
    paths = enumerate_paths(workflow)
    rng = random.Random(f"evaluation:{workflow.name}:{seed}")
    order = list(range(len(paths)))
    rng.shuffle(order)
    chosen = [paths[order[i % len(paths)]] for i in range(n)]
    return [sample_scenario(workflow, path, f"evaluation-{seed}", f"{workflow.name}-eval-{i:03d}", held_out=True)
            for i, path in enumerate(chosen)]


# --------------------------------------------------------------------------- what the customer knows

def extract_values(workflow: Workflow, text: str) -> dict[str, Any]:
    """Scenario values that ``text`` mentions, by variable: what a listener could pick up."""
    found: dict[str, Any] = {}
    lowered = text.lower()
    for name in workflow.variables:
        hits = [v for v in workflow.values_of(name) if re.search(rf"(?<![\w.]){re.escape(str(v).lower())}(?![\w])", lowered)]
        if hits:
            found[name] = max(hits, key=lambda v: (lowered.rfind(str(v).lower()), len(str(v))))
    for table, records in workflow.catalogue.items():
        for record in records:
            first = str(next(iter(record.values())))
            if first.lower() in lowered:
                found[table] = record
    return found


# --------------------------------------------------------------------------- the simulated customer

@dataclass
class UserTurn:
    text: str
    stop: bool = False
    reason: str = ""
    challenge: bool = False
    usage: Usage = field(default_factory=Usage)


NOT_UNDERSTOOD = "Sorry, I'm not sure what you mean. Could you say that again?"
OFF_TOPIC = ("By the way, is your office open on weekends?", "Quick question first: do you have an app for this?",
             "Sorry, unrelated, but can I get this in writing later?", "Before we go on, is this call recorded?")
PARTIAL = ("Hmm, I'm not sure about all of that yet.", "Let me think... I can tell you part of it.")


class OfflineUser:
    """A scripted customer: reads the agent's last message and answers as its scenario's customer would.

    It recognises what the agent is doing from the workflow's *agent examples* (nearest example,
    values masked), then answers with the user node that follows it — the one its scenario's plan
    calls for, else one whose condition its scenario satisfies. Personas add challenges: an
    off-topic question, a partial answer, or correcting a value the agent got wrong. It says
    :data:`STOP` after the agent's closing message, and gives up on loops and long conversations.
    A message too far from every agent example (cosine below ``min_score``) is not understood.
    """

    min_score = 0.2

    def __init__(self, workflow: Workflow, scenario: Scenario, path: Path, seed: int = 0, max_turns: int = 60):
        self.workflow, self.scenario, self.path = workflow, scenario, path
        self.matcher = NodeMatcher(workflow, role="agent")
        self.plan = [n for n in path.nodes if workflow.nodes[n].role == "user"]
        self.step = 0                          # how far along its plan the customer is
        self.rng = random.Random(f"user:{seed}:{scenario.id}")
        self.max_turns = max_turns
        self.challenged = False
        self.seen: list[str] = []

    def respond(self, messages: list[dict]) -> UserTurn:
        agent_text = messages[-1]["content"] if messages else ""
        self.seen.append(agent_text)
        if len(messages) >= self.max_turns:
            return UserTurn(STOP, stop=True, reason="turn_limit")
        if self.seen.count(agent_text) >= 3:
            return UserTurn(STOP, stop=True, reason="loop")
        match = self.matcher.match(agent_text, self.scenario.values)
        if match.score < self.min_score:
            return UserTurn(NOT_UNDERSTOOD)
        node = match.node
        if self.workflow.nodes[node].is_terminal:
            return UserTurn(STOP, stop=True, reason=f"terminal:{self.workflow.nodes[node].terminal}")
        wrong = self._wrong_value(agent_text)
        if wrong and self.scenario.persona.challenge == "corrects_value":
            name, value = wrong
            return UserTurn(f"Sorry, that's not right: the {name.replace('_', ' ')} is {value}.", challenge=True)
        challenge = self._challenge()
        if challenge:
            return challenge
        reply_node = self._next_user_node(node)
        if reply_node is None:
            return UserTurn(NOT_UNDERSTOOD)
        text = offline_turn(self.workflow, reply_node, self.scenario, False, self.rng)
        ending = self.workflow.nodes[reply_node].terminal
        if ending:                                   # the customer's own last word (e.g. walking away)
            return UserTurn(text, stop=True, reason=f"terminal:{ending}")
        return UserTurn(text)

    def _next_user_node(self, agent_node: str) -> str | None:
        successors = self.workflow.successors(agent_node)
        targets = [e.target for e in successors]
        for k in range(self.step, len(self.plan)):
            if self.plan[k] in targets:
                self.step = k + 1
                return self.plan[k]
        allowed = [e.target for e in successors if e.check is None or e.check.evaluate(self.scenario.values)]
        return allowed[0] if allowed else None

    def _wrong_value(self, text: str) -> tuple[str, Any] | None:
        heard = extract_values(self.workflow, text)
        for name, value in heard.items():
            mine = self.scenario.values.get(name)
            if name in self.workflow.variables and mine is not None and str(value) != str(mine) \
                    and str(mine).lower() not in text.lower():
                return name, mine
        return None

    def _challenge(self) -> UserTurn | None:
        style = self.scenario.persona.challenge
        if self.challenged or style not in ("off_topic", "partial_answers") or self.rng.random() > 0.35:
            return None
        self.challenged = True
        return UserTurn(self.rng.choice(OFF_TOPIC if style == "off_topic" else PARTIAL), challenge=True)


ROLE_PLAY = """You are role-playing a customer talking to a {title} assistant. Stay in character; never \
mention that you are simulated. Your situation (use these facts exactly, reveal them naturally when asked):
{facts}
You are {persona}. Your goal in this conversation: {goal}
Reply with only your next message. When the conversation has reached its end (your request is done, \
handed over or abandoned), reply with exactly {stop}."""


class LLMUser:
    """A customer role-played by a model from the scenario and persona only (never the flowchart)."""

    def __init__(self, workflow: Workflow, scenario: Scenario, path: Path, backend: Backend, max_turns: int = 60):
        from .synthesis import _facts

        end = workflow.nodes[path.nodes[-1]]
        goal = {"success": "get your request completed", "abandonment": "you will end up not going ahead",
                "escalation": "you will end up wanting a human colleague"}[end.terminal]
        self.system = ROLE_PLAY.format(title=workflow.title.lower(), facts=_facts(scenario.values),
                                       persona=scenario.persona.describe(), goal=goal, stop=STOP)
        self.backend, self.max_turns, self.scenario = backend, max_turns, scenario

    def respond(self, messages: list[dict]) -> UserTurn:
        if len(messages) >= self.max_turns:
            return UserTurn(STOP, stop=True, reason="turn_limit")
        # the customer's view: the agent's turns are "user" messages to the role-playing model
        flipped = [{"role": "user" if m["role"] == "assistant" else "assistant", "content": m["content"]}
                   for m in messages] or [{"role": "user", "content": "(the assistant is waiting for you)"}]
        completion = self.backend.complete(Request(system=self.system, messages=flipped, max_tokens=200,
                                                   temperature=0.7, tag="simulator", sample=self.scenario.id))
        text = completion.text.strip()
        if STOP in text:
            return UserTurn(STOP, stop=True, reason="user_ended", usage=completion.usage)
        return UserTurn(text, usage=completion.usage)


# --------------------------------------------------------------------------- conditions

@dataclass
class AgentTurn:
    text: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    dollars: float
    node: str | None = None      # the node an orchestrator put this turn at (None: no controller)


class Condition:
    """A system under test: one method, the next agent turn from the conversation so far."""

    name = "condition"
    needs_frontier = False

    def respond(self, messages: list[dict]) -> AgentTurn:
        raise NotImplementedError

    def reset(self, scenario: Scenario) -> None:
        """Called before each conversation (controllers forget their state)."""


def count_tokens(tokenizer, chat: list[dict], reply: str) -> tuple[int, int]:
    """(prompt, completion) tokens of one small-model turn: the templated chat, and the reply plus its end token."""
    prompt = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    return (len(tokenizer(prompt, add_special_tokens=False)["input_ids"]),
            len(tokenizer(reply, add_special_tokens=False)["input_ids"]) + 1)


def self_hosted_dollars(prompt_tokens: int, completion_tokens: int) -> float:
    """A self-hosted small model priced per GPU-hour as in the paper (A100 at $2.50/h)."""
    price = PRICES["self-hosted"]
    return (prompt_tokens * price.input + completion_tokens * price.output) / 1e6


class Subterranean(Condition):
    """The compiled model: the one-line system prompt and the conversation, no graph at run time."""

    name = "subterranean"

    def __init__(self, agent, workflow: Workflow):
        self.agent, self.workflow = agent, workflow

    def respond(self, messages: list[dict]) -> AgentTurn:
        chat = [{"role": "system", "content": self.workflow.system_prompt}] + messages
        start = time.perf_counter()
        text = self.agent.reply(chat)
        seconds = time.perf_counter() - start
        tok = self.agent.tokenizer
        prompt, completion = count_tokens(tok, chat, text)
        return AgentTurn(text, prompt, completion, seconds, self_hosted_dollars(prompt, completion))


class Orchestrated(Condition):
    """A graph controller around a speaker: tracks the node, routes at hubs, injects the node prompt.

    Routing reads only the conversation: the customer's reply is classified among the user nodes
    that can follow the current agent node (nearest example), and where several agent nodes can
    follow it the edge whose ``check`` holds for the values heard so far is taken. The speaker is
    the small model (``agent``) with the node's prompt added to its system prompt, or — with no
    model — the workflow's own example for that node, filled with the values heard so far.
    """

    name = "orchestrated"

    def __init__(self, workflow: Workflow, agent=None, seed: int = 0):
        self.workflow, self.agent, self.seed = workflow, agent, seed
        self.user_matcher = NodeMatcher(workflow, role="user")
        self.node: str | None = None

    def reset(self, scenario: Scenario) -> None:
        self.node, self.scenario_id = None, scenario.id

    def route(self, messages: list[dict]) -> str:
        wf = self.workflow
        if self.node is None:
            return wf.start
        heard = extract_values(wf, " ".join(m["content"] for m in messages))
        reply = messages[-1]["content"] if messages else ""
        users = [e.target for e in wf.successors(self.node)]
        user_node = self.user_matcher.match(reply, heard, users).node if users else self.node
        options = wf.successors(user_node) if wf.nodes[user_node].role == "user" else wf.successors(self.node)
        for edge in options:
            if edge.check is not None and edge.check.names <= set(heard) and _safe(edge.check, heard):
                return edge.target
        unconditioned = [e.target for e in options if e.check is None]
        return (unconditioned or [e.target for e in options] or [self.node])[0]

    def respond(self, messages: list[dict]) -> AgentTurn:
        start = time.perf_counter()
        self.node = self.route(messages)
        node = self.workflow.nodes[self.node]
        heard = extract_values(self.workflow, " ".join(m["content"] for m in messages))
        if self.agent is None:
            rng = random.Random(f"orchestrated:{self.seed}:{self.scenario_id}:{len(messages)}")
            text = _render_known(rng.choice(node.examples), heard)
            words = len(self.workflow.system_prompt.split()) + len(node.prompt.split()) + sum(
                len(m["content"].split()) for m in messages)
            prompt, completion = approx_tokens(words), approx_tokens(len(text.split()))
        else:
            system = f"{self.workflow.system_prompt}\nCurrent step: {_render_known(node.prompt, heard)}"
            chat = [{"role": "system", "content": system}] + messages
            text = self.agent.reply(chat)
            tok = self.agent.tokenizer
            prompt, completion = count_tokens(tok, chat, text)
        return AgentTurn(text, prompt, completion, time.perf_counter() - start,
                         self_hosted_dollars(prompt, completion), node=self.node)


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
        lines.append(f"- {node.id} ({who}): {node.prompt}{end}")
        for edge in workflow.successors(node.id):
            lines.append(f"    -> {edge.target}" + (f" if {edge.when}" if edge.when else ""))
    for table, records in workflow.catalogue.items():
        lines.append(f"\nReference: {table}")
        lines += ["- " + "; ".join(f"{k}: {v}" for k, v in r.items()) for r in records]
    lines.append(f"\nStart at {workflow.start}. Speak only as the assistant; never mention step names.")
    return "\n".join(lines)


class InContext(Condition):
    """A frontier model with the whole workflow serialised into its system prompt (the quality ceiling)."""

    name = "in_context"
    needs_frontier = True

    def __init__(self, workflow: Workflow, backend: Backend):
        self.workflow, self.backend = workflow, backend
        self.system = serialise_workflow(workflow)

    def respond(self, messages: list[dict]) -> AgentTurn:
        chat = messages or [{"role": "user", "content": "(The customer has just connected. Greet them.)"}]
        start = time.perf_counter()
        completion = self.backend.complete(Request(system=self.system, messages=chat, max_tokens=400,
                                                   temperature=0.0, tag="in_context"))
        u = completion.usage
        return AgentTurn(completion.text.strip(), u.input_tokens + u.cache_read_tokens + u.cache_write_tokens,
                         u.output_tokens, time.perf_counter() - start, completion.dollars)


# --------------------------------------------------------------------------- running conversations

@dataclass
class Transcript:
    condition: str
    scenario_id: str
    path_id: str
    messages: list[dict]
    turn_seconds: list[float]
    prompt_tokens: list[int]
    completion_tokens: list[int]
    dollars: float
    stop_reason: str
    challenged: bool
    trace_nodes: list[str]
    valid_path: bool
    right_ending: bool
    scenario: str                          # JSON
    error: str | None = None

    @property
    def agent_turns(self) -> int:
        return len(self.turn_seconds)


def converse(condition: Condition, user, workflow: Workflow, scenario: Scenario, path: Path,
             max_turns: int = 60) -> Transcript:
    """One conversation between ``condition`` and ``user``, agent first if the workflow starts with it."""
    condition.reset(scenario)
    messages: list[dict] = []
    seconds, prompts, completions = [], [], []
    dollars, reason, challenged, error = 0.0, "turn_limit", False, None
    agent_first = workflow.nodes[workflow.start].role == "agent"
    try:
        while len(messages) < max_turns:
            if agent_first or messages:
                turn = condition.respond(messages)
                messages.append({"role": "assistant", "content": turn.text})
                seconds.append(turn.seconds)
                prompts.append(turn.prompt_tokens)
                completions.append(turn.completion_tokens)
                dollars += turn.dollars
            reply = user.respond(messages)
            challenged |= reply.challenge
            if reply.text != STOP:
                messages.append({"role": "user", "content": reply.text})
            if reply.stop:
                reason = reply.reason
                break
    except ModelNotFound:     # a setting to fix, not this conversation's failure: stop the run, record nothing
        raise
    except Exception as exc:  # recorded per conversation, never silently dropped
        reason, error = "error", f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    expected = workflow.nodes[path.nodes[-1]].terminal
    trace = conformance(workflow, messages, scenario.values, expected) if messages else None
    return Transcript(condition=condition.name, scenario_id=scenario.id, path_id=path.id, messages=messages,
                      turn_seconds=seconds, prompt_tokens=prompts, completion_tokens=completions, dollars=dollars,
                      stop_reason=reason, challenged=challenged, trace_nodes=trace.nodes if trace else [],
                      valid_path=bool(trace and trace.valid_path), right_ending=bool(trace and trace.right_ending),
                      scenario=scenario.to_json(), error=error)


def simulate(workflow: Workflow, conditions: Iterable[Condition], out_dir: str | FilePath, n: int = N_SCENARIOS,
             seed: int = 0, simulator: Backend | None = None, max_turns: int = 60,
             progress: bool = True) -> dict[str, list[dict]]:
    """Run every condition on the same ``n`` evaluation scenarios; resumable per conversation.

    Writes ``out_dir/<condition>/transcripts.jsonl`` (one synced line per finished conversation)
    and, when a condition is complete, ``out_dir/<condition>/corpus`` (a ``datasets.Dataset``).
    ``simulator`` is a backend for an :class:`LLMUser`; ``None`` uses the :class:`OfflineUser`.
    """
    from datasets import Dataset
    from tqdm.auto import tqdm

    out_dir = FilePath(out_dir)
    scenarios = evaluation_scenarios(workflow, n, seed)
    paths = {p.id: p for p in enumerate_paths(workflow)}
    results: dict[str, list[dict]] = {}
    for condition in conditions:
        folder = out_dir / condition.name
        folder.mkdir(parents=True, exist_ok=True)
        jsonl = folder / "transcripts.jsonl"
        done = read_jsonl(jsonl, "scenario_id")
        todo = [s for s in scenarios if s.id not in done]
        with open(jsonl, "a", encoding="utf-8") as f:
            for scenario in tqdm(todo, desc=f"{workflow.name} · {condition.name}", unit="conversation",
                                 disable=not progress, initial=len(done), total=len(scenarios)):
                path = paths[scenario.path_id]
                user = (OfflineUser(workflow, scenario, path, seed, max_turns) if simulator is None
                        else LLMUser(workflow, scenario, path, simulator, max_turns))
                row = asdict(converse(condition, user, workflow, scenario, path, max_turns))
                append_jsonl(f, row)
                done[scenario.id] = row
        rows = [done[s.id] for s in scenarios]
        save_dataset(Dataset.from_list(rows), folder / "corpus")
        results[condition.name] = rows
    return results


def load_transcripts(out_dir: str | FilePath, condition: str):
    from datasets import load_from_disk

    return load_from_disk(str(FilePath(out_dir) / condition / "corpus"))


CONDITIONS = ("subterranean", "orchestrated", "langgraph", "in_context")


def follows_instructions(model_dir: str | FilePath) -> bool:
    """False for a model :func:`subterra.training.train` built from scratch: it never saw an instruction."""
    from .recipes import SCRATCH
    from .training import read_training_record

    record = read_training_record(model_dir)
    return not (record and record["recipe"].get("model_name_or_path") in (SCRATCH, "", None))


def build_conditions(names: Iterable[str], workflow: Workflow, model_dir: str | FilePath | None = None,
                     frontier: Backend | None = None, seed: int = 0,
                     orchestrated_speaker: str = "auto") -> tuple[list[Condition], list[str]]:
    """Conditions by name, and a message for each one that cannot run here (and is skipped).

    ``orchestrated_speaker``: ``model`` puts the small model under the controller (the paper's
    same-model orchestrator); ``offline`` has the controller speak each node's own examples;
    ``auto`` picks ``model`` unless the model was trained from scratch, since such a model has
    never seen a node prompt and cannot follow one.
    """
    if orchestrated_speaker not in ("auto", "model", "offline"):
        raise ValueError(f"orchestrated_speaker must be auto, model or offline; got {orchestrated_speaker!r}")
    agent = None
    if model_dir is not None:
        from .agent import Agent

        agent = Agent(model_dir)
    speaker = agent
    if orchestrated_speaker == "offline" or (orchestrated_speaker == "auto" and model_dir is not None
                                             and not follows_instructions(model_dir)):
        speaker = None
    conditions, skipped = [], []
    for name in names:
        if name not in CONDITIONS:
            raise ValueError(f"unknown condition {name!r} (choose from {', '.join(CONDITIONS)})")
        if name == "subterranean":
            if agent is None:
                skipped.append("subterranean: needs a compiled model (--model DIR from `subterra train`)")
            else:
                conditions.append(Subterranean(agent, workflow))
        elif name == "orchestrated":
            conditions.append(Orchestrated(workflow, speaker, seed))
        elif frontier is None:
            skipped.append(f"{name}: needs a frontier model; set ANTHROPIC_API_KEY (or OPENAI_API_KEY) to run it")
        elif name == "in_context":
            conditions.append(InContext(workflow, frontier))
        else:
            try:
                from .langgraph_agent import LangGraphCondition
            except ImportError:
                skipped.append("langgraph: install the extra with pip install -e '.[langgraph]'")
                continue
            conditions.append(LangGraphCondition(workflow, frontier))
    return conditions, skipped


def load_run(out_dir: str | FilePath) -> dict[str, list[dict]]:
    """Transcripts of every condition in a :func:`simulate` output folder, by condition."""
    out_dir = FilePath(out_dir)
    runs: dict[str, list[dict]] = {}
    if not out_dir.is_dir():
        return runs
    for name in CONDITIONS + tuple(sorted(p.name for p in out_dir.iterdir() if p.is_dir())):
        if name not in runs and (out_dir / name / "corpus").exists():
            runs[name] = [dict(row) for row in load_transcripts(out_dir, name)]
    return runs
