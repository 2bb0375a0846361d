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

from .agent import count_tokens
from .backends import PRICES, Backend, ModelNotFound, Request, Usage, approx_tokens
from .conformance import conformance, extract_values, lookups, read_reply, slot_names
from .customer import LEAVING, STOP, LLMUser, OfflineUser, UserTurn
from .paths import Path, back_edges, enumerate_paths
from .scenarios import Scenario, sample_scenario
from .store import append_jsonl, read_jsonl, save_dataset
from .workflow import SLOT, SLOT_NAME, Workflow

# The customer (OfflineUser, LLMUser, STOP) lives in .customer and what a listener hears in .conformance;
# both are imported here too, as the simulation's vocabulary.
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

    def known(self, messages: list[dict]) -> dict[str, Any]:
        """What the controller may use: values the customer said (later mentions win) and look-ups."""
        said = extract_values(self.workflow, "\n".join(m["content"] for m in messages if m["role"] == "user"))
        said = {k: v for k, v in said.items() if k not in self.lookups}
        return {**said, **{k: v for k, v in self.scenario.values.items() if k in self.lookups}}

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
        return self.choose(reading.node, known)

    def choose(self, source: str, known: dict[str, Any]) -> str:
        """The next agent step after ``source``: a check that holds, else a loop not yet taken, else the first."""
        wf = self.workflow
        options = [e for e in wf.successors(source) if wf.nodes[e.target].role == "agent"] or wf.successors(source)
        if not options:
            return self.node or wf.start
        chosen = next((e for e in options if e.check is not None and e.check.names <= set(known)
                       and _safe(e.check, known)), None)
        if chosen is None:
            open_ = [e for e in options if e.check is None and (e.source, e.target) not in self.taken]
            chosen = (open_ or [e for e in options if e.check is None] or options)[0]
        self.taken.add((chosen.source, chosen.target))
        return chosen.target

    def prompt(self, messages: list[dict]) -> list[dict] | None:
        self.heard = self.known(messages)               # once per turn: the script and the prompt reuse it
        self.node = self.route(messages, self.heard)
        if self.agent is None:
            return None                           # the script speaks: no model call
        return [{"role": "system", "content": self.system_prompt(self.heard)}] + messages

    def turn(self, messages, chat, text, seconds) -> AgentTurn:
        start = time.perf_counter()
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

    def choose(self, source: str, known: dict[str, Any]) -> str:
        targets = {e.target for e in self.workflow.successors(source)}
        for k in range(self.at, len(self.plan) - 1):
            if self.plan[k] == source and self.plan[k + 1] in targets:
                self.at = k + 1
                self.taken.add((source, self.plan[k + 1]))
                return self.plan[k + 1]
        return super().choose(source, known)


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
                                                   max_tokens=self.max_tokens, temperature=0.0, tag="in_context"))
        u = completion.usage
        return AgentTurn(completion.text.strip(), u.input_tokens + u.cache_read_tokens + u.cache_write_tokens,
                         u.output_tokens, time.perf_counter() - start, completion.dollars)

    def turn(self, messages, chat, text, seconds) -> AgentTurn:
        prompt, completion = count_tokens(self.speaker.tokenizer, chat, text)
        dollars = Usage(input_tokens=prompt, output_tokens=completion).dollars(self.backend.priced_as)
        return AgentTurn(text, prompt, completion, seconds, dollars)


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
    label: str = ""                        # who spoke (the condition's label)

    @property
    def agent_turns(self) -> int:
        return len(self.turn_seconds)


