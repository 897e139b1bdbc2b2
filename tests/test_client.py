"""`tidegate.client`, sync and async, against a real gateway process and the fake upstream.

Invariants: a stream yields the answer's chunks then exactly one `FinalEnd`; an HTTP error is
`HTTPError` with the gateway's status, code and message; a failure after the answer began is
`InBandError` carrying the text so far; `stop()` closes the connection and the gateway cancels
the upstream within a second.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.assistant_gateway import KEY_A, KEY_B, start
from tests.conftest import GatewayProcess
from tests.fake_upstream import EXPECTED_TEXT, FIX_TEXT, FakeUpstream
from tests.test_disconnect import wait_closed
from tidegate.client import (
    AsyncClient,
    Chunk,
    Client,
    ConnectionFailed,
    ErrorEvent,
    FinalEnd,
    HTTPError,
    InBandError,
    StreamEvent,
)

CODE = "def add(x):\n    return x + y\n"
TRACEBACK = "Traceback (most recent call last):\nNameError: name 'y' is not defined"


@pytest.fixture(scope="module")
def gw(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    process = start(fake, tmp_path_factory.mktemp("client"))
    yield process
    process.stop()


@pytest.fixture
def client(gw: GatewayProcess) -> Client:
    return Client(gw.url, key=KEY_A)


def test_a_fix_on_the_demo_streams_a_diagnosis_and_the_code(client: Client) -> None:
    with client.stream(task="fix", code=CODE, error=TRACEBACK, model="demo") as stream:
        events = list(stream)
    assert isinstance(events[-1], FinalEnd)
    assert events[-1].finish_reason == "stop"
    assert events[-1].usage is not None and events[-1].usage["output_tokens"] > 0
    assert all(isinstance(e, Chunk) for e in events[:-1]) and len(events) > 10
    text = "".join(e.text for e in events if isinstance(e, Chunk))
    assert text == stream.text
    assert "NameError: name 'y' is not defined" in text
    assert "# FIX (tidegate demo)" in text and CODE.strip() in text
    assert stream.final == events[-1]
    assert stream.request_id


def test_a_fix_on_an_upstream_streams_its_diagnosis_and_corrected_code(
    client: Client, fake: FakeUpstream
) -> None:
    with client.stream(task="fix", code=CODE, error=TRACEBACK, model="openai-fix") as stream:
        for _ in stream:
            pass
    assert stream.text == FIX_TEXT
    assert TRACEBACK in fake.last("fix/assist").body["messages"][-1]["content"]


def test_ask_returns_the_json_result(client: Client) -> None:
    result = client.ask("Hello?", model="kb")
    assert result.answer == EXPECTED_TEXT
    assert result.sources and result.usage is not None
    assert (result.finish_reason, result.session_id) == ("stop", None)
    assert set(result.raw) == {"answer", "sources", "usage", "session_id", "finish_reason"}


def test_dropped_fields_are_reported(client: Client) -> None:
    with client.stream("q", mode="query") as stream:
        list(stream)
    assert stream.dropped_fields == ("mode",)
    assert client.ask("q", mode="query").dropped_fields == ("mode",)


def test_sessions_continue_and_are_forgotten(client: Client, fake: FakeUpstream) -> None:
    sid = f"c-{uuid.uuid4().hex[:8]}"
    assert client.ask("one", session_id=sid).session_id == sid
    with client.stream("two", session_id=sid) as stream:
        list(stream)
    assert [m["content"] for m in fake.last("ok/assist").body["messages"]] == [
        "one",
        EXPECTED_TEXT,
        "two",
    ]
    assert not Client(client._target.url, key=KEY_B).forget(sid)
    assert client.forget(sid)
    assert not client.forget(sid)


@pytest.mark.parametrize(
    ("kwargs", "status", "code", "needle"),
    [
        ({"question": "q", "model": "nope"}, 404, "model_not_found", "unknown model 'nope'"),
        ({"task": "fix"}, 400, "invalid_request", "'question' is required"),
    ],
)
def test_http_errors_carry_status_code_and_message(
    client: Client, kwargs: dict[str, Any], status: int, code: str, needle: str
) -> None:
    for call in (client.stream, client.ask):
        with pytest.raises(HTTPError) as caught:
            call(**kwargs)
        assert (caught.value.status, caught.value.code) == (status, code)
        assert needle in caught.value.message
        assert caught.value.request_id


def test_a_wrong_key_is_a_401(gw: GatewayProcess) -> None:
    with pytest.raises(HTTPError) as caught:
        Client(gw.url, key="wrong").ask("q")
    assert (caught.value.status, caught.value.code) == (401, "unauthorized")


def test_an_in_band_error_raises_after_the_text_so_far(client: Client) -> None:
    chunks: list[str] = []
    with (
        pytest.raises(InBandError) as caught,
        client.stream("q", model="openai-error_mid") as stream,
    ):
        for event in stream:
            assert isinstance(event, Chunk)
            chunks.append(event.text)
    assert caught.value.code == "upstream_error"
    assert caught.value.text == "".join(chunks) and EXPECTED_TEXT.startswith(caught.value.text)
    assert caught.value.final is not None and caught.value.final.finish_reason == "error"


def test_in_band_errors_can_be_yielded_instead(client: Client) -> None:
    with client.stream("q", model="openai-error_mid", raise_errors=False) as stream:
        events = list(stream)
    assert isinstance(events[-2], ErrorEvent) and events[-2].code == "upstream_error"
    assert isinstance(events[-1], FinalEnd) and events[-1].finish_reason == "error"


def test_an_unreachable_gateway_is_connection_failed() -> None:
    with pytest.raises(ConnectionFailed, match="cannot reach the gateway"):
        Client("http://127.0.0.1:9").ask("q")


def test_a_bad_url_is_refused() -> None:
    with pytest.raises(ValueError, match="not an http"):
        Client("ftp://example.com")


def test_stop_from_another_thread_cancels_the_upstream(client: Client, fake: FakeUpstream) -> None:
    """Invariant: the upstream connection closes within one second of `stop()`."""
    before = fake.count("slow_stream/assist")
    stream = client.stream("q", model="openai-slow")
    seen: list[StreamEvent] = []
    stopped_at: list[float] = []

    def stop_soon() -> None:
        while len(seen) < 3:
            time.sleep(0.01)
        stopped_at.append(time.monotonic())
        stream.stop()

    stopper = threading.Thread(target=stop_soon)
    stopper.start()
    for event in stream:  # ends quietly once stopped
        seen.append(event)
    stopper.join()
    upstream = wait_closed(fake, "slow_stream/assist", before)
    assert upstream.closed_at is not None and upstream.closed_at - stopped_at[0] < 1.0
    assert not upstream.completed
    assert stream.final is None and "tick" in stream.text


# -- async ---------------------------------------------------------------------------------------


def test_async_client_streams_asks_and_forgets(gw: GatewayProcess, fake: FakeUpstream) -> None:
    async def main() -> None:
        async with AsyncClient(gw.url, key=KEY_A) as client:
            async with client.stream(
                task="fix", code=CODE, error=TRACEBACK, model="openai-fix"
            ) as stream:
                events = [e async for e in stream]
            assert isinstance(events[-1], FinalEnd)
            assert stream.text == FIX_TEXT
            demo = client.stream(task="fix", code=CODE, error=TRACEBACK, model="demo")
            text = "".join([e.text async for e in demo if isinstance(e, Chunk)])
            assert text.startswith("[tidegate demo: fix]") and CODE.strip() in text
            sid = f"a-{uuid.uuid4().hex[:8]}"
            result = await client.ask("one", session_id=sid)
            assert (result.answer, result.session_id) == (EXPECTED_TEXT, sid)
            assert await client.forget(sid)
            assert not await client.forget(sid)

    asyncio.run(main())


def test_async_client_errors(gw: GatewayProcess) -> None:
    async def main() -> None:
        async with AsyncClient(gw.url, key=KEY_A) as client:
            with pytest.raises(HTTPError) as caught:
                await client.ask("q", model="nope")
            assert caught.value.status == 404
            with pytest.raises(HTTPError):
                async with client.stream("q", model="nope"):
                    pass
            with pytest.raises(InBandError) as failed:
                async with client.stream("q", model="openai-error_mid") as stream:
                    async for _ in stream:
                        pass
            assert failed.value.code == "upstream_error"
        with pytest.raises(ConnectionFailed):
            async with AsyncClient("http://127.0.0.1:9") as nowhere:
                await nowhere.ask("q")

    asyncio.run(main())


def test_async_stop_cancels_the_upstream(gw: GatewayProcess, fake: FakeUpstream) -> None:
    before = fake.count("slow_stream/assist")

    async def main() -> float:
        async with AsyncClient(gw.url, key=KEY_A) as client:
            stream = client.stream("q", model="openai-slow")
            count = 0
            async for _ in stream:
                count += 1
                if count == 3:
                    stream.stop()
                    return time.monotonic()
        raise AssertionError("the stream ended by itself")

    stopped = asyncio.run(main())
    upstream = wait_closed(fake, "slow_stream/assist", before)
    assert upstream.closed_at is not None and upstream.closed_at - stopped < 1.0
