"""Claude through the official ``anthropic`` SDK: one call at a time, or the Message Batches API.

:class:`AnthropicBackend` sends each :class:`~subterra.backends.Request` to the Messages
API with the system text as one block marked ``cache_control: ephemeral``: the teacher's
system prompt (workflow, facts, persona) is the fixed part of every turn of a dialogue,
so later turns read it from the prompt cache at a tenth of the input price. Calls run at
most ``max_concurrency`` at a time, with the SDK's own retries and an outer backoff loop
(see :mod:`subterra.backends.retry`).

Large runs can go through the Message Batches API instead, at half the price and with
results within 24 hours: :meth:`AnthropicBackend.abatch` sends a list of requests as one
batch and waits for it; with ``batch=True`` every :meth:`~AnthropicBackend.acomplete` call
joins a batch that is sent once ``batch_size`` requests are waiting or ``batch_window``
seconds have passed. A :class:`~subterra.backends.Completion` carries no batch mark, so
``completion.dollars`` shows list prices; :func:`batch_dollars` gives what a batch
actually cost.

Sampling temperature: version 2 of the SDK speaks API version ``2026-10-21``, which rejects
``temperature`` (even 1.0) with a 400, and the SDK has dropped the argument; the Claude 5
models (Sonnet 5, Sonnet 5.5, ...) reject non-default sampling parameters on any API
version. The request's temperature is therefore sent, through ``extra_body``, only when the
client speaks an older API version (``api_version="2023-06-01"``, or an SDK older than 2.0)
*and* the model is older than Claude 5. ``top_p`` and ``top_k`` are never sent.

Thinking is a deliberate setting (``thinking=``), sent in every request body:

- ``"off"`` (the default): no thinking before the reply. Sonnet 5.5 thinks adaptively when the
  request says nothing and rejects ``{"type": "disabled"}`` with a 400; its lowest setting is
  ``{"type": "between_tools"}`` (no up-front thinking; without tools the reply is text only).
  So "off" is sent as ``between_tools`` to Claude 5.5 and later models and as ``disabled`` to
  older ones. Why off: every call here writes one short turn (a teacher's line from a node's
  template, a customer's reply, a JSON verdict against a fixed rubric) under a limit of
  200-600 tokens. Thinking is billed as output, counts against that limit (a turn can come
  back cut short or empty), and adds seconds to every call, while the template and rubric
  already carry the reasoning such a turn needs (and Sonnet 4.5, the paper's model, does not
  think unless asked). For scale: the travel corpus is 26,311 calls of ~20 output tokens each
  (the dry-run estimate, ~$31 in all); 300 thinking tokens a call would add ~$79.
- ``"adaptive"``: the model decides when and how much to think (``{"type": "adaptive"}``).
  ``thinking_room`` tokens (default 2,048) are added to each request's ``max_tokens`` so that
  thinking does not eat the reply's limit; the budget cap reserves them too.

``effort`` (``low`` ... ``max``, default: the model's own) is sent as ``output_config.effort``;
``xhigh`` and ``max`` need adaptive thinking. The response's ``output_tokens`` is the billed
total *including* thinking; ``usage.output_tokens_details.thinking_tokens`` (when present) is
kept as :attr:`Usage.thinking_tokens <subterra.backends.Usage>`, a part of the output, not
added to it.

A model that the installed SDK lists as deprecated (its own ``DEPRECATED_MODELS`` table, read in
:mod:`subterra.backends.retirement`) gets one :class:`~subterra.backends.ModelRetirementWarning`,
with the end-of-life date, when a backend is built for it; a model the API no longer knows ends
the run with a one-line :class:`~subterra.backends.ModelNotFound`.

The key comes from ``api_key=`` or ``ANTHROPIC_API_KEY`` and nothing else: the SDK's other
sources (profiles, workload identity) are not consulted.
"""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

import anthropic

from .base import DEFAULT_MODELS, EFFORTS, THINKING, THINKING_ROOM, BackendError, Completion, Request, Usage
from .retirement import model_not_found, warn_if_retiring
from .retry import RemoteBackend, names_missing_model, redact
from .tooluse import anthropic_messages, anthropic_reply, anthropic_tools

