"""Limits per client key, in-process (the ASGI app, a scripted upstream, a manual clock that is
also the wall clock): models, requests and tokens per minute with their Retry-After, stream
slots released on every path, tokens charged while a stream runs, and the budget's bound.

The counting tests run on the process's memory and on Redis (TIDEGATE_TEST_REDIS_URL): the key
is new in each session, and its Redis keys are deleted after each test."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import orjson
import pytest
import redis

from tests.inprocess import Driver, ManualClock, Result, ScriptedResponse, ScriptedUpstream, sse
from tidegate.app import create_app
from tidegate.auth import key_hash, key_id
from tidegate.errors import ShuttingDown
from tidegate.limits import SLOT_TTL, period_bounds
from tidegate.providers.http import UpstreamCall
from tidegate.services import Services
from tidegate.state import open_state

KEY = "sk-limits-" + secrets.token_hex(10)  # new each session: its own Redis keys
REDIS_URL = os.environ.get("TIDEGATE_TEST_REDIS_URL")
AUTH = {"Authorization": f"Bearer {KEY}"}
CHUNK = {"id": "c", "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]}
END = {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
BODY: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "q"}]}
STREAM: dict[str, Any] = {**BODY, "stream": True}
#: Midnight (UTC) of 2026-11-30, plus one hour: the manual clock is the wall clock too.
T0 = 1_795_996_800.0 + 3600


def usage_chunk(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "id": "c",
        "choices": [],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


def completion(prompt: int = 1, out: int = 1) -> bytes:
    return orjson.dumps(
        {
            "id": "c",
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "hi"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": prompt, "completion_tokens": out, "total_tokens": 2},
        }
    )


def ok(call: UpstreamCall) -> ScriptedResponse:
    if not call.stream:
        return ScriptedResponse(200, [completion()], "application/json")
    return ScriptedResponse(200, [sse(CHUNK), sse(END, usage_chunk(1, 1), b"[DONE]")])


class GatedResponse(ScriptedResponse):
    """A stream whose reads come from a queue the test fills (an exception: a failed read)."""

    def __init__(self) -> None:
        super().__init__(200, [])
        self.queue: asyncio.Queue[bytes | BaseException] = asyncio.Queue()

    async def read_chunk(self) -> bytes:
        read = await self.queue.get()
        if isinstance(read, BaseException):
            raise read
        return read


class Gated:
    """An upstream script answering each call with a new `GatedResponse`."""

    def __init__(self) -> None:
        self.responses: list[GatedResponse] = []

    def __call__(self, call: UpstreamCall) -> ScriptedResponse:
        if not call.stream:
            return ok(call)
        response = GatedResponse()
        response.queue.put_nowait(sse(CHUNK))
        self.responses.append(response)
        return response


def config(**policy: Any) -> dict[str, Any]:
    return {
        "models": [
            {"name": "m", "provider": "openai", "base_url": "http://up.test/v1"},
            {"name": "other", "provider": "openai", "base_url": "http://up.test/v1"},
        ],
        "auth": {"api_keys": [{"key": KEY, "name": "ci", **policy}, "sk-plain-key-0123456789"]},
        "prices": {"m": {"input": 1_000_000.0, "output": 1_000_000.0}},  # 1.0 per token
    }


@pytest.fixture(
    params=[
        "memory",
        pytest.param(
            "redis",
            marks=[
                pytest.mark.redis,
                pytest.mark.skipif(
                    not REDIS_URL, reason="TIDEGATE_TEST_REDIS_URL is not set (no Redis here)"
                ),
            ],
        ),
    ]
)
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """The state the counters are in: memory, or Redis (the key's keys deleted after)."""
    if request.param == "memory":
        yield "memory"
        return
    assert REDIS_URL is not None
    yield REDIS_URL
    r = redis.Redis.from_url(REDIS_URL)
    try:
        found = list(r.scan_iter(f"tidegate:*{key_id(KEY.encode())}*", count=1000))
        if found:
            r.delete(*found)
    finally:
        r.close()


def driver(upstream_script: Any = ok, backend: str = "memory", **policy: Any) -> Driver:
    upstream = ScriptedUpstream()
    upstream.on("up.test", upstream_script)
    gw = Driver(config(**policy), upstream=upstream, clock=ManualClock(T0))
    if backend != "memory":
        gw.services = Services(
            gw.config,
            clock=gw.clock,
            state=open_state(backend),
            client=upstream,
            wall=gw.clock.now,
        )
        gw.app = create_app(gw.config, gw.services)
    return gw


async def until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 5
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


async def settle() -> None:
    """Let the charges written by tasks arrive (a Redis round trip)."""
    await asyncio.sleep(0.05)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())  # type: ignore[arg-type]


