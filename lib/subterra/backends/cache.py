"""A disk cache and a budget cap around any backend.

Every completion is stored as one JSON file named by the request's key — a hash of
(backend, model, system, messages, parameters, and the backend's non-default settings such as
adaptive thinking) — so a re-run, or a run resumed after a
kill, costs nothing for the calls it already made. Files are written atomically (temp
file + rename), so a kill never leaves a half-written entry.

The budget cap reserves each call's worst-case cost (its prompt plus ``max_tokens`` of
output) before the call is made and refuses calls that would go over, so concurrent calls
cannot overshoot the cap.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict
from pathlib import Path

from ..store import write_atomic
from .base import Backend, Completion, Request, Usage, approx_tokens


class BudgetExceeded(RuntimeError):
    """The next call would take spending past the budget cap."""


class CachedBackend(Backend):
    """Wrap ``inner``: answer from the disk cache when possible, stop before ``budget`` dollars."""

    def __init__(self, inner: Backend, cache_dir: str | Path, budget: float | None = None):
        self.inner = inner
        self.name, self.model = inner.name, inner.model
        self.cache_dir = Path(cache_dir)
        self.budget = budget
        self.spent = 0.0          # dollars actually spent through this wrapper
        self.calls = 0            # calls that reached the inner backend
        self.hits = 0             # calls answered from the cache
        self.usage = Usage()      # usage of the calls that reached the inner backend
        self._reserved = 0.0
        self._lock = threading.Lock()

    @property
    def variant(self) -> str:
        return self.inner.variant

    def max_output(self, request: Request) -> int:
        return self.inner.max_output(request)

    def _file(self, key: str) -> Path:
        return self.cache_dir / key[:2] / f"{key}.json"

    def worst_case(self, request: Request) -> float:
        """The prompt (twice its word-based token estimate) plus the most output the call can be billed,
        thinking included (:meth:`Backend.max_output`)."""
        words = len(request.system.split()) + sum(len(m["content"].split()) for m in request.messages)
        usage = Usage(input_tokens=approx_tokens(words) * 2, output_tokens=self.inner.max_output(request))
        return usage.dollars(getattr(self.inner, "priced_as", None) or self.model)

    async def acomplete(self, request: Request) -> Completion:
        key = request.key(self.inner.name, self.inner.model, self.inner.variant)
        file = self._file(key)
        if file.exists():
            try:
                data = json.loads(file.read_text(encoding="utf-8"))
                self.hits += 1
                return Completion(text=data["text"], usage=Usage(**data["usage"]), model=data["model"],
                                  backend=data["backend"], cached=True, priced_as=data.get("priced_as"))
            except (ValueError, KeyError, TypeError):
                file.unlink(missing_ok=True)  # a corrupt entry is re-fetched, never trusted
        estimate = self.worst_case(request) if self.budget is not None else 0.0
        with self._lock:
            if self.budget is not None and self.spent + self._reserved + estimate > self.budget:
                raise BudgetExceeded(f"budget cap of ${self.budget:.2f} reached (spent ${self.spent:.4f}); "
                                     "re-run with a higher --budget to continue where this run stopped")
            self._reserved += estimate
        try:
            completion = await self.inner.acomplete(request)
        finally:
            with self._lock:
                self._reserved -= estimate
        write_atomic(file, json.dumps({"text": completion.text, "usage": asdict(completion.usage),
                                       "model": completion.model, "backend": completion.backend,
                                       "priced_as": completion.priced_as}, ensure_ascii=False))
        with self._lock:
            self.calls += 1
            self.spent += completion.dollars
            self.usage = self.usage + completion.usage
        return completion

    async def aclose(self) -> None:
        await self.inner.aclose()
