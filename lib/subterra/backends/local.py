"""The ``local`` backend: a transformers chat model in this process, behind the same interface as the APIs.

With no key, it is what stands in for the frontier model in the ``in_context`` and ``langgraph``
conditions (and can play the LLM customer or the LLM judge): the same prompts, the same code
path, a small model's answers. ``priced_as`` names the model whose list prices apply to its
token counts — the frontier model it stands in for, so that a cost table prices a stand-in
conversation as the real one would be priced; ``self-hosted`` (the default) prices it as the
small model on a rented GPU.

Generation is greedy (``temperature`` is ignored: a stand-in should be reproducible) with the
agent's loop guard (:class:`subterra.agent.NoRepeatInReply`). :meth:`LocalBackend.complete_batch`
answers many requests in one batched ``generate`` — what the batched simulator uses. Callers that
cannot hand over their requests together (a LangGraph graph makes its own calls, one per node) run in
threads inside :meth:`LocalBackend.gathering`: each request waits until every such thread is waiting
or done, and then all go to the model as one batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from .base import DEFAULT_MODELS, Backend, Completion, Request, Usage


class LocalBackend(Backend):
    """``LocalBackend(model)``: a model folder, a hub id already on disk, or a named base (:mod:`subterra.bases`)."""

    name = "local"

    def __init__(self, model: str | None = None, priced_as: str = "self-hosted", agent=None,
                 device: str | None = None, batch_size: int = 16, max_new_tokens: int = 128):
        super().__init__(model or DEFAULT_MODELS["local"])
        self.priced_as, self.device, self.batch_size = priced_as, device, batch_size
        self.max_new_tokens = max_new_tokens     # a cap on every reply: a chat turn here is rarely longer
        self._agent = agent
        self._lock = threading.Lock()           # one generate at a time: torch already uses every core
        self._gathering: Gathering | None = None

    @property
    def agent(self):
        """The loaded model (on first use; an :class:`~subterra.agent.Agent` given at construction is shared)."""
        if self._agent is None:
            from ..agent import Agent

            self._agent = Agent(self.model, device=self.device)
        return self._agent

    @property
    def variant(self) -> str:
        return ""

    async def acomplete(self, request: Request) -> Completion:
        return (await asyncio.to_thread(self.complete_batch, [request]))[0]

    def complete(self, request: Request) -> Completion:
        gathering = self._gathering
        if gathering is not None and threading.get_ident() in gathering.members:
            return gathering.complete(request)
        return self.complete_batch([request])[0]

    @contextlib.contextmanager
    def gathering(self, participants: int):
        """``with backend.gathering(n) as g: ... g.run(fn, *args)`` in n threads: their requests go out together."""
        self._gathering = Gathering(self, participants)
        try:
            yield self._gathering
        finally:
            self._gathering = None

    def complete_batch(self, requests: list[Request]) -> list[Completion]:
        """Answers to ``requests`` in order; requests with the same output limit share a batched generate."""
        from ..agent import count_tokens

        agent = self.agent
        out: dict[int, Completion] = {}
        by_limit: dict[int, list[int]] = {}
        for i, request in enumerate(requests):
            by_limit.setdefault(request.max_tokens, []).append(i)
        with self._lock:
            for limit, members in by_limit.items():
                chats = [_chat(requests[i]) for i in members]
                saved, agent.max_new_tokens = agent.max_new_tokens, min(limit, self.max_new_tokens)
                try:
                    texts = agent.reply_batch(chats, batch_size=self.batch_size)
                finally:
                    agent.max_new_tokens = saved
                for i, chat, text in zip(members, chats, texts):
                    prompt, completion = count_tokens(agent.tokenizer, chat, text)
                    out[i] = Completion(text=text, usage=Usage(input_tokens=prompt, output_tokens=completion),
                                        model=self.model, backend=self.name, priced_as=self.priced_as)
        return [out[i] for i in range(len(requests))]

    def __repr__(self) -> str:
        return f"LocalBackend(model={self.model!r}, priced_as={self.priced_as!r})"


class Gathering:
    """Requests from ``participants`` threads, answered in batches: a batch goes to the model when every
    participant still running is waiting for an answer, so the batches do not depend on timing."""

    def __init__(self, backend: LocalBackend, participants: int):
        self.backend, self.active = backend, participants
        self.members: set[int] = set()
        self.waiting: list[list] = []                # [request, answer or None]
        self.ready = threading.Condition()

    def run(self, fn, *args):
        """``fn(*args)`` as one participant; its backend calls join the batches."""
        with self.ready:
            self.members.add(threading.get_ident())
        try:
            return fn(*args)
        finally:
            with self.ready:
                self.active -= 1
                self._release()

    def complete(self, request: Request) -> Completion:
        slot = [request, None]
        with self.ready:
            self.waiting.append(slot)
            self._release()
            while slot[1] is None:
                self.ready.wait()
        if isinstance(slot[1], BaseException):
            raise slot[1]
        return slot[1]

    def _release(self) -> None:
        """With the lock held: when no participant is still working, answer every waiting request."""
        if not self.waiting or len(self.waiting) < self.active:
            return
        batch, self.waiting = self.waiting, []
        try:
            answers = self.backend.complete_batch([request for request, _ in batch])
        except Exception as exc:  # noqa: BLE001 - each caller gets the error, as with a call of its own
            answers = [exc] * len(batch)
        for slot, answer in zip(batch, answers):
            slot[1] = answer
        self.ready.notify_all()


def _chat(request: Request) -> list[dict]:
    system = [{"role": "system", "content": request.system}] if request.system else []
    return system + list(request.messages)
