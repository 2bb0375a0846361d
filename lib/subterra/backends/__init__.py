"""One interface for every role that needs a model: teacher, user simulator, judge.

A role builds a :class:`Request` (system text, chat messages, sampling parameters) and
hands it to a :class:`Backend`, which returns a :class:`Completion` (text and token
usage). Backends:

- ``offline`` (the default): a deterministic stand-in. Each role attaches to its request
  an ``offline`` function that writes the reply from structured context (a node's example
  utterances, the scenario, the persona); the backend calls it with a random generator
  seeded from the request, so a run is reproducible for a seed. It is *not* a language
  model: it exists so the whole pipeline runs, and is tested, with no key and no network.
- ``anthropic``: Claude through the official SDK (default model Claude Sonnet 4.5).
- ``openai``: any OpenAI-compatible server through the official SDK (GPT-4.1, or a local
  vLLM / Ollama server via ``base_url``).

:func:`get_backend` chooses: an explicit name, else ``anthropic`` when
``ANTHROPIC_API_KEY`` is set, else ``offline``. Every backend can be wrapped in a
:class:`~subterra.backends.cache.CachedBackend` (disk cache and budget cap).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
from dataclasses import asdict, dataclass, field
from typing import Callable

# List prices in dollars per million tokens: (input, output). Sources: the providers' price pages
# (Claude Sonnet 4.5 $3/$15; GPT-4.1 $2/$8); the self-hosted small model as in the paper (A100 at $2.50/h).
PRICES = {
    "claude-sonnet-4-5": (3.00, 15.00),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "self-hosted": (0.05, 0.23),
    "offline": (0.0, 0.0),
}
DEFAULT_MODELS = {"anthropic": "claude-sonnet-4-5", "openai": "gpt-4.1", "offline": "offline"}


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(*(a + b for a, b in zip(asdict(self).values(), asdict(other).values())))

    def dollars(self, model: str, batch: bool = False) -> float:
        """Cost at list prices (cache reads at 10%, cache writes at 125% of input; batches at 50%)."""
        price_in, price_out = price_of(model)
        cost = (self.input_tokens * price_in + self.cache_read_tokens * price_in * 0.1
                + self.cache_write_tokens * price_in * 1.25 + self.output_tokens * price_out) / 1e6
        return cost * (0.5 if batch else 1.0)


def price_of(model: str) -> tuple[float, float]:
    for prefix, price in PRICES.items():
        if model.startswith(prefix):
            return price
    return PRICES["claude-sonnet-4-5"]  # unknown model: assume frontier prices, never under-estimate


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

    def key(self, backend: str, model: str) -> str:
        """Cache key over (backend, model, messages, parameters)."""
        payload = json.dumps([backend, model, self.system, self.messages, self.max_tokens, self.temperature,
                              self.sample],
                             sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True)
class Completion:
    text: str
    usage: Usage
    model: str
    backend: str
    cached: bool = False

    @property
    def dollars(self) -> float:
        """What producing this completion cost at list prices (also when it now comes from a cache)."""
        return self.usage.dollars(self.model)


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


class Backend:
    """Base class: subclasses implement :meth:`acomplete`; :meth:`complete` is its sync twin."""

    name = "base"

    def __init__(self, model: str | None = None):
        self.model = model or DEFAULT_MODELS.get(self.name, self.name)

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


def get_backend(name: str | None = None, model: str | None = None, **options) -> Backend:
    """An explicit backend name, else ``anthropic`` when ``ANTHROPIC_API_KEY`` is set, else ``offline``."""
    name = name or ("anthropic" if os.environ.get("ANTHROPIC_API_KEY") else "offline")
    if name == "offline":
        return OfflineBackend(model, **options)
    if name == "anthropic":
        from .claude import AnthropicBackend

        return AnthropicBackend(model, **options)
    if name == "openai":
        from .openai_compat import OpenAIBackend

        return OpenAIBackend(model, **options)
    raise ValueError(f"unknown backend {name!r} (choose offline, anthropic or openai)")
