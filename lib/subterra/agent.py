"""The subterranean agent: a compiled model deployed with the one-line system prompt and nothing else.

:class:`Agent` loads a model folder written by :func:`subterra.training.train` (or any chat
model) and writes the next assistant turn from the conversation so far: no node prompts, no
router, no orchestrator. Greedy batched decoding with a prefix cache (:class:`PrefixCache`) and a
loop guard (:class:`NoRepeatInReply`). How well it follows the procedure is measured in
:mod:`subterra.next_step`, a layer above.
"""

from __future__ import annotations

import functools
from pathlib import Path as FilePath


class Agent:
    """Greedy chat with a compiled model: ``Agent(model_dir).reply(messages) -> str``.

    ``model_dir`` is a model folder, a hub id or a named base (:mod:`subterra.bases`);
    :meth:`from_model` wraps a model already in memory (e.g. mid-training). Greedy decoding
    with one guard against loops: no run of ``no_repeat`` tokens may occur twice *within a
    reply* (values copied from the conversation are not affected, unlike transformers'
    ``no_repeat_ngram_size``, which also counts the prompt).
    """

    def __init__(self, model_dir: str | FilePath, max_new_tokens: int = 128, device: str | None = None,
                 no_repeat: int = 8, cache_gib: float = 4.0):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from .bases import resolve_base
        from .recipes import accelerator

        source = resolve_base(str(model_dir))
        model = AutoModelForCausalLM.from_pretrained(source).to(device or accelerator())
        self._setup(model, AutoTokenizer.from_pretrained(source), max_new_tokens, no_repeat, cache_gib)

    @classmethod
    def from_model(cls, model, tokenizer, max_new_tokens: int = 128, no_repeat: int = 8,
                   cache_gib: float = 0.0) -> "Agent":
        """An agent on a model already in memory; no prefix cache unless asked (its weights may still change)."""
        agent = cls.__new__(cls)
        agent._setup(model, tokenizer, max_new_tokens, no_repeat, cache_gib)
        return agent

    def _setup(self, model, tokenizer, max_new_tokens: int, no_repeat: int, cache_gib: float = 0.0) -> None:
        import copy

        self.tokenizer = copy.copy(tokenizer)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = model          # from_pretrained gives eval mode; reply_batch switches a training model and back
        self.device = next(model.parameters()).device
        self.max_new_tokens, self.no_repeat = max_new_tokens, no_repeat
        stops = self.model.generation_config.eos_token_id
        stops = stops if isinstance(stops, list) else [stops] if stops is not None else []
        self.stop_ids = sorted({*stops, self.tokenizer.eos_token_id} - {None})
        self.prefix_cache = PrefixCache.for_model(model, cache_gib) if cache_gib > 0 else None
        if self.device.type == "cpu":
            keep_freed_memory()
        import inspect

        self._keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters

    def reply(self, messages: list[dict]) -> str:
        """The next assistant turn after ``messages`` (system prompt first, then the conversation)."""
        return self.reply_batch([messages])[0]

    def reply_batch(self, conversations: list[list[dict]], batch_size: int = 32, progress: bool = False) -> list[str]:
        """Next assistant turns for many conversations at once (batches of similar length, left-padded, greedy).

        With a prefix cache (the default for a model loaded from a folder), a conversation's earlier
        turns are not read again: each prompt continues from the longest already-read token
        sequence it starts with (the same conversation's previous turn, or a long system prompt
        another conversation began with), and only the rest is computed.
        """
        import torch
        from tqdm.auto import tqdm

        texts = [self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
                 for c in conversations]
        ids = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        replies: dict[int, str] = {}
        was_training = self.model.training
        cache = self.prefix_cache if not was_training else None
        self.model.eval()
        for start in tqdm(range(0, len(order), batch_size), desc="generating", unit="batch", disable=not progress):
            members = order[start:start + batch_size]
            with torch.no_grad():
                new = self._generate([ids[i] for i in members], cache)
            replies.update({i: text.strip() for i, text in zip(members, new)})
        self.model.train(was_training)
        return [replies[i] for i in range(len(texts))]

    def _generate(self, rows: list[list[int]], cache: "PrefixCache | None") -> list[str]:
        """Greedy decoding of a batch. Each row is laid out as ``[pad] [cached part] [pad] [new part]``: the
        cached part's keys and values come from the prefix cache, the padding is masked out, and positions
        count real tokens only (from the attention mask), so a row reads as if it were alone. A row leaves
        the batch at its stop token (its states go to the prefix cache then), so the rows still writing
        are all that is computed: transformers' ``generate`` carries finished rows to the longest reply."""
        import torch

        hits = [cache.longest(row) if cache is not None else (None, 0) for row in rows]
        held = max(n for _, n in hits)                         # the cached part's width
        fresh = max(len(row) - n for row, (_, n) in zip(rows, hits))
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(rows), held + fresh), pad, dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        for r, (row, (_, n)) in enumerate(zip(rows, hits)):
            input_ids[r, held - n:held], mask[r, held - n:held] = torch.tensor(row[:n], dtype=torch.long), 1
            tail = row[n:]
            input_ids[r, held + fresh - len(tail):], mask[r, held + fresh - len(tail):] = (
                torch.tensor(tail, dtype=torch.long), 1)
        past = cache.batch(hits, held, self.model) if held else None
        if past is None:
            from transformers import DynamicCache

            past = DynamicCache(config=self.model.config)
        reserve(past, held + fresh + self.max_new_tokens)
        device = self.device
        mask = mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        feed, feed_positions = input_ids[:, held:].to(device), positions[:, held:]
        alive = list(range(len(rows)))                        # batch position -> row
        replies: list[list[int]] = [[] for _ in rows]
        guards = [NoRepeatInReply(self.no_repeat) if self.no_repeat else None for _ in rows]
        stops = torch.tensor(self.stop_ids, device=device)
        last_only = {"logits_to_keep": 1} if self._keeps_logits else {}     # not the vocabulary at every prompt token
        for step in range(self.max_new_tokens):
            logits = self.model(input_ids=feed, attention_mask=mask, position_ids=feed_positions,
                                cache=past, use_cache=True, **last_only).logits[:, -1, :]
            for j, r in enumerate(alive):
                banned = guards[r].banned() if guards[r] is not None else None
                if banned:
                    logits[j, banned] = float("-inf")
            chosen = logits.argmax(-1)
            ended = torch.isin(chosen, stops) if len(self.stop_ids) else torch.zeros_like(chosen, dtype=torch.bool)
            last = step == self.max_new_tokens - 1
            keep = []
            for j, (r, token, stop) in enumerate(zip(alive, chosen.tolist(), ended.tolist())):
                if not stop:
                    replies[r].append(token)
                    if guards[r] is not None:
                        guards[r].add(token)
                if stop or last:
                    if cache is not None:            # its states: the prompt's real columns and the reply fed so far
                        cache.keep(past, j, mask[j].nonzero().flatten(), rows[r], replies[r], hits[r])
                else:
                    keep.append(j)
            if not keep:
                break
            if len(keep) < len(alive):
                index = torch.tensor(keep, device=device)
                past.batch_select_indices(index)
                chosen, mask, feed_positions = chosen[index], mask[index], feed_positions[index]
                alive = [alive[j] for j in keep]
            feed = chosen[:, None]
            feed_positions = feed_positions[:, -1:] + 1
            mask = torch.cat([mask, mask.new_ones(len(alive), 1)], dim=1)
        return self.tokenizer.batch_decode(replies, skip_special_tokens=True)


