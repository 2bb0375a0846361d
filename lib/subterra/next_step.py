"""Next-step evaluation: did compiling put the procedure, and the values, into the weights?

:func:`evaluate_next_steps` feeds a compiled model (an :class:`~subterra.agent.Agent`) the gold
customer turns of held-out scenarios (values never seen in training) and lets it write every
assistant turn: does each generated turn take the right next step of the procedure
(:func:`nearest_node`), and does it carry the scenario's values (an unseen city, a price) into
what it says (:func:`check_values`)? :func:`copy_token_accuracy` is the finer, teacher-forced
gauge of the same copying. The gold dialogues come from the offline teacher
(:func:`gold_dialogues`), so this module sits above :mod:`subterra.synthesis` and the agent.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path as FilePath
from typing import Any

from .agent import Agent
from .backends import get_backend, run_sync
from .conformance import NodeMatcher, scalar_values
from .encoding import message_spans
from .paths import enumerate_paths
from .scenarios import sample_scenario
from .synthesis import write_dialogue
from .workflow import SLOT, SLOT_NAME, Workflow


# --------------------------------------------------------------------------- the next step

def nearest_node(workflow: Workflow, text: str, values: dict[str, Any],
                 matcher: NodeMatcher | None = None) -> str:
    """The agent node whose example utterances read most like ``text`` (values masked; see conformance)."""
    return (matcher or NodeMatcher(workflow, role="agent")).match(text, values).node


# --------------------------------------------------------------------------- values in a reply

@dataclass(frozen=True)
class ValueCheck:
    """The values in one reply, against the template (one of its node's examples) the reply follows.

    A valid reply may follow another template than the gold turn, naming fewer values (a short
    booking summary where the gold was the long one); it is judged by its own template's slots.
    """

    template: str
    slots: int                  # slots in the template the reply follows
    filled: int                 # of those, filled with the scenario's value
    wrong: tuple[str, ...]      # values stated that are not the scenario's: wrong, swapped or invented

    @property
    def precise(self) -> bool:
        return not self.wrong

    @property
    def complete(self) -> bool:
        return self.filled == self.slots

    @property
    def recall(self) -> float:
        return self.filled / self.slots if self.slots else 1.0


def template_fills(template: str, text: str, values: dict[str, Any] | None = None) -> list[tuple[str, str]] | None:
    """``(slot, the text it holds)`` for each slot when ``text`` ends with ``template``'s wording; else None.

    Words before the template (an opener such as "Sure.") are allowed; the template's own wording
    must be there, verbatim, between the slots. Where two slots touch ("{airline} {flight_number}")
    the split is ambiguous; each slot then first tries the scenario's value (``values``).
    """
    parts = SLOT.split(template)
    pattern = ""
    for k, part in enumerate(parts):
        if k % 2 == 0:
            pattern += re.escape(part)
            continue
        want = slot_value(values or {}, part)
        pattern += f"(?P<s{k // 2}>{re.escape(want) + '|' if want else ''}.+?)"
    found = re.search(pattern + r"\s*$", text.strip(), flags=re.S)
    if found is None:
        return None
    return [(parts[k], found.group(f"s{k // 2}").strip()) for k in range(1, len(parts), 2)]


def slot_value(values: dict[str, Any], slot: str) -> str | None:
    """The scenario's value for a ``{slot}`` or ``{table.field}`` (None when the scenario has none)."""
    if SLOT_NAME.match(slot) is None:
        return None
    name, attr = SLOT_NAME.match(slot).groups()
    value = values.get(name)
    if isinstance(value, dict):
        value = value.get(attr) if attr else None
    return None if value is None else str(value)


def known_values(workflow: Workflow, slot: str) -> set[str]:
    """Every value a slot can take in the workflow: its pool, its held-out values, its catalogue column."""
    name, attr = SLOT_NAME.match(slot).groups()
    if name in workflow.catalogue:
        return {str(record.get(attr)) for record in workflow.catalogue[name] if attr in record}
    return {str(v) for v in workflow.values_of(name)}


def check_values(workflow: Workflow, node: str, reply: str, values: dict[str, Any],
                 matcher: NodeMatcher | None = None, said: str | None = None) -> ValueCheck:
    """Precision and recall of the values in ``reply``, taken as a turn of ``node``.

    ``said`` is the conversation so far: only slots whose value it already holds are judged. A value
    the agent brings in first — the flight a search finds, its price, a booking reference — comes
    from a lookup that a model with only the conversation does not have; no agent could state the
    scenario's one, so it is not counted against any (``said=None`` judges every slot).

    When the reply follows one of the node's examples word for word, each judged slot's text is
    compared with the scenario's value (a swap or a made-up value is wrong). Otherwise the nearest
    example gives the slots: a judged slot counts as filled when its value appears, and any other
    value the workflow knows for that slot (another city, another name) counts as wrong.
    """
    def judged(want: str | None) -> bool:
        return want is not None and (said is None or want in said)

    examples = workflow.heard_as(node)
    aligned = [(e, fills) for e in examples if (fills := template_fills(e, reply, values)) is not None]
    if aligned:
        template, fills = max(aligned, key=lambda a: len(a[1]))
        expected = [(want, text) for slot, text in fills if judged(want := slot_value(values, slot))]
        wrong = tuple(text for want, text in expected if text != want)
        return ValueCheck(template, len(expected), len(expected) - len(wrong), wrong)
    template = (matcher or NodeMatcher(workflow, role=None)).nearest_example(reply, values, node)
    wanted = {slot: want for slot in SLOT.findall(template) if judged(want := slot_value(values, slot))}
    filled = sum(want in reply for want in wanted.values())
    wrong = tuple(sorted({v for slot in wanted for v in known_values(workflow, slot)
                          if len(v) >= 2 and v in reply and not any(v in w for w in wanted.values())}))
    return ValueCheck(template, len(wanted), filled, wrong)


@dataclass
class NextStepReport:
    dialogues: int
    turns: int
    turn_accuracy: float        # generated turns classified as the gold turn's node
    dialogue_accuracy: float    # dialogues whose every assistant turn took the right step
    permitted_accuracy: float   # turns classified as any agent node the graph allows after the customer's turn
    dialogue_permitted: float   # dialogues whose every assistant turn took a permitted step
    value_precision: float      # of turns stating values said before, those with none wrong, swapped or invented
    value_recall: float         # mean share of the followed template's slots (values said before) filled right
    value_turns: int            # turns whose followed template has a slot whose value was said before
    copy_carrying: float        # where the gold turn repeats a value said earlier: replies precise and complete
    copy_turns: int
    copy_token_accuracy: float  # teacher-forced: share of those values' tokens the model predicts (copy_token_accuracy)
    copy_tokens: int
    seconds: float
    failures: list[dict] = field(default_factory=list, repr=False)

    def __str__(self) -> str:
        return (f"next step {100 * self.turn_accuracy:.1f}% of {self.turns} turns "
                f"({100 * self.dialogue_accuracy:.1f}% of {self.dialogues} dialogues all right; "
                f"{100 * self.dialogue_permitted:.1f}% taking only steps the graph permits); "
                f"values carried {100 * self.copy_carrying:.1f}% of {self.copy_turns} turns that repeat a value "
                f"(precision {100 * self.value_precision:.1f}%, recall {100 * self.value_recall:.1f}% over "
                f"{self.value_turns} turns with values; "
                f"{100 * self.copy_token_accuracy:.1f}% of {self.copy_tokens} copied tokens predicted)")


def copy_token_accuracy(model, tokenizer, conversations: list[tuple[list[dict], dict]]) -> tuple[float, int]:
    """Teacher-forced copying: of the tokens of values an assistant turn repeats from earlier in the
    conversation, the share the model predicts (its top token, given the gold text before it).

    ``conversations`` are (messages, scenario values) pairs. A finer gauge than whole turns: a
    model part-way to copying (the first piece of a city, not the rest) scores between 0 and 1
    where :attr:`NextStepReport.copy_carrying` still reads 0. Returns (share, tokens counted).
    """
    import torch

    hits = total = 0
    device = next(model.parameters()).device
    for messages, values in conversations:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        spans, before = [], ""
        for message, (start, end) in zip(messages, message_spans(text, messages)):
            if message["role"] == "assistant":
                for value in scalar_values(values):
                    if value in before:
                        spans += [(m, m + len(value)) for m in _occurrences(text[:end], value, start)]
            if message["role"] != "system":
                before += "\n" + message["content"]
        if not spans:
            continue
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = torch.tensor([enc["input_ids"]], device=device)
        with torch.no_grad():
            predicted = model(input_ids=ids).logits[0].argmax(-1).tolist()
        counted = {i for s, e in spans for i, (a, b) in enumerate(enc["offset_mapping"]) if i and a < e and b > s}
        hits += sum(predicted[i - 1] == enc["input_ids"][i] for i in counted)
        total += len(counted)
    return hits / max(total, 1), total


def _occurrences(text: str, value: str, start: int = 0) -> list[int]:
    out, i = [], text.find(value, start)
    while i >= 0:
        out.append(i)
        i = text.find(value, i + len(value))
    return out


def gold_dialogues(workflow: Workflow, n: int, seed: int = 0) -> list:
    """``n`` held-out gold dialogues from the offline teacher, paths cycled in a seeded order."""
    paths = enumerate_paths(workflow)
    random.Random(f"eval:{seed}").shuffle(paths)
    backend = get_backend("offline")
    out = []
    for i in range(n):
        path = paths[i % len(paths)]
        scenario = sample_scenario(workflow, path, f"eval-{seed}", f"heldout-{i}", held_out=True)
        out.append(run_sync(write_dialogue(workflow, path, scenario, backend, f"heldout-{seed}-{i}")))
    return out


def evaluate_next_steps(model_dir: str | FilePath | Agent, workflow: Workflow, n: int = 50,
                        seed: int = 0, progress: bool = False) -> NextStepReport:
    """Teacher-forced next-step evaluation on ``n`` held-out scenarios (gold customer turns fed in).

    Each generated turn is mapped onto the nearest agent node (:class:`NodeMatcher`). *Strict*: it
    is the gold turn's node. *Permitted*: it is one the graph allows after the previous gold turn;
    the two differ where the branch depends on something the conversation has not said yet (a
    bank declining a card), which no agent can know from the words so far.
    """
    start = time.perf_counter()
    agent = model_dir if isinstance(model_dir, Agent) else Agent(model_dir)
    dialogues = gold_dialogues(workflow, n, seed)
    prompts, where = [], []
    for d, dialogue in enumerate(dialogues):
        for k, turn in enumerate(dialogue.turns):
            if turn.role == "assistant" and turn.node is not None:     # a goodbye off the procedure: not a step
                prompts.append(dialogue.messages(workflow.system_prompt)[:k + 1])
                where.append((d, k))
    replies = agent.reply_batch(prompts, progress=progress)
    token_share, token_count = copy_token_accuracy(
        agent.model, agent.tokenizer, [(d.messages(workflow.system_prompt), d.scenario.values) for d in dialogues])
    matcher = NodeMatcher(workflow, role="agent")
    right_dialogue = [True] * len(dialogues)
    permitted_dialogue = [True] * len(dialogues)
    permitted = right = copy_turns = copy_ok = 0
    checks: list[ValueCheck] = []
    failures = []
    along = [workflow.values_along([t.node for t in d.turns], d.scenario.values) for d in dialogues]
    for (d, k), reply in zip(where, replies):
        dialogue = dialogues[d]
        gold = dialogue.turns[k]
        values = along[d][k]                  # the values in force at this turn (a new date, the other card)
        node = nearest_node(workflow, reply, values, matcher)
        step_ok = node == gold.node
        previous = dialogue.turns[k - 1].node if k else None
        if k == 0:
            allowed = {workflow.start}
        elif previous is None:              # after half an answer: the step asked again
            allowed = {next(t.node for t in reversed(dialogue.turns[:k]) if t.role == "assistant")}
        else:
            allowed = {e.target for e in workflow.successors(previous)}
        right += step_ok
        permitted += node in allowed
        right_dialogue[d] &= step_ok
        permitted_dialogue[d] &= node in allowed
        before = " ".join(t.content for t in dialogue.turns[:k])
        check = check_values(workflow, node, reply, values, matcher, said=before)
        if check.slots or check.wrong:
            checks.append(check)
        repeats = any(v in gold.content and v in before for v in scalar_values(values))
        carried = check.precise and check.complete
        if repeats:
            copy_turns += 1
            copy_ok += carried
        if not (step_ok and carried) and len(failures) < 20:
            failures.append({"dialogue": dialogue.id, "node": gold.node, "got": node, "gold": gold.content,
                             "reply": reply, "wrong values": list(check.wrong)})
    return NextStepReport(dialogues=len(dialogues), turns=len(replies), turn_accuracy=right / max(len(replies), 1),
                          dialogue_accuracy=sum(right_dialogue) / max(len(dialogues), 1),
                          permitted_accuracy=permitted / max(len(replies), 1),
                          dialogue_permitted=sum(permitted_dialogue) / max(len(dialogues), 1),
                          value_precision=sum(c.precise for c in checks) / max(len(checks), 1),
                          value_recall=sum(c.recall for c in checks) / max(len(checks), 1), value_turns=len(checks),
                          copy_carrying=copy_ok / max(copy_turns, 1), copy_turns=copy_turns,
                          copy_token_accuracy=token_share, copy_tokens=token_count,
                          seconds=time.perf_counter() - start, failures=failures)
