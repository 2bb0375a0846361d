"""The Anthropic and OpenAI backends against a fake server: no network, no key, a few seconds.

:class:`FakeServer` answers the Messages API, the Message Batches API and the chat
completions API on an ``httpx2.MockTransport`` handed to the SDKs as their HTTP client.
Replies are derived from the request body ("reply to: <last user message>"), so every
answer can be matched to its request. Faults are injected per request and per attempt
from a seeded hash (so the same request meets the same faults whatever the scheduling):
429, 500, 503, 529 responses and read timeouts raised from inside the transport. The
server counts calls in flight (each waits a few milliseconds) to check the concurrency
bound.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import warnings
from collections import Counter

import pytest

try:
    import httpx2 as http          # what the anthropic >= 1 / openai >= 3 SDKs are built on
except ImportError:                # pragma: no cover - older SDKs use httpx
    import httpx as http

from subterra import backends
from subterra.backends import retirement
from subterra.backends import (DEFAULT_MODELS, PRICES, THINKING_ROOM, UNKNOWN_PRICE, BackendError, ModelNotFound,
                               ModelRetirementWarning, Price, Request, Usage, get_backend, price_of,
                               retirement_notice)
from subterra.backends.cache import CachedBackend
from subterra.backends.claude import AnthropicBackend, batch_dollars
from subterra.backends.openai_compat import NO_KEY, OpenAIBackend

KEY = "sk-ant-test-0123456789abcdef"
pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")
FAULTS = (429, 500, 503, 529, "timeout")
ANTHROPIC = "https://api.anthropic.com"
THINKING_TOKENS = 40          # what the fake server says an adaptive-thinking reply spent thinking
SAMPLING = ("temperature", "top_p", "top_k")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """No key, base URL or custom header from the developer's shell leaks into a test."""
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL", "ANTHROPIC_CUSTOM_HEADERS",
                 "ANTHROPIC_PROFILE", "OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ADMIN_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(retirement, "_warned", set())    # each test sees the once-per-model warnings afresh
    # the SDK's table of deprecated models as anthropic <= 2.14 shipped it: 2.15 dropped claude-sonnet-4-5 once it
    # was retired (2026-11-30); these tests are about reading that table, not about what it lists today
    import anthropic.resources.messages.messages as sdk

    monkeypatch.setitem(sdk.DEPRECATED_MODELS, "claude-sonnet-4-5", "November 30th, 2026")


def request(i: int, system: str = "You are a booking assistant.") -> Request:
    return Request(system=system, messages=[{"role": "user", "content": f"question {i}"}], max_tokens=50,
                   temperature=0.7, tag="teacher")


