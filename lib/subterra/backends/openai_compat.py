"""Any OpenAI-compatible chat server through the official ``openai`` SDK.

:class:`OpenAIBackend` talks to OpenAI itself (default model GPT-4.1) or, given a
``base_url`` (argument or ``OPENAI_BASE_URL``), to a local server such as vLLM
(``http://localhost:8000/v1``) or Ollama (``http://localhost:11434/v1``), which need no
key: a placeholder is sent when none is set. The request's system text becomes the first
message; calls are bounded and retried as in :mod:`subterra.backends.retry`.

The output limit goes out as ``max_completion_tokens`` to OpenAI (which deprecated
``max_tokens``) and as ``max_tokens`` to a custom ``base_url`` (what local servers read).

Usage: OpenAI counts cached prompt tokens inside ``prompt_tokens``; here they are moved to
``cache_read_tokens`` (and ``cache_write_tokens``, when reported) so that
:meth:`Usage.dollars <subterra.backends.Usage.dollars>` does not count them twice.
"""

from __future__ import annotations

import os
from typing import Any

import openai

from . import DEFAULT_MODELS, BackendError, Completion, Request, Usage
from .retry import RemoteBackend

NO_KEY = "not-needed"        # what a local server is sent as its key


def usage_of(response: Any) -> Usage:
    """Token usage of a chat completion; servers that report none give zeros."""
    u = getattr(response, "usage", None)
    if u is None:
        return Usage()
    details = getattr(u, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None) or 0
    written = getattr(details, "cache_write_tokens", None) or 0
    prompt = u.prompt_tokens or 0
    return Usage(input_tokens=max(0, prompt - cached - written), output_tokens=u.completion_tokens or 0,
                 cache_read_tokens=cached, cache_write_tokens=written)


def text_of(response: Any) -> str:
    """The first choice's text ('' when the server returned none)."""
    if not response.choices:
        return ""
    return response.choices[0].message.content or ""


class OpenAIBackend(RemoteBackend):
    """OpenAI (or a compatible server) via ``openai.AsyncOpenAI``.

    ``max_retries`` bounds the outer retry loop (each try also gets ``sdk_retries`` retries
    inside the SDK); ``backoff`` is its first wait in seconds; ``http_client`` (an
    ``httpx2.AsyncClient``, or ``httpx.AsyncClient`` for SDKs before 3.0) is handed to the SDK.
    """

    name = "openai"
    errors = (openai.APIError,)

    def __init__(self, model: str | None = None, *, base_url: str | None = None, api_key: str | None = None,
                 max_concurrency: int = 8, max_retries: int = 6, timeout: float = 60.0, http_client: Any = None,
                 backoff: float = 1.0, sdk_retries: int = 2):
        base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        api_key = api_key or os.environ.get("OPENAI_API_KEY") or (NO_KEY if base_url else None)
        if not api_key:
            raise BackendError("OPENAI_API_KEY is not set: export it (or pass api_key=...) to use the openai "
                               "backend, or give base_url=... for a local server that needs no key")
        super().__init__(model or DEFAULT_MODELS["openai"], api_key=api_key, max_concurrency=max_concurrency,
                         max_retries=max_retries, timeout=timeout, http_client=http_client, backoff=backoff,
                         sdk_retries=sdk_retries)
        self.base_url = base_url

    def _new_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(api_key=self._api_key, base_url=self.base_url, timeout=self.timeout,
                                  max_retries=self.sdk_retries, http_client=self._http_client)

    def params(self, request: Request) -> dict:
        """The chat completions body for ``request``: the system text first, then the conversation."""
        system = [{"role": "system", "content": request.system}] if request.system else []
        limit = "max_tokens" if self.base_url else "max_completion_tokens"
        return {"model": self.model, "messages": system + list(request.messages),
                "temperature": request.temperature, limit: request.max_tokens}

    async def _create(self, client: openai.AsyncOpenAI, request: Request) -> Completion:
        response = await client.chat.completions.create(**self.params(request))
        return Completion(text=text_of(response), usage=usage_of(response), model=self.model, backend=self.name)

    def __repr__(self) -> str:
        where = f", base_url={self.base_url!r}" if self.base_url else ""
        return f"{type(self).__name__}(model={self.model!r}{where})"
