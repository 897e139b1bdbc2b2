"""The HTTP/1.1 connection: uvicorn's httptools protocol, with limits enforced before the app.

uvicorn (0.54) puts no bound on a request head: a header value grows for as long as the client
sends it, a connection may wait forever for its first byte or its last header, and a request
answered before its body was read keeps its connection while the client trickles the body.
All of that happens before tidegate sees a request, so before any key is checked. This
subclass of `HttpToolsProtocol` adds, per connection (settings under `limits:`):

- `max_header_bytes`: the request line and header lines of one request are counted as they
  arrive and the parser is never fed past the cap: more is refused with 431;
- `max_headers`: more header lines than this is refused with 431;
- `header_timeout`: a connection must complete its first request head within this many
  seconds of opening, and each later request within this many seconds of its first byte;
  else 408 (or, if nothing at all was received, the connection is simply closed);
- `max_connections`: a connection beyond it is answered 503 as soon as it is accepted;
- a request answered before its body was read (401 before the key, 413, 408) closes its
  connection after the answer instead of reading the rest of the body indefinitely;
- framing the parser accepts but cannot honour is refused before the app sees it: a
  `Transfer-Encoding` with a coding before `chunked` (`gzip, chunked` would hand the app an
  undecoded body) is 501, and an HTTP/1.1 request without exactly one `Host` is 400 (RFC 9112
  6.1 and 3.2). A `Transfer-Encoding` that does not end in exactly one `chunked` is 400 (RFC
  9112 6.3), as httptools would also have it, and httptools refuses `Content-Length` with
  `Transfer-Encoding` and two `Content-Length`s;
- a request the parser rejects is answered 400 through the same refusal as the limits (JSON,
  lingering close), not uvicorn's own answer, which is written at once: behind a pipelined
  request still being served, that 400 went out first and read as the answer to the earlier
  request, whose own response was then lost.

A refusal is written here (the app never sees the request) with `connection: close`; then the
connection is half-closed, and what the client still sends is read and dropped, for at most
`LINGER_SECONDS` and `LINGER_BYTES`, so that it can read the answer instead of getting a reset.
If an earlier pipelined request's response is still being sent, nothing is written: that
response is cut off and the connection closed.

What is counted: every byte fed to the parser from the start of a request head to the end of
its headers. A request head that begins in the same read as the previous request's end is
counted from the next read on, so the parser holds at most the cap plus one read.

uvicorn still owns the server's lifecycle, workers and signals; this class only overrides the
parser callbacks and `data_received`. It depends on internals of `HttpToolsProtocol`
(`cycle`, `connections`, `flow`, the callback names), which is why pyproject pins uvicorn to
the minor version it was tested with.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from tidegate.asgi import CONNECTION_EXTENSION
from tidegate.logs import log
from tidegate.settings import LimitsConfig

#: After a refusal: how long to keep reading (and dropping) what the client still sends.
LINGER_SECONDS = 2.0
#: After a refusal: how much to read and drop before closing anyway.
LINGER_BYTES = 2 * 1024 * 1024
#: How much earlier than asked a loop timer may fire (uvloop rounds to milliseconds).
_TIMER_EARLY = 0.002

_REASONS = {
    400: b"Bad Request",
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    501: b"Not Implemented",
    503: b"Service Unavailable",
}


class GatewayServerConfig(uvicorn.Config):
    """uvicorn's settings plus tidegate's `limits:`, which reach each connection's protocol
    through it (and reach worker processes pickled with it)."""

    def __init__(self, app: Any, *, limits: LimitsConfig, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.tidegate_limits = limits


class CycleWriter:
    """`BodyWriter` (asgi.py) for one response on this connection: chunked body bytes written
    to the transport as uvicorn's `send` would, without an ASGI message and a coroutine per
    write. Only offered for a started chunked response; the response's end still goes through
    `send`, which writes the last chunk and completes the cycle."""

    __slots__ = ("_cycle",)

    def __init__(self, cycle: Any) -> None:
        self._cycle = cycle

    @property
    def paused(self) -> bool:
        """The client's socket buffer is full (uvicorn's flow control says so)."""
        return bool(self._cycle.flow.write_paused)

    def write(self, data: bytes) -> None:
        """One chunk of the body (nothing for empty `data`, which would end the body; dropped
        once the client has gone)."""
        cycle = self._cycle
        if (
            data
            and not cycle.disconnected
            and not cycle.response_complete
            and not cycle.transport.is_closing()
        ):
            cycle.transport.write(b"%x\r\n%b\r\n" % (len(data), data))


class ConnectionCallbacks:
    """One connection's `ConnectionWatch` (asgi.py), offered to every request on it: the
    app learns of a lost connection from a callback instead of a pending `receive()` (one
    task less per request), and may write a streamed body directly (`CycleWriter`)."""

    __slots__ = ("_callbacks", "_protocol", "lost")

    def __init__(self, protocol: HttpToolsProtocol) -> None:
        self.lost = False
        self._protocol: HttpToolsProtocol | None = protocol
        self._callbacks: set[Callable[[], None]] = set()

    def body_writer(self, scope: dict[str, Any]) -> CycleWriter | None:
        """A writer for the response of `scope`, if it is the connection's current one and a
        started chunked response still open."""
        cycle = self._current(scope)
        if (
            cycle is None
            or not cycle.response_started
            or not cycle.chunked_encoding
            or cycle.response_complete
            or cycle.disconnected
        ):
            return None
        return CycleWriter(cycle)

    def body_received(self, scope: dict[str, Any]) -> bool:
        """True when `scope`'s request is the current one and its body has fully arrived
        (uvicorn's `receive` then returns it at once)."""
        cycle = self._current(scope)
        return cycle is not None and not cycle.more_body

    def sends_at_once(self, scope: dict[str, Any]) -> bool:
        """True when `scope`'s request is the current one and its connection is not paused
        for writing (uvicorn's `send` waits only while it is)."""
        cycle = self._current(scope)
        return cycle is not None and not cycle.flow.write_paused and not cycle.disconnected

    def _current(self, scope: dict[str, Any]) -> Any:
        """The connection's current cycle, if it is the one of `scope` (not a pipelined
        request's, nor one after the connection was lost)."""
        cycle = self._protocol.cycle if self._protocol is not None else None
        return cycle if cycle is not None and cycle.scope is scope else None

    def add(self, callback: Callable[[], None]) -> None:
        """Call `callback()` when the connection is lost."""
        self._callbacks.add(callback)

    def discard(self, callback: Callable[[], None]) -> None:
        """Forget `callback`."""
        self._callbacks.discard(callback)

    def fire(self) -> None:
        """The connection is lost: call every callback once (and let go of the protocol,
        which refers to this object: no cycle outlives the connection)."""
        self.lost = True
        self._protocol = None
        callbacks, self._callbacks = self._callbacks, set()
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("a lost-connection callback failed")


class HeadWithBody:
    """The transport as one response's cycle sees it until its head is written.

    uvicorn writes a response's status line and headers as soon as the app starts the
    response, and its body in another write: two system calls and two packets for every
    whole response. Here the head is held until the first body write, if that comes in the
    same loop iteration (a whole response, or a stream's head and first event: one write,
    one packet); if it does not, the head goes out at the next iteration on its own, so a
    client never waits for it. Then the cycle gets the real transport back. A response
    begun while its request's body is still arriving gets `connection: close` in its head:
    the protocol will end the connection after it rather than read that body.
    """

    __slots__ = ("_cycle", "_held", "_loop", "_transport")

    def __init__(
        self, transport: asyncio.Transport, cycle: Any, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._transport = transport
        self._cycle = cycle
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        """Hold the head; send it with the first body bytes (anything else goes out now)."""
        held = self._held
        if held is not None:
            self._held = None
            self._cycle.transport = self._transport
            self._transport.write(held + data)
        elif self._cycle.response_started:
            if self._cycle.more_body and b"\r\nconnection:" not in data:
                # Answered before its body was read (401, 413): the connection ends after
                # this response (`on_response_complete`), and the head says so.
                data = data[:-2] + b"connection: close\r\n\r\n"
            self._held = data
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)  # `100 Continue`, before any response

    def flush(self) -> None:
        """Send a head still held."""
        held = self._held
        if held is not None:
            self._held = None
            self._cycle.transport = self._transport
            if not self._transport.is_closing():
                self._transport.write(held)

    def close(self) -> None:
        """Send a head still held, then close."""
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        """Whether the connection is closing."""
        return self._transport.is_closing()


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with bounded request heads, a header timeout, a
    connection cap, and no unbounded wait for a body nobody will read (see module docstring)."""

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limits = (
            config.tidegate_limits if isinstance(config, GatewayServerConfig) else LimitsConfig()
        )
        self._max_head_bytes = limits.max_header_bytes
        self._max_headers = limits.max_headers
        self._head_seconds = limits.header_timeout
        self._max_connections = limits.max_connections
        # True from a connection's start, and from each request's end, until the next
        # request's headers are complete: the bytes being fed belong to a request head.
        self._in_head = True
        self._head_bytes = 0
        self._header_count = 0
        # Per request: the `Host` header lines, and the codings named by `Transfer-Encoding`.
        self._host_count = 0
        self._codings: list[bytes] = []
        # The header clock: when the head being received must be complete (None: no head in
        # progress), and one timer per connection that checks it when due. A head that
        # completes leaves the timer to lapse instead of cancelling it, so a request costs a
        # clock reading, not a timer made and cancelled.
        self._head_due: float | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        # A refusal decided inside a parser callback, sent once the parser has returned.
        self._pending: tuple[int, str, str] | None = None
        # After an answer that ends the connection: input is dropped until it closes, and
        # parser callbacks still running on the current read are ignored.
        self._lingering = False
        self._dropped = 0
        self._linger_timer: asyncio.TimerHandle | None = None
        self._connection = ConnectionCallbacks(self)
        self._extensions: dict[str, dict[object, object]] = {
            CONNECTION_EXTENSION: {"watch": self._connection}
        }

    # -- connection ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Accept the connection, or answer 503 beyond `max_connections`; start the clock
        for the first request head."""
        super().connection_made(transport)
        if len(self.connections) > self._max_connections:
            self._refuse(
                503, "too_many_connections", "the gateway is at its connection limit; retry later"
            )
            return
        self._start_head_clock()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop this connection's timers, then let uvicorn clean up."""
        self._cancel_head_timer()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        super().connection_lost(exc)
        self._connection.fire()

    def data_received(self, data: bytes) -> None:
        """Feed the parser, never more than the room left in the current request head."""
        if self._lingering:
            self._dropped += len(data)
            if self._dropped > LINGER_BYTES:
                self.transport.close()
            return
        while data and self._in_head:
            if self._head_due is None:
                self._start_head_clock()
            room = self._max_head_bytes - self._head_bytes
            piece, data = (data, b"") if len(data) <= room else (data[:room], data[room:])
            self._head_bytes += len(piece)
            super().data_received(piece)
            if self._stopped_after_feed():
                return
            if self._in_head and self._head_bytes >= self._max_head_bytes:
                self._refuse(
                    431,
                    "request_header_fields_too_large",
                    f"the request line and headers exceed {self._max_head_bytes} bytes",
                )
                return
        if data:
            super().data_received(data)
            self._stopped_after_feed()

    def _stopped_after_feed(self) -> bool:
        """Send a refusal decided during the feed; True when nothing more is to be fed."""
        if self._pending is not None:
            refusal, self._pending = self._pending, None
            if not self.transport.is_closing():
                self._refuse(*refusal)
        return self._lingering or self.transport.is_closing()

    # -- parser callbacks ----------------------------------------------------------------

    @property
    def _ignoring(self) -> bool:
        return self._lingering or self._pending is not None

    def on_message_begin(self) -> None:
        """A request starts: its headers are counted afresh and it gets a header timer."""
        if self._ignoring:
            return
        super().on_message_begin()
        self.scope["extensions"] = self._extensions
        self._header_count = 0
        self._host_count = 0
        self._codings = []
        if self._head_due is None:
            self._start_head_clock()

    def on_header(self, name: bytes, value: bytes) -> None:
        """Keep a header, unless the request has more than `max_headers`."""
        if self._ignoring:
            return
        self._header_count += 1
        if self._header_count > self._max_headers:
            self._pending = (
                431,
                "request_header_fields_too_large",
                f"the request has more than {self._max_headers} header fields",
            )
            return
        lowered = name.lower()
        if lowered == b"host":
            self._host_count += 1
        elif lowered == b"transfer-encoding":
            self._codings += [c.strip().lower() for c in value.split(b",")]
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        """The head is complete and within limits: stop its clock and hand it to uvicorn,
        unless its framing or `Host` is one to refuse."""
        if self._ignoring:
            return
        self._in_head = False
        self._head_due = None  # the clock's timer lapses when it comes
        codings = self._codings
        if codings and (codings[-1] != b"chunked" or codings.count(b"chunked") > 1):
            self._pending = (400, "bad_request", "the body's length cannot be determined")
            return
        if len(codings) > 1:
            self._pending = (
                501,
                "not_implemented",
                "the only transfer coding accepted in a request is chunked",
            )
            return
        if self._host_count > 1 or (
            self._host_count == 0 and self.parser.get_http_version() == "1.1"
        ):
            self._pending = (400, "bad_request", "an HTTP/1.1 request needs one Host header")
            return
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope:  # a new cycle (not an upgrade)
            cycle.transport = HeadWithBody(self.transport, cycle, self.loop)  # type: ignore[assignment]

    def on_body(self, body: bytes) -> None:
        """Body bytes of a request being served (dropped after a refusal)."""
        if self._ignoring:
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        """The request is complete; whatever follows is the next request's head."""
        if self._ignoring:
            return
        super().on_message_complete()
        self._in_head = True
        self._head_bytes = 0

    def shutdown(self) -> None:
        """The server begins a graceful shutdown: tell the app first (it gives open streams
        their grace period), then let uvicorn close idle connections."""
        begin_drain = getattr(self.app, "begin_drain", None)
        if begin_drain is not None:
            begin_drain()
        super().shutdown()

    def on_response_complete(self) -> None:
        """After a response: its head goes out if still held (a HEAD answer has no body
        write to carry it); if its request's body is still arriving, the app answered without
        reading it (401, 413, 408), so end the connection rather than read the body forever."""
        self._flush_held_head()
        super().on_response_complete()
        cycle = self.cycle
        if (
            cycle is not None
            and cycle.response_complete
            and cycle.more_body
            and not self._lingering
            and not self.transport.is_closing()
        ):
            self._linger()

    def send_400_response(self, msg: str) -> None:
        """The parser rejected the request (uvicorn has logged it): refuse it like a limit,
        unless a refusal was already decided earlier in the same read (the bytes the parser
        choked on came after a head refused, say, for its `Transfer-Encoding`)."""
        if self._ignoring:
            return
        self._refuse(400, "bad_request", "the request is not valid HTTP/1.1")

    def _unsupported_upgrade_warning(self) -> None:
        """tidegate serves no WebSockets (`ws: none`): an upgrade request is answered as plain
        HTTP. uvicorn would log two warnings per such request, one advising to install a
        WebSocket library; neither is useful, and a client could flood the log with them."""

    # -- refusals ------------------------------------------------------------------------

    def _start_head_clock(self) -> None:
        self._head_due = self.loop.time() + self._head_seconds
        if self._head_timer is None:
            self._head_timer = self.loop.call_at(self._head_due, self._check_head_clock)

    def _cancel_head_timer(self) -> None:
        self._head_due = None
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _check_head_clock(self) -> None:
        self._head_timer = None
        due = self._head_due
        if due is None:
            return  # no head in progress: the next one starts the clock again
        if self.loop.time() < due - _TIMER_EARLY:
            self._head_timer = self.loop.call_at(due, self._check_head_clock)
            return
        self._head_due = None
        self._head_timed_out()

    def _head_timed_out(self) -> None:
        if self._lingering or self.transport.is_closing():
            return
        if self._head_bytes == 0 and self.cycle is None:
            self.transport.close()  # a connection that never sent a byte gets no answer
            return
        self._refuse(
            408,
            "request_timeout",
            f"the request headers did not arrive within {self._head_seconds:g}s",
        )

    def _refuse(self, status: int, code: str, message: str) -> None:
        """Answer `status` with a JSON error and `connection: close`, then end the connection."""
        self._flush_held_head()
        self._cancel_head_timer()
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # A request is still unanswered. If the refusal is about its own body (a malformed
            # chunk), no response has begun and no earlier request is waiting to be answered
            # (the pipeline is empty), the refusal is its answer: the app, waiting for that
            # body, sees a disconnect and sends nothing. Otherwise the refusal is about a later
            # request, and earlier responses come first on the wire: a status line now would
            # corrupt one or read as its answer, so the connection is cut off instead.
            cycle.disconnected = True
            cycle.message_event.set()
            if not cycle.more_body or cycle.response_started or self.pipeline:
                self._lingering = True
                self.transport.close()
                return
        body = orjson.dumps({"error": {"message": message, "code": code}})
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, _REASONS[status], len(body), body)
        )
        self._linger()

    def _flush_held_head(self) -> None:
        """A response head held by `HeadWithBody` goes out now, before anything this protocol
        writes or closes itself."""
        cycle = self.cycle
        if cycle is not None and isinstance(cycle.transport, HeadWithBody):
            cycle.transport.flush()

    def _linger(self) -> None:
        """Half-close, then read and drop input until the client closes or the linger ends
        (its callers have sent any held head first)."""
        self._lingering = True
        self._in_head = False
        self._cancel_head_timer()
        self.flow.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._linger_timer = self.loop.call_later(LINGER_SECONDS, self.transport.close)