def error_message(result: Result) -> str:
    body = result.json()
    return str(body["error"]["message"])


def test_a_model_outside_the_keys_list_is_a_403_naming_it() -> None:
    async def test() -> None:
        async with driver(models=["m"]) as gw:
            refused = await gw.post("/v1/chat/completions", {**BODY, "model": "other"}, AUTH)
            assert refused.status == 403
            assert "'other'" in error_message(refused) and "'ci'" in error_message(refused)
            assert not gw.upstream.calls
            assert (await gw.post("/v1/chat/completions", BODY, AUTH)).status == 200
            plain = {"Authorization": "Bearer sk-plain-key-0123456789"}
            assert (
                await gw.post("/v1/chat/completions", {**BODY, "model": "other"}, plain)
            ).status == 200

    run(test)


def test_rpm_refuses_with_retry_after_until_the_window_slides(backend: str) -> None:
    async def test() -> None:
        async with driver(backend=backend, rpm=3) as gw:
            for _ in range(3):
                assert (await gw.post("/v1/chat/completions", BODY, AUTH)).status == 200
            refused = await gw.post("/v1/chat/completions", BODY, AUTH)
            assert refused.status == 429
            assert error_message(refused) == "key 'ci' is over its limit of 3 requests per minute"
            assert KEY not in refused.body.decode()
            # the three were taken at T0: the oldest leaves the last 60 seconds at T0 + 60
            assert refused.headers["retry-after"] == "60"
            assert len(gw.upstream.calls) == 3
            gw.clock.advance(59)
            assert (await gw.post("/v1/chat/completions", BODY, AUTH)).status == 429
            gw.clock.advance(1)
            assert (await gw.post("/v1/chat/completions", BODY, AUTH)).status == 200
            # other keys are not limited by it
            plain = {"Authorization": "Bearer sk-plain-key-0123456789"}
            assert (await gw.post("/v1/chat/completions", BODY, plain)).status == 200

    run(test)


def test_429_in_each_endpoints_own_format() -> None:
    async def test() -> None:
        async with driver(rpm=1) as gw:
            assert (await gw.post("/v1/chat/completions", BODY, AUTH)).status == 200
            anthropic = await gw.post(
                "/v1/messages",
                {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "q"}]},
                {"x-api-key": KEY},
            )
            assert anthropic.status == 429
            assert anthropic.json()["type"] == "error"
            assert anthropic.json()["error"]["type"] == "rate_limit_error"
            assert "1 requests per minute" in anthropic.json()["error"]["message"]
            gemini = await gw.post(
                "/v1beta/models/m:generateContent",
                {"contents": [{"role": "user", "parts": [{"text": "q"}]}]},
                {"x-goog-api-key": KEY},
            )
            assert gemini.status == 429
            assert gemini.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
            assert "retry-after" in gemini.headers
            ask = await gw.post("/stream-ask", {"model": "m", "question": "q"}, AUTH)
            assert ask.status == 429
            assert b"requests per minute" in ask.body

    run(test)


def test_a_stream_slot_is_held_until_the_stream_ends_not_the_first_byte(backend: str) -> None:
    async def test() -> None:
        gated = Gated()
        async with driver(gated, backend, max_streams=1) as gw:
            first = asyncio.ensure_future(gw.post("/v1/chat/completions", STREAM, AUTH))
            await until(lambda: len(gated.responses) == 1, "the first stream")
            await until(lambda: gw.services.streams.__len__() == 1, "the stream to run")
            await settle()  # the first bytes are out: the slot is still held
            refused = await gw.post("/v1/chat/completions", STREAM, AUTH)
            assert refused.status == 429
            assert error_message(refused) == "key 'ci' is at its limit of 1 concurrent stream(s)"
            assert refused.headers["retry-after"] == "1"
            gated.responses[0].queue.put_nowait(sse(END, b"[DONE]"))
            assert (await first).status == 200
            assert (await gw.post("/v1/chat/completions", BODY, AUTH)).status == 200

    run(test)