class Conversation:
    """One conversation in progress: its own copy of the condition's per-conversation state, the customer,
    the turns so far. :func:`converse` steps one; :func:`simulate` steps many together."""

    def __init__(self, condition: Condition, user, workflow: Workflow, scenario: Scenario, path: Path,
                 max_turns: int = 60):
        self.condition, self.user, self.workflow, self.scenario, self.path = condition, user, workflow, scenario, path
        self.max_turns = max_turns
        condition.reset(scenario)
        self.messages: list[dict] = []
        self.seconds: list[float] = []
        self.prompts: list[int] = []
        self.completions: list[int] = []
        self.dollars, self.reason, self.challenged, self.error = 0.0, "turn_limit", False, None
        self.done = False

    def open(self) -> "Conversation":
        """Start: the customer speaks first where the workflow starts with a customer turn."""
        try:
            if self.workflow.nodes[self.workflow.start].role != "agent":
                self.customer()
        except ModelNotFound:
            raise
        except Exception as exc:  # noqa: BLE001
            self.fail(exc)
        return self

    def agent(self, turn: AgentTurn) -> None:
        """Record the agent's turn, then let the customer answer."""
        self.messages.append({"role": "assistant", "content": turn.text})
        self.seconds.append(turn.seconds)
        self.prompts.append(turn.prompt_tokens)
        self.completions.append(turn.completion_tokens)
        self.dollars += turn.dollars
        self.customer()

    def customer(self) -> None:
        reply = self.user.respond(self.messages)
        self.challenged |= reply.challenge
        if reply.text != STOP:
            self.messages.append({"role": "user", "content": reply.text})
        if reply.stop:
            self.reason, self.done = reply.reason, True
        elif len(self.messages) >= self.max_turns:
            self.done = True

    def fail(self, exc: Exception) -> None:
        """Recorded per conversation, never silently dropped."""
        self.reason, self.error, self.done = "error", f"{type(exc).__name__}: {exc}".splitlines()[0][:300], True

    def transcript(self) -> Transcript:
        workflow, scenario, path = self.workflow, self.scenario, self.path
        expected = workflow.nodes[path.nodes[-1]].terminal
        trace = conformance(workflow, self.messages, scenario.values, expected) if self.messages else None
        return Transcript(condition=self.condition.name, scenario_id=scenario.id, path_id=path.id,
                          messages=self.messages, turn_seconds=self.seconds, prompt_tokens=self.prompts,
                          completion_tokens=self.completions, dollars=self.dollars, stop_reason=self.reason,
                          challenged=self.challenged, trace_nodes=trace.nodes if trace else [],
                          valid_path=bool(trace and trace.valid_path),
                          right_ending=bool(trace and trace.right_ending), scenario=scenario.to_json(),
                          error=self.error, label=self.condition.label)


def converse(condition: Condition, user, workflow: Workflow, scenario: Scenario, path: Path,
             max_turns: int = 60) -> Transcript:
    """One conversation between ``condition`` and ``user``, agent first if the workflow starts with it."""
    talk = Conversation(condition, user, workflow, scenario, path, max_turns).open()
    try:
        while not talk.done:
            talk.agent(condition.respond(talk.messages))
    except ModelNotFound:     # a setting to fix, not this conversation's failure: stop the run, record nothing
        raise
    except Exception as exc:  # noqa: BLE001 - recorded per conversation
        talk.fail(exc)
    return talk.transcript()


def advance(talks: list[Conversation]) -> None:
    """One round: every open conversation gets its next agent turn (and its customer's answer).

    Where the condition speaks through a model, the round's prompts go to one batched
    ``reply_batch``; each conversation's turn latency is that call's wall time plus its own
    bookkeeping — what the customer of that conversation waited, batched with the others.
    """
    pending = []
    for talk in talks:
        try:
            chat = talk.condition.prompt(talk.messages) if _batches(talk.condition) else None
        except ModelNotFound:
            raise
        except Exception as exc:  # noqa: BLE001
            talk.fail(exc)
            continue
        pending.append((talk, chat))
    asked = [(talk, chat) for talk, chat in pending if chat is not None]
    answers, seconds = {}, 0.0
    if asked:
        start = time.perf_counter()
        texts = asked[0][0].condition.speaker.reply_batch([chat for _, chat in asked])
        seconds = time.perf_counter() - start
        answers = {id(talk): text for (talk, _), text in zip(asked, texts)}
    gathered = [talk for talk, _ in pending if _gathers(talk.condition)]
    if gathered:
        turns = _gather(gathered)
    for talk, chat in pending:
        try:
            if talk in gathered:
                turn = turns[id(talk)]
                if isinstance(turn, Exception):
                    raise turn
            elif not _batches(talk.condition):
                turn = talk.condition.respond(talk.messages)
            else:
                turn = talk.condition.turn(talk.messages, chat, answers.get(id(talk)),
                                           seconds if chat is not None else 0.0)
            talk.agent(turn)
        except ModelNotFound:
            raise
        except Exception as exc:  # noqa: BLE001
            talk.fail(exc)


def _gathers(condition: Condition) -> bool:
    """A condition that makes its own calls (LangGraph) to a backend that can gather them into batches."""
    return not _batches(condition) and hasattr(getattr(condition, "backend", None), "gathering")


