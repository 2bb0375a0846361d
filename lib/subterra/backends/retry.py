"""What the remote backends share: bounded concurrency, retries with backoff, one-line errors.

Two layers of retries guard every call. The official SDKs retry a few times on their own
(``sdk_retries``, honouring ``retry-after`` headers); around them,
:func:`with_retries` waits with exponential backoff and jitter and tries again, up to
``max_retries`` more times, whenever the failure is transient: a rate limit (429), an
overloaded or failing server (5xx, 529, 408, 409), a timeout or a dropped connection.
Any other failure (a 400, 401, 403, 404, ...) stops at once. Either way the caller sees
a :class:`~subterra.backends.BackendError` whose message is one line and never holds the
API key. A model the API does not know (a 404 ``not_found_error`` naming the model, OpenAI's
``model_not_found``, or a message saying the model is retired) becomes
:class:`~subterra.backends.ModelNotFound`: the model, that it is retired or not found, and the
setting that picks another.

:class:`RemoteBackend` holds what the two SDK backends share: an
:class:`asyncio.Semaphore` that bounds calls in flight (the sleeps between attempts happen
outside it, so a waiting request does not hold a slot), and one SDK client per event loop,
so a backend object survives repeated ``asyncio.run`` calls (each :meth:`Backend.complete`,
each ``synthesize`` call in a notebook) without reusing a connection pool bound to a
closed loop.
"""

from __future__ import annotations

import asyncio
import random
import re
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, TypeVar

from .base import Backend, BackendError, Completion, Request
from .retirement import model_not_found

T = TypeVar("T")

# Statuses worth another try: timeout, lock conflict, too early, rate limit, server errors, overloaded.
TRANSIENT_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})
MAX_MESSAGE = 300                                   # characters of an error message kept in BackendError
_SECRET = re.compile(r"\b(sk-[A-Za-z0-9_\-]{3})[A-Za-z0-9_\-]{5,}")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait: ``attempts`` tries in all, delays doubling from ``backoff``."""

    attempts: int = 7
    backoff: float = 1.0          # seconds before the first retry
    max_delay: float = 60.0       # no single wait is longer than this

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed try number ``attempt`` (0-based): jittered, at least ``retry_after``."""
        ceiling = min(self.max_delay, self.backoff * 2.0 ** attempt)
        wait = ceiling * (0.5 + 0.5 * random.random())          # "equal jitter": between half and all of it
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_delay))
        return wait


def status_of(exc: BaseException) -> int | None:
    """The HTTP status behind an SDK error (both SDKs expose ``status_code``), else None."""
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else None


def is_transient(exc: BaseException) -> bool:
    """True for failures another try may cure: transient statuses, timeouts, connection errors."""
    status = status_of(exc)
    if status is not None:
        return status in TRANSIENT_STATUS or status >= 500
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(names & {"APIConnectionError", "APITimeoutError", "TimeoutException", "NetworkError",
                         "TimeoutError", "ConnectionError"})


def retry_after(exc: BaseException) -> float | None:
    """The server's requested wait in seconds (``retry-after-ms`` or ``retry-after``), if any."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        try:
            return float(headers.get(name)) * scale
        except (TypeError, ValueError):
            continue
    return None


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """``text`` on one line, shortened, with the given secrets and anything key-shaped masked."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    text = _SECRET.sub(r"\1...", " ".join(str(text).split()))
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE - 3] + "..."


def error_fields(exc: BaseException) -> tuple[str | None, str | None, str]:
    """(type, code, message) of the server's error body: anthropic sends a type, openai a type and a code."""
    body = getattr(exc, "body", None)
    error = body.get("error", body) if isinstance(body, dict) else None
    kind = code = message = None
    if isinstance(error, dict):
        kind, code, message = error.get("type"), error.get("code"), error.get("message")
    return kind, code, str(message or getattr(exc, "message", "") or exc)


RETIRED_WORDS = ("retired", "deprecated", "end of life", "end-of-life", "no longer available", "does not exist")


def names_missing_model(status: int | None, kind: str | None, code: str | None, message: str, model: str) -> bool:
    """Whether an error says the model itself is unknown or retired (not some other missing thing)."""
    text = message.lower()
    if code == "model_not_found":
        return True
    if status == 404 and kind == "not_found_error" and ("model" in text or model.lower() in text):
        return True
    return status in (400, 404, 410) and model.lower() in text and any(w in text for w in RETIRED_WORDS)


