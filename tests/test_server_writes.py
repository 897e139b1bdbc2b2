"""How the server protocol writes a response: the head and the body in one write when they
come together, the head on its own when the body is late, and `100 Continue` at once
(server_protocol.HeadWithBody), the lost-connection callbacks that replace a pending
`receive()` per request (ConnectionCallbacks), and the direct body writer a spliced relay
writes with (CycleWriter). Socket-level behaviour (keep-alive,
pipelining, disconnects) is tested through real servers in test_limits.py and
test_disconnect.py."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any

from tidegate.server_protocol import ConnectionCallbacks, HeadWithBody


class RecordingTransport:
    """A transport that records each write as one item."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


class Cycle:
    """What HeadWithBody reads of uvicorn's cycle."""

    def __init__(self) -> None:
        self.response_started = False
        self.more_body = False  # the request's body is still arriving
        self.transport: Any = None


def in_a_loop(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """Run an async test in a fresh event loop (HeadWithBody schedules on the running loop)."""
    return functools.wraps(test)(lambda: asyncio.run(test()))


def _wrapped() -> tuple[RecordingTransport, Cycle, HeadWithBody]:
    transport, cycle = RecordingTransport(), Cycle()
    wrapper = HeadWithBody(transport, cycle, asyncio.get_running_loop())  # type: ignore[arg-type]
    cycle.transport = wrapper
    return transport, cycle, wrapper


@in_a_loop
async def test_a_whole_response_leaves_in_one_write_and_the_cycle_gets_the_transport_back() -> None:
    transport, cycle, wrapper = _wrapped()
    cycle.response_started = True
    wrapper.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    wrapper.write(b"{}")
    assert transport.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    assert cycle.transport is transport  # later chunks bypass the wrapper
    await asyncio.sleep(0)
    assert len(transport.writes) == 1  # the scheduled flush has nothing left to send


@in_a_loop
async def test_a_head_whose_body_is_late_goes_out_at_the_next_loop_iteration() -> None:
    transport, cycle, wrapper = _wrapped()
    cycle.response_started = True
    wrapper.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
    assert transport.writes == []
    await asyncio.sleep(0)
    assert transport.writes == [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"]
    assert cycle.transport is transport


@in_a_loop
async def test_100_continue_is_not_held_and_close_sends_a_held_head_first() -> None:
    transport, cycle, wrapper = _wrapped()
    wrapper.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # before the response starts
    assert transport.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    cycle.response_started = True
    wrapper.write(b"HTTP/1.1 204 No Content\r\n\r\n")
    wrapper.close()
    assert transport.writes[1:] == [b"HTTP/1.1 204 No Content\r\n\r\n"]
    assert transport.closed


class Flow:
    write_paused = False


class StreamingCycle(Cycle):
    """What CycleWriter and ConnectionCallbacks.body_writer read of uvicorn's cycle."""

    def __init__(self, scope: dict[str, Any], transport: RecordingTransport) -> None:
        super().__init__()
        self.scope = scope
        self.transport = transport
        self.flow = Flow()
        self.chunked_encoding = True
        self.response_complete = False
        self.disconnected = False


class Protocol:
    cycle: StreamingCycle | None = None


def test_a_body_writer_is_offered_only_for_the_current_started_chunked_response() -> None:
    protocol = Protocol()
    watch = ConnectionCallbacks(protocol)  # type: ignore[arg-type]
    scope: dict[str, Any] = {}
    assert watch.body_writer(scope) is None  # no response on the connection
    transport = RecordingTransport()
    protocol.cycle = cycle = StreamingCycle(scope, transport)
    assert watch.body_writer(scope) is None  # not started yet
    cycle.response_started = True
    assert watch.body_writer({}) is None  # another request's scope (a pipelined one)
    cycle.chunked_encoding = False
    assert watch.body_writer(scope) is None  # a content-length response
    cycle.chunked_encoding = True
    writer = watch.body_writer(scope)
    assert writer is not None
    writer.write(b"data: 1\n\n")
    assert transport.writes == [b"9\r\ndata: 1\n\n\r\n"]  # one chunk, framed
    assert not writer.paused
    writer.write(b"")  # an empty chunk would end the body: nothing is written
    assert len(transport.writes) == 1
    cycle.flow.write_paused = True
    assert writer.paused
    cycle.disconnected = True
    writer.write(b"data: 2\n\n")  # the client has gone: dropped
    assert len(transport.writes) == 1
    assert watch.body_writer(scope) is None


def test_connection_callbacks_fire_once_and_forgotten_ones_do_not() -> None:
    watch = ConnectionCallbacks(Protocol())  # type: ignore[arg-type]
    called: list[str] = []
    kept, finished = (lambda: called.append("kept")), (lambda: called.append("finished"))
    watch.add(kept)
    watch.add(finished)
    watch.discard(finished)  # its request ended before the connection was lost
    watch.fire()
    watch.fire()
    assert called == ["kept"]
    assert watch.lost


def test_a_lost_connection_offers_no_writer_and_a_failing_callback_stops_no_other() -> None:
    protocol = Protocol()
    scope: dict[str, Any] = {}
    protocol.cycle = cycle = StreamingCycle(scope, RecordingTransport())
    cycle.response_started = True
    watch = ConnectionCallbacks(protocol)  # type: ignore[arg-type]
    called: list[str] = []

    def failing() -> None:
        raise RuntimeError("boom")

    watch.add(failing)
    watch.add(lambda: called.append("other"))
    watch.fire()
    assert called == ["other"]
    assert watch.body_writer(scope) is None  # the protocol is let go of


@in_a_loop
async def test_an_answer_before_the_body_was_read_says_connection_close() -> None:
    """A response begun while its request's body is still arriving (the connection will end
    after it) says `connection: close`; one that already names its connection is left as is."""
    transport, cycle, wrapper = _wrapped()
    cycle.response_started = cycle.more_body = True
    wrapper.write(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 2\r\n\r\n")
    wrapper.write(b"{}")
    assert transport.writes == [
        b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}"
    ]
    transport, cycle, wrapper = _wrapped()
    cycle.response_started = cycle.more_body = True
    head = b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 2\r\n\r\n"
    wrapper.write(head)
    wrapper.write(b"{}")
    assert transport.writes == [head + b"{}"]


def test_the_connection_says_when_a_body_is_here_and_a_response_would_not_wait() -> None:
    """`body_received`: the current request's whole body has arrived (`receive()` returns it
    at once, so reading it needs no timer); `sends_at_once`: the current request's connection
    is not paused for writing (a response goes out without waiting, so it needs no write
    deadline). Neither holds for another request's scope, or once the client has gone."""
    protocol = Protocol()
    watch = ConnectionCallbacks(protocol)  # type: ignore[arg-type]
    scope: dict[str, Any] = {}
    assert not watch.body_received(scope) and not watch.sends_at_once(scope)  # no request
    protocol.cycle = cycle = StreamingCycle(scope, RecordingTransport())
    cycle.more_body = True
    assert not watch.body_received(scope)  # still arriving
    cycle.more_body = False
    assert watch.body_received(scope) and watch.sends_at_once(scope)
    assert not watch.body_received({}) and not watch.sends_at_once({})  # a pipelined request
    cycle.flow.write_paused = True
    assert not watch.sends_at_once(scope)  # the client is behind: a deadline is needed
    cycle.flow.write_paused = False
    cycle.disconnected = True
    assert not watch.sends_at_once(scope)
