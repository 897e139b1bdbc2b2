"""The thin ASGI layer: request parsing, whole responses, and the client-disconnect watcher.

tidegate talks ASGI directly instead of through a web framework: it has a handful of routes,
and a framework's per-request machinery (dependency injection, response classes, a task
group per streaming response) costs more CPU and memory than the whole relay of a chunk.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol, Required, TypedDict
from urllib.parse import parse_qsl

import orjson

from tidegate.errors import ClientDisconnected, InvalidRequest, PayloadTooLarge, RequestTimeout

Scope = dict[str, Any]


class RequestMessage(TypedDict):
    """A piece of the request body (`more_body` false on the last)."""

    type: Literal["http.request"]
    body: bytes
    more_body: bool


class DisconnectMessage(TypedDict):
    """The client went away."""

    type: Literal["http.disconnect"]


class ResponseStart(TypedDict):
    """The status line and headers."""

    type: Literal["http.response.start"]
    status: int
    headers: list[tuple[bytes, bytes]]


class ResponseBody(TypedDict):
    """A piece of the response body (`more_body` false on the last)."""

    type: Literal["http.response.body"]
    body: bytes
    more_body: bool


class LifespanMessage(TypedDict, total=False):
    """Start-up and shutdown, both ways."""

    type: Required[str]
    message: str


ReceiveMessage = RequestMessage | DisconnectMessage | LifespanMessage
SendMessage = ResponseStart | ResponseBody | LifespanMessage
Receive = Callable[[], Awaitable[ReceiveMessage]]
Send = Callable[[SendMessage], Awaitable[None]]


class Request:
    """One HTTP request: method, path, path params, headers, query and (once read) body.

    Headers are looked up in the server's list when asked for (a handful per request) rather
    than copied into a dict that would live as long as the response.
    """

    __slots__ = (
        "_query",
        "_raw_headers",
        "_scope",
        "body",
        "connection",
        "method",
        "params",
        "path",
        "query_string",
    )

    def __init__(self, scope: Scope):
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.query_string: bytes = scope.get("query_string", b"")
        self._raw_headers: list[tuple[bytes, bytes]] = scope["headers"]
        self._scope = scope
        self.body = b""
        self.params: dict[str, str] = {}  # from the route's path template
        self._query: dict[str, str] | None = None
        extension = scope.get("extensions", _NO_EXTENSIONS).get(CONNECTION_EXTENSION)
        #: The server's report of a lost connection, when it offers one (tidegate's does).
        self.connection: ConnectionWatch | None = extension["watch"] if extension else None

    def header(self, name: bytes, default: str = "") -> str:
        """A header's value by its lower-case name (repeated headers joined with ", ")."""
        found = [value for key, value in self._raw_headers if key == name or key.lower() == name]
        if not found:
            return default
        return b", ".join(found).decode("latin-1")

    def body_writer(self) -> BodyWriter | None:
        """The server's direct writer for this request's started, streamed response, if it
        offers one (see `BodyWriter`)."""
        return self.connection.body_writer(self._scope) if self.connection else None

    def sends_at_once(self) -> bool:
        """True when the server says a response can be sent now without waiting for the
        client (False when it cannot tell)."""
        return self.connection is not None and self.connection.sends_at_once(self._scope)

    @property
    def query(self) -> dict[str, str]:
        """Query parameters (the last value wins for repeated names)."""
        if self._query is None:
            self._query = dict(parse_qsl(self.query_string.decode("latin-1")))
        return self._query

    @property
    def content_type(self) -> str:
        """The media type without parameters, lower-cased."""
        return self.header(b"content-type").split(";", 1)[0].strip().lower()

    async def read_body(self, receive: Receive, limit: int, within: float | None = None) -> bytes:
        """Read the whole body within `within` seconds: more than `limit` bytes is 413, a body
        still incomplete after `within` seconds is 408, and a client gone before the end raises
        `ClientDisconnected`."""
        declared = self.header(b"content-length")
        if declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(
                f"request body of {declared} bytes exceeds the limit of {limit} bytes"
            )
        if within is None or (
            self.connection is not None and self.connection.body_received(self._scope)
        ):
            self.body = await _receive_body(receive, limit)  # here already: no timer needed
            return self.body
        try:
            async with asyncio.timeout(within):
                self.body = await _receive_body(receive, limit)
        except TimeoutError:
            raise RequestTimeout(
                f"the request body did not arrive within {within:g}s; send it faster"
            ) from None
        return self.body

    def json_object(self) -> dict[str, Any]:
        """The body parsed as a JSON object, or 400 saying what is wrong with it."""
        if not self.body:
            raise InvalidRequest("request body is empty; send a JSON object")
        try:
            data = orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
        self.body = b""  # parsed: the raw bytes need not live as long as the request
        if not isinstance(data, dict):
            raise InvalidRequest("request body must be a JSON object")
        return data