class FakeServer:
    """Both APIs on one mock transport; faults, latency and in-flight counting are configurable."""

    def __init__(self, fail_rate: float = 0.0, latency: float = 0.005, seed: int = 0, status: int | None = None,
                 message: str = "bad request", retry_after_ms: str | None = None):
        self.fail_rate, self.latency, self.seed = fail_rate, latency, seed
        self.status, self.message, self.retry_after_ms = status, message, retry_after_ms
        self.calls: list[tuple[str, str, dict]] = []        # (method, path, body) of every HTTP attempt
        self.headers: list[dict] = []
        self.attempts: Counter = Counter()                  # per prompt
        self.served: Counter = Counter()                    # successful answers per prompt
        self.faults: Counter = Counter()
        self.in_flight = self.peak = 0
        self.batches: dict[str, dict] = {}

    def client(self):
        return http.AsyncClient(transport=http.MockTransport(self.handle))

    # -- faults

    def fault(self, prompt: str):
        """The fault (if any) this prompt meets on its next attempt: a seeded function of (prompt, attempt)."""
        n = self.attempts[prompt]
        self.attempts[prompt] += 1
        if self.status is not None:
            return self.status
        rng = random.Random(f"{self.seed}:{prompt}:{n}")
        return rng.choice(FAULTS) if rng.random() < self.fail_rate else None

    def error(self, status: int, openai_style: bool):
        headers = {"retry-after-ms": self.retry_after_ms} if self.retry_after_ms else {}
        if openai_style:
            body = {"error": {"message": self.message, "type": "invalid_request_error",
                              "code": "model_not_found" if status == 404 else None}}
        else:
            kind = {404: "not_found_error", 429: "rate_limit_error", 529: "overloaded_error"}.get(
                status, "api_error" if status >= 500 else "invalid_request_error")
            body = {"type": "error", "error": {"type": kind, "message": self.message}}
        return http.Response(status, json=body, headers=headers)

    # -- the handler

    async def handle(self, req):
        body = json.loads(req.content) if req.content else {}
        self.calls.append((req.method, req.url.path, body))
        self.headers.append(dict(req.headers))
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(self.latency)
            return self.route(req, body)
        finally:
            self.in_flight -= 1

    def route(self, req, body):
        path = req.url.path
        if path == "/v1/messages" or path.endswith("/chat/completions"):
            openai_style = path.endswith("/chat/completions")
            prompt = body["messages"][-1]["content"]
            fault = self.fault(prompt)
            if fault == "timeout":
                self.faults["timeout"] += 1
                raise http.ReadTimeout("fake read timeout", request=req)
            if fault is not None:
                self.faults[fault] += 1
                return self.error(fault, openai_style)
            self.served[prompt] += 1
            reply = self.chat(body, prompt) if openai_style else self.message_json(body)
            return http.Response(200, json=reply)
        if path.startswith("/v1/messages/batches"):
            return self.batch_route(req, body)
        return http.Response(404, json={"type": "error", "error": {"type": "not_found_error", "message": path}})

    @staticmethod
    def message_json(params: dict) -> dict:
        """With adaptive thinking the reply starts with a thinking block, and the usage says so (as the API
        does: ``output_tokens`` is the billed total, thinking included; the details break it down)."""
        prompt = params["messages"][-1]["content"]
        system = params.get("system") or [{"text": ""}]
        thinks = (params.get("thinking") or {}).get("type") == "adaptive"
        thinking = THINKING_TOKENS if thinks else 0
        content = [{"type": "text", "text": "reply to: "}, {"type": "text", "text": prompt}]
        usage = {"input_tokens": len(prompt.split()), "output_tokens": 3 + len(prompt.split()) + thinking,
                 "cache_read_input_tokens": len(system[0]["text"].split()), "cache_creation_input_tokens": None}
        if thinks:
            content.insert(0, {"type": "thinking", "thinking": "", "signature": "sig"})
            usage["output_tokens_details"] = {"thinking_tokens": thinking}
        return {"id": "msg_fake", "type": "message", "role": "assistant", "model": params["model"],
                "content": content, "stop_reason": "end_turn", "usage": usage}

    @staticmethod
    def chat(params: dict, prompt: str) -> dict:
        """Reasoning tokens (part of completion_tokens) when a reasoning effort other than none was asked."""
        reasoning = 3 if params.get("reasoning_effort") not in (None, "none") else 0
        usage = {"prompt_tokens": 20, "completion_tokens": 4, "total_tokens": 24,
                 "prompt_tokens_details": {"cached_tokens": 8}}
        if reasoning:
            usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
        return {"id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": params["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": f"reply to: {prompt}"}}],
                "usage": usage}

    # -- Message Batches: created in_progress, ended on the second poll, results in reverse order

    def batch_json(self, batch_id: str) -> dict:
        batch = self.batches[batch_id]
        ended = batch["polls"] >= 2
        n = len(batch["requests"])
        return {"id": batch_id, "type": "message_batch", "processing_status": "ended" if ended else "in_progress",
                "created_at": "2026-01-01T00:00:00Z", "expires_at": "2026-01-02T00:00:00Z",
                "ended_at": "2026-01-01T01:00:00Z" if ended else None,
                "request_counts": {"processing": 0 if ended else n, "succeeded": n if ended else 0, "errored": 0,
                                   "canceled": 0, "expired": 0},
                "results_url": f"{ANTHROPIC}/v1/messages/batches/{batch_id}/results" if ended else None}

    def batch_route(self, req, body):
        parts = req.url.path.split("/")            # ['', 'v1', 'messages', 'batches', id?, 'results'?]
        if req.method == "POST" and len(parts) == 4:
            batch_id = f"msgbatch_{len(self.batches)}"
            self.batches[batch_id] = {"requests": body["requests"], "polls": 0}
            return http.Response(200, json=self.batch_json(batch_id))
        batch_id = parts[4]
        if len(parts) == 5:
            self.batches[batch_id]["polls"] += 1
            return http.Response(200, json=self.batch_json(batch_id))
        lines = []
        for item in reversed(self.batches[batch_id]["requests"]):
            params = item["params"]
            if "fail" in params["messages"][-1]["content"]:
                result = {"type": "errored", "error": {"type": "error", "error": {
                    "type": "invalid_request_error", "message": "prompt is too long"}}}
            else:
                result = {"type": "succeeded", "message": self.message_json(params)}
            lines.append(json.dumps({"custom_id": item["custom_id"], "result": result}))
        return http.Response(200, content=("\n".join(lines) + "\n").encode(),
                             headers={"content-type": "application/binary"})


