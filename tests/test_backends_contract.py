"""One contract for every backend: offline, Anthropic and OpenAI (on a fake HTTP transport) and local (a tiny
transformers model made here). Whatever plays the teacher, the customer, the judge or a frontier stand-in may be
swapped for any other without the calling code noticing."""

from __future__ import annotations

import asyncio

import pytest

from subterra.backends import Request, Usage, get_backend
from subterra.backends.cache import CachedBackend
from subterra.backends.local import LocalBackend
from test_backends_remote import FakeServer, anthropic_backend, clean_env, openai_backend  # noqa: F401

KINDS = ("offline", "anthropic", "openai", "local")


def ask(i: int, max_tokens: int = 12) -> Request:
    return Request(system="You are a booking assistant.", messages=[{"role": "user", "content": f"question {i}"}],
                   max_tokens=max_tokens, temperature=0.0, tag="contract",
                   offline=lambda rng, i=i: f"offline answer {i} {rng.randint(0, 9)}")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A two-layer chat model with its own byte-level tokenizer, saved like any model folder."""
    import torch

    from subterra.encoding import fit_tokenizer
    from subterra.recipes import Recipe
    from subterra.training import tiny_model

    torch.manual_seed(0)
    texts = ["You are a booking assistant. question 1 2 3 4 5 6 7 8 9 reply to"] * 20
    tokenizer = fit_tokenizer(texts, 300)
    recipe = Recipe(num_layers=2, hidden_size=32, num_heads=2, intermediate_size=64, vocab_size=300)
    folder = tmp_path_factory.mktemp("tiny-chat")
    tiny_model(tokenizer, recipe).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(params=KINDS)
def backend(request, tiny_dir):
    if request.param == "offline":
        return get_backend("offline")
    if request.param == "local":
        return LocalBackend(str(tiny_dir))
    server = FakeServer()
    return anthropic_backend(server) if request.param == "anthropic" else openai_backend(server)


def test_a_completion_is_text_with_its_usage_and_price(backend):
    completion = backend.complete(ask(1))
    assert isinstance(completion.text, str) and completion.backend == backend.name
    assert completion.model == backend.model and not completion.cached
    assert completion.usage.input_tokens > 0 and completion.usage.output_tokens > 0
    assert completion.dollars == completion.usage.dollars(completion.priced_as or completion.model) >= 0


def test_the_same_request_gets_the_same_answer_and_concurrent_requests_their_own(backend):
    one_by_one = [backend.complete(ask(i)).text for i in range(4)]
    assert backend.complete(ask(2)).text == one_by_one[2]

    async def together():
        return await asyncio.gather(*(backend.acomplete(ask(i)) for i in range(4)))

    assert [c.text for c in asyncio.run(together())] == one_by_one


def test_complete_works_inside_a_running_event_loop(backend):
    async def in_a_notebook_cell():
        return backend.complete(ask(7)).text

    assert asyncio.run(in_a_notebook_cell()) == backend.complete(ask(7)).text


def test_a_cached_answer_is_the_same_answer_at_the_same_price(backend, tmp_path):
    cached = CachedBackend(backend, tmp_path)
    first = cached.complete(ask(3))
    again = cached.complete(ask(3))
    assert again.cached and again.text == first.text and again.dollars == first.dollars
    assert cached.calls == 1 and cached.hits == 1


def test_the_local_backend_stands_in_at_the_frontier_price(tiny_dir):
    stand_in = LocalBackend(str(tiny_dir), priced_as="claude-sonnet-5-5")
    completion = stand_in.complete(ask(1, max_tokens=5))
    assert completion.usage.output_tokens <= 6                         # five tokens and the end token at most
    assert completion.dollars == Usage(completion.usage.input_tokens, completion.usage.output_tokens).dollars(
        "claude-sonnet-5-5") > 0
    small = LocalBackend(str(tiny_dir), agent=stand_in.agent)             # one model in memory, priced as self-hosted
    assert small.complete(ask(1, max_tokens=5)).dollars < completion.dollars


def test_a_batch_answers_each_request_as_alone(tiny_dir):
    local = LocalBackend(str(tiny_dir))
    requests = [ask(i, max_tokens=6 + i % 2) for i in range(5)]
    alone = [local.complete(r).text for r in requests]
    assert [c.text for c in local.complete_batch(requests)] == alone


def test_local_is_a_backend_name(tiny_dir):
    assert isinstance(get_backend("local", str(tiny_dir)), LocalBackend)
    with pytest.raises(ValueError, match="offline, anthropic, openai or local"):
        get_backend("nope")