SAMPLING_REMOVED = "2026-10-21"      # the first API version that rejects temperature / top_p / top_k
MAX_BATCH = 100_000                  # the API's limit on requests per batch
_VERSION = re.compile(r"^claude-(?:[a-z]+-)?(\d+)(?:-(\d{1,2}))?(?=-|@|$)")


def claude_version(model: str) -> tuple[int, int] | None:
    """(major, minor) of a Claude model id: claude-sonnet-5-5 -> (5, 5), claude-3-7-sonnet-... -> (3, 7)."""
    match = _VERSION.match(model)
    return (int(match.group(1)), int(match.group(2) or 0)) if match else None


def rejects_sampling(model: str) -> bool:
    """Claude 5 and later reject non-default temperature / top_p / top_k (an unknown id counts as new)."""
    version = claude_version(model)
    return version is None or version >= (5, 0)


def thinking_config(model: str, thinking: str) -> dict:
    """The ``thinking`` field of the Messages API body for a setting of :data:`THINKING`."""
    if thinking == "adaptive":
        return {"type": "adaptive"}
    version = claude_version(model)
    return {"type": "between_tools" if version is None or version >= (5, 5) else "disabled"}


def batch_dollars(completions: Iterable[Completion]) -> float:
    """What completions that came back from a Message Batch cost: half the list price."""
    return sum(c.usage.dollars(c.model, batch=True) for c in completions)


def usage_of(message: Any) -> Usage:
    """Token usage of a Messages API response (cache fields may be missing or None)."""
    u = message.usage
    details = getattr(u, "output_tokens_details", None)
    return Usage(input_tokens=u.input_tokens or 0, output_tokens=u.output_tokens or 0,
                 cache_read_tokens=getattr(u, "cache_read_input_tokens", None) or 0,
                 cache_write_tokens=getattr(u, "cache_creation_input_tokens", None) or 0,
                 thinking_tokens=getattr(details, "thinking_tokens", None) or 0)


def text_of(message: Any) -> str:
    """The concatenated text blocks of a response (thinking and tool blocks are skipped)."""
    return "".join(block.text for block in message.content if getattr(block, "type", None) == "text")


@dataclass
class _Group:
    """Requests waiting to be sent together as one batch (``batch=True``)."""

    requests: list[Request] = field(default_factory=list)
    futures: list[asyncio.Future] = field(default_factory=list)
    timer: asyncio.Task | None = None


