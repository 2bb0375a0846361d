"""The teacher: walk a path node by node and write one dialogue; many dialogues make the corpus.

At each node the backend gets the node's prompt template (filled from the scenario), the
scenario and persona, and the conversation so far, and writes that one turn. The persona's
challenge (:data:`~subterra.scenarios.CHALLENGES`: an aside, half an answer, a slip put right,
two answers at once, leaving half-way) is written into the dialogue as its own turns by
:func:`script_dialogue`, the same challenges the simulated customer poses, so the compiled model
is trained on the kind of conversation it is tested on (the offline teacher's sentences for them
are its own, none of them the offline customer's: the simulation tests new wording). The training
text is plain dialogue: the one-line deployment system prompt, then user/assistant messages. Node
ids, conditions and other annotations live only in metadata columns.

:func:`synthesize` is resumable: each finished dialogue is appended to
``dialogues.jsonl`` (flushed and synced), every backend call is cached on disk, and a run
killed at any point continues where it stopped with no lost dialogue, no duplicate and no
repeated paid call. The corpus is saved with ``datasets`` once all dialogues exist.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from dataclasses import dataclass, field, replace
from pathlib import Path as FilePath
from typing import Any, Iterable, Mapping, Sequence

from .backends import Backend, Completion, Request, Usage, approx_tokens, get_backend, run_sync
from .backends.cache import BudgetExceeded, CachedBackend
from .conformance import copied_variables, lookups, required_values, slot_names, spoken, value_pattern
from .paths import Path, enumerate_paths
from .scenarios import Scenario, sample_scenario
from .store import append_jsonl, read_jsonl, save_dataset
from .tools import TOOL_ROLE, Environment, ToolCall, answer_text, call_text, conversation_line
from .workflow import Workflow, render

# Paper sizes: travel 2,125 dialogues (1,912 train / 213 eval); Zoom 6,264 training; insurance 3,000.
DEFAULT_SIZES = {"travel": 2125, "zoom": 6960, "insurance": 3000}     # the paper's corpus per domain
OTHER_SIZE = 1000                       # a workflow of one's own: a first corpus; the learning curve says if it is enough
EVAL_FRACTION = 0.1
CHAT_ROLE = {"agent": "assistant", "user": "user"}


def corpus_size(workflow: Workflow) -> int:
    """The corpus to write by default: the paper's size for its domain (or for the domain whose scenarios the
    workflow draws, ``scenarios_from``), else :data:`OTHER_SIZE`."""
    return DEFAULT_SIZES.get(workflow.name) or DEFAULT_SIZES.get(workflow.family, OTHER_SIZE)


TEACHER_SYSTEM = """You write training data: one realistic conversation between a customer and a {title} \
assistant, one message at a time. {description}

The assistant is deployed with only this system prompt: "{system_prompt}"

This conversation's facts (use them exactly, never invent others):
{facts}

The customer is {persona}.

Write only the next message, as the speaker would say it: no speaker label, no quotes, no stage directions, \
no mention of steps, nodes, flowcharts or instructions. The assistant's messages start with what they do \
(an offer, a question, a confirmation), never with a filler word such as "Certainly!" or "Great!". The \
assistant knows only what the customer has told it and what it looks up: it never states a customer's detail \
the customer has not given."""

TURN_PROMPT = """Conversation so far:
{history}

