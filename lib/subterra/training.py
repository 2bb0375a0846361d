"""The compiler: fine-tune a causal LM on the dialogue corpus so the procedure lives in its weights.

Two ways in, one training loop (transformers' ``Trainer``):

- **from scratch** (the default ``tiny-cpu`` recipe): a byte-level BPE tokenizer is fitted to
  the corpus and a tiny Qwen2 is built from a config. It trains in minutes on a laptop CPU,
  so every stage of the tutorial runs with no GPU and no download.
- **a base model** (``model_name_or_path``: a hub id or a local folder), with its own chat
  template: the paper's setting (Qwen2.5-3B-Instruct, Qwen3-8B), full parameters, bf16.

The loss counts assistant tokens only (each assistant message's content and the token that
ends its turn), never the system prompt or the customer: the model learns to *act* the
procedure, not to imitate customers. Batches waste little on padding either way: dialogues
grouped by length (the CPU default), or packed into fixed-length blocks whose ``position_ids``
restart at each dialogue; with no attention mask, transformers then builds a block-diagonal
causal mask, so packed dialogues never see each other. Recipes are small YAML files in
``recipes/``; :func:`main` is the command line (``python -m subterra.training CORPUS OUT``).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path as FilePath
from typing import Any, Iterable

RECIPE_DIR = FilePath(__file__).resolve().parents[2] / "recipes"
SCRATCH = "scratch"
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


# --------------------------------------------------------------------------- recipes

class RecipeError(ValueError):
    """A recipe that cannot be used, described in one line naming the file and the field."""

    def __init__(self, message: str, *, file: str | None = None, field: str | None = None):
        self.file, self.field, self.message = file, field, message
        where = (file or "<recipe>") + (f": field '{field}'" if field else "")
        super().__init__(f"{where}: {message}")


@dataclass
class Recipe:
    """Every training setting. The defaults are the ``tiny-cpu`` recipe (from scratch, on CPU).

    The effective batch is ``per_device_train_batch_size * gradient_accumulation_steps * devices``
    sequences: packed blocks of ``max_length`` tokens when ``packing`` is on, dialogues when it is off.
    """

    model_name_or_path: str = SCRATCH     # hub id, local folder, or "scratch"
    # the from-scratch model (ignored for a base model)
    vocab_size: int = 2048
    num_layers: int = 4
    hidden_size: int = 256
    num_heads: int = 4
    intermediate_size: int = 768
    # optimisation
    num_train_epochs: float = 4.0
    max_steps: int = -1                   # > 0 overrides the epochs
    learning_rate: float = 1e-3
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.05
    weight_decay: float = 0.01
    per_device_train_batch_size: int = 16
    gradient_accumulation_steps: int = 1
    max_length: int = 1024
    packing: bool = False                 # True: pack dialogues into blocks of max_length tokens
    bf16: str | bool = "auto"             # auto: when the GPU supports it
    gradient_checkpointing: bool = False
    seed: int = 0
    # evaluation and checkpoints (the best checkpoint by eval loss is loaded at the end)
    eval_strategy: str = "epoch"          # epoch | steps
    eval_steps: int = 100
    save_total_limit: int = 2
    logging_steps: int = 10
    relexicalize: float = 0.5             # share of training dialogues whose customer values are made up
    lora_rank: int = 0                    # > 0: LoRA adapters (peft) instead of full parameters
    source: str | None = field(default=None, repr=False, compare=False)

    @property
    def scratch(self) -> bool:
        return self.model_name_or_path in (SCRATCH, "", None)

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "source"}


_CHOICES = {"lr_scheduler_type": ("cosine", "linear", "constant", "constant_with_warmup", "cosine_with_restarts"),
            "eval_strategy": ("epoch", "steps"), "bf16": (True, False, "auto")}
_POSITIVE = {"vocab_size", "num_layers", "hidden_size", "num_heads", "intermediate_size", "num_train_epochs",
             "learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "max_length",
             "eval_steps", "save_total_limit", "logging_steps"}


def _check(recipe: Recipe) -> Recipe:
    fail = lambda name, msg: RecipeError(msg, file=recipe.source, field=name)  # noqa: E731
    types = {f.name: f.type for f in fields(Recipe)}
    for name, kind in types.items():
        if name == "source":
            continue
        value = getattr(recipe, name)
        expect = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,)}.get(kind)
        if name == "bf16":
            expect = (bool, str)
        if expect and (not isinstance(value, expect) or (isinstance(value, bool) and bool not in expect)):
            raise fail(name, f"expected {kind.split(' ')[0]}, got {value!r}")
        if name in _POSITIVE and value <= 0:
            raise fail(name, f"must be positive, got {value!r}")
        if name in _CHOICES and value not in _CHOICES[name]:
            raise fail(name, f"must be one of {', '.join(map(str, _CHOICES[name]))}; got {value!r}")
    if not 0 <= recipe.relexicalize <= 1:
        raise fail("relexicalize", f"must be in [0, 1], got {recipe.relexicalize!r}")
    if not 0 <= recipe.warmup_ratio < 1:
        raise fail("warmup_ratio", f"must be in [0, 1), got {recipe.warmup_ratio!r}")
    if recipe.lora_rank < 0:
        raise fail("lora_rank", f"must be 0 (full fine-tune) or positive, got {recipe.lora_rank!r}")
    if recipe.scratch and recipe.hidden_size % recipe.num_heads:
        raise fail("hidden_size", f"{recipe.hidden_size} is not divisible by num_heads={recipe.num_heads}")
    return recipe


def load_recipe(source: "str | FilePath | dict | Recipe | None" = None, **overrides: Any) -> Recipe:
    """A validated recipe from a name in ``recipes/`` (``tiny-cpu``), a YAML file, a dict or a Recipe.

    Unknown fields, wrong types and out-of-range values raise :class:`RecipeError`, one line
    naming the file and the field. ``overrides`` replace fields after loading.
    """
    import yaml

    if isinstance(source, Recipe):
        data, file = source.as_dict(), source.source
    elif isinstance(source, dict) or source is None:
        data, file = dict(source or {}), None
    else:
        path = FilePath(source)
        if path.suffix not in (".yaml", ".yml") and not path.exists():
            path = RECIPE_DIR / f"{source}.yaml"
        file = str(path)
        if not path.exists():
            known = ", ".join(sorted(p.stem for p in RECIPE_DIR.glob("*.yaml")))
            raise RecipeError(f"no such recipe (known: {known})", file=file)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise RecipeError(f"YAML syntax error{f' at line {mark.line + 1}' if mark else ''}", file=file) from None
        if not isinstance(data, dict):
            raise RecipeError("a recipe is a mapping of field: value", file=file)
    data.update(overrides)
    known = {f.name for f in fields(Recipe)} - {"source"}
    for name in data:
        if name not in known:
            raise RecipeError(f"unknown field (known: {', '.join(sorted(known))})", file=file, field=name)
    if data.get("model_name_or_path") is None:
        data.pop("model_name_or_path", None)
    for name in ("learning_rate", "warmup_ratio", "weight_decay", "num_train_epochs", "relexicalize"):
        if isinstance(data.get(name), str):         # YAML reads 2e-5 (no dot) as a string
            try:
                data[name] = float(data[name])
            except ValueError:
                raise RecipeError(f"expected a number, got {data[name]!r}", file=file, field=name) from None
    return _check(Recipe(**data, source=file))


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
    """Replace each value the customer says before the assistant does with a made-up one, everywhere.

    The offline corpus draws values from small pools, so a small model can get away with
    memorising them instead of copying from the conversation; then it fails on any value it
    never saw. Made-up values (never the held-out ones) leave copying as the only way to lower
    the loss. Values the assistant introduces (a price, a catalogue record) are left alone:
    those are product knowledge the model should learn.
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


