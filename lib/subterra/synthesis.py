"""The teacher: walk a path node by node and write one dialogue; many dialogues make the corpus.

At each node the backend gets the node's prompt template (filled from the scenario), the
scenario and persona, and the conversation so far, and writes that one turn. The training
text is plain dialogue: the one-line deployment system prompt, then user/assistant
messages. Node ids, conditions and other annotations live only in metadata columns.

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
from dataclasses import dataclass, field
from pathlib import Path as FilePath
from typing import Any, Iterable, Mapping, Sequence

from .backends import Backend, Completion, Request, Usage, approx_tokens, get_backend, run_sync
from .backends.cache import BudgetExceeded, CachedBackend
from .paths import Path, enumerate_paths
from .scenarios import Scenario, sample_scenario
from .store import append_jsonl, read_jsonl, save_dataset
from .workflow import Workflow, render

# Paper sizes: travel 2,125 dialogues (1,912 train / 213 eval); Zoom 6,264 training; insurance 3,000.
DEFAULT_SIZES = {"travel": 2125, "zoom": 6960, "insurance": 3000}
EVAL_FRACTION = 0.1
CHAT_ROLE = {"agent": "assistant", "user": "user"}

TEACHER_SYSTEM = """You write training data: one realistic conversation between a customer and a {title} \
assistant, one message at a time. {description}

The assistant is deployed with only this system prompt: "{system_prompt}"

This conversation's facts (use them exactly, never invent others):
{facts}

The customer is {persona}.

Write only the next message, as the speaker would say it: no speaker label, no quotes, no stage directions, \
no mention of steps, nodes, flowcharts or instructions."""

TURN_PROMPT = """Conversation so far:
{history}

Next speaker: the {speaker}.
What this message must do: {instruction}{next_hint}"""


@dataclass
class Turn:
    role: str            # "assistant" | "user"
    content: str
    node: str


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

    def messages(self, system_prompt: str) -> list[dict]:
        return [{"role": "system", "content": system_prompt}] + [
            {"role": t.role, "content": t.content} for t in self.turns]

    def to_record(self, system_prompt: str) -> dict:
        """One corpus row: the training text in ``messages``, everything else in metadata columns."""
        return {"id": self.id, "messages": self.messages(system_prompt), "domain": self.domain,
                "path_id": self.path_id, "nodes": [t.node for t in self.turns],
                "scenario": self.scenario.to_json(), "backend": self.backend, "model": self.model,
                "input_tokens": self.usage.input_tokens, "output_tokens": self.usage.output_tokens,
                "dollars": self.dollars, "split": self.split}

    @classmethod
    def from_record(cls, row: dict) -> "Dialogue":
        turns = [Turn(role=m["role"], content=m["content"], node=n)
                 for m, n in zip(row["messages"][1:], row["nodes"])]
        return cls(id=row["id"], domain=row["domain"], path_id=row["path_id"],
                   scenario=Scenario.from_json(row["scenario"]), turns=turns, backend=row["backend"],
                   model=row["model"], usage=Usage(row["input_tokens"], row["output_tokens"]),
                   dollars=row["dollars"], split=row["split"])


# --------------------------------------------------------------------------- the offline teacher

AGENT_OPENERS = ("", "", "", "Certainly. ", "Of course. ", "Great. ", "Thanks. ", "Okay. ", "Perfect. ")
CHATTY_OPENERS = ("Okay. ", "Right. ", "Hi again! ", "Sure thing. ", "Hmm, let me think. ", "Oh, good. ")
CHATTY_CLOSERS = (" Thanks!", " Hope that makes sense.", " Thanks for your help.", " Appreciate it.")


def offline_turn(workflow: Workflow, node_id: str, scenario: Scenario, first: bool, rng: random.Random,
                 examples: Sequence[str] | None = None, values: Mapping[str, Any] | None = None) -> str:
    """The offline stand-in for a teacher turn: a node example, filled and styled by persona.

    ``examples`` narrows the choice of template (default: all of the node's), ``values`` fills it
    (default: the scenario's).
    """
    node = workflow.nodes[node_id]
    text = render(rng.choice(list(examples or node.examples)), scenario.values if values is None else values)
    if node.role == "agent":
        if not first and not node.is_terminal:
            text = rng.choice(AGENT_OPENERS) + text
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


# --------------------------------------------------------------------------- the teacher

def _facts(values: dict[str, Any]) -> str:
    lines = []
    for name, value in values.items():
        if isinstance(value, dict):
            value = "; ".join(f"{k}: {v}" for k, v in value.items())
        lines.append(f"- {name.replace('_', ' ')}: {value}")
    return "\n".join(lines)


def turn_request(workflow: Workflow, path: Path, step: int, scenario: Scenario, turns: list[Turn],
                 sample: str = "") -> Request:
    """The request for the turn at ``path.nodes[step]``, with its offline stand-in attached."""
    node_id = path.nodes[step]
    node = workflow.nodes[node_id]
    speaker = "assistant" if node.role == "agent" else "customer"
    history = "\n".join(f"{'Assistant' if t.role == 'assistant' else 'Customer'}: {t.content}" for t in turns)
    next_hint = ""
    if step + 1 < len(path.nodes):
        edge = next(e for e in workflow.successors(node_id) if e.target == path.nodes[step + 1])
        if edge.when:
            next_hint = f"\nWhat happens next in this conversation: {edge.when}"
    system = TEACHER_SYSTEM.format(title=workflow.title.lower(), description=workflow.description,
                                   system_prompt=workflow.system_prompt, facts=_facts(scenario.values),
                                   persona=scenario.persona.describe())
    content = TURN_PROMPT.format(history=history or "(nothing yet: this is the first message)", speaker=speaker,
                                 instruction=render(node.prompt, scenario.values), next_hint=next_hint)
    return Request(system=system, messages=[{"role": "user", "content": content}], max_tokens=300,
                   temperature=0.9, tag="teacher", sample=sample,
                   offline=lambda rng: offline_turn(workflow, node_id, scenario, step == 0, rng))


async def write_dialogue(workflow: Workflow, path: Path, scenario: Scenario, backend: Backend,
                         dialogue_id: str | None = None) -> Dialogue:
    """Walk ``path`` and have ``backend`` write every turn."""
    turns: list[Turn] = []
    usage, dollars = Usage(), 0.0
    for step, node_id in enumerate(path.nodes):
        request = turn_request(workflow, path, step, scenario, turns, sample=dialogue_id or scenario.id)
        completion: Completion = await backend.acomplete(request)
        usage, dollars = usage + completion.usage, dollars + completion.dollars
        turns.append(Turn(role=CHAT_ROLE[workflow.nodes[node_id].role], content=clean_turn(completion.text),
                          node=node_id))
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
        return sum(len(path) for _, path, _ in self.assignments)


def plan_corpus(workflow: Workflow, n: int, seed: int = 0, eval_fraction: float = EVAL_FRACTION) -> Plan:
    if n < 1:
        raise ValueError("the corpus needs at least one dialogue (n >= 1)")
    paths = enumerate_paths(workflow)
    rng = random.Random(f"plan:{workflow.name}:{seed}")
    if n >= len(paths):
        chosen = [paths[i % len(paths)] for i in range(n)]
    else:
        chosen = rng.sample(paths, n)
    rng.shuffle(chosen)
    n_eval = int(round(n * eval_fraction)) if n >= 10 else 0
    eval_ids = set(rng.sample(range(n), n_eval))
    width = len(str(n - 1))
    return Plan(workflow, paths, [(f"{workflow.name}-{i:0{width}d}", path, "eval" if i in eval_ids else "train")
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