@functools.cache
def keep_freed_memory() -> bool:
    """Have glibc's allocator keep the memory that large tensors free for the next ones (CPU runs on Linux).

    glibc gives each allocation of more than 32 MB its own ``mmap`` and returns it on ``free``, so every
    prefill and decode step maps, page-faults (the kernel zeroing each page) and unmaps its activations
    afresh: a fifth of the CPU time of a batched generation, spent in the kernel. Serving them from
    the heap and never trimming it turns that into reuse (about 13% more peak memory). The same as starting
    Python with ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<large>``; True where it took effect (glibc)."""
    import ctypes
    import ctypes.util
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4                       # malloc.h
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


def reserve(past, room: int) -> None:
    """Give each full-attention layer of ``past`` (a ``DynamicCache``) a buffer of ``room`` columns.

    A ``DynamicLayer`` concatenates at every decode step, so each step allocates, copies and frees the whole
    cache once more; at 32 rows of 600 tokens that copy cost about a sixth of a step on CPU. A reserved layer
    writes the step's column in place. Sliding-window layers and the like are left as they are."""
    from transformers.cache_utils import DynamicLayer

    for i, layer in enumerate(past.layers):
        if type(layer) is DynamicLayer:
            reserved = _reserved_layer()(room)
            if layer.get_seq_length():
                reserved.update(layer.keys, layer.values)
            past.layers[i] = reserved