def anthropic_backend(server: FakeServer, **options) -> AnthropicBackend:
    options = {"backoff": 0.001, "sdk_retries": 0, **options}
    return AnthropicBackend(api_key=KEY, http_client=server.client(), **options)


def openai_backend(server: FakeServer, **options) -> OpenAIBackend:
    options = {"backoff": 0.001, "sdk_retries": 0, **options}
    return OpenAIBackend(api_key=KEY, http_client=server.client(), **options)


async def run_all(backend, requests):
    try:
        return await asyncio.gather(*(backend.acomplete(r) for r in requests))
    finally:
        await backend.aclose()


# --------------------------------------------------------------------------- anthropic: one call

def test_anthropic_plain_call_returns_text_and_usage():
    server = FakeServer()
    backend = anthropic_backend(server)
    [completion] = asyncio.run(run_all(backend, [request(1)]))
    assert completion.text == "reply to: question 1"
    assert completion.usage == Usage(input_tokens=2, output_tokens=5, cache_read_tokens=5, cache_write_tokens=0)
    assert (completion.model, completion.backend) == ("claude-sonnet-5-5", "anthropic")
    # Sonnet 5.5: $2 in, $10 out, cache reads $0.20 per million
    assert completion.dollars == pytest.approx((2 * 2.00 + 5 * 0.20 + 5 * 10.00) / 1e6)


@pytest.mark.filterwarnings("ignore::subterra.backends.ModelRetirementWarning")   # a retired model on purpose
def test_anthropic_request_body_caches_the_system_block():
    server = FakeServer()
    asyncio.run(run_all(anthropic_backend(server, model="claude-sonnet-4-5-20250929"), [request(1)]))
    [(method, path, body)] = server.calls
    assert (method, path) == ("POST", "/v1/messages")
    assert body["system"] == [{"type": "text", "text": "You are a booking assistant.",
                               "cache_control": {"type": "ephemeral"}}]
    assert body["model"] == "claude-sonnet-4-5-20250929"
    assert body["max_tokens"] == 50
    assert body["messages"] == [{"role": "user", "content": "question 1"}]
    # the SDK's API version (2026-10-21) rejects sampling parameters, so none is sent
    assert not set(SAMPLING) & set(body)
    assert body["thinking"] == {"type": "disabled"}          # Sonnet 4.5 and earlier: thinking off is "disabled"
    assert server.headers[0]["anthropic-version"] >= "2026-10-21"
    assert KEY in server.headers[0].get("authorization", "") + server.headers[0].get("x-api-key", "")


@pytest.mark.filterwarnings("ignore::subterra.backends.ModelRetirementWarning")   # a retired model on purpose
def test_anthropic_sends_temperature_to_an_older_api_version():
    server = FakeServer()
    backend = anthropic_backend(server, api_version="2023-06-01", model="claude-sonnet-4-5-20250929")
    asyncio.run(run_all(backend, [request(1)]))
    body, headers = server.calls[0][2], server.headers[0]
    assert body["temperature"] == 0.7
    assert headers["anthropic-version"] == "2023-06-01"


@pytest.mark.parametrize("model, off", [("claude-sonnet-5-5", "between_tools"), ("claude-sonnet-5", "disabled")])
def test_claude_5_models_get_no_sampling_parameters_even_on_an_older_api_version(model, off):
    """Sonnet 5-series models reject non-default sampling parameters whatever the API version; Sonnet 5.5
    rejects thinking {"type": "disabled"} and turns up-front thinking off with "between_tools"."""
    server = FakeServer()
    backend = anthropic_backend(server, api_version="2023-06-01", model=model)
    [completion] = asyncio.run(run_all(backend, [request(1)]))
    body, headers = server.calls[0][2], server.headers[0]
    assert headers["anthropic-version"] == "2023-06-01"
    assert not set(SAMPLING) & set(body) and "temperature" not in json.dumps(body)
    assert body["thinking"] == {"type": off}
    assert body["max_tokens"] == 50 and "output_config" not in body
    assert completion.usage.thinking_tokens == 0