async def _receive_body(receive: Receive, limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnected("the client disconnected while sending the body")
        chunk: bytes = message.get("body", b"")  # type: ignore[assignment]
        if chunk:
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
            parts.append(chunk)
        if not message.get("more_body", False):
            return parts[0] if len(parts) == 1 else b"".join(parts)


async def send_bytes(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = b"application/json",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Send a whole response in two ASGI messages."""
    out = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if headers:
        out += headers
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": body, "more_body": False})


_NO_EXTENSIONS: dict[str, Any] = {}
#: The ASGI scope extension (its dict's "watch") through which tidegate's own server protocol
#: (server_protocol.py) reports a lost connection without a pending `receive()`.
CONNECTION_EXTENSION = "tidegate.connection"


class BodyWriter(Protocol):
    """Writes the body of a started, streamed response straight to the connection, outside
    ASGI `send` (for a relay that forwards from a callback), so a wrapper of `send` does not
    see these bytes. Bytes written after the client has gone are dropped."""

    @property
    def paused(self) -> bool:
        """The client is not reading fast enough: write nothing more until it drains."""

    def write(self, data: bytes) -> None:
        """Send `data` (not empty) as the next body bytes, now."""


class ConnectionWatch(Protocol):
    """What a server offers under `scope["extensions"][CONNECTION_EXTENSION]`: callbacks
    called once, from the loop, when the request's connection is lost; and a direct writer
    for the body of a streamed response."""

    lost: bool

    def add(self, callback: Callable[[], None]) -> None:
        """Call `callback()` when the connection is lost."""

    def discard(self, callback: Callable[[], None]) -> None:
        """Forget `callback` (the request has finished)."""

    def body_writer(self, scope: Scope) -> BodyWriter | None:
        """A writer for the streamed response of the request of `scope`, once it has started
        (None when the server cannot offer one for it now)."""

    def body_received(self, scope: Scope) -> bool:
        """True when the whole body of the request of `scope` has arrived: `receive()` hands
        it over without waiting."""

    def sends_at_once(self, scope: Scope) -> bool:
        """True when a response to the request of `scope` can be sent now without waiting:
        the client is keeping up with what was written to it."""


class DisconnectWatcher:
    """Cancels the request's task when the client disconnects before the response is done.

    ASGI servers report a vanished client only through `receive()`; while the relay waits on
    a silent upstream nothing else would notice. Under tidegate's own server protocol the
    connection says so itself (`ConnectionWatch`, a callback: no task per request); under any
    other ASGI server one pending `receive()` per request is kept, with a callback instead of
    a watching coroutine. The task calls `done()` when it has finished, so a disconnect
    reported afterwards cancels nothing.

    A resumable stream sets `on_disconnect`: called instead of cancelling, it decides (True:
    keep the task running, generating for a client that may come back).
    """

    __slots__ = (
        "_finished",
        "_pending",
        "_receive",
        "_target",
        "_watch",
        "disconnected",
        "on_disconnect",
    )

    def __init__(self, receive: Receive, watch: ConnectionWatch | None = None):
        task = asyncio.current_task()
        assert task is not None
        self._target = task
        self._receive = receive
        self._finished = False
        self.disconnected = False
        self.on_disconnect: Callable[[], bool] | None = None
        self._pending: asyncio.Future[Any] | None = None
        self._watch = watch
        if watch is None:
            self._arm()
        elif watch.lost:
            asyncio.get_running_loop().call_soon(self._gone)
        else:
            watch.add(self._gone)

    def _arm(self) -> None:
        self._pending = asyncio.ensure_future(self._receive())
        self._pending.add_done_callback(self._received)

    def _received(self, future: asyncio.Future[Any]) -> None:
        if future.cancelled() or self._finished:
            return
        if future.exception() is not None or future.result()["type"] == "http.disconnect":
            self._gone()
        else:
            self._arm()  # a request message after the body (an empty one for GET): keep watching

    def _gone(self) -> None:
        if self._finished or self.disconnected:
            return
        self.disconnected = True
        if self.on_disconnect is None or not self.on_disconnect():
            self._target.cancel()

    def done(self) -> None:
        """The response is complete; stop watching."""
        self._finished = True
        if self._watch is not None:
            self._watch.discard(self._gone)
        if self._pending is not None:
            self._pending.cancel()