def build_dataset(split, tokenizer, recipe: Recipe, seed: int = 0, augment: bool = False):
    """One split of the corpus -> training rows, and its real-token count.

    With ``augment`` (the training split) a ``recipe.relexicalize`` share of dialogues get made-up
    customer values: fresh ones every epoch when dialogues are batched by length
    (:class:`FreshValues`), one draw when they are packed into fixed blocks.
    """
    from datasets import Dataset

    dialogues = list(split["messages"])
    values = ([json.loads(s)["values"] for s in split["scenario"]] if "scenario" in split.column_names
              else [{} for _ in dialogues])
    relex = augment and recipe.relexicalize > 0 and any(values)
    if relex and not recipe.packing:
        fresh = FreshValues(dialogues, values, tokenizer, recipe, seed)
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

    def __init__(self, dialogues: list[list[dict]], values: list[dict], tokenizer, recipe: Recipe, seed: int = 0):
        self.dialogues, self.values, self.tokenizer, self.recipe, self.seed = dialogues, values, tokenizer, recipe, seed
        self.epoch = 0
        self.lengths = [len(encode_dialogue(tokenizer, m, recipe.max_length)[0]) for m in dialogues]

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


def _epoch_callback(dataset: FreshValues):
    from transformers import TrainerCallback

    class NewValuesEachEpoch(TrainerCallback):
        def on_epoch_begin(self, args, state, control, **kwargs):
            dataset.set_epoch(int(math.floor(state.epoch + 1e-6)))

    return NewValuesEachEpoch()