def _gather(talks: list[Conversation]) -> dict[int, AgentTurn | Exception]:
    """Each conversation's :meth:`Condition.respond` in a thread of its own, their model calls gathered into
    batches (:meth:`~subterra.backends.local.LocalBackend.gathering`); a turn's seconds are its own wait."""
    from concurrent.futures import ThreadPoolExecutor

    def respond(talk: Conversation) -> AgentTurn | Exception:
        try:
            return talk.condition.respond(talk.messages)
        except ModelNotFound:
            raise
        except Exception as exc:  # noqa: BLE001 - recorded per conversation by advance
            return exc

    with talks[0].condition.backend.gathering(len(talks)) as gathering, ThreadPoolExecutor(len(talks)) as pool:
        futures = {id(talk): pool.submit(gathering.run, respond, talk) for talk in talks}
        return {key: future.result() for key, future in futures.items()}


def _batches(condition: Condition) -> bool:
    """A condition whose turns can share a batched generate: it speaks through a model and splits its turn."""
    return condition.batched and condition.speaker is not None


def simulate(workflow: Workflow, conditions: Iterable[Condition], out_dir: str | FilePath, n: int = N_SCENARIOS,
             seed: int = 0, simulator: Backend | None = None, max_turns: int = 60,
             progress: bool = True, batch_size: int = 32,
             sizes: dict[str, int] | None = None) -> dict[str, list[dict]]:
    """Run every condition on the same ``n`` evaluation scenarios; resumable per conversation.

    Up to ``batch_size`` conversations of a condition advance together, round by round, so that a
    small model answers them with one batched ``generate`` per round (``batch_size=1``: one at a
    time). A conversation is written when it ends: ``out_dir/<condition>/transcripts.jsonl`` gets one
    synced line per finished conversation, and a killed run resumes with the ones not written, from
    their start. When a condition is complete, ``out_dir/<condition>/corpus`` holds them as a
    ``datasets.Dataset``. ``simulator`` is a backend for an :class:`LLMUser`; ``None`` uses the
    :class:`OfflineUser`. ``sizes`` runs some conditions on fewer scenarios (the first ``sizes[name]``
    of the same list, so every pair is still a pair), e.g. a slow stand-in.
    """
    import copy

    from datasets import Dataset
    from tqdm.auto import tqdm

    out_dir = FilePath(out_dir)
    scenarios = evaluation_scenarios(workflow, n, seed)
    paths = {p.id: p for p in enumerate_paths(workflow)}
    results: dict[str, list[dict]] = {}
    for condition in conditions:
        mine = scenarios[:min(n, (sizes or {}).get(condition.name, n))]
        folder = out_dir / condition.name
        folder.mkdir(parents=True, exist_ok=True)
        jsonl = folder / "transcripts.jsonl"
        done = read_jsonl(jsonl, "scenario_id")
        todo = [s for s in mine if s.id not in done]
        width = max(1, batch_size if _batches(condition) or _gathers(condition) else 1)

        def start(scenario: Scenario) -> Conversation:
            path = paths[scenario.path_id]
            user = (OfflineUser(workflow, scenario, path, seed, max_turns) if simulator is None
                    else LLMUser(workflow, scenario, path, simulator, max_turns))
            return Conversation(copy.copy(condition), user, workflow, scenario, path, max_turns).open()

        with open(jsonl, "a", encoding="utf-8") as f, \
                tqdm(desc=f"{workflow.name} · {condition.name}", unit="conversation", disable=not progress,
                     initial=len(mine) - len(todo), total=len(mine)) as bar:
            queue, talks = list(todo), []
            while queue or talks:
                while queue and len(talks) < width:
                    talks.append(start(queue.pop(0)))
                advance([t for t in talks if not t.done])
                for talk in [t for t in talks if t.done]:
                    row = asdict(talk.transcript())
                    append_jsonl(f, row)
                    done[talk.scenario.id] = row
                    talks.remove(talk)
                    bar.update()
        rows = [done[s.id] for s in mine]
        save_dataset(Dataset.from_list(rows), folder / "corpus")
        results[condition.name] = rows
    return results


def load_transcripts(out_dir: str | FilePath, condition: str):
    from datasets import load_from_disk

    return load_from_disk(str(FilePath(out_dir) / condition / "corpus"))


CONDITIONS = ("subterranean", "orchestrated", "langgraph", "in_context", "oracle")


def follows_instructions(model_dir: str | FilePath) -> bool:
    """False for a model :func:`subterra.training.train` built from scratch: it never saw an instruction."""
    return base_of(model_dir) is not None