def _one_slot_path(end: Callable[[Driver], Awaitable[None]], backend: str) -> None:
    """Open a stream with max_streams 1, end it the way `end` does, then a new one is admitted."""

    async def test() -> None:
        gated = Gated()
        async with driver(gated, backend, max_streams=1) as gw:
            await end(gw)
            gated.responses.clear()
            again = asyncio.ensure_future(gw.post("/v1/chat/completions", STREAM, AUTH))
            await until(lambda: len(gated.responses) == 1, "the next stream")
            gated.responses[0].queue.put_nowait(sse(END, b"[DONE]"))
            assert (await again).status == 200

    run(test)


async def _start(gw: Driver, **kwargs: Any) -> asyncio.Future[Result]:
    future = asyncio.ensure_future(
        gw.request("POST", "/v1/chat/completions", STREAM, AUTH, **kwargs)
    )
    await until(lambda: len(gw.services.streams) == 1 and bool(gw.upstream.responses), "a stream")
    return future


def test_the_slot_is_released_when_the_client_disconnects_mid_stream(backend: str) -> None:
    async def end(gw: Driver) -> None:
        request = gw.request("POST", "/v1/chat/completions", STREAM, AUTH, disconnect_after=1)
        result = await asyncio.wait_for(request, 5)
        assert result.status == 200  # it had begun: the client left mid-stream
        assert gw.upstream.responses[-1].closed
        assert len(gw.services.streams) == 0

    _one_slot_path(end, backend)


def test_the_slot_is_released_when_the_upstream_fails_mid_stream(backend: str) -> None:
    async def end(gw: Driver) -> None:
        future = await _start(gw)
        response = gw.upstream.responses[-1]
        assert isinstance(response, GatedResponse)
        response.queue.put_nowait(ConnectionResetError("gone"))
        result = await asyncio.wait_for(future, 5)
        assert result.status == 200 and b"error" in result.body

    _one_slot_path(end, backend)


def test_the_slot_is_released_when_the_upstream_refuses(backend: str) -> None:
    async def test() -> None:
        failing = ScriptedResponse(500, [b'{"error": {"message": "boom"}}'], "application/json")
        async with driver(lambda call: failing, backend, max_streams=1) as gw:
            for _ in range(3):
                assert (await gw.post("/v1/chat/completions", STREAM, AUTH)).status == 502

    run(test)


def test_the_slot_is_released_when_the_stream_is_cancelled(backend: str) -> None:
    async def end(gw: Driver) -> None:
        future = await _start(gw)
        (stream_id,) = list(gw.services.streams._streams)
        cancelled = await gw.post(f"/v1/streams/{stream_id}/cancel", {}, AUTH)
        assert cancelled.status in (200, 202)
        result = await asyncio.wait_for(future, 5)
        assert b"cancel" in result.body

    _one_slot_path(end, backend)


def test_the_slot_is_released_at_shutdown(backend: str) -> None:
    async def end(gw: Driver) -> None:
        future = await _start(gw)
        assert gw.services.streams.stop_all(ShuttingDown("shutting down")) == 1
        result = await asyncio.wait_for(future, 5)
        assert b"shutting" in result.body

    _one_slot_path(end, backend)


def test_the_slot_is_released_when_the_task_is_cancelled(backend: str) -> None:
    async def end(gw: Driver) -> None:
        future = await _start(gw)
        future.cancel()
        await asyncio.gather(future, return_exceptions=True)
        await until(lambda: len(gw.services.streams) == 0, "the stream to end")
        await settle()

    _one_slot_path(end, backend)


def test_tokens_are_charged_while_the_stream_runs(backend: str) -> None:
    async def test() -> None:
        gated = Gated()
        async with driver(gated, backend, tpm=100) as gw:
            future = await _start(gw)
            response = gated.responses[0]
            # Anthropic-like: the input is known early; here an OpenAI usage chunk mid-stream
            response.queue.put_nowait(sse(usage_chunk(150, 0)))
            await settle()
            # the stream still runs, and the key is already over its tokens per minute
            refused = await gw.post("/v1/chat/completions", BODY, AUTH)
            assert refused.status == 429
            assert error_message(refused) == "key 'ci' is over its limit of 100 tokens per minute"
            assert int(refused.headers["retry-after"]) >= 1
            response.queue.put_nowait(sse(END, b"[DONE]"))
            assert (await future).status == 200
            gw.clock.advance(120)
            assert (await gw.post("/v1/chat/completions", BODY, AUTH)).status == 200

    run(test)