# --------------------------------------------------------------------------- models

def tiny_model(tokenizer, recipe: Recipe):
    """A small Qwen2 built from a config (no download), sized by the recipe; tied embeddings."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=recipe.hidden_size,
                         num_hidden_layers=recipe.num_layers, num_attention_heads=recipe.num_heads,
                         num_key_value_heads=recipe.num_heads, intermediate_size=recipe.intermediate_size,
                         max_position_embeddings=max(recipe.max_length, 2048), tie_word_embeddings=True,
                         bos_token_id=None, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, attn_implementation="sdpa")
    return Qwen2ForCausalLM(config)


def load_model(recipe: Recipe, corpus, out_dir: FilePath):
    """(model, tokenizer) for a recipe. From scratch, a tokenizer saved in ``out_dir`` is reused (resume)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

    set_seed(recipe.seed)
    if recipe.scratch:
        if (out_dir / "tokenizer.json").exists():
            tokenizer = AutoTokenizer.from_pretrained(out_dir)
        else:
            tokenizer = fit_tokenizer(corpus_texts(corpus), recipe.vocab_size)
        model = tiny_model(tokenizer, recipe)
    else:
        tokenizer = AutoTokenizer.from_pretrained(recipe.model_name_or_path)
        dtype = torch.bfloat16 if _bf16(recipe) else "auto"
        model = AutoModelForCausalLM.from_pretrained(recipe.model_name_or_path, dtype=dtype)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if recipe.lora_rank:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=recipe.lora_rank, lora_alpha=2 * recipe.lora_rank,
                                                 target_modules="all-linear", task_type="CAUSAL_LM"))
    return model, tokenizer


def _bf16(recipe: Recipe) -> bool:
    import torch

    if recipe.bf16 == "auto":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(recipe.bf16)


# --------------------------------------------------------------------------- training

