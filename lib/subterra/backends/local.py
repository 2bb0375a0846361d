"""The ``local`` backend: a transformers chat model in this process, behind the same interface as the APIs.

With no key, it is what stands in for the frontier model in the ``in_context`` and ``langgraph``
conditions (and can play the LLM customer or the LLM judge): the same prompts, the same code
path, a small model's answers. ``priced_as`` names the model whose list prices apply to its
token counts — the frontier model it stands in for, so that a cost table prices a stand-in
conversation as the real one would be priced; ``self-hosted`` (the default) prices it as the
small model on a rented GPU.

Generation is greedy (``temperature`` is ignored: a stand-in should be reproducible) with the
agent's loop guard (:class:`subterra.agent.NoRepeatInReply`). :meth:`LocalBackend.complete_batch`
answers many requests in one batched ``generate`` — what the batched simulator uses.
"""

from __future__ import annotations

import asyncio
import threading

from . import DEFAULT_MODELS, Backend, Completion, Request, Usage


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
        return self.complete_batch([request])[0]

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


def _chat(request: Request) -> list[dict]:
    system = [{"role": "system", "content": request.system}] if request.system else []
    return system + list(request.messages)