def base_of(model_dir: str | FilePath) -> str | None:
    """The pretrained model a compiled model was fine-tuned from (itself, for a model trained elsewhere);
    None for a model built from scratch, which has no base to compare it with."""
    from .recipes import SCRATCH
    from .training import read_training_record

    record = read_training_record(model_dir)
    if record is None:
        return str(model_dir)
    base = record["recipe"].get("model_name_or_path")
    return None if base in (SCRATCH, "", None) else str(base)


SPEAKERS = ("auto", "base", "model", "offline")


def build_conditions(names: Iterable[str], workflow: Workflow, model_dir: str | FilePath | None = None,
                     frontier: Backend | None = None, seed: int = 0, orchestrated_speaker: str = "auto",
                     stand_in: bool = True) -> tuple[list[Condition], list[str]]:
    """Conditions by name, and a message for each one that cannot run here (and is skipped).

    ``orchestrated_speaker``: ``base`` puts the compiled model's *base* model under the controller —
    the paper's same-model orchestrator, the small model before compilation; ``model`` the compiled
    model itself; ``offline`` the script (each node's own example sentences, a ceiling rather than a
    baseline); ``auto`` is ``base``, or the script for a model trained from scratch (it has no base,
    and has never seen a node prompt).

    With no ``frontier`` backend (no key), ``in_context`` and ``langgraph`` run on a
    :class:`~subterra.backends.local.LocalBackend` with the same base model standing in for the
    frontier model, priced at the frontier model's list prices (``stand_in=False`` skips them
    instead). Each condition's ``label`` says who speaks.
    """
    from .backends import DEFAULT_MODELS

    if orchestrated_speaker not in SPEAKERS:
        raise ValueError(f"orchestrated_speaker must be one of {', '.join(SPEAKERS)}; got {orchestrated_speaker!r}")
    names = list(names)
    agent = base_agent = None
    base = base_of(model_dir) if model_dir is not None else None
    if model_dir is not None:
        from .agent import Agent

        agent = Agent(model_dir)
    needs_base = (orchestrated_speaker in ("auto", "base") and "orchestrated" in names) or \
        (frontier is None and stand_in and {"in_context", "langgraph"} & set(names))
    if base is not None and needs_base:
        from .agent import Agent

        base_agent = agent if str(base) == str(model_dir) else Agent(base)
    speaker = {"auto": base_agent, "base": base_agent, "model": agent, "offline": None}[orchestrated_speaker]
    if orchestrated_speaker == "base" and base_agent is None and model_dir is not None:
        raise ValueError(f"{model_dir}: trained from scratch, so it has no base model to orchestrate; "
                         "choose orchestrated_speaker model or offline")
    if frontier is None and stand_in and base_agent is not None:
        from .backends.local import LocalBackend

        frontier = LocalBackend(base, priced_as=DEFAULT_MODELS["anthropic"], agent=base_agent)
    conditions, skipped = [], []
    for name in names:
        if name not in CONDITIONS:
            raise ValueError(f"unknown condition {name!r} (choose from {', '.join(CONDITIONS)})")
        if name == "subterranean":
            if agent is None:
                skipped.append("subterranean: needs a compiled model (--model DIR from `subterra train`)")
                continue
            condition = Subterranean(agent, workflow)
            condition.label = f"compiled {model_dir}"
        elif name == "orchestrated":
            condition = Orchestrated(workflow, speaker, seed)
            condition.label = ("script (the workflow's own sentences)" if speaker is None else
                               f"base {base} under the controller" if speaker is base_agent else
                               f"compiled {model_dir} under the controller")
        elif name == "oracle":
            condition = Oracle(workflow, seed)
            condition.label = "oracle (the harness's calibration)"
        elif frontier is None:
            skipped.append(f"{name}: needs a frontier model; set ANTHROPIC_API_KEY (or OPENAI_API_KEY) to run it")
            continue
        else:
            if name == "in_context":
                condition = InContext(workflow, frontier)
            else:
                try:
                    from .langgraph_agent import LangGraphCondition
                except ImportError:
                    skipped.append("langgraph: install the extra with pip install -e '.[langgraph]'")
                    continue
                condition = LangGraphCondition(workflow, frontier)
            priced = getattr(frontier, "priced_as", None)
            condition.label = (f"stand-in {frontier.model} for {priced} (no key)" if priced and priced != frontier.model
                               else f"{frontier.name} {frontier.model}")
        conditions.append(condition)
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
