"""Simulation: a simulated customer talks to each condition over the same evaluation scenarios.

The customer (:class:`OfflineUser`, or :class:`LLMUser` on a real backend) sees only its
scenario and persona, never the flowchart's state. Each *condition*
(:mod:`subterra.conditions`: the compiled model, the orchestrated graph, the oracle, the
frontier model in context or in LangGraph) writes the next agent turn.

:func:`simulate` runs every scenario against every condition, resumably, and stores the
transcripts — turns, per-turn latency, tokens, dollars, stop reason and a conformance
trace — one ``datasets`` corpus per condition. :func:`build_conditions` picks the
conditions by name.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path as FilePath
from typing import Iterable

from .backends import Backend, ModelNotFound
from .conditions import AgentTurn, Condition, InContext, Oracle, Orchestrated, Subterranean, serialise_workflow
from .conformance import conformance, extract_values
from .customer import STOP, LLMUser, OfflineUser
from .paths import Path, enumerate_paths
from .scenarios import Scenario, sample_scenario
from .store import append_jsonl, read_jsonl, save_dataset
from .tools import TOOL_ROLE, Environment, answer_text, call_in, without_tools
from .workflow import Workflow

# The conditions live in .conditions, the customer (OfflineUser, LLMUser, STOP) in .customer and what a
# listener hears in .conformance; they are imported here too, as the simulation's vocabulary.
N_SCENARIOS = 200          # per domain and condition, as in the paper
MAX_CALLS = 3              # calls in a row answered before the agent must speak (one more is told so, the next ends it)


# --------------------------------------------------------------------------- evaluation scenarios

def evaluation_scenarios(workflow: Workflow, n: int = N_SCENARIOS, seed: int = 0) -> list[Scenario]:
    """``n`` scenarios with held-out values, identical for every condition (paired by id)."""
    paths = enumerate_paths(workflow)
    rng = random.Random(f"evaluation:{workflow.family}:{seed}")
    order = list(range(len(paths)))
    rng.shuffle(order)
    chosen = [paths[order[i % len(paths)]] for i in range(n)]
    return [sample_scenario(workflow, path, f"evaluation-{seed}", f"{workflow.family}-eval-{i:03d}", held_out=True)
            for i, path in enumerate(chosen)]


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
        self.environment = Environment(workflow, scenario, path) if workflow.tools else None
        self.calls_in_row = 0                  # calls since the agent last spoke to the customer
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
        """Record the agent's turn, then let the customer answer; a call is answered by the business's systems
        instead, and the agent goes on (:mod:`subterra.tools`)."""
        self.messages.append({"role": "assistant", "content": turn.text})
        self.seconds.append(turn.seconds)
        self.prompts.append(turn.prompt_tokens)
        self.completions.append(turn.completion_tokens)
        self.dollars += turn.dollars
        call = call_in(turn.text) if self.environment is not None else None
        if call is None:
            self.calls_in_row = 0
            self.customer()
            return
        self.calls_in_row += 1
        answer = self.environment.answer(call) if self.calls_in_row <= MAX_CALLS else {
            "error": f"{MAX_CALLS} calls in a row: answer the customer before calling again"}
        self.messages.append({"role": TOOL_ROLE, "content": answer_text(answer)})
        if self.calls_in_row > MAX_CALLS + 1:                  # told, and still calling
            self.reason, self.done = "tool_loop", True

    def customer(self) -> None:
        said = without_tools(self.messages)
        reply = self.user.respond(said)
        self.challenged |= reply.challenge
        if reply.text != STOP:
            self.messages.append({"role": "user", "content": reply.text})
        if reply.stop:
            self.reason, self.done = reply.reason, True
        elif len(said) + (reply.text != STOP) >= self.max_turns:
            self.done = True

    def fail(self, exc: Exception) -> None:
        """Recorded per conversation, never silently dropped."""
        self.reason, self.error, self.done = "error", f"{type(exc).__name__}: {exc}".splitlines()[0][:300], True

    def transcript(self) -> Transcript:
        workflow, scenario, path = self.workflow, self.scenario, self.path
        expected = workflow.nodes[path.nodes[-1]].terminal
        said = without_tools(self.messages)
        trace = conformance(workflow, said, scenario.values, expected) if said else None
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
