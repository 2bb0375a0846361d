"""From dialogues to training rows: the tokenizer, the loss mask, packing and made-up values.

- the tokenizer of a model trained from scratch (a byte-level BPE fitted to the corpus, ChatML);
- the loss mask (:func:`encode_dialogue`): labels on the assistant's tokens only, with any
  model's own chat template;
- batches without waste: dialogues packed into fixed blocks (:func:`pack`) or padded (:class:`Collator`);
- relexicalization: made-up customer values, fresh every epoch (:class:`FreshValues`), so
  that copying from the conversation is the only way to get them right.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any, Iterable

from .recipes import Recipe

IM_START, IM_END, PAD = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
IGNORE = -100

# ChatML. The {% generation %} markers let transformers (and TRL's assistant_only_loss) compute
# the same assistant mask as encode_dialogue: the content and <|im_end|>, not the newline after it.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{ '<|im_start|>assistant\\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{ '\\n' }}"
    "{%- else -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}")


# --------------------------------------------------------------------------- tokenizer

def corpus_texts(corpus) -> Iterable[str]:
    """Every message of every dialogue (all splits), and the role names the template writes."""
    yield "system\nuser\nassistant\n"
    for split in corpus.values():
        for messages in split["messages"]:
            for message in messages:
                yield message["content"]


def fit_tokenizer(texts: Iterable[str], vocab_size: int = 2048):
    """A byte-level BPE fitted to the corpus, wrapped so it saves and loads with ``AutoTokenizer``.

    Byte-level means any string encodes, including values the corpus never contained: an
    unseen city becomes a few sub-word pieces the model must learn to copy.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, IM_START, IM_END],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=IM_END, pad_token=PAD,
                                   extra_special_tokens=[IM_START, IM_END], chat_template=CHAT_TEMPLATE,
                                   model_max_length=4096, clean_up_tokenization_spaces=False)


# --------------------------------------------------------------------------- the loss mask

def message_spans(text: str, messages: list[dict]) -> list[tuple[int, int]]:
    """Where each message's (stripped) content sits in ``text``, the chat template's rendering of ``messages``."""
    spans, cursor = [], 0
    for message in messages:
        content = message["content"].strip()
        start = text.find(content, cursor)
        if start < 0:
            raise ValueError(f"the chat template does not reproduce a {message['role']} message verbatim")
        cursor = start + len(content)
        spans.append((start, cursor))
    return spans


def encode_dialogue(tokenizer, messages: list[dict], max_length: int | None = None) -> tuple[list[int], list[int]]:
    """Token ids and labels for one dialogue: labels are the ids on assistant tokens, -100 elsewhere.

    Works with any fast tokenizer's own chat template: the text is rendered once, each
    message's content is located in it (in order), and a token is trained on when it starts
    inside an assistant message's content or the special token that closes that turn.
    """
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    specials = sorted(tokenizer.all_special_tokens, key=len, reverse=True)
    spans = []
    for message, (start, end) in zip(messages, message_spans(text, messages)):
        if message["role"] == "assistant":
            end += next((len(s) for s in specials if text.startswith(s, end)), 0)
            spans.append((start, end))
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = enc["input_ids"]
    labels = [t if any(s <= a < e for s, e in spans) else IGNORE for t, (a, _) in zip(ids, enc["offset_mapping"])]
    if max_length:
        ids, labels = ids[:max_length], labels[:max_length]
    return ids, labels


# --------------------------------------------------------------------------- packing

def pack(encoded: list[tuple[list[int], list[int]]], block: int, seed: int = 0) -> list[dict]:
    """Pack dialogues into blocks of at most ``block`` tokens (first-fit decreasing).

    Each block keeps ``position_ids`` restarting at 0 for every dialogue, which is what tells
    the model where one dialogue ends and the next begins.
    """
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0]))
    bins: list[list[int]] = []
    room: list[int] = []
    for i in order:
        n = len(encoded[i][0])
        j = next((b for b, r in enumerate(room) if r >= n), None)
        if j is None:
            bins.append([]), room.append(block)
            j = len(bins) - 1
        bins[j].append(i)
        room[j] -= n
    random.Random(seed).shuffle(bins)
    blocks = []
    for members in bins:
        ids, labels, pos = [], [], []
        for i in members:
            ids += encoded[i][0]
            labels += encoded[i][1]
            pos += list(range(len(encoded[i][0])))
        blocks.append({"input_ids": ids, "labels": labels, "position_ids": pos})
    return blocks