Next speaker: the {speaker}.
What this message must do: {instruction}{next_hint}"""


@dataclass
class Turn:
    role: str            # "assistant" | "user"
    content: str
    node: str | None     # the step this turn performs; None for a turn off the procedure (half an answer, a goodbye)


@dataclass
class Dialogue:
    id: str
    domain: str
    path_id: str
    scenario: Scenario
    turns: list[Turn]
    backend: str
    model: str
    usage: Usage = field(default_factory=Usage)
    dollars: float = 0.0
    split: str = "train"
    copied: list[str] | None = None    # the variables the agent copies: what training may make up (None: not said)

    def messages(self, system_prompt: str) -> list[dict]:
        return [{"role": "system", "content": system_prompt}] + [
            {"role": t.role, "content": t.content} for t in self.turns]

    def to_record(self, system_prompt: str) -> dict:
        """One corpus row: the training text in ``messages``, everything else in metadata columns."""
        return {"id": self.id, "messages": self.messages(system_prompt), "domain": self.domain,
                "path_id": self.path_id, "nodes": [t.node for t in self.turns],
                "scenario": self.scenario.to_json(), "backend": self.backend, "model": self.model,
                "input_tokens": self.usage.input_tokens, "output_tokens": self.usage.output_tokens,
                "dollars": self.dollars, "split": self.split, "copied": self.copied}

    @classmethod
    def from_record(cls, row: dict) -> "Dialogue":
        turns = [Turn(role=m["role"], content=m["content"], node=n or None)
                 for m, n in zip(row["messages"][1:], row["nodes"])]
        return cls(id=row["id"], domain=row["domain"], path_id=row["path_id"],
                   scenario=Scenario.from_json(row["scenario"]), turns=turns, backend=row["backend"],
                   model=row["model"], usage=Usage(row["input_tokens"], row["output_tokens"]),
                   dollars=row["dollars"], split=row["split"], copied=row.get("copied"))


# --------------------------------------------------------------------------- the offline teacher

CHATTY_OPENERS = ("Okay. ", "Right. ", "Hi again! ", "Sure thing. ", "Hmm, let me think. ", "Oh, good. ")
CHATTY_CLOSERS = (" Thanks!", " Hope that makes sense.", " Thanks for your help.", " Appreciate it.")


def offline_turn(workflow: Workflow, node_id: str, scenario: Scenario, rng: random.Random,
                 examples: Sequence[str] | None = None, values: Mapping[str, Any] | None = None) -> str:
    """The offline stand-in for a teacher turn: a node example, filled and styled by persona.

    ``examples`` narrows the choice of template (default: all of the node's), ``values`` fills it
    (default: the scenario's). An agent turn starts with its step, never with a filler word: a small
    model takes its decision at its first words, and an opener drawn at random ("Certainly.") puts a
    coin toss before the decision, which then follows the opener instead of the conversation (docs/synthesis.md).
    Customers keep their persona's openers.
    """
    node = workflow.nodes[node_id]
    text = render(rng.choice(list(examples or node.examples)), scenario.values if values is None else values)
    if node.role == "agent":
        return text
    if scenario.persona.verbosity == "chatty" and rng.random() < 0.7:
        text = rng.choice(CHATTY_OPENERS) + text + rng.choice(CHATTY_CLOSERS)
    elif scenario.persona.verbosity == "terse" and rng.random() < 0.7:
        text = re.sub(r"^(hi|hello|hey)( there)?[,!.]?\s+", "", text, flags=re.I)
        text = re.sub(r"[,.]?\s*(thanks|thank you|please)[.!]?$", ".", text, flags=re.I)
        text = text[:1].upper() + text[1:]
    return text


def clean_turn(text: str) -> str:
    """Strip what LLM teachers sometimes add: speaker labels, wrapping quotes, surrounding space."""
    text = text.strip()
    text = re.sub(r"^(assistant|agent|customer|user)\s*:\s*", "", text, flags=re.I)
    if len(text) > 1 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


# --------------------------------------------------------------------------- the persona's challenge

# The offline teacher's own sentences for the challenges; none is the offline customer's (subterra.customer).
ASIDES = ("Do you have a phone line too, by the way?", "Unrelated, but is there a student discount?",
          "Random question: are you open on public holidays?", "Can I ask something else first? Do you email receipts?")
ASIDE_REPLIES = ("I can't help with that one here, I'm afraid. ", "That's outside what I can do in this chat, sorry. ",
                 "I'm not able to answer that here. ")
PARTIALS = ("I don't have everything in front of me.", "I only know part of that right now.",
            "Give me a second, I only have some of it.")
REASKS = ("Thanks, that helps, but I still need the rest. ", "Got it, thank you. I need a little more, though. ",
          "Thanks. Just the rest now, please. ")
SLIP_FIXES = ("Oops, I meant {meant}, not {wrong}. ", "Correction: it's {meant}, not {wrong}. ",
              "Wait, I got that wrong: {meant}, not {wrong}. ")
AGAINS = ("Like I said, ", "As before, ", "Same as I mentioned: ")
LEAVES = ("Sorry, I have to stop here. I'll come back later. Bye.", "This isn't a good time after all. Bye!",
          "Let's drop it for today, thanks anyway. Bye.")
CLOSES = ("No problem at all. Nothing has been changed, and you're welcome back any time. Goodbye!",
          "Of course. I've left everything as it was; just start a new chat when you're ready. Take care!",
          "Understood. I'll leave things as they are, and you can pick this up again whenever suits you. Goodbye!")


@dataclass(frozen=True)
class Step:
    """One turn to write: the node it performs (None: off the procedure) and how the persona shapes it.

    ``move`` is "" (the node as the graph has it) or one of: ``aside`` (an off-topic question,
    then the answer), ``after_aside`` (the agent declines the aside, then takes its step),
    ``partial`` (half the answer), ``reask`` (the agent asks for the rest), ``slip`` (the answer
    with a wrong value), ``correct`` (the slip put right, then the answer), ``both`` (this answer
    and the next at once), ``again`` (the next answer said a second time), ``leave`` (the customer
    gives up), ``close`` (the agent lets them go). ``detail`` holds the values the move needs;
    ``renewed`` the values an edge's ``sets`` has renewed by this turn (the card after a declined one);
    ``way_on`` the node the path goes to next (a customer says what its branch needs, :meth:`Workflow.sayings`).
    """

    node: str | None
    role: str                                   # "agent" | "user"
    move: str = ""
    detail: tuple[tuple[str, Any], ...] = ()
    renewed: tuple[tuple[str, Any], ...] = ()
    way_on: str | None = None

    @property
    def info(self) -> dict[str, Any]:
        return dict(self.detail)

    def values(self, scenario: Scenario) -> dict[str, Any]:
        """The values this turn speaks of: the scenario's as renewed so far, with a slipped value as said
        until it is put right."""
        info, values = self.info, {**scenario.values, **dict(self.renewed)}
        if self.move in ("slip", "") and "wrong" in info:
            return {**values, info["name"]: info["wrong"]}
        return values


def script_dialogue(workflow: Workflow, path: Path, scenario: Scenario) -> list[Step]:
    """The turns of one dialogue: the path's nodes, with the persona's challenge written in.

    The challenge comes once, on one of the customer's first answers (the simulated customer's
    rule), where the answer gives it an opening: half an answer needs a value to leave out and a
    question to ask again; a slip needs a value that does not decide the route and a next message
    to correct it in; two answers need a next answer that carries a value of the customer's.
    ``gives_up`` ends the dialogue there, with the agent closing.
    """
    along = workflow.values_along(path.nodes, scenario.values)
    renewed = [tuple((name, v) for name, v in now.items() if v != scenario.values.get(name)) for now in along]

    def at(k: int, node: str | None = None, role: str | None = None, move: str = "", detail=()) -> Step:
        """A turn written where the path's ``k``-th node stands (by default that node), with its renewed values."""
        node = path.nodes[k] if node is None and role is None else node
        way_on = path.nodes[k + 1] if node == path.nodes[k] and k + 1 < len(path.nodes) else None
        return Step(node, role or workflow.nodes[node].role, move, tuple(detail), renewed[k], way_on)

    steps = [at(k) for k in range(len(path.nodes))]
    style = scenario.persona.challenge
    if style == "none":
        return steps
    users = [k for k, n in enumerate(path.nodes) if workflow.nodes[n].role == "user"]
    rng = random.Random(f"challenge:{workflow.family}:{scenario.id}")
    first = rng.randint(0, max(0, min(3, len(users) - 2)))
    known = lookups(workflow)
    decisive = set().union(*(e.check.names for e in workflow.edges if e.check is not None))
    for j in range(first, len(users)):
        k = users[j]
        node = path.nodes[k]
        if workflow.nodes[node].is_terminal:
            break
        following = users[j + 1] if j + 1 < len(users) else None
        if style == "off_topic" and k + 1 < len(steps) and steps[k + 1].role == "agent":
            return steps[:k] + [at(k, move="aside"), at(k + 1, move="after_aside")] + steps[k + 2:]
        if style == "gives_up":
            return steps[:k] + [at(k, None, "user", "leave"), at(k, None, "agent", "close")]
        needed = sorted(required_values(workflow, node))
        if style == "partial_answers" and len(needed) >= 2 and k > 0 and workflow.nodes[path.nodes[k - 1]].role == "agent":
            part = (("name", needed[0]),)
            return steps[:k] + [at(k, None, "user", "partial", part), at(k - 1, move="reask"), steps[k]] + steps[k + 1:]
        pool = workflow.held_out if scenario.held_out else workflow.variables

        def others(name: str) -> list:                 # values the customer could say by mistake
            return [v for v in pool.get(name, workflow.variables.get(name, ())) if str(v) != str(scenario.values.get(name))]

        slips = [n for n in needed if n not in decisive and others(n)]
        if style == "corrects_earlier" and slips and following is not None and k + 1 < following:
            name = rng.choice(slips)
            meant, wrong = scenario.values[name], rng.choice(others(name))
            slip = (("name", name), ("wrong", wrong), ("meant", meant))
            return steps[:k] + [at(k, move="slip", detail=slip)] + [
                replace(s, detail=slip) for s in steps[k + 1:following]] + [
                at(following, move="correct", detail=slip)] + steps[following + 1:]
        if style == "two_answers" and following is not None and not workflow.nodes[path.nodes[following]].is_terminal \
                and slot_names(" ".join(workflow.heard_as(path.nodes[following]))) - known:
            ahead = (("next", path.nodes[following]), ("next_way_on", at(following).way_on))
            return steps[:k] + [at(k, move="both", detail=ahead)] + steps[k + 1:following] + [
                at(following, move="again")] + steps[following + 1:]
    return steps


# what a real teacher is told for each move, after (or instead of) the node's own instruction
MOVE_INSTRUCTIONS = {
    "aside": "Before answering, the customer asks one short question off the subject (opening hours, an app, "
             "a receipt); then: {instruction}",
    "after_aside": "First say in a few words that you cannot help with their side question here; then: {instruction}",
    "partial": "The customer gives only part of the answer: only their {name_words} ({value}), and says they do "
               "not have the rest to hand yet.",
    "reask": "The customer gave only part of what you need. Thank them and ask again for the rest: {instruction}",
    "slip": "{instruction} But the customer gives their {name_words} as {wrong} by mistake (it is really {meant}).",
    "": "{instruction}",
    "correct": "The customer starts by putting right a slip: the {name_words} is {meant}, not {wrong}. Then: "
               "{instruction}",
    "both": "{instruction} In the same message the customer also answers the next question before it is asked: "
            "{next_instruction}",
    "again": "The customer already said this in their last message; they say it again briefly: {instruction}",
    "leave": "The customer gives up half-way: in one short message they say they will leave it for now, and "
             "say goodbye.",
    "close": "The customer is leaving. Close the conversation politely in one or two sentences; nothing has been "
             "done or changed.",
}


def offline_step(workflow: Workflow, step: Step, scenario: Scenario, rng: random.Random,
                 told: frozenset[str] | None = None) -> str:
    """The offline stand-in for one scripted turn: :func:`offline_turn`, shaped by the step's move.

    ``told``: the customer's values said so far. An agent turn speaks only of those (and of what the
    business looks up): of a node's sentences it takes one that needs nothing the customer has not
    said, where there is one — the agent cannot know the cabin nobody asked for.
    """
    info, values = step.info, step.values(scenario)
    sayable = None
    if step.role == "agent" and step.node and told is not None:
        known = told | lookups(workflow)
        sayable = [e for e in workflow.nodes[step.node].examples if slot_names(e) <= known] or None
    elif step.role == "user" and step.node:
        sayable = workflow.sayings(step.node, step.way_on)
    if step.move == "leave":
        return rng.choice(LEAVES)
    if step.move == "close":
        return rng.choice(CLOSES)
    if step.move == "partial":
        name = info["name"]
        return f"{rng.choice(PARTIALS)} The {name.replace('_', ' ')} is {spoken(values[name])}."
    text = offline_turn(workflow, step.node, scenario, rng, sayable, values)
    if step.move == "aside":
        return rng.choice(ASIDES) + " " + text
    if step.move == "after_aside":
        return rng.choice(ASIDE_REPLIES) + text
    if step.move == "reask":
        return rng.choice(REASKS) + text
    if step.move == "correct":
        fix = rng.choice(SLIP_FIXES).format(meant=spoken(info["meant"]), wrong=spoken(info["wrong"]))
        return fix + text
    if step.move == "both":                  # the next answer in its own words, none naming a look-up not yet stated
        examples = [e for e in workflow.sayings(info["next"], info.get("next_way_on"))
                    if not slot_names(e) & lookups(workflow)]
        return text + " " + offline_turn(workflow, info["next"], scenario, rng, examples or None, values)
    if step.move == "again":
        return rng.choice(AGAINS) + text[:1].lower() + text[1:]
    return text


# --------------------------------------------------------------------------- the teacher

def _facts(values: dict[str, Any]) -> str:
    lines = []
    for name, value in values.items():
        if isinstance(value, dict):
            value = "; ".join(f"{k}: {v}" for k, v in value.items())
        lines.append(f"- {name.replace('_', ' ')}: {value}")
    return "\n".join(lines)


CALLING_MOVES = ("", "after_aside")        # the moves that take an agent step (not a re-ask, not a goodbye)


def tool_turns(workflow: Workflow, step: Step, scenario: Scenario, environment: Environment) -> list[Turn]:
    """The call an agent step makes before it speaks, and the answer (none for a step that calls nothing):
    the arguments are the customer's values as they stand at this step."""
    tool = workflow.tools.get(workflow.nodes[step.node].call) if step.node and step.role == "agent" else None
    if tool is None or step.move not in CALLING_MOVES:
        return []
    values = step.values(scenario)
    call = ToolCall(tool.name, {name: values[name] for name in tool.arguments})
    return [Turn("assistant", call_text(call), step.node),
            Turn(TOOL_ROLE, answer_text(environment.answer(call)), step.node)]


def turn_request(workflow: Workflow, script: list[Step], step: int, scenario: Scenario, turns: list[Turn],
                 sample: str = "") -> Request:
    """The request for the turn ``script[step]``, with its offline stand-in attached."""
    current = script[step]
    speaker = "assistant" if current.role == "agent" else "customer"
    history = "\n".join(conversation_line({"role": t.role, "content": t.content}) for t in turns)
    info, values = current.info, current.values(scenario)
    told = None                                        # what the offline agent may speak of: only an agent's turn asks
    if current.role == "agent":
        said = " ".join(t.content for t in turns if t.role == "user")
        told = frozenset(name for name, value in values.items() if isinstance(value, dict) or value_pattern(value).search(said))
    instruction = render(workflow.nodes[current.node].prompt, values) if current.node else ""
    if "next" in info:
        info = {**info, "next_instruction": render(workflow.nodes[info["next"]].prompt, values)}
    if "name" in info:
        info = {**info, "name_words": info["name"].replace("_", " "), "value": spoken(values[info["name"]])}
    info = {k: spoken(v) if k in ("wrong", "meant") else v for k, v in info.items()}
    instruction = MOVE_INSTRUCTIONS[current.move].format(instruction=instruction, **info)
    next_hint = ""
    following = script[step + 1].node if step + 1 < len(script) else None
    if current.node and following:
        edge = next((e for e in workflow.successors(current.node) if e.target == following), None)
        if edge is not None and edge.when:
            next_hint = f"\nWhat happens next in this conversation: {edge.when}"
    system = TEACHER_SYSTEM.format(title=workflow.title.lower(), description=workflow.description,
                                   system_prompt=workflow.system_prompt, facts=_facts(scenario.values),
                                   persona=scenario.persona.describe())
    content = TURN_PROMPT.format(history=history or "(nothing yet: this is the first message)", speaker=speaker,
                                 instruction=instruction, next_hint=next_hint)
    return Request(system=system, messages=[{"role": "user", "content": content}], max_tokens=300,
                   temperature=0.9, tag="teacher", sample=sample,
                   offline=lambda rng: offline_step(workflow, current, scenario, rng, told))


async def write_dialogue(workflow: Workflow, path: Path, scenario: Scenario, backend: Backend,
                         dialogue_id: str | None = None) -> Dialogue:
    """Walk ``path`` (with the persona's challenge written in: :func:`script_dialogue`); ``backend`` writes every turn."""
    turns: list[Turn] = []
    usage, dollars = Usage(), 0.0
    script = script_dialogue(workflow, path, scenario)
    environment = Environment(workflow, scenario, path)
    for step, planned in enumerate(script):
        turns += tool_turns(workflow, planned, scenario, environment)
        request = turn_request(workflow, script, step, scenario, turns, sample=dialogue_id or scenario.id)
        completion: Completion = await backend.acomplete(request)
        usage, dollars = usage + completion.usage, dollars + completion.dollars
        turns.append(Turn(role=CHAT_ROLE[planned.role], content=clean_turn(completion.text), node=planned.node))
    return Dialogue(id=dialogue_id or scenario.id, domain=workflow.name, path_id=path.id, scenario=scenario,
                    turns=turns, backend=backend.name, model=backend.model, usage=usage, dollars=dollars)


# --------------------------------------------------------------------------- planning and cost

@dataclass(frozen=True)
class Plan:
    """Which path each dialogue follows: every path at least once when n >= the number of paths."""

    workflow: Workflow
    paths: list[Path]
    assignments: list[tuple[str, Path, str]]      # (dialogue id, path, split)

    @property
    def calls(self) -> int:
        """One call per node of each path: a bound, not a count. The personas' challenges add a turn or
        two to some dialogues and end others early (insurance, 3,000 dialogues: 82,396 calls against
        93,652 path nodes); the exact count needs every scenario drawn, which this dry run avoids."""
        return sum(len(path) for _, path, _ in self.assignments)


def plan_corpus(workflow: Workflow, n: int, seed: int = 0, eval_fraction: float = EVAL_FRACTION) -> Plan:
    if n < 1:
        raise ValueError("the corpus needs at least one dialogue (n >= 1)")
    paths = enumerate_paths(workflow)
    rng = random.Random(f"plan:{workflow.family}:{seed}")
    if n >= len(paths):
        chosen = [paths[i % len(paths)] for i in range(n)]
    else:
        chosen = rng.sample(paths, n)
    rng.shuffle(chosen)
    n_eval = int(round(n * eval_fraction)) if n >= 10 else 0
    eval_ids = set(rng.sample(range(n), n_eval))
    width = len(str(n - 1))
    return Plan(workflow, paths, [(f"{workflow.family}-{i:0{width}d}", path, "eval" if i in eval_ids else "train")
                                  for i, path in enumerate(chosen)])


@dataclass(frozen=True)
class Estimate:
    dialogues: int
    calls: int
    input_tokens: int
    output_tokens: int
    dollars: float
    model: str

    def __str__(self) -> str:
        return (f"{self.dialogues:,} dialogues, {self.calls:,} calls to {self.model}, "
                f"~{self.input_tokens:,} input + ~{self.output_tokens:,} output tokens, "
                f"~${self.dollars:,.2f} at list prices")


def estimate(plan: Plan, model: str, words_per_turn: int | None = None) -> Estimate:
    """Dry run: calls, tokens and dollars before anything is spent (prompt caching ignored: an upper bound)."""
    wf = plan.workflow
    if words_per_turn is None:
        examples = [e for n in wf.nodes.values() for e in n.examples]
        words_per_turn = max(8, sum(len(e.split()) for e in examples) // len(examples))
    fixed = len(TEACHER_SYSTEM.split()) + len(wf.description.split()) + 6 * (len(wf.variables) + len(wf.catalogue))
    input_words = output_words = 0
    for _, path, _ in plan.assignments:
        for step, node_id in enumerate(path.nodes):
            input_words += fixed + len(wf.nodes[node_id].prompt.split()) + 30 + step * words_per_turn
            output_words += words_per_turn
    usage = Usage(input_tokens=approx_tokens(input_words), output_tokens=approx_tokens(output_words))
    return Estimate(dialogues=len(plan.assignments), calls=plan.calls, input_tokens=usage.input_tokens,
                    output_tokens=usage.output_tokens, dollars=usage.dollars(model), model=model)


# --------------------------------------------------------------------------- the resumable run

@dataclass
class SynthesisResult:
    out_dir: FilePath
    dialogues: int
    planned: int
    written_now: int
    calls: int
    cache_hits: int
    dollars: float
    stopped: str | None = None        # why the run stopped early, if it did

    @property
    def complete(self) -> bool:
        return self.stopped is None and self.dialogues == self.planned


def synthesize(workflow: Workflow, n: int, out_dir: str | FilePath, backend: Backend | str | None = None,
               seed: int = 0, budget: float | None = None, concurrency: int = 16,
               progress: bool = True) -> SynthesisResult:
    """Write ``n`` dialogues into ``out_dir`` (resumable), then save the corpus with ``datasets``.

    Layout: ``dialogues.jsonl`` (one row per finished dialogue, in completion order),
    ``cache/`` (one file per backend call), ``corpus/`` (a ``datasets.DatasetDict`` with
    ``train`` and ``eval`` splits, rows in dialogue-id order).
    """
    return run_sync(asynthesize(workflow, n, out_dir, backend, seed, budget, concurrency, progress))


async def asynthesize(workflow: Workflow, n: int, out_dir: str | FilePath, backend: Backend | str | None = None,
                      seed: int = 0, budget: float | None = None, concurrency: int = 16,
                      progress: bool = True) -> SynthesisResult:
    from tqdm.auto import tqdm

    out_dir = FilePath(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    inner = backend if isinstance(backend, Backend) else get_backend(backend)
    cached = inner if isinstance(inner, CachedBackend) else CachedBackend(inner, out_dir / "cache", budget)
    plan = plan_corpus(workflow, n, seed)
    copied = sorted(copied_variables(workflow))      # what training may make up (subterra.encoding)
    jsonl = out_dir / "dialogues.jsonl"
    done = read_jsonl(jsonl, "id")
    todo = [a for a in plan.assignments if a[0] not in done]
    stopped: str | None = None
    written = 0
    queue: asyncio.Queue = asyncio.Queue()
    for item in todo:
        queue.put_nowait(item)
    bar = tqdm(total=len(plan.assignments), initial=len(done), unit="dialogue", disable=not progress,
               desc=f"synthesize {workflow.name}")

    async def worker(f) -> None:
        nonlocal written, stopped
        while not queue.empty() and stopped is None:
            dialogue_id, path, split = queue.get_nowait()
            scenario = sample_scenario(workflow, path, seed, dialogue_id)
            try:
                dialogue = await write_dialogue(workflow, path, scenario, cached, dialogue_id)
            except BudgetExceeded as exc:
                stopped = str(exc)
                return
            dialogue.split = split
            dialogue.copied = copied
            append_jsonl(f, dialogue.to_record(workflow.system_prompt))
            done[dialogue_id] = True
            written += 1
            bar.update(1)

    try:
        with open(jsonl, "a", encoding="utf-8") as f:
            await asyncio.gather(*(worker(f) for _ in range(max(1, min(concurrency, len(todo))))))
    finally:
        bar.close()
        await cached.aclose()
    result = SynthesisResult(out_dir=out_dir, dialogues=len(done), planned=len(plan.assignments),
                             written_now=written, calls=cached.calls, cache_hits=cached.hits,
                             dollars=cached.spent, stopped=stopped)
    if result.complete:
        save_corpus(read_dialogues(jsonl), out_dir / "corpus")
    return result


def read_dialogues(jsonl: str | FilePath) -> list[dict]:
    """Rows of a ``dialogues.jsonl``, sorted by dialogue id."""
    return sorted(read_jsonl(FilePath(jsonl), "id").values(), key=lambda row: row["id"])


def save_corpus(rows: Iterable[dict], target: FilePath):
    """Save rows as a ``datasets.DatasetDict`` (train / eval), atomically (temp folder + rename)."""
    from datasets import Dataset, DatasetDict

    rows = list(rows)
    splits = {name: [r for r in rows if r["split"] == name] for name in ("train", "eval")}
    corpus = DatasetDict({name: Dataset.from_list(part) for name, part in splits.items() if part})
    save_dataset(corpus, target)
    return corpus


def load_corpus(out_dir: str | FilePath):
    """The ``datasets.DatasetDict`` a finished :func:`synthesize` run saved."""
    from datasets import load_from_disk

    return load_from_disk(str(FilePath(out_dir) / "corpus"))
