"""A wire format as the fake speaks it: framing, content events, errors, whole answers."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web


class Format:
    """A wire format as the fake speaks it."""

    content_type = "text/event-stream"
    crlf = False
    auth_status = 401

    def __init__(self, request: web.Request, body: Any):
        self.request = request
        self.body = body if isinstance(body, dict) else {}

    def is_stream(self) -> bool:
        return bool(self.body.get("stream"))

    def frame(self, payload: Any, sep: str) -> bytes:
        data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        return b"data: " + data + (sep + sep).encode()

    def ping(self) -> bytes:
        return b": keep-alive\n\n"

    def malformed(self) -> bytes:
        return b'data: {"choices": [ not json\n\n'

    def stream_error_bytes(self, message: str, sep: str) -> bytes:
        return self.frame(self.stream_error(message), sep)

    def stream_events(self, kind: str) -> list[Any]:
        raise NotImplementedError

    def text_event(self, text: str) -> Any:
        raise NotImplementedError

    def stream_error(self, message: str) -> Any:
        raise NotImplementedError

    def whole(self, kind: str) -> Any:
        raise NotImplementedError

    def whole_error(self, message: str) -> Any:
        return self.stream_error(message)

    def http_error(self, status: int, message: str) -> Any:
        raise NotImplementedError