@functools.cache
def _reserved_layer() -> type:
    """The class, made on first use (transformers is imported only when a model is)."""
    from transformers.cache_utils import DynamicLayer

    class ReservedLayer(DynamicLayer):
        """A ``DynamicLayer`` whose keys and values are views of a buffer made once with room to spare:
        an update writes its columns in place (the buffer doubles if a write passes its end)."""

        def __init__(self, room: int):
            super().__init__()
            self.room, self.length = room, 0

        def lazy_initialization(self, key_states, value_states) -> None:
            batch, heads, _, dim = key_states.shape
            self.device = key_states.device
            self._keys = key_states.new_empty(batch, heads, self.room, dim)
            self._values = value_states.new_empty(batch, heads, self.room, value_states.shape[-1])
            self.is_initialized = True

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            end = self.length + key_states.shape[-2]
            if end > self._keys.shape[-2]:
                self.room = max(end, 2 * self._keys.shape[-2])
                keys, values = self._keys[:, :, :self.length], self._values[:, :, :self.length]
                self.lazy_initialization(key_states, value_states)
                self._keys[:, :, :self.length], self._values[:, :, :self.length] = keys, values
            self._keys[:, :, self.length:end] = key_states
            self._values[:, :, self.length:end] = value_states
            self.length = end
            self._view()
            return self.keys, self.values

        def _view(self) -> None:
            self.keys, self.values = self._keys[:, :, :self.length], self._values[:, :, :self.length]

        def batch_select_indices(self, indices) -> None:
            if self.is_initialized:
                self._keys, self._values = self._keys[indices], self._values[indices]
                self._view()

        def crop(self, tokens_to_remove: int) -> None:
            super().crop(tokens_to_remove)
            if self.is_initialized:
                self.length = self.keys.shape[-2]
                self._view()

        def reset(self) -> None:
            super().reset()
            self.length = 0

    return ReservedLayer