def test_the_default_claude_request_thinks_not_and_samples_not():
    server = FakeServer()
    asyncio.run(run_all(anthropic_backend(server), [request(1)]))
    body = server.calls[0][2]
    assert body["model"] == DEFAULT_MODELS["anthropic"] == "claude-sonnet-5-5"
    assert body["thinking"] == {"type": "between_tools"} and not set(SAMPLING) & set(body)


def test_adaptive_thinking_is_sent_given_room_and_billed_as_output():
    server = FakeServer()
    backend = anthropic_backend(server, thinking="adaptive", effort="medium")
    [completion] = asyncio.run(run_all(backend, [request(1)]))
    body = server.calls[0][2]
    assert body["thinking"] == {"type": "adaptive"}
    assert body["output_config"] == {"effort": "medium"}
    assert body["max_tokens"] == 50 + THINKING_ROOM          # room for thinking on top of the reply's limit
    assert not set(SAMPLING) & set(body)
    assert completion.text == "reply to: question 1"         # the thinking block is not part of the text
    usage = completion.usage
    assert usage.thinking_tokens == THINKING_TOKENS
    assert usage.output_tokens == 5 + THINKING_TOKENS          # the billed total, thinking included
    # thinking is billed at the output price, once: output_tokens already holds it
    assert completion.dollars == pytest.approx((2 * 2.00 + 5 * 0.20 + (5 + THINKING_TOKENS) * 10.00) / 1e6)
    assert completion.dollars < (2 * 2.00 + 5 * 0.20 + (5 + 2 * THINKING_TOKENS) * 10.00) / 1e6


def test_thinking_settings_change_the_cache_key_and_the_budget_reservation(tmp_path):
    off, adaptive = anthropic_backend(FakeServer()), anthropic_backend(FakeServer(), thinking="adaptive")
    r = request(1)
    assert off.variant == "" and adaptive.variant == "thinking=adaptive"
    assert r.key("anthropic", off.model, off.variant) == r.key("anthropic", off.model)   # old keys stay valid
    assert r.key("anthropic", adaptive.model, adaptive.variant) != r.key("anthropic", adaptive.model)
    cap_off, cap_adaptive = CachedBackend(off, tmp_path / "a", 1.0), CachedBackend(adaptive, tmp_path / "b", 1.0)
    assert cap_adaptive.worst_case(r) - cap_off.worst_case(r) == pytest.approx(THINKING_ROOM * 10.00 / 1e6)


@pytest.mark.parametrize("options, problem", [({"thinking": "sometimes"}, "thinking must be one of"),
                                              ({"effort": "extreme"}, "effort must be one of"),
                                              ({"effort": "xhigh"}, "needs adaptive thinking")])
def test_bad_thinking_settings_are_one_line_errors(options, problem):
    with pytest.raises(BackendError, match=problem):
        anthropic_backend(FakeServer(), **options)


def test_empty_system_is_left_out():
    server = FakeServer()
    asyncio.run(run_all(anthropic_backend(server), [request(1, system="")]))
    assert "system" not in server.calls[0][2]


# --------------------------------------------------------------------------- faults and concurrency

@pytest.mark.parametrize("make", [anthropic_backend, openai_backend], ids=["anthropic", "openai"])
def test_faults_are_retried_and_every_answer_reaches_its_request(make):
    server = FakeServer(fail_rate=0.3, seed=7)
    backend = make(server, max_concurrency=5, max_retries=8)
    requests = [request(i) for i in range(60)]
    completions = asyncio.run(run_all(backend, requests))
    assert [c.text for c in completions] == [f"reply to: question {i}" for i in range(60)]
    assert server.served == Counter({f"question {i}": 1 for i in range(60)})     # each answered exactly once
    assert sum(server.faults.values()) >= 10 and set(server.faults) == set(FAULTS)
    assert 1 < server.peak <= 5


def test_sdk_retries_honour_retry_after():
    server = FakeServer(status=429, retry_after_ms="1")

    def first_attempt_only(prompt, fault=server.fault):
        status = fault(prompt)
        return status if server.attempts[prompt] == 1 else None

    server.fault = first_attempt_only
    backend = anthropic_backend(server, max_retries=0, sdk_retries=2)     # no outer retry: the SDK's own
    [completion] = asyncio.run(run_all(backend, [request(3)]))
    assert completion.text == "reply to: question 3"
    assert len(server.calls) == 2


