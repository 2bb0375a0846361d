"""What every backend shares: prices, requests, completions, token usage, errors, and the base class.

A role builds a :class:`Request` and hands it to a :class:`Backend`, which returns a
:class:`Completion`. :class:`OfflineBackend`, the deterministic stand-in, lives here too; the
SDK backends (:mod:`.claude`, :mod:`.openai_compat`) and the local model (:mod:`.local`) build on
this module, and :func:`subterra.backends.get_backend` picks one by name.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from dataclasses import asdict, dataclass, field
from typing import Callable

@dataclass(frozen=True)
class Price:
    """List prices in dollars per million tokens, and what the Batch API charges (a multiplier).

    ``cache_read`` is a prompt-cache hit; ``cache_write`` writing the cache with the default
    5-minute lifetime (the only one this project asks for). Providers that do not charge extra
    for cache writes (OpenAI) have ``cache_write == input``.
    """

    input: float
    output: float
    cache_read: float
    cache_write: float
    batch: float = 1.0            # Batch API multiplier on every token category; 1.0: no batch discount


# List prices per million tokens, from the providers' price pages (read 2026-11-30). Model names are
# matched by their longest prefix in this table, so dated snapshots share their alias's price.
# - Claude Sonnet 5.5: $2 / $10, cache read $0.20, 5-minute cache write $2.50, Batch API half price.
#   (Anthropic's Sonnet 5.5 migration guide gives cache reads as $0.10 since 2026-10-07; the model page
#   still says $0.20. We keep $0.20: a cache-read price too high over-estimates, never under-estimates.)
# - Claude Sonnet 4.5, the paper's teacher, customer and judge: retired 2026-11-30; kept to price old
#   caches and records. $3 / $15, cache read $0.30, write $3.75.
# - GPT-5.5 (the openai default, see DEFAULT_MODELS): $5 / $30, cached input $0.50, Batch API half price;
#   prompts over 272K tokens cost more, which no request here comes near.
# - GPT-4.1, the paper's robustness judge: OpenAI shuts it down on 2027-01-14. $2 / $8, cached $0.50.
# - The self-hosted small model as in the paper (an A100 at $2.50/h); the offline stand-in is free.
PRICES: dict[str, Price] = {
    "claude-sonnet-5-5": Price(2.00, 10.00, cache_read=0.20, cache_write=2.50, batch=0.5),
    "claude-sonnet-5": Price(2.00, 10.00, cache_read=0.20, cache_write=2.50, batch=0.5),
    "claude-sonnet-4-5": Price(3.00, 15.00, cache_read=0.30, cache_write=3.75, batch=0.5),
    "gpt-5.5": Price(5.00, 30.00, cache_read=0.50, cache_write=5.00, batch=0.5),
    "gpt-5.5-pro": Price(30.00, 180.00, cache_read=30.00, cache_write=30.00, batch=0.5),
    "gpt-4.1": Price(2.00, 8.00, cache_read=0.50, cache_write=2.00, batch=0.5),
    "gpt-4.1-mini": Price(0.40, 1.60, cache_read=0.10, cache_write=0.40, batch=0.5),
    "self-hosted": Price(0.05, 0.23, cache_read=0.05, cache_write=0.05),
    "offline": Price(0.0, 0.0, cache_read=0.0, cache_write=0.0),
}

# The defaults: Claude Sonnet 5.5, the current Sonnet, for teacher, customer and judge; for the second
# (robustness) judge GPT-5.5, pinned to its snapshot so that verdicts do not drift when the alias moves.
# Why GPT-5.5: it is OpenAI's general model that the installed SDK lists with no shutdown date (its
# deprecation notes schedule GPT-4.1, GPT-4o and GPT-5 for shutdown), the model OpenAI's reasoning guide
# says to start with, and generally available; the GPT-5.6 / GPT-6 tiers were partner previews.
DEFAULT_MODELS = {"anthropic": "claude-sonnet-5-5", "openai": "gpt-5.5-2026-04-23", "offline": "offline",
                  "local": "smollm2-135m-instruct"}

# An unknown model is priced at the dearest of the default models, category by category: never under the
# price of what the project would otherwise run.
UNKNOWN_PRICE = Price(*(max(getattr(PRICES[m], f) for m in ("claude-sonnet-5-5", "gpt-5.5"))
                        for f in ("input", "output", "cache_read", "cache_write", "batch")))


def price_of(model: str) -> Price:
    """The list price of ``model``: its longest prefix in :data:`PRICES`, else :data:`UNKNOWN_PRICE`."""
    matches = [prefix for prefix in PRICES if model.startswith(prefix)]
    return PRICES[max(matches, key=len)] if matches else UNKNOWN_PRICE


@dataclass(frozen=True)
class Usage:
    """Tokens of one or more calls. ``thinking_tokens`` is the part of ``output_tokens`` spent thinking
    (reasoning): both APIs count it inside the output total they bill, so it is reported, not billed again."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    thinking_tokens: int = 0

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(*(a + b for a, b in zip(asdict(self).values(), asdict(other).values())))

    def dollars(self, model: str, batch: bool = False) -> float:
        """Cost at ``model``'s list prices (:data:`PRICES`), at its Batch API rate when ``batch``."""
        price = price_of(model)
        cost = (self.input_tokens * price.input + self.cache_read_tokens * price.cache_read
                + self.cache_write_tokens * price.cache_write + self.output_tokens * price.output) / 1e6
        return cost * (price.batch if batch else 1.0)