def test_output_tokens_are_estimated_from_events_before_usage_arrives(backend: str) -> None:
    async def test() -> None:
        gated = Gated()
        async with driver(gated, backend, tpm=100) as gw:
            future = await _start(gw)
            response = gated.responses[0]
            for _ in range(200):  # charged 64 tokens at a time
                response.queue.put_nowait(sse(CHUNK))
            await until(lambda: response.queue.empty(), "the chunks to be read")
            await settle()
            assert (await gw.post("/v1/chat/completions", BODY, AUTH)).status == 429
            # the final usage sets the charge right: 2 tokens in all
            response.queue.put_nowait(sse(END, usage_chunk(1, 1), b"[DONE]"))
            assert (await future).status == 200
            assert (await gw.post("/v1/chat/completions", BODY, AUTH)).status == 200

    run(test)


def test_the_budget_is_overspent_by_at_most_one_request(backend: str) -> None:
    async def test() -> None:
        # each request costs 2.0 (1 input + 1 output token at 1.0 each); the budget is 3.0
        async with driver(backend=backend, budget=3.0, period="day") as gw:
            assert (await gw.post("/v1/chat/completions", BODY, AUTH)).status == 200
            assert (await gw.post("/v1/chat/completions", STREAM, AUTH)).status == 200
            refused = await gw.post("/v1/chat/completions", BODY, AUTH)
            assert refused.status == 429
            assert error_message(refused).startswith(
                "key 'ci' is over its budget of 3.00 per day (spent 4.00)"
            )
            assert refused.json()["error"]["code"] == "budget_exceeded"
            # the day ends 23 hours after T0
            assert refused.headers["retry-after"] == str(23 * 3600)
            gw.clock.advance(23 * 3600)
            assert (await gw.post("/v1/chat/completions", BODY, AUTH)).status == 200

    run(test)


def test_calendar_periods_in_utc() -> None:
    assert period_bounds("day", T0) == ("2026-11-30", T0 - 3600 + 86400)
    name, end = period_bounds("week", T0)  # a Monday
    assert name == "2026-W49" and end == T0 - 3600 + 7 * 86400
    name, end = period_bounds("month", T0)
    assert name == "2026-11" and end == T0 - 3600 + 86400
    assert period_bounds("month", T0 + 86400)[0] == "2026-12"


def test_keys_without_a_policy_take_no_lease() -> None:
    async def test() -> None:
        async with driver() as gw:
            plain = {"Authorization": "Bearer sk-plain-key-0123456789"}
            assert (await gw.post("/v1/chat/completions", STREAM, plain)).status == 200
            identity = await gw.services.keys.find(key_hash(b"sk-plain-key-0123456789"))
            assert identity is not None and identity.policy is None

    run(test)


def test_workflow_runs_are_limited_and_their_steps_charged() -> None:
    async def test() -> None:
        upstream = ScriptedUpstream()
        upstream.on("up.test", ok)
        cfg = config(budget=3.0, period="month", max_streams=1, models=["m"])
        step = {"name": "one", "kind": "llm", "model": "m", "prompt": "{input}"}
        other = {"name": "two", "kind": "llm", "model": "other", "prompt": "{input}"}
        cfg["workflows"] = [{"name": "w", "steps": [step]}, {"name": "x", "steps": [step, other]}]
        async with Driver(cfg, upstream=upstream, clock=ManualClock(T0)) as gw:
            forbidden = await gw.post("/v1/workflows/x", {"input": "q", "stream": False}, AUTH)
            assert forbidden.status == 403 and b"'other'" in forbidden.body
            for _ in range(2):  # each run's llm step costs 2.0 (1 + 1 tokens at 1.0)
                done = await gw.post("/v1/workflows/w", {"input": "q"}, AUTH)
                assert done.status == 200 and b"completed" in done.body
            refused = await gw.post("/v1/workflows/w", {"input": "q"}, AUTH)
            assert refused.status == 429 and b"over its budget of 3.00 per month" in refused.body
            assert refused.headers["retry-after"] == str(86400 - 3600)  # 2026-12-01T00:00Z

    run(test)