@pytest.mark.parametrize("make", [anthropic_backend, openai_backend], ids=["anthropic", "openai"])
def test_persistent_overload_gives_up_after_all_attempts(make):
    server = FakeServer(status=503, message="overloaded", retry_after_ms="1")
    backend = make(server, max_retries=3, sdk_retries=1)
    with pytest.raises(BackendError, match=r"gave up after 4 attempts: .*HTTP 503") as err:
        asyncio.run(run_all(backend, [request(1)]))
    assert len(server.calls) == 4 * 2                      # 4 outer attempts x (1 + 1 SDK retry)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("make", [anthropic_backend, openai_backend], ids=["anthropic", "openai"])
def test_bad_request_fails_fast_on_one_line_without_the_key(make):
    server = FakeServer(status=400, message=f"messages: field required\nyour key {KEY} was fine")
    backend = make(server, sdk_retries=2)
    with pytest.raises(BackendError) as err:
        asyncio.run(run_all(backend, [request(1)]))
    message = str(err.value)
    assert len(server.calls) == 1                          # neither the SDK nor the outer loop retried
    assert "HTTP 400" in message and "invalid_request_error" in message and "field required" in message
    assert "\n" not in message and KEY not in message and KEY[:12] not in message


def test_concurrency_bound_holds_across_event_loops():
    """One backend, two asyncio.run calls with contention: per-loop semaphores and clients."""
    server = FakeServer(latency=0.01)
    backend = anthropic_backend(server, max_concurrency=3)

    async def burst():
        return await asyncio.gather(*(backend.acomplete(request(i)) for i in range(12)))

    for _ in range(2):
        assert len(asyncio.run(asyncio.wait_for(burst(), 10))) == 12
    assert server.peak == 3


def test_sync_complete_works_for_both_backends():
    server = FakeServer()
    for backend in (anthropic_backend(server), openai_backend(server)):
        assert backend.complete(request(1)).text == "reply to: question 1"
        assert backend.complete(request(2)).text == "reply to: question 2"

    async def inside_a_running_loop():             # e.g. a Jupyter cell
        return anthropic_backend(server).complete(request(5)).text

    assert asyncio.run(inside_a_running_loop()) == "reply to: question 5"


# --------------------------------------------------------------------------- keys

def test_missing_anthropic_key_is_a_one_line_backend_error():
    with pytest.raises(BackendError, match="ANTHROPIC_API_KEY"):
        AnthropicBackend()
    with pytest.raises(BackendError, match="ANTHROPIC_API_KEY"):
        get_backend("anthropic")