class AnthropicBackend(RemoteBackend):
    """Claude via ``anthropic.AsyncAnthropic`` (default model Claude Sonnet 5.5).

    ``max_retries`` bounds the outer retry loop (each try also gets ``sdk_retries`` retries
    inside the SDK); ``backoff`` is its first wait in seconds. ``http_client`` (an
    ``httpx2.AsyncClient``, or ``httpx.AsyncClient`` for SDKs before 1.0) is handed to the
    SDK, which is how the tests plug in a fake server; closing the backend closes it.
    ``thinking`` (``"off"`` or ``"adaptive"``), ``effort`` and ``thinking_room``: see the
    module docstring.
    """

    name = "anthropic"
    errors = (anthropic.APIError,)

    def __init__(self, model: str | None = None, *, api_key: str | None = None, max_concurrency: int = 8,
                 max_retries: int = 6, timeout: float = 60.0, http_client: Any = None, batch: bool = False,
                 backoff: float = 1.0, sdk_retries: int = 2, base_url: str | None = None,
                 api_version: str | None = None, batch_size: int = 10_000, batch_window: float = 2.0,
                 poll_interval: float = 30.0, thinking: str = "off", effort: str | None = None,
                 thinking_room: int = THINKING_ROOM):
        if thinking not in THINKING:
            raise BackendError(f"thinking must be one of {', '.join(THINKING)} (got {thinking!r})")
        if effort is not None and effort not in EFFORTS:
            raise BackendError(f"effort must be one of {', '.join(EFFORTS)} (got {effort!r})")
        if thinking == "off" and effort in ("xhigh", "max"):
            raise BackendError(f"effort {effort} needs adaptive thinking (--thinking adaptive): Claude rejects "
                               "thinking turned off above high effort")
        api_key = api_key or os.environ.get("ANTHROPIC_API_KEY")
        if not api_key:
            raise BackendError("ANTHROPIC_API_KEY is not set: export it (or pass api_key=...) to use the "
                               "anthropic backend, or choose the offline backend")
        super().__init__(model or DEFAULT_MODELS["anthropic"], api_key=api_key, max_concurrency=max_concurrency,
                         max_retries=max_retries, timeout=timeout, http_client=http_client, backoff=backoff,
                         sdk_retries=sdk_retries)
        self.thinking, self.effort, self.thinking_room = thinking, effort, max(0, thinking_room)
        warn_if_retiring(self.name, self.model)
        self.base_url = base_url
        self.api_version = api_version
        self.batch = batch
        self.batch_size = max(1, min(batch_size, MAX_BATCH))
        self.batch_window = batch_window
        self.poll_interval = poll_interval
        self.last_batch_id: str | None = None      # the most recent batch, to look it up in the console
        self._group: _Group | None = None
        self._sending: set[asyncio.Task] = set()  # batches in flight for batch=True (the loop keeps weak refs)

    # --------------------------------------------------------------------------- one call

    def _new_client(self) -> anthropic.AsyncAnthropic:
        headers = {"anthropic-version": self.api_version} if self.api_version else None
        return anthropic.AsyncAnthropic(api_key=self._api_key, base_url=self.base_url, timeout=self.timeout,
                                        max_retries=self.sdk_retries, http_client=self._http_client,
                                        default_headers=headers)

    @property
    def variant(self) -> str:
        settings = ([f"thinking={self.thinking}"] if self.thinking != "off" else []) + (
            [f"effort={self.effort}"] if self.effort else [])
        return ";".join(settings)

    def max_output(self, request: Request) -> int:
        return request.max_tokens + (self.thinking_room if self.thinking == "adaptive" else 0)

    def _sends_temperature(self, client: anthropic.AsyncAnthropic) -> bool:
        """Only to models before Claude 5, and only over an API version that still takes it."""
        if rejects_sampling(self.model):
            return False
        version = self.api_version or str(client.default_headers.get("anthropic-version", ""))
        return bool(version) and version < SAMPLING_REMOVED

    def params(self, request: Request, client: anthropic.AsyncAnthropic) -> dict:
        """The Messages API body for ``request``: the system text is one cached block; thinking as set."""
        params: dict[str, Any] = {"model": self.model, "max_tokens": self.max_output(request),
                                  "messages": anthropic_messages(request.messages),
                                  "thinking": thinking_config(self.model, self.thinking)}
        if request.system:
            params["system"] = [{"type": "text", "text": request.system, "cache_control": {"type": "ephemeral"}}]
        if request.tools:
            params["tools"] = anthropic_tools(request.tools)
        if self.effort:
            params["output_config"] = {"effort": self.effort}
        if self._sends_temperature(client):
            params["temperature"] = request.temperature
        return params

    async def _create(self, client: anthropic.AsyncAnthropic, request: Request) -> Completion:
        params = self.params(request, client)
        extra = {"temperature": params.pop("temperature")} if "temperature" in params else None
        message = await client.messages.create(**params, extra_body=extra)
        return Completion(text=anthropic_reply(message) or text_of(message), usage=usage_of(message), model=self.model,
                          backend=self.name)

    async def acomplete(self, request: Request) -> Completion:
        if self.batch:
            return await self._join_batch(request)
        return await super().acomplete(request)

    # --------------------------------------------------------------------------- Message Batches

    async def abatch(self, requests: list[Request], poll_interval: float | None = None,
                     return_exceptions: bool = False) -> list[Completion | BackendError]:
        """Send ``requests`` as one Message Batch, wait until it has ended, return completions in order.

        Each request's ``custom_id`` is ``r<index>``. A request that errored, expired or was
        canceled makes the whole call raise :class:`BackendError` naming its custom_id, unless
        ``return_exceptions`` is true: then its slot holds the error (like ``asyncio.gather``)
        and the others' results are kept. Batch results cost half the list price (see
        :func:`batch_dollars`); the batch id is kept in :attr:`last_batch_id`.
        """
        if not requests:
            return []
        if len(requests) > MAX_BATCH:
            raise ValueError(f"a batch holds at most {MAX_BATCH:,} requests (got {len(requests):,})")
        poll = self.poll_interval if poll_interval is None else poll_interval
        batch = await self.call(lambda client: client.messages.batches.create(requests=[
            {"custom_id": f"r{i}", "params": self.params(r, client)} for i, r in enumerate(requests)]),
            what="batch create")
        self.last_batch_id = batch.id
        while batch.processing_status != "ended":
            await asyncio.sleep(poll)
            batch = await self.call(lambda client: client.messages.batches.retrieve(batch.id), what="batch poll")
        outcomes = await self.call(lambda client: self._results(client, batch.id), what="batch results")
        results = [outcomes.get(f"r{i}") or BackendError(f"{self.name} batch {batch.id}: no result for "
                                                         f"custom_id r{i}") for i in range(len(requests))]
        failed = [r for r in results if isinstance(r, BackendError)]
        if failed and not return_exceptions:
            raise BackendError(f"{len(failed)} of {len(requests)} requests in batch {batch.id} failed; "
                               f"first: {failed[0]}")
        return results

    async def _results(self, client: anthropic.AsyncAnthropic,
                       batch_id: str) -> dict[str, Completion | BackendError]:
        """Read the batch's JSONL results: custom_id -> completion, or the error that request met."""
        outcomes: dict[str, Completion | BackendError] = {}
        async for item in await client.messages.batches.results(batch_id):
            result = item.result
            if result.type == "succeeded":
                text = anthropic_reply(result.message) or text_of(result.message)
                outcomes[item.custom_id] = Completion(text=text, usage=usage_of(result.message),
                                                      model=self.model, backend=self.name)
            else:
                outcomes[item.custom_id] = BackendError(self._failure(batch_id, item.custom_id, result))
        return outcomes

    def _failure(self, batch_id: str, custom_id: str, result: Any) -> str:
        detail = result.type
        error = getattr(getattr(result, "error", None), "error", None)
        if error is not None:
            kind, message = getattr(error, "type", None), str(getattr(error, "message", "") or "")
            if names_missing_model(404 if kind == "not_found_error" else None, kind, None, message, self.model):
                return str(model_not_found(self.name, self.model,
                                           redact(f"batch {batch_id} custom_id {custom_id}: {kind}: {message}",
                                                  (self._api_key,))))
            detail += f": {kind or ''}: {message}"
        return redact(f"{self.name} batch {batch_id} custom_id {custom_id} {detail}", (self._api_key,))

    async def _join_batch(self, request: Request) -> Completion:
        """``batch=True``: wait in the current group; it is sent when full or when its window closes."""
        group = self._group
        if group is None:
            group = self._group = _Group()
            group.timer = asyncio.get_running_loop().create_task(self._send_later(group))
        future = asyncio.get_running_loop().create_future()
        group.requests.append(request)
        group.futures.append(future)
        if len(group.requests) >= self.batch_size:
            group.timer.cancel()
            self._send(group)
        return await future

    async def _send_later(self, group: _Group) -> None:
        await asyncio.sleep(self.batch_window)
        self._send(group)

    def _send(self, group: _Group) -> None:
        if self._group is group:
            self._group = None
        task = asyncio.get_running_loop().create_task(self.abatch(group.requests, return_exceptions=True))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)
        task.add_done_callback(lambda done: self._settle(group, done))

    @staticmethod
    def _settle(group: _Group, done: asyncio.Task) -> None:
        """Hand each waiting caller its completion, or the error its request (or the batch) met."""
        error = None if done.cancelled() else done.exception()
        results = None if done.cancelled() or error else done.result()
        for i, future in enumerate(group.futures):
            if future.done():
                continue
            if done.cancelled():
                future.cancel()
            elif error is not None:
                future.set_exception(error)
            elif isinstance(results[i], BaseException):
                future.set_exception(results[i])
            else:
                future.set_result(results[i])
