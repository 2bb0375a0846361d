"""The subterranean agent: a compiled model deployed with the one-line system prompt and nothing else.

:class:`Agent` loads a model folder written by :func:`subterra.training.train` (or any chat
model) and writes the next assistant turn from the conversation so far: no node prompts, no
router, no orchestrator. :func:`evaluate_next_steps` measures what compilation put in the
weights, with gold customer turns fed in on held-out scenarios (values never seen in
training): does each generated turn take the right next step of the procedure, and does it
carry the scenario's values (an unseen city, a price) into what it says?
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path as FilePath
from typing import Any

from .conformance import NodeMatcher, scalar_values
from .workflow import Workflow


class Agent:
    """Greedy chat with a compiled model: ``Agent(model_dir).reply(messages) -> str``."""

    def __init__(self, model_dir: str | FilePath, max_new_tokens: int = 128, device: str | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(model_dir).to(self.device).eval()
        self.max_new_tokens = max_new_tokens
        stops = self.model.generation_config.eos_token_id
        stops = stops if isinstance(stops, list) else [stops] if stops is not None else []
        self.stop_ids = sorted({*stops, self.tokenizer.eos_token_id} - {None})

    def reply(self, messages: list[dict]) -> str:
        """The next assistant turn after ``messages`` (system prompt first, then the conversation)."""
        return self.reply_batch([messages])[0]

    def reply_batch(self, conversations: list[list[dict]], batch_size: int = 32, progress: bool = False) -> list[str]:
        """Next assistant turns for many conversations at once (left-padded batches, greedy)."""
        import torch
        from tqdm.auto import tqdm

        replies: list[str] = []
        starts = range(0, len(conversations), batch_size)
        for i in tqdm(starts, desc="generating", unit="batch", disable=not progress):
            texts = [self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
                     for c in conversations[i:i + batch_size]]
            enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
            with torch.no_grad():
                out = self.model.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=False,
                                          eos_token_id=self.stop_ids, pad_token_id=self.tokenizer.pad_token_id)
            new = out[:, enc["input_ids"].shape[1]:]
            replies += [t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]
        return replies


# --------------------------------------------------------------------------- evaluation

def nearest_node(workflow: Workflow, text: str, values: dict[str, Any],
                 matcher: NodeMatcher | None = None) -> str:
    """The agent node whose example utterances read most like ``text`` (values masked; see conformance)."""
    return (matcher or NodeMatcher(workflow, role="agent")).match(text, values).node


@dataclass
class NextStepReport:
    dialogues: int
    turns: int
    turn_accuracy: float        # generated turns classified as the gold turn's node
    dialogue_accuracy: float    # dialogues whose every assistant turn took the right step
    permitted_accuracy: float   # turns classified as any agent node the graph allows after the customer's turn
    dialogue_permitted: float   # dialogues whose every assistant turn took a permitted step
    value_carrying: float       # turns with values whose every gold value appears in the generation
    value_turns: int
    copy_carrying: float        # the same, counting only values said earlier in the conversation
    copy_turns: int
    copy_token_accuracy: float  # teacher-forced: share of those values' tokens the model predicts (copy_token_accuracy)
    copy_tokens: int
    seconds: float
    failures: list[dict] = field(default_factory=list, repr=False)

    def __str__(self) -> str:
        return (f"next step {100 * self.turn_accuracy:.1f}% of {self.turns} turns "
                f"({100 * self.dialogue_accuracy:.1f}% of {self.dialogues} dialogues all right; "
                f"{100 * self.dialogue_permitted:.1f}% taking only steps the graph permits); "
                f"values carried {100 * self.value_carrying:.1f}% of {self.value_turns} turns "
                f"({100 * self.copy_carrying:.1f}% of {self.copy_turns} where the value was said before; "
                f"{100 * self.copy_token_accuracy:.1f}% of {self.copy_tokens} copied tokens predicted)")


def copy_token_accuracy(model, tokenizer, conversations: list[tuple[list[dict], dict]]) -> tuple[float, int]:
    """Teacher-forced copying: of the tokens of values an assistant turn repeats from earlier in the
    conversation, the share the model predicts (its top token, given the gold text before it).

    ``conversations`` are (messages, scenario values) pairs. A finer gauge than whole turns: a
    model part-way to copying (the first piece of a city, not the rest) scores between 0 and 1
    where :attr:`NextStepReport.copy_carrying` still reads 0. Returns (share, tokens counted).
    """
    import torch

    from .training import message_spans

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
    from .backends import get_backend, run_sync
    from .paths import enumerate_paths
    from .scenarios import sample_scenario
    from .synthesis import write_dialogue

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
            if turn.role == "assistant":
                prompts.append(dialogue.messages(workflow.system_prompt)[:k + 1])
                where.append((d, k))
    replies = agent.reply_batch(prompts, progress=progress)
    token_share, token_count = copy_token_accuracy(
        agent.model, agent.tokenizer, [(d.messages(workflow.system_prompt), d.scenario.values) for d in dialogues])
    matcher = NodeMatcher(workflow, role="agent")
    right_dialogue = [True] * len(dialogues)
    permitted_dialogue = [True] * len(dialogues)
    permitted = right = value_turns = value_ok = copy_turns = copy_ok = 0
    failures = []
    for (d, k), reply in zip(where, replies):
        dialogue = dialogues[d]
        gold = dialogue.turns[k]
        values = dialogue.scenario.values
        node = nearest_node(workflow, reply, values, matcher)
        step_ok = node == gold.node
        allowed = ({e.target for e in workflow.successors(dialogue.turns[k - 1].node)} if k else {workflow.start})
        right += step_ok
        permitted += node in allowed
        right_dialogue[d] &= step_ok
        permitted_dialogue[d] &= node in allowed
        said = [v for v in scalar_values(values) if v in gold.content]
        before = " ".join(t.content for t in dialogue.turns[:k])
        copied = [v for v in said if v in before]
        carried = all(v in reply for v in said)
        if said:
            value_turns += 1
            value_ok += carried
        if copied:
            copy_turns += 1
            copy_ok += all(v in reply for v in copied)
        if not (step_ok and carried) and len(failures) < 20:
            failures.append({"dialogue": dialogue.id, "node": gold.node, "got": node, "gold": gold.content,
                             "reply": reply})
    return NextStepReport(dialogues=len(dialogues), turns=len(replies), turn_accuracy=right / max(len(replies), 1),
                          dialogue_accuracy=sum(right_dialogue) / max(len(dialogues), 1),
                          permitted_accuracy=permitted / max(len(replies), 1),
                          dialogue_permitted=sum(permitted_dialogue) / max(len(dialogues), 1),
                          value_carrying=value_ok / max(value_turns, 1), value_turns=value_turns,
                          copy_carrying=copy_ok / max(copy_turns, 1), copy_turns=copy_turns,
                          copy_token_accuracy=token_share, copy_tokens=token_count,
                          seconds=time.perf_counter() - start, failures=failures)