@dataclass
class TrainResult:
    out_dir: FilePath
    best_checkpoint: str | None
    eval_loss: float | None
    train_seconds: float
    tokens_per_second: float          # real (non-padding) training tokens per second
    padding_fraction: float           # padding tokens / all tokens in the training batches
    global_step: int
    epochs: float
    train_tokens: int                 # real tokens in one epoch of the training split
    parameters: int
    history: list[dict] = field(repr=False, default_factory=list)

    def summary(self) -> str:
        return (f"{self.out_dir}: eval loss {self.eval_loss:.4f}, {self.train_seconds:.0f} s, "
                f"{self.tokens_per_second:,.0f} tokens/s, padding {100 * self.padding_fraction:.1f}%")


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``["learning_rate=2e-5", "packing=true"]`` -> recipe overrides, each value read as YAML."""
    import yaml

    overrides = {}
    for item in items:
        if "=" not in item:
            raise RecipeError(f"expected FIELD=VALUE, got {item!r}", file="--set")
        key, value = item.split("=", 1)
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def _corpus(corpus):
    from datasets import DatasetDict, load_from_disk

    if isinstance(corpus, DatasetDict):
        return corpus
    path = FilePath(corpus)
    return load_from_disk(str(path / "corpus" if (path / "corpus").exists() else path))


def corpus_hash(corpus) -> str:
    """A short hash of the training text (messages of every split): names the corpus in the model card."""
    digest = hashlib.sha256()
    for name in sorted(corpus):
        for messages in corpus[name]["messages"]:
            digest.update(json.dumps(messages, sort_keys=True, ensure_ascii=False).encode())
    return digest.hexdigest()[:16]


def padding_fraction(loader) -> float:
    """Padding tokens / all tokens over one pass of a dataloader (collation only, no model)."""
    pad = total = 0
    for batch in loader:
        total += batch["input_ids"].numel()
        if "attention_mask" in batch:
            pad += int((batch["attention_mask"] == 0).sum())
        else:   # packed: padding is a position run that no label or real token belongs to
            pad += int(((batch["labels"] == IGNORE) & (batch["input_ids"] == loader.collate_fn.pad_id)).sum())
    return pad / max(total, 1)


def training_arguments(recipe: Recipe, out_dir: FilePath, **extra):
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(out_dir), num_train_epochs=recipe.num_train_epochs, max_steps=recipe.max_steps,
        learning_rate=recipe.learning_rate, lr_scheduler_type=recipe.lr_scheduler_type,
        warmup_steps=recipe.warmup_ratio, weight_decay=recipe.weight_decay,
        per_device_train_batch_size=recipe.per_device_train_batch_size,
        per_device_eval_batch_size=recipe.per_device_train_batch_size,
        gradient_accumulation_steps=recipe.gradient_accumulation_steps, bf16=_bf16(recipe),
        gradient_checkpointing=recipe.gradient_checkpointing, seed=recipe.seed, data_seed=recipe.seed,
        eval_strategy=recipe.eval_strategy, save_strategy=recipe.eval_strategy, eval_steps=recipe.eval_steps,
        save_steps=recipe.eval_steps, save_total_limit=recipe.save_total_limit, load_best_model_at_end=True,
        metric_for_best_model="eval_loss", greater_is_better=False, logging_steps=recipe.logging_steps,
        train_sampling_strategy="random" if recipe.packing else "group_by_length",
        report_to="none", remove_unused_columns=False, **{"disable_tqdm": True, **extra})


def build_trainer(corpus, out_dir: str | FilePath, recipe: "Recipe | str | dict | None" = None,
                  callbacks: Iterable = (), progress: bool = False, **overrides: Any):
    """The ``Trainer`` that :func:`train` runs (model, tokenizer, packed data), and the recipe it used."""
    from transformers import Trainer

    recipe = load_recipe(recipe, **overrides)
    out_dir = FilePath(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    corpus = _corpus(corpus)
    model, tokenizer = load_model(recipe, corpus, out_dir)
    tokenizer.save_pretrained(out_dir)
    train_set, train_tokens = build_dataset(corpus["train"], tokenizer, recipe, recipe.seed, augment=True)
    eval_set, _ = build_dataset(corpus["eval"] if "eval" in corpus else corpus["train"], tokenizer, recipe, 1)
    collator = Collator(tokenizer.pad_token_id, recipe.packing, recipe.max_length if recipe.packing else None)
    callbacks = list(callbacks) + ([_epoch_callback(train_set)] if isinstance(train_set, FreshValues) else [])
    trainer = Trainer(model=model, args=training_arguments(recipe, out_dir, disable_tqdm=not progress),
                      train_dataset=train_set, eval_dataset=eval_set, data_collator=collator,
                      processing_class=tokenizer, callbacks=callbacks)
    trainer.train_tokens = train_tokens      # real tokens in one epoch of the training split
    return trainer, recipe, corpus


def train(corpus, out_dir: str | FilePath, recipe: "Recipe | str | dict | None" = None, resume: bool = True,
          callbacks: Iterable = (), progress: bool = False, **overrides: Any) -> TrainResult:
    """Compile: fine-tune on ``corpus`` (a synthesis folder, a corpus folder or a DatasetDict).

    The final (best-by-eval-loss) model and its tokenizer are saved in ``out_dir`` with a
    model card; checkpoints live in ``out_dir/checkpoint-*``. With ``resume`` a killed run
    continues from its last checkpoint, same data order, same schedule. ``progress`` shows the
    Trainer's progress bar (tqdm.auto: a widget in a notebook).
    """
    from transformers.trainer_utils import get_last_checkpoint

    out_dir = FilePath(out_dir)
    trainer, recipe, corpus = build_trainer(corpus, out_dir, recipe, callbacks, progress, **overrides)
    train_tokens = trainer.train_tokens
    padding = padding_fraction(trainer.get_train_dataloader())
    checkpoint = get_last_checkpoint(str(out_dir)) if resume and out_dir.exists() else None
    epoch0 = json.loads((FilePath(checkpoint) / "trainer_state.json").read_text())["epoch"] if checkpoint else 0.0
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=checkpoint)
    seconds = time.perf_counter() - start
    state = trainer.state
    if recipe.lora_rank:        # deploy merged weights (loads with AutoModelForCausalLM); keep the adapter too
        trainer.model.save_pretrained(out_dir / "adapter")
        trainer.model = trainer.model.merge_and_unload()
    trainer.save_model(str(out_dir))     # gathers ZeRO-3 / FSDP shards; the best checkpoint's weights
    if not trainer.is_world_process_zero():
        return None
    model = trainer.model
    result = TrainResult(out_dir=out_dir, best_checkpoint=state.best_model_checkpoint, eval_loss=state.best_metric,
                         train_seconds=seconds, padding_fraction=padding, global_step=state.global_step,
                         tokens_per_second=train_tokens * (state.epoch - epoch0) / max(seconds, 1e-9),
                         epochs=state.epoch, train_tokens=train_tokens,
                         parameters=sum(p.numel() for p in model.parameters()), history=state.log_history)
    write_model_card(result, recipe, corpus)
    write_training_record(result, recipe)
    return result


TRAINING_RECORD = "training.json"


def write_training_record(result: TrainResult, recipe: Recipe) -> FilePath:
    """``training.json`` next to the weights: the :class:`TrainResult` and the recipe, machine-readable."""
    record = {k: v for k, v in asdict(result).items() if k != "history"}
    record["out_dir"] = str(result.out_dir)
    record["recipe"] = recipe.as_dict()
    record["history"] = result.history
    path = result.out_dir / TRAINING_RECORD
    path.write_text(json.dumps(record, indent=1, default=str))
    return path


def read_training_record(model_dir: str | FilePath) -> dict | None:
    """What :func:`train` recorded about the model in ``model_dir`` (None for a model it did not train)."""
    path = FilePath(model_dir) / TRAINING_RECORD
    return json.loads(path.read_text()) if path.exists() else None


def write_model_card(result: TrainResult, recipe: Recipe, corpus) -> FilePath:
    """``README.md`` next to the weights: what it was trained on, how, and how well."""
    from .workflow import workflow_file

    domain = corpus["train"][0].get("domain", "unknown") if len(corpus["train"]) else "unknown"
    wf_hash = "n/a"
    try:
        wf_hash = hashlib.sha256(workflow_file(domain).read_bytes()).hexdigest()[:16]
    except OSError:
        pass
    system_prompt = corpus["train"][0]["messages"][0]["content"] if len(corpus["train"]) else ""
    rows = "\n".join(f"| {k} | {v} |" for k, v in recipe.as_dict().items())
    card = f"""---
