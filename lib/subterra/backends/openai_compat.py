"""Any OpenAI-compatible chat server through the official ``openai`` SDK.

:class:`OpenAIBackend` talks to OpenAI itself (default model GPT-5.5, pinned to the snapshot
``gpt-5.5-2026-04-23``; the paper's GPT-4.1 shuts down on 2027-01-14) or, given a
``base_url`` (argument or ``OPENAI_BASE_URL``), to a local server such as vLLM
(``http://localhost:8000/v1``) or Ollama (``http://localhost:11434/v1``), which need no
key: a placeholder is sent when none is set. The request's system text becomes the first
message; calls are bounded and retried as in :mod:`subterra.backends.retry`.

The output limit goes out as ``max_completion_tokens`` to OpenAI (which deprecated
``max_tokens``) and as ``max_tokens`` to a custom ``base_url`` (what local servers read).

OpenAI's reasoning models (GPT-5 and later, the o-series) accept only the default sampling
temperature, so none is sent to them; ``thinking="off"`` (the default, for the reasons given
in :mod:`subterra.backends.claude`) sends ``reasoning_effort: "none"`` to those that accept
it (GPT-5.1 and later, not the -pro models), ``"adaptive"`` leaves the effort to the model
(or to ``effort``) and adds ``thinking_room`` to the output limit, since reasoning tokens count
against it. Local servers get the request's temperature and no reasoning setting, as before.

Usage: OpenAI counts cached prompt tokens inside ``prompt_tokens``; here they are moved to
``cache_read_tokens`` (and ``cache_write_tokens``, when reported) so that
:meth:`Usage.dollars <subterra.backends.Usage.dollars>` does not count them twice. Reasoning
tokens are part of ``completion_tokens`` (billed as output) and are reported as
``thinking_tokens``.

A model that the installed SDK's own notes give a shutdown date for (the deprecation notes of
``openai.types.shared.ChatModel``, read in :mod:`subterra.backends.retirement`) gets one
:class:`~subterra.backends.ModelRetirementWarning`.
"""

from __future__ import annotations

import os
import re
from typing import Any

import openai

from .base import DEFAULT_MODELS, EFFORTS, THINKING, THINKING_ROOM, BackendError, Completion, Request, Usage
from .retirement import warn_if_retiring
from .retry import RemoteBackend
from .tooluse import openai_messages, openai_reply, openai_tools

NO_KEY = "not-needed"        # what a local server is sent as its key
_GPT = re.compile(r"^gpt-(\d+)(?:\.(\d+))?")


def reasoning_model(model: str) -> bool:
    """GPT-5 and later (not the chat-latest aliases) and the o-series: default temperature only."""
    match = _GPT.match(model)
    if match:
        return (int(match.group(1)), int(match.group(2) or 0)) >= (5, 0) and "chat-latest" not in model
    return re.match(r"^o\d", model) is not None


def accepts_no_reasoning(model: str) -> bool:
    """Whether ``reasoning_effort: "none"`` is accepted: GPT-5.1 and later, except the -pro models."""
    match = _GPT.match(model)
    return bool(match) and (int(match.group(1)), int(match.group(2) or 0)) >= (5, 1) and "-pro" not in model


def usage_of(response: Any) -> Usage:
    """Token usage of a chat completion; servers that report none give zeros."""
    u = getattr(response, "usage", None)
    if u is None:
        return Usage()
    details = getattr(u, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None) or 0
    written = getattr(details, "cache_write_tokens", None) or 0
    prompt = u.prompt_tokens or 0
    reasoning = getattr(getattr(u, "completion_tokens_details", None), "reasoning_tokens", None) or 0
    return Usage(input_tokens=max(0, prompt - cached - written), output_tokens=u.completion_tokens or 0,
                 cache_read_tokens=cached, cache_write_tokens=written, thinking_tokens=reasoning)


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
    ``thinking``, ``effort`` and ``thinking_room``: see the module docstring.
    """

    name = "openai"
    errors = (openai.APIError,)

    def __init__(self, model: str | None = None, *, base_url: str | None = None, api_key: str | None = None,
                 max_concurrency: int = 8, max_retries: int = 6, timeout: float = 60.0, http_client: Any = None,
                 backoff: float = 1.0, sdk_retries: int = 2, thinking: str = "off", effort: str | None = None,
                 thinking_room: int = THINKING_ROOM):
        if thinking not in THINKING:
            raise BackendError(f"thinking must be one of {', '.join(THINKING)} (got {thinking!r})")
        if effort is not None and effort not in EFFORTS:
            raise BackendError(f"effort must be one of {', '.join(EFFORTS)} (got {effort!r})")
        if effort is not None and thinking == "off":
            raise BackendError("effort sets OpenAI's reasoning effort, which needs --thinking adaptive "
                               "(off sends reasoning_effort none)")
        base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        api_key = api_key or os.environ.get("OPENAI_API_KEY") or (NO_KEY if base_url else None)
        if not api_key:
            raise BackendError("OPENAI_API_KEY is not set: export it (or pass api_key=...) to use the openai "
                               "backend, or give base_url=... for a local server that needs no key")
        super().__init__(model or DEFAULT_MODELS["openai"], api_key=api_key, max_concurrency=max_concurrency,
                         max_retries=max_retries, timeout=timeout, http_client=http_client, backoff=backoff,
                         sdk_retries=sdk_retries)
        self.base_url = base_url
        self.thinking, self.effort, self.thinking_room = thinking, effort, max(0, thinking_room)
        self.reasoning = base_url is None and reasoning_model(self.model)
        if base_url is None:
            warn_if_retiring(self.name, self.model)

    @property
    def variant(self) -> str:
        settings = ([f"thinking={self.thinking}"] if self.thinking != "off" else []) + (
            [f"effort={self.effort}"] if self.effort else [])
        return ";".join(settings)

    def _reasoning_effort(self) -> str | None:
        if not self.reasoning:
            return None
        if self.thinking == "off":
            return "none" if accepts_no_reasoning(self.model) else None
        return self.effort

    def max_output(self, request: Request) -> int:
        thinks = self.reasoning and self._reasoning_effort() != "none"
        return request.max_tokens + (self.thinking_room if thinks else 0)

    def _new_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(api_key=self._api_key, base_url=self.base_url, timeout=self.timeout,
                                  max_retries=self.sdk_retries, http_client=self._http_client)

    def params(self, request: Request) -> dict:
        """The chat completions body for ``request``: the system text first, then the conversation."""
        system = [{"role": "system", "content": request.system}] if request.system else []
        limit = "max_tokens" if self.base_url else "max_completion_tokens"
        body = {"model": self.model, "messages": system + openai_messages(request.messages),
                limit: self.max_output(request)}
        if request.tools:
            body["tools"] = openai_tools(request.tools)
        if not self.reasoning:
            body["temperature"] = request.temperature
        elif self._reasoning_effort():
            body["reasoning_effort"] = self._reasoning_effort()
        return body

    async def _create(self, client: openai.AsyncOpenAI, request: Request) -> Completion:
        response = await client.chat.completions.create(**self.params(request))
        return Completion(text=openai_reply(response) or text_of(response), usage=usage_of(response), model=self.model,
                          backend=self.name)

    def __repr__(self) -> str:
        where = f", base_url={self.base_url!r}" if self.base_url else ""
        return f"{type(self).__name__}(model={self.model!r}{where})"