def _count_state_calls(gw: Driver) -> list[str]:
    """Record every call of the limits' state operations."""
    calls: list[str] = []
    state = gw.services.state
    names = (
        "admit",
        "settle",
        "events_take",
        "window_take",
        "window_add",
        "slot_acquire",
        "slot_release",
        "incr_float",
    )
    for name in names:
        original = getattr(state, name)

        def counted(*args: Any, _name: str = name, _original: Any = original) -> Any:
            calls.append(_name)
            return _original(*args)

        setattr(state, name, counted)
    return calls


def test_a_key_without_a_policy_costs_no_state_operation() -> None:
    async def test() -> None:
        async with driver(rpm=5) as gw:
            calls = _count_state_calls(gw)
            plain = {"Authorization": "Bearer sk-plain-key-0123456789"}
            assert (await gw.post("/v1/chat/completions", STREAM, plain)).status == 200
            assert (await gw.post("/v1/chat/completions", BODY, plain)).status == 200
            assert calls == []
            assert (await gw.post("/v1/chat/completions", BODY, AUTH)).status == 200
            # rpm only: one admission, which (in memory) takes one log entry, and nothing else
            assert calls == ["admit", "events_take"]

    run(test)


def test_money_is_charged_while_the_stream_runs(backend: str) -> None:
    async def test() -> None:
        gated = Gated()
        async with driver(gated, backend, budget=100.0, period="week") as gw:
            future = await _start(gw)
            response = gated.responses[0]
            response.queue.put_nowait(sse(usage_chunk(150, 0)))  # 150.0 at 1.0 per token
            await settle()
            refused = await gw.post("/v1/chat/completions", BODY, AUTH)
            assert refused.status == 429
            # 150 input tokens, and 2 output tokens estimated from the 2 events so far
            assert "over its budget of 100.00 per week (spent 152.00)" in error_message(refused)
            # the week ends next Monday, 00:00 UTC: 7 days less the hour since T0's midnight
            assert refused.headers["retry-after"] == str(7 * 86400 - 3600)
            response.queue.put_nowait(sse(END, usage_chunk(150, 10), b"[DONE]"))
            assert (await future).status == 200
            # set right from the final usage: 160 in all
            key = f"limit:{key_id(KEY.encode())}:spend:2026-W49"
            assert await gw.services.state.incr_float(key, 0.0) == 160.0

    run(test)


def test_a_dead_instances_slot_expires(backend: str) -> None:
    async def test() -> None:
        async with driver(backend=backend, max_streams=1) as gw:
            key = f"limit:{key_id(KEY.encode())}:streams"
            # an instance took the slot, then died without releasing it
            assert await gw.services.state.slot_acquire(key, "dead", 1, SLOT_TTL, T0)
            assert (await gw.post("/v1/chat/completions", BODY, AUTH)).status == 429
            gw.clock.advance(SLOT_TTL + 1)
            assert (await gw.post("/v1/chat/completions", BODY, AUTH)).status == 200

    run(test)


def test_an_unreachable_state_is_a_503_not_a_500() -> None:
    """Limits fail closed: with Redis down, a key with limits is refused with a 503 saying
    why, and a key without limits is served as usual."""

    async def test() -> None:
        async with driver(backend="redis://127.0.0.1:1/0", rpm=5) as gw:
            refused = await gw.post("/v1/chat/completions", BODY, AUTH)
            assert refused.status == 503
            assert "shared state is unreachable" in error_message(refused)
            assert KEY not in refused.body.decode()
            assert not gw.upstream.calls
            plain = {"Authorization": "Bearer sk-plain-key-0123456789"}
            assert (await gw.post("/v1/chat/completions", BODY, plain)).status == 200

    run(test)


def test_a_key_with_a_models_list_sees_only_those_models() -> None:
    """`GET /v1/models` lists what the key may use, and `GET /v1/models/{id}` of another model
    is a 404, as for a model that does not exist; a key without a list sees every model."""

    async def test() -> None:
        async with driver(models=["m"]) as gw:
            listed = await gw.request("GET", "/v1/models", headers=AUTH)
            assert [m["id"] for m in listed.json()["data"]] == ["m"]
            assert (await gw.request("GET", "/v1/models/m", headers=AUTH)).status == 200
            hidden = await gw.request("GET", "/v1/models/other", headers=AUTH)
            assert hidden.status == 404 and "'other'" not in error_message(hidden).split(";")[1]
            plain = {"Authorization": "Bearer sk-plain-key-0123456789"}
            everything = await gw.request("GET", "/v1/models", headers=plain)
            assert [m["id"] for m in everything.json()["data"]] == ["m", "other"]

    run(test)
