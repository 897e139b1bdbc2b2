"""The thin ASGI layer: request parsing, whole responses, and the client-disconnect watcher.

tidegate talks ASGI directly instead of through a web framework: it has a handful of routes,
and a framework's per-request machinery (dependency injection, response classes, a task
group per streaming response) costs more CPU and memory than the whole relay of a chunk.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qsl

import orjson

from tidegate.errors import InvalidRequest, PayloadTooLarge

Scope = dict[str, Any]
Receive = Any
Send = Any


class Request:
    """One HTTP request: method, path, lower-cased headers, query and (once read) body."""

    __slots__ = ("_query", "body", "headers", "method", "path", "query_string")

    def __init__(self, scope: Scope):
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.query_string: bytes = scope.get("query_string", b"")
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        self.headers = headers
        self.body = b""
        self._query: dict[str, str] | None = None

    @property
    def query(self) -> dict[str, str]:
        """Query parameters (the last value wins for repeated names)."""
        if self._query is None:
            self._query = dict(parse_qsl(self.query_string.decode("latin-1")))
        return self._query

    @property
    def content_type(self) -> str:
        """The media type without parameters, lower-cased."""
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()

    async def read_body(self, receive: Receive, limit: int) -> bytes:
        """Read the whole body, refusing more than `limit` bytes with 413."""
        declared = self.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(
                f"request body of {declared} bytes exceeds the limit of {limit} bytes"
            )
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise asyncio.CancelledError("client disconnected while sending the body")
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
                parts.append(chunk)
            if not message.get("more_body", False):
                break
        self.body = parts[0] if len(parts) == 1 else b"".join(parts)
        return self.body

    def json_object(self) -> dict[str, Any]:
        """The body parsed as a JSON object, or 400 saying what is wrong with it."""
        if not self.body:
            raise InvalidRequest("request body is empty; send a JSON object")
        try:
            data = orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise InvalidRequest("request body must be a JSON object")
        return data


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


class DisconnectWatcher:
    """Cancels the request's task when the client disconnects before the response is done.

    ASGI servers report a vanished client only through `receive()`; while the relay waits on
    a silent upstream nothing else would notice. The task calls `done()` before it sends its
    last message so that a disconnect reported after completion cancels nothing.
    """

    __slots__ = ("_finished", "_receive", "_target", "_watcher", "disconnected")

    def __init__(self, receive: Receive):
        task = asyncio.current_task()
        assert task is not None
        self._target = task
        self._receive = receive
        self._finished = False
        self.disconnected = False
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                break
        if not self._finished:
            self.disconnected = True
            self._target.cancel()

    def done(self) -> None:
        """The response is complete; stop watching."""
        self._finished = True
        self._watcher.cancel()