def test_anthropic_key_from_the_environment(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    backend = get_backend()                         # anthropic is chosen when the key is set
    assert isinstance(backend, AnthropicBackend) and backend.model == "claude-sonnet-5-5"
    assert KEY not in repr(backend)


def test_missing_openai_key_is_a_backend_error():
    with pytest.raises(BackendError, match="OPENAI_API_KEY"):
        OpenAIBackend()


def test_openai_local_server_needs_no_key():
    server = FakeServer()
    backend = get_backend("openai", base_url="http://localhost:8000/v1", http_client=server.client(),
                          model="qwen2.5-7b-instruct", backoff=0.001)
    assert isinstance(backend, OpenAIBackend) and "localhost:8000" in repr(backend)
    [completion] = asyncio.run(run_all(backend, [request(4)]))
    assert completion.text == "reply to: question 4"
    assert completion.usage == Usage(input_tokens=12, output_tokens=4, cache_read_tokens=8)
    [(method, path, body)] = server.calls
    assert path == "/v1/chat/completions"
    assert server.headers[0]["authorization"] == f"Bearer {NO_KEY}"
    assert body == {"model": "qwen2.5-7b-instruct", "temperature": 0.7, "max_tokens": 50,
                    "messages": [{"role": "system", "content": "You are a booking assistant."},
                                 {"role": "user", "content": "question 4"}]}


def test_openai_official_endpoint_body(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    server = FakeServer()
    backend = OpenAIBackend(http_client=server.client())
    [completion] = asyncio.run(run_all(backend, [request(1)]))
    body = server.calls[0][2]
    assert body["model"] == DEFAULT_MODELS["openai"] == "gpt-5.5-2026-04-23"
    assert body["max_completion_tokens"] == 50 and "max_tokens" not in body
    # a reasoning model takes the default temperature only; thinking off is reasoning effort "none"
    assert not set(SAMPLING) & set(body) and body["reasoning_effort"] == "none"
    assert str(server.headers[0]["host"]) == "api.openai.com"
    assert completion.usage == Usage(input_tokens=12, output_tokens=4, cache_read_tokens=8)
    assert completion.dollars == pytest.approx((12 * 5.00 + 8 * 0.50 + 4 * 30.00) / 1e6)


def test_openai_adaptive_reasoning_and_the_older_gpt_4_1(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    server = FakeServer()
    thinking = OpenAIBackend(http_client=server.client(), thinking="adaptive", effort="high")
    [completion] = asyncio.run(run_all(thinking, [request(1)]))
    body = server.calls[0][2]
    assert body["reasoning_effort"] == "high" and "temperature" not in body
    assert body["max_completion_tokens"] == 50 + THINKING_ROOM
    assert completion.usage.thinking_tokens == 3 and completion.usage.output_tokens == 4   # part of the 4
    assert completion.dollars == pytest.approx((12 * 5.00 + 8 * 0.50 + 4 * 30.00) / 1e6)

    with pytest.warns(ModelRetirementWarning):
        paper = OpenAIBackend("gpt-4.1", http_client=server.client())
    asyncio.run(run_all(paper, [request(2)]))
    body = server.calls[1][2]
    assert body["temperature"] == 0.7 and "reasoning_effort" not in body and body["max_completion_tokens"] == 50
    with pytest.raises(BackendError, match="needs --thinking adaptive"):
        OpenAIBackend(http_client=server.client(), effort="low")


def test_openai_base_url_from_the_environment(monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://localhost:11434/v1")
    backend = get_backend("openai")
    assert backend.base_url == "http://localhost:11434/v1"


# --------------------------------------------------------------------------- Message Batches

def test_batch_flow_maps_results_back_in_order():
    server = FakeServer()
    backend = anthropic_backend(server)

    async def go():
        try:
            return await backend.abatch([request(i) for i in range(5)], poll_interval=0.001)
        finally:
            await backend.aclose()

    completions = asyncio.run(go())
    assert [c.text for c in completions] == [f"reply to: question {i}" for i in range(5)]
    routes = [(m, re.sub(r"msgbatch_\d+", "ID", p)) for m, p, _ in server.calls]
    assert routes == [("POST", "/v1/messages/batches"),
                      ("GET", "/v1/messages/batches/ID"),           # poll: in_progress
                      ("GET", "/v1/messages/batches/ID"),           # poll: ended
                      ("GET", "/v1/messages/batches/ID"),           # results() looks the batch up again
                      ("GET", "/v1/messages/batches/ID/results")]
    created = server.calls[0][2]["requests"]
    assert [r["custom_id"] for r in created] == [f"r{i}" for i in range(5)]
    assert created[0]["params"]["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert backend.last_batch_id == "msgbatch_0"
    assert batch_dollars(completions) == pytest.approx(sum(c.dollars for c in completions) / 2)


def test_batch_errors_name_the_custom_id():
    requests = [request(0), Request(system="s", messages=[{"role": "user", "content": "please fail"}]), request(2)]
    server = FakeServer()
    backend = anthropic_backend(server)
    with pytest.raises(BackendError, match=r"1 of 3 requests in batch msgbatch_0 failed.*custom_id r1 errored"):
        asyncio.run(backend.abatch(requests, poll_interval=0.001))

    results = asyncio.run(backend.abatch(requests, poll_interval=0.001, return_exceptions=True))
    assert results[0].text == "reply to: question 0" and results[2].text == "reply to: question 2"
    assert isinstance(results[1], BackendError) and "prompt is too long" in str(results[1])


def test_batch_mode_gathers_concurrent_calls_into_one_batch():
    server = FakeServer()
    backend = anthropic_backend(server, batch=True, batch_window=0.01, poll_interval=0.001)
    completions = asyncio.run(run_all(backend, [request(i) for i in range(6)]))
    assert [c.text for c in completions] == [f"reply to: question {i}" for i in range(6)]
    assert len(server.batches) == 1 and len(server.batches["msgbatch_0"]["requests"]) == 6
    assert not [c for c in server.calls if c[1] == "/v1/messages"]


def test_batch_mode_sends_a_full_group_at_once():
    server = FakeServer()
    backend = anthropic_backend(server, batch=True, batch_size=4, batch_window=60, poll_interval=0.001)
    completions = asyncio.run(asyncio.wait_for(run_all(backend, [request(i) for i in range(8)]), 10))
    assert [c.text for c in completions] == [f"reply to: question {i}" for i in range(8)]
    assert sorted(len(b["requests"]) for b in server.batches.values()) == [4, 4]


# --------------------------------------------------------------------------- retired and unknown models

@pytest.mark.filterwarnings("ignore::subterra.backends.ModelRetirementWarning")   # a retired model on purpose
@pytest.mark.parametrize("make, model, said", [
    (anthropic_backend, "claude-sonnet-4-5", "model: claude-sonnet-4-5"),
    (openai_backend, "gpt-4.1", "The model `gpt-4.1` does not exist or you do not have access to it."),
], ids=["anthropic", "openai"])
def test_a_model_the_api_does_not_know_is_one_line_naming_it_and_the_setting(make, model, said):
    server = FakeServer(status=404, message=said)
    backend = make(server, model=model, sdk_retries=2)
    with pytest.raises(ModelNotFound) as err:
        asyncio.run(run_all(backend, [request(1)]))
    message = str(err.value)
    assert len(server.calls) == 1                                # a setting to change: never retried
    assert "\n" not in message and KEY not in message
    assert f"model '{model}' is retired or not found" in message and "HTTP 404" in message and said in message
    assert "--model" in message and DEFAULT_MODELS[backend.name] in message
    if backend.name == "anthropic":                              # the SDK's own end-of-life date, when it has one
        assert "end of life as November 30th, 2026" in message


def test_other_not_found_errors_stay_plain_backend_errors():
    server = FakeServer(status=404, message="the requested resource could not be found")
    with pytest.raises(BackendError) as err:
        asyncio.run(run_all(anthropic_backend(server), [request(1)]))
    assert not isinstance(err.value, ModelNotFound) and "HTTP 404 not_found_error" in str(err.value)


def test_an_unknown_model_stops_the_cli_with_one_line(monkeypatch, tmp_path, capsys):
    from conftest import TOY
    from subterra.cli import main

    server = FakeServer(status=404, message="model: claude-sonnet-4-5")
    monkeypatch.setattr(backends, "get_backend",
                        lambda *a, **k: anthropic_backend(server, model="claude-sonnet-4-5"))
    (tmp_path / "toy.yaml").write_text(TOY)
    code = main(["synthesize", "--domain", str(tmp_path / "toy.yaml"), "--teacher", "anthropic", "--n", "3",
                 "--model", "claude-sonnet-4-5", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    lines = err.splitlines()                    # (the progress bar writes to stderr too)
    assert code == 1 and "Traceback" not in err
    warned = [i for i, line in enumerate(lines) if line.startswith("warning: anthropic model 'claude-sonnet-4-5'")]
    [error] = [i for i, line in enumerate(lines) if "is retired or not found" in line]
    assert len(warned) == 1 and warned[0] < error                    # warned once, before the paid run
    assert lines[error].startswith("anthropic model 'claude-sonnet-4-5' is retired or not found")
    assert "--model" in lines[error]


@pytest.mark.filterwarnings("ignore::subterra.backends.ModelRetirementWarning")   # a retired model on purpose
def test_an_unknown_model_stops_a_simulation_instead_of_failing_every_conversation():
    from subterra import enumerate_paths, parse_workflow
    from subterra.simulation import InContext, OfflineUser, converse, evaluation_scenarios
    from conftest import TOY

    toy = parse_workflow(TOY)
    paths = {p.id: p for p in enumerate_paths(toy)}
    scenario = evaluation_scenarios(toy, 1)[0]
    backend = anthropic_backend(FakeServer(status=404, message="model: claude-sonnet-4-5"), model="claude-sonnet-4-5")
    with pytest.raises(ModelNotFound):
        converse(InContext(toy, backend), OfflineUser(toy, scenario, paths[scenario.path_id]), toy, scenario,
                 paths[scenario.path_id])


def test_a_model_the_sdk_lists_as_deprecated_warns_once_with_its_end_of_life():
    with pytest.warns(ModelRetirementWarning, match=r"'claude-sonnet-4-5'.*end of life on November 30th, 2026"):
        anthropic_backend(FakeServer(), model="claude-sonnet-4-5")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        anthropic_backend(FakeServer(), model="claude-sonnet-4-5")          # once per model
        anthropic_backend(FakeServer())                                     # the default is not deprecated
    assert not [w for w in seen if issubclass(w.category, ModelRetirementWarning)]
    with pytest.warns(ModelRetirementWarning, match=r"'gpt-4.1'.*2027-01-14"):   # from the openai SDK's notes
        openai_backend(FakeServer(), model="gpt-4.1")


def test_the_deprecation_warning_reads_the_sdks_own_table(monkeypatch):
    import anthropic.resources.messages.messages as sdk

    monkeypatch.setitem(sdk.DEPRECATED_MODELS, "claude-sonnet-5-5", "January 1st, 2099")
    with pytest.warns(ModelRetirementWarning, match="is deprecated and reaches its end of life on January 1st, 2099"):
        anthropic_backend(FakeServer())
    monkeypatch.delitem(sdk.DEPRECATED_MODELS, "claude-sonnet-4-5")
    assert retirement_notice("anthropic", "claude-sonnet-4-5") is None


def test_retirement_notice_before_and_after_the_date():
    from datetime import date

    before = retirement_notice("anthropic", "claude-sonnet-4-5", today=date(2026, 11, 1))
    after = retirement_notice("anthropic", "claude-sonnet-4-5", today=date(2026, 11, 30))
    assert "reaches its end of life on November 30th, 2026" in before
    assert "reached its end of life on November 30th, 2026: calls to it fail" in after
    assert "--model" in after and "claude-sonnet-5-5" in after and "\n" not in after


def test_the_dry_run_warns_before_anything_is_spent(tmp_path, capsys):
    from conftest import TOY
    from subterra.cli import main

    (tmp_path / "toy.yaml").write_text(TOY)
    assert main(["synthesize", "--domain", str(tmp_path / "toy.yaml"), "--teacher", "anthropic", "--n", "10",
                 "--model", "claude-sonnet-4-5", "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert "calls to claude-sonnet-4-5" in captured.out
    [line] = captured.err.strip().splitlines()
    assert line.startswith("warning: anthropic model 'claude-sonnet-4-5'") and "November 30th, 2026" in line


# --------------------------------------------------------------------------- prices

def test_prices_come_from_the_table_per_model():
    usage = Usage(input_tokens=1000, output_tokens=100, cache_read_tokens=2000, cache_write_tokens=500)
    sonnet_5_5 = (1000 * 2.00 + 2000 * 0.20 + 500 * 2.50 + 100 * 10.00) / 1e6
    sonnet_4_5 = (1000 * 3.00 + 2000 * 0.30 + 500 * 3.75 + 100 * 15.00) / 1e6
    gpt_5_5 = (1000 * 5.00 + 2000 * 0.50 + 500 * 5.00 + 100 * 30.00) / 1e6
    assert usage.dollars("claude-sonnet-5-5") == pytest.approx(sonnet_5_5)
    assert usage.dollars("claude-sonnet-5-5", batch=True) == pytest.approx(sonnet_5_5 / 2)
    assert usage.dollars("claude-sonnet-4-5-20250929") == pytest.approx(sonnet_4_5)     # retired, still priced
    assert usage.dollars("gpt-5.5-2026-04-23") == pytest.approx(gpt_5_5)
    assert usage.dollars("self-hosted", batch=True) == usage.dollars("self-hosted")     # no batch discount
    assert price_of("gpt-4.1-mini").input == 0.40 and price_of("gpt-5.5-pro").output == 180.00   # longest prefix
    assert Usage(output_tokens=10, thinking_tokens=10).dollars("claude-sonnet-5-5") == pytest.approx(10 * 10 / 1e6)


def test_cache_and_batch_prices_are_read_from_the_table_not_assumed(monkeypatch):
    monkeypatch.setitem(PRICES, "test-model", Price(1.00, 2.00, cache_read=0.70, cache_write=5.00, batch=0.25))
    usage = Usage(input_tokens=100, output_tokens=10, cache_read_tokens=1000, cache_write_tokens=10)
    expected = (100 * 1.00 + 1000 * 0.70 + 10 * 5.00 + 10 * 2.00) / 1e6
    assert usage.dollars("test-model") == pytest.approx(expected)
    assert usage.dollars("test-model", batch=True) == pytest.approx(expected * 0.25)


def test_an_unknown_model_is_never_priced_below_a_default():
    assert price_of("some-future-model") == UNKNOWN_PRICE
    for model in DEFAULT_MODELS.values():
        known = price_of(model)
        assert all(getattr(UNKNOWN_PRICE, f) >= getattr(known, f) for f in ("input", "output", "cache_read",
                                                                              "cache_write"))
    assert UNKNOWN_PRICE.output > price_of("claude-sonnet-5-5").output