def describe(exc: BaseException, where: str, secrets: tuple[str, ...] = ()) -> str:
    """One line naming where the call went, the status and the server's own error type and message."""
    status = status_of(exc)
    if status is None:
        cause = exc.__cause__ or exc.__context__
        why = f" ({type(cause).__name__}: {cause})" if cause is not None else ""
        return redact(f"{where}: {type(exc).__name__}: {exc}{why}", secrets)
    kind, _, message = error_fields(exc)
    return redact(f"{where}: HTTP {status}" + (f" {kind}" if kind else "") + f": {message}", secrets)


async def with_retries(call: Callable[[], Awaitable[T]], policy: RetryPolicy, *, where: str,
                       errors: tuple[type[BaseException], ...], secrets: tuple[str, ...] = (),
                       explain: Callable[[BaseException], BackendError | None] | None = None) -> T:
    """Await ``call()`` until it succeeds; retry transient ``errors`` with backoff, fail on the rest.

    ``explain`` may turn a lasting failure into a more specific error (e.g. :class:`ModelNotFound`);
    when it returns None the failure is described as it came. Exceptions not in ``errors``
    (programming mistakes) propagate unchanged.
    """
    for attempt in range(policy.attempts):
        try:
            return await call()
        except errors as exc:
            if not is_transient(exc):
                raise (explain and explain(exc)) or BackendError(describe(exc, where, secrets)) from exc
            if attempt + 1 >= policy.attempts:
                raise BackendError(f"gave up after {policy.attempts} attempts: "
                                   + describe(exc, where, secrets)) from exc
            await asyncio.sleep(policy.delay(attempt, retry_after(exc)))
    raise BackendError(f"{where}: no attempt was allowed (max_retries < 0)")


# --------------------------------------------------------------------------- the shared base class

@dataclass
class _LoopState:
    """What must not outlive its event loop: the SDK client (its connection pool) and the semaphore."""

    loop: asyncio.AbstractEventLoop
    client: Any
    slots: asyncio.Semaphore


class RemoteBackend(Backend):
    """A backend behind an HTTP API: subclasses build the SDK client and make one call."""

    errors: tuple[type[BaseException], ...] = ()    # the SDK's error classes that the retry loop handles

    def __init__(self, model: str | None, *, api_key: str, max_concurrency: int = 8, max_retries: int = 6,
                 timeout: float = 60.0, http_client: Any = None, backoff: float = 1.0, sdk_retries: int = 2):
        super().__init__(model)
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.max_concurrency = max_concurrency
        self.policy = RetryPolicy(attempts=max_retries + 1, backoff=backoff)
        self.timeout = timeout
        self.sdk_retries = sdk_retries
        self._api_key = api_key                     # kept only to build clients; never printed
        self._http_client = http_client
        self._state: _LoopState | None = None

    # -- for subclasses

    def _new_client(self) -> Any:
        """A fresh SDK client (called once per event loop)."""
        raise NotImplementedError

    async def _create(self, client: Any, request: Request) -> Completion:
        """One call through the SDK, without retries."""
        raise NotImplementedError

    # -- shared machinery

    def _current(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        if self._state is None or self._state.loop is not loop:
            # a previous loop's client is dropped, not closed: its loop may be gone already
            self._state = _LoopState(loop, self._new_client(), asyncio.Semaphore(self.max_concurrency))
        return self._state

    async def call(self, fn: Callable[[Any], Awaitable[T]], what: str = "") -> T:
        """``await fn(client)`` holding a concurrency slot, with retries and backoff around it."""
        state = self._current()

        async def attempt() -> T:
            async with state.slots:
                return await fn(state.client)

        where = f"{self.name} {self.model}" + (f" ({what})" if what else "")
        return await with_retries(attempt, self.policy, where=where, errors=self.errors,
                                  secrets=(self._api_key,), explain=self.explain)

    def explain(self, exc: BaseException) -> BackendError | None:
        """:class:`ModelNotFound` when ``exc`` says this backend's model is unknown or retired, else None."""
        kind, code, message = error_fields(exc)
        if not names_missing_model(status_of(exc), kind, code, message, self.model):
            return None
        detail = f"HTTP {status_of(exc)}" + (f" {kind}" if kind else "") + f": {message}"
        return model_not_found(self.name, self.model, redact(detail, (self._api_key,)))

    async def acomplete(self, request: Request) -> Completion:
        return await self.call(lambda client: self._create(client, request), what=request.tag)

    async def aclose(self) -> None:
        state, self._state = self._state, None
        if state is not None and state.loop is asyncio.get_running_loop():
            await state.client.close()