@dataclass
class Request:
    """What a role asks of a model. ``offline`` writes the reply when no model is used."""

    system: str
    messages: list[dict]                      # [{"role": "user"|"assistant", "content": str}, ...]
    max_tokens: int = 400
    temperature: float = 0.8
    offline: Callable[[random.Random], str] | None = field(default=None, repr=False, compare=False)
    tag: str = ""                             # which role asked, for logs and usage tables
    sample: str = ""                          # tells apart deliberate repeats (e.g. the dialogue id)
    tools: tuple[dict, ...] = ()              # tools the model may call ({name, description, parameters})

    def key(self, backend: str, model: str, variant: str = "") -> str:
        """Cache key over (backend, model, messages, parameters) and the backend's non-default settings.

        ``variant`` names settings that change the answer (e.g. adaptive thinking); it is left out of
        the key when empty, so keys made before it existed stay valid.
        """
        fields = [backend, model, self.system, self.messages, self.max_tokens, self.temperature, self.sample]
        fields += [list(self.tools)] if self.tools else []          # keys made without tools stay valid
        payload = json.dumps(fields + [variant] if variant else fields, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True)
class Completion:
    text: str
    usage: Usage
    model: str
    backend: str
    cached: bool = False
    priced_as: str | None = None      # the model whose list prices apply, when not ``model`` (a stand-in)

    @property
    def dollars(self) -> float:
        """What producing this completion cost at list prices (also when it now comes from a cache)."""
        return self.usage.dollars(self.priced_as or self.model)


def run_sync(coro):
    """Run a coroutine to completion from sync code, also inside a running loop (e.g. Jupyter)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    import concurrent.futures  # a loop is running here: give the coroutine its own loop on a worker thread

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


class BackendError(RuntimeError):
    """A model call that failed for good (after retries), described in one line."""


class ModelNotFound(BackendError):
    """The API does not know the model (retired, misspelt, or not open to this key): a setting to change,
    not a failure of one call, so runs stop on it instead of recording it per conversation."""


THINKING = ("off", "adaptive")       # the thinking settings of the remote backends (see backends.claude)
EFFORTS = ("low", "medium", "high", "xhigh", "max")   # output_config.effort, as the SDK's OutputConfigParam
THINKING_ROOM = 2048                 # output tokens added to a request's limit when the model may think


class Backend:
    """Base class: subclasses implement :meth:`acomplete`; :meth:`complete` is its sync twin."""

    name = "base"

    def __init__(self, model: str | None = None):
        self.model = model or DEFAULT_MODELS.get(self.name, self.name)

    @property
    def variant(self) -> str:
        """Settings beyond (backend, model) that change answers, for cache keys; '' for the defaults."""
        return ""

    def max_output(self, request: Request) -> int:
        """The most output tokens a call for ``request`` can be billed (its limit, plus any thinking room)."""
        return request.max_tokens

    async def acomplete(self, request: Request) -> Completion:
        raise NotImplementedError

    def complete(self, request: Request) -> Completion:
        return run_sync(self.acomplete(request))

    async def aclose(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r})"


class OfflineBackend(Backend):
    """Deterministic stand-in: calls the request's ``offline`` writer with a seeded generator."""

    name = "offline"

    def __init__(self, model: str | None = None, seed: int = 0):
        super().__init__(model or "offline")
        self.seed = seed

    async def acomplete(self, request: Request) -> Completion:
        if request.offline is None:
            raise BackendError(f"the offline backend cannot answer a '{request.tag or 'free-form'}' request: "
                               "choose --backend anthropic or openai for this role")
        rng = random.Random(f"{self.seed}:{request.key(self.name, self.model)}")
        text = request.offline(rng)
        prompt_words = len(request.system.split()) + sum(len(m["content"].split()) for m in request.messages)
        return Completion(text=text, usage=Usage(input_tokens=approx_tokens(prompt_words),
                                                 output_tokens=approx_tokens(len(text.split()))),
                          model=self.model, backend=self.name)


def approx_tokens(words: int) -> int:
    """Rough token count from a word count (English prose: ~1.3 tokens per word)."""
    return int(round(words * 1.3))