@dataclass
class Collator:
    """Pads a batch; the padding is its own "dialogue" (positions from 0) and is never trained on.

    Packed batches carry ``position_ids`` and no attention mask (block-diagonal attention);
    unpacked batches carry an attention mask. ``pad_to`` fixes the shape of packed batches.
    """

    pad_id: int
    packed: bool
    pad_to: int | None = None

    def __call__(self, rows: list[dict]) -> dict:
        import torch

        width = self.pad_to or max(len(r["input_ids"]) for r in rows)
        batch: dict[str, list] = {"input_ids": [], "labels": [], "position_ids" if self.packed else "attention_mask": []}
        for r in rows:
            n, pad = len(r["input_ids"]), width - len(r["input_ids"])
            batch["input_ids"].append(r["input_ids"] + [self.pad_id] * pad)
            batch["labels"].append(r["labels"] + [IGNORE] * pad)
            if self.packed:
                batch["position_ids"].append(r["position_ids"] + list(range(pad)))
            else:
                batch["attention_mask"].append([1] * n + [0] * pad)
        out = {k: torch.tensor(v) for k, v in batch.items()}
        if self.packed:
            out["use_cache"] = False    # a cache would switch off the packed-sequence mask
        return out


# --------------------------------------------------------------------------- relexicalization

ONSETS = ("b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "ch", "sh", "st", "tr")
VOWELS, CODAS = ("a", "e", "i", "o", "u"), ("", "", "n", "r", "l", "s")


def _word(length: int, rng: random.Random) -> str:
    out = ""
    while len(out) < max(length - 1, 2):
        out += rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS)
    return out


def scramble(value: str, rng: random.Random) -> str:
    """A made-up value of the same shape: pronounceable words for words (capitals kept), digits for digits.

    Syllables rather than random letters: a made-up "Torvalen" splits into sub-word pieces the
    way an unseen real name does, so copying one teaches copying the other.
    """
    import re

    def word(match):
        text = match.group()
        if not text.isalpha():          # digits, and codes such as 3X4NTD: character by character
            return "".join(rng.choice("0123456789") if c.isdigit() else rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ")
                           if c.isalpha() else c for c in text)
        if len(text) < 3:               # am, pm, St
            return text
        new = _word(len(text), rng)
        return new.upper() if text.isupper() and len(text) > 1 else new.capitalize() if text[0].isupper() else new

    return re.sub(r"[^\W_]+", word, value)


def relexicalize(messages: list[dict], values: dict[str, Any], rng: random.Random) -> list[dict]:
    """Replace each of ``values`` that the customer says before the assistant does with a made-up one, everywhere.

    The offline corpus draws values from small pools, so a small model can get away with
    memorising them instead of copying from the conversation; then it fails on any value it
    never saw. Made-up values (never the held-out ones) leave copying as the only way to lower
    the loss. Values the assistant introduces (a price, a catalogue record) are left alone:
    those are product knowledge the model should learn. Which values to pass: those the agent
    copies (:func:`made_up_candidates`), never one a branch turns on or a catalogue key.
    """
    import re

    from .conformance import scalar_values

    texts = [m["content"] for m in messages]
    for value in (v for v in scalar_values(values) if len(v) >= 3):
        pattern = re.compile(r"(?<!\w)" + re.escape(value) + r"(?!\w)")
        first = next((i for i, t in enumerate(texts) if pattern.search(t)), None)
        if first is not None and messages[first]["role"] == "user":
            fresh = scramble(value, rng)
            texts = [pattern.sub(fresh, t) for t in texts]
    return [{**m, "content": t} for m, t in zip(messages, texts)]


def dialogue_lengths(dialogues: list[list[dict]], tokenizer) -> list[int]:
    """Each dialogue's length in tokens, whole (as the chat template renders it), in one batched pass."""
    texts = [tokenizer.apply_chat_template(m, tokenize=False) for m in dialogues]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []


def cover_paths(split, n: int, seed: int = 0):
    """``n`` dialogues of ``split`` that cover every path as evenly as ``n`` allows (round robin over paths).

    A CPU budget buys a few hundred dialogue passes; drawn at random from the corpus, some paths
    would never be seen. Taken in turns from each path (in a seeded order), every path is in the
    first ``len(paths)`` picks, and none gets a second dialogue before all have one.
    """
    if "path_id" not in split.column_names or n >= len(split):
        return split.select(range(min(n, len(split))))
    by_path: dict[str, list[int]] = {}
    for i, path in enumerate(split["path_id"]):
        by_path.setdefault(path, []).append(i)
    rng = random.Random(f"cover:{seed}")
    queues = [rng.sample(rows, len(rows)) for _, rows in sorted(by_path.items())]
    rng.shuffle(queues)
    chosen: list[int] = []
    while len(chosen) < n:
        chosen += [q.pop() for q in queues if q][:n - len(chosen)]
    return split.select(sorted(chosen))


def made_up_candidates(split) -> list[dict[str, Any]]:
    """Per dialogue, the scenario values training may make up: those of the variables the agent copies.

    Synthesis records them per dialogue (the ``copied`` column, from
    :func:`subterra.conformance.copied_variables`): never a value an edge's check reads, a catalogue
    record or a look-up. A corpus written before that column existed gets no made-up values (and says so):
    guessing would scramble the very values its branches turn on.
    """
    if "scenario" not in split.column_names:
        return [{} for _ in range(len(split))]
    if "copied" not in split.column_names or any(names is None for names in split["copied"]):
        print("this corpus does not say which values the agent copies (it predates the 'copied' column): "
              "training on it without made-up values; `subterra synthesize` again to write the column")
        return [{} for _ in range(len(split))]
    return [{k: v for k, v in json.loads(scenario)["values"].items() if k in names}
            for scenario, names in zip(split["scenario"], split["copied"])]


def build_dataset(split, tokenizer, recipe: Recipe, seed: int = 0, augment: bool = False,
                  lengths: list[int] | None = None):
    """One split of the corpus -> training rows, and its real-token count.

    With ``augment`` (the training split) a ``recipe.relexicalize`` share of dialogues get made-up
    customer values: fresh ones every epoch when dialogues are batched by length
    (:class:`FreshValues`), one draw when they are packed into fixed blocks. ``lengths``: the
    dialogues' whole lengths (:func:`dialogue_lengths`) where the caller has them already.
    """
    from datasets import Dataset

    dialogues = list(split["messages"])
    relex = augment and recipe.relexicalize > 0
    values = made_up_candidates(split) if relex else []
    relex = relex and any(values)
    if relex and not recipe.packing:
        fresh = FreshValues(dialogues, values, tokenizer, recipe, seed, lengths)
        return fresh, sum(fresh.lengths)
    if relex:
        rng = random.Random(f"relex:{seed}")
        dialogues = [relexicalize(m, v, rng) if rng.random() < recipe.relexicalize else m
                     for m, v in zip(dialogues, values)]
    encoded = [encode_dialogue(tokenizer, m, recipe.max_length) for m in dialogues]
    rows = (pack(encoded, recipe.max_length, seed) if recipe.packing
            else [{"input_ids": i, "labels": l} for i, l in encoded])
    return Dataset.from_list(rows), sum(len(i) for i, _ in encoded)


class FreshValues:
    """Training dialogues whose made-up customer values are drawn anew every epoch.

    A value drawn once can be memorised over several epochs like any pool value; a value that
    changes every epoch can only be copied from the conversation. Dialogue ``i`` in epoch ``e``
    is the same on every run (seeded by both), so a resumed run sees the data it would have.
    """

    def __init__(self, dialogues: list[list[dict]], values: list[dict], tokenizer, recipe: Recipe, seed: int = 0,
                 lengths: list[int] | None = None):
        self.dialogues, self.values, self.tokenizer, self.recipe, self.seed = dialogues, values, tokenizer, recipe, seed
        self.epoch = 0
        whole = lengths if lengths is not None else dialogue_lengths(dialogues, tokenizer)
        self.lengths = [min(n, recipe.max_length) for n in whole]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dialogues)

    def __getitem__(self, i: int) -> dict:
        rng = random.Random(f"relex:{self.seed}:{self.epoch}:{i}")
        messages = self.dialogues[i]
        if rng.random() < self.recipe.relexicalize:
            messages = relexicalize(messages, self.values[i], rng)
        ids, labels = encode_dialogue(self.tokenizer, messages, self.recipe.max_length)
        return {"input_ids": ids, "labels": labels}