library_name: transformers
tags: [subterra, compiled-workflow, {domain}]
---
# {domain}: a compiled workflow agent

Fine-tuned with `subterra` on synthetic dialogues that walk the `{domain}` workflow (arXiv 2605.22502).
Deploy it with this system prompt and nothing else: "{system_prompt}"

| | |
|---|---|
| workflow file hash | `{wf_hash}` |
| corpus hash | `{corpus_hash(corpus)}` |
| dialogues (train / eval) | {len(corpus['train'])} / {len(corpus['eval']) if 'eval' in corpus else 0} |
| base | {recipe.model_name_or_path} |
| parameters | {result.parameters:,} |
| eval loss (best checkpoint) | {result.eval_loss:.4f} |
| best checkpoint | {result.best_checkpoint} |
| steps / epochs | {result.global_step} / {result.epochs:.2f} |
| training time | {result.train_seconds:.0f} s, {result.tokens_per_second:,.0f} tokens/s |
| padding | {100 * result.padding_fraction:.1f}% |

## Recipe

| field | value |
|---|---|
{rows}
"""
    path = result.out_dir / "README.md"
    path.write_text(card)
    return path


# --------------------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    """``python -m subterra.training CORPUS OUT [--recipe NAME] [--set field=value ...]``

    Under accelerate: ``accelerate launch --config_file configs/accelerate/zero3.yaml -m subterra.training ...``
    """
    import argparse

    parser = argparse.ArgumentParser(prog="subterra.training", description=__doc__.splitlines()[0])
    parser.add_argument("corpus", help="synthesis output folder (with corpus/) or a saved DatasetDict")
    parser.add_argument("out", help="output folder for checkpoints, the model and its card")
    parser.add_argument("--recipe", default="tiny-cpu", help="recipe name in recipes/ or a YAML file")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override a field")
    parser.add_argument("--no-resume", action="store_true", help="start over even if checkpoints exist")
    args = parser.parse_args(argv)
    return run_training(args.corpus, args.out, args.recipe, args.set, resume=not args.no_resume)


def run_training(corpus, out, recipe: str, settings: Iterable[str] = (), progress: bool = False, resume: bool = True,
                 **overrides: Any) -> int:
    """The command lines' training run: ``--set`` settings (then ``overrides``) on the recipe, a one-line
    error instead of a traceback, the summary printed by the main process. Returns the exit status."""
    import sys

    try:
        result = train(corpus, out, recipe, resume=resume, progress=progress,
                       **{**parse_overrides(settings), **overrides})
    except (ValueError, FileNotFoundError) as exc:     # RecipeError is a ValueError
        print(exc, file=sys.stderr)
        return 1
    if result is not None:      # None: a process other than the main one under accelerate
        print(result.summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