class PrefixCache:
    """Keys and values of token sequences a model has already read, kept for the prompts that extend them.

    A conversation's next prompt is its previous prompt plus the reply and the customer's answer;
    in-context prompts share one long system prompt. :meth:`longest` finds the stored sequence
    sharing the longest start with a new prompt, :meth:`batch` lays the stored states out for a
    batch, :meth:`store` keeps each row's states after generation (replacing the entry it
    extended). Least recently used entries go first when the stored tokens pass the budget.
    """

    def __init__(self, max_tokens: int):
        from collections import OrderedDict

        self.max_tokens = max_tokens
        # id -> (token ids, keys per layer, values per layer, how many of the ids were the prompt)
        self.entries: "OrderedDict[int, tuple[list[int], list, list, int]]" = OrderedDict()
        self.tokens, self._next = 0, 0

    @classmethod
    def for_model(cls, model, gib: float) -> "PrefixCache":
        config = model.config.get_text_config()
        heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        per_token = 2 * config.num_hidden_layers * heads * dim * next(model.parameters()).element_size()
        return cls(max(1, int(gib * 2**30 / per_token)))

    def longest(self, row: list[int]) -> tuple[int | None, int]:
        """(entry id, tokens shared) for the entry sharing the longest start with ``row``, leaving one token to read."""
        best, shared = None, 0
        for key, (ids, *_) in self.entries.items():
            n = _common_prefix(ids, row, len(row) - 1)
            if n > shared:
                best, shared = key, n
        if best is not None:
            self.entries.move_to_end(best)
        return best, shared

    def batch(self, hits: list[tuple[int | None, int]], held: int, model):
        """A cache for the batch: each row's stored states right-aligned to ``held`` columns (zeros before)."""
        import torch
        from transformers import DynamicCache

        cache = DynamicCache(config=model.config)
        sample = next(iter(self.entries.values()))
        for layer in range(len(sample[1])):
            per_row_k, per_row_v = [], []
            for key, n in hits:
                k = self.entries[key][1][layer][:, :n] if key is not None else sample[1][layer][:, :0]
                v = self.entries[key][2][layer][:, :n] if key is not None else sample[2][layer][:, :0]
                gap = held - n
                if gap:
                    k = torch.cat([k.new_zeros(k.shape[0], gap, k.shape[2]), k], dim=1)
                    v = torch.cat([v.new_zeros(v.shape[0], gap, v.shape[2]), v], dim=1)
                per_row_k.append(k)
                per_row_v.append(v)
            cache.update(torch.stack(per_row_k), torch.stack(per_row_v), layer)
        return cache

    def keep(self, past, j: int, columns, row: list[int], reply: list[int], hit: tuple[int | None, int]) -> None:
        """Keep batch row ``j``'s states as one entry: the cache's ``columns`` that hold real tokens are its
        prompt (``row``) and the part of its ``reply`` already read back (the last token written never is)."""
        from transformers.cache_utils import DynamicLayer

        layers = getattr(past, "layers", None)
        if not layers or any(type(layer) not in (DynamicLayer, _reserved_layer()) for layer in layers):
            return                                       # sliding windows and the like: nothing reusable
        read = reply[:len(columns) - len(row)]
        keys = [layer.keys[j][:, columns] for layer in layers]
        values = [layer.values[j][:, columns] for layer in layers]
        key, n = hit
        if key in self.entries and n >= self.entries[key][3]:
            self._drop(key)                  # the same conversation, a turn on: the new entry replaces it
        self._add(list(row) + read, keys, values, len(row))

    def _add(self, ids, keys, values, prompt: int) -> None:
        self.entries[self._next] = (ids, keys, values, prompt)
        self._next += 1
        self.tokens += len(ids)
        while self.tokens > self.max_tokens and len(self.entries) > 1:
            self._drop(next(iter(self.entries)))

    def _drop(self, key) -> None:
        if key in self.entries:
            self.tokens -= len(self.entries.pop(key)[0])

    def clear(self) -> None:
        self.entries.clear()
        self.tokens = 0


def _common_prefix(a: list[int], b: list[int], limit: int) -> int:
    n = min(len(a), len(b), limit)
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n                                        # a[:lo] == b[:lo], a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def count_tokens(tokenizer, chat: list[dict], reply: str) -> tuple[int, int]:
    """(prompt, completion) tokens of one small-model turn: the templated chat, and the reply plus its end token."""
    prompt = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    return (len(tokenizer(prompt, add_special_tokens=False)["input_ids"]),
            len(tokenizer(reply, add_special_tokens=False)["input_ids"]) + 1)


class NoRepeatInReply:
    """The loop guard of one reply: no run of ``n`` tokens may occur twice in it.

    Only the reply's own tokens count, so copying a value from the conversation is never blocked;
    a reply that starts to go round in a loop is pushed out of it. Incremental: :meth:`add` each
    token written, :meth:`banned` gives the tokens that would complete a run already written.
    """

    def __init__(self, n: int):
        self.n = n
        self.tokens: list[int] = []
        self.follows: dict[tuple[int, ...], set[int]] = {}     # each (n-1)-token run -> tokens written after it

    def add(self, token: int) -> None:
        self.tokens.append(token)
        if len(self.tokens) >= self.n:
            self.follows.setdefault(tuple(self.tokens[-self.n:-1]), set()).add(token)

    def banned(self) -> list[int]:
        if len(self.tokens) < self.n - 1:
            return []
        return sorted(self.follows.get(tuple(self.tokens[len(self.tokens) - self.n + 1:]), ()))
