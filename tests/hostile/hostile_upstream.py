"""A hostile upstream: a raw HTTP/1.1 server on 127.0.0.1 that can send anything at all.

Unlike the well-behaved fake (tests/fake_upstream.py, aiohttp), this one writes bytes itself,
so it can split a key across two TCP writes at any offset, send a line that never ends, a gzip
bomb, type-confused JSON, a trickle of one byte at a time, or a flood. What to do is written in
the prompt itself, so that it reaches the upstream through every endpoint and translation:

    HOSTILE:<script>:<arg>:<arg>...    e.g. "HOSTILE:split_error:37:mid"

(a request without such a text gets the `ok` script).

Every request is recorded with when the gateway closed its connection (seen by a reader task
waiting for EOF), so tests can assert that an upstream call really ended.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import re
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from tests.background import BackgroundServer

SECRET = "sk-hst-Q7xZ9pL2mK4vR8wT3yB6nF5"
_COMMAND = re.compile(rb"HOSTILE:([a-z_]+(?::[A-Za-z0-9_.-]+)*)")
FORMATS = ("openai", "anthropic", "gemini", "ollama")


@dataclass
class Seen:
    """One request the hostile upstream received."""

    script: str
    args: list[str]
    path: str
    headers: dict[str, str]
    body: Any
    started: float = field(default_factory=time.monotonic)
    closed_at: float | None = None


class Conn:
    """The server side of one request: what a script writes with."""

    def __init__(self, writer: asyncio.StreamWriter, seen: Seen):
        self.writer = writer
        self.seen = seen

    @property
    def stream(self) -> bool:
        body = self.seen.body if isinstance(self.seen.body, dict) else {}
        return bool(body.get("stream")) or ":streamGenerateContent" in self.seen.path

    @property
    def wire(self) -> str:
        """The upstream format the gateway spoke, from the request path."""
        path = self.seen.path
        if path.endswith("/v1/messages"):
            return "anthropic"
        if "/v1beta/models/" in path:
            return "gemini"
        if path.endswith("/api/chat"):
            return "ollama"
        return "openai"

    async def head(
        self,
        status: int = 200,
        content_type: str | None = None,
        extra: dict[str, str] | None = None,
        length: int | None = None,
    ) -> None:
        """The status line and headers; without `length` the body ends when the socket closes."""
        if content_type is None:
            content_type = {
                "ollama": "application/x-ndjson",
            }.get(self.wire, "text/event-stream" if self.stream else "application/json")
        lines = [f"HTTP/1.1 {status} X", f"Content-Type: {content_type}", "Connection: close"]
        if length is not None:
            lines.append(f"Content-Length: {length}")
        lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
        await self.write(("\r\n".join(lines) + "\r\n\r\n").encode())

    async def write(self, data: bytes, pause: float = 0.0) -> None:
        """Write and drain; with `pause`, wait after it so the next write is a separate read."""
        self.writer.write(data)
        await self.writer.drain()
        if pause:
            await asyncio.sleep(pause)

    async def whole(self, body: bytes, status: int = 200, content_type: str | None = None) -> None:
        """A complete response with a Content-Length."""
        await self.head(status, content_type, length=len(body))
        await self.write(body)


Script = Callable[[Conn], Awaitable[None]]


class HostileUpstream(BackgroundServer):
    """The server, in a background thread with its own event loop."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Seen] = []
        self._server: asyncio.Server | None = None

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def last(self, script: str) -> Seen:
        for s in reversed(self.seen):
            if s.script == script:
                return s
        raise AssertionError(f"the hostile upstream received no request for {script!r}")

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        path = request_line.split(" ")[1].split("?")[0]
        headers = {}
        for line in header_lines:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        raw = await reader.readexactly(int(headers.get("content-length", "0")))
        try:
            body: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = raw
        command = _COMMAND.search(raw)
        script, args = "ok", []
        if command is not None:
            script, *args = command.group(1).decode().split(":")
        seen = Seen(script, args, path, headers, body)
        self.seen.append(seen)
        conn = Conn(writer, seen)
        work = asyncio.ensure_future(SCRIPTS[script](conn))
        eof = asyncio.ensure_future(reader.read(1))
        try:
            await asyncio.wait({work, eof}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if eof.done():
                seen.closed_at = time.monotonic()  # the gateway hung up
            work.cancel()
            eof.cancel()
            await asyncio.gather(work, eof, return_exceptions=True)
            if seen.closed_at is None:
                seen.closed_at = time.monotonic()
            writer.close()


# -- events of each format --------------------------------------


def sse(payload: Any, event: str | None = None, sep: bytes = b"\n") -> bytes:
    data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    head = b"event: " + event.encode() + sep if event else b""
    return head + b"data: " + data + sep + sep


def first_events(wire: str) -> bytes:
    """A valid start of a stream in `wire`: enough for the gateway to commit."""
    if wire == "anthropic":
        start = {
            "type": "message_start",
            "message": {
                "id": "msg_h",
                "type": "message",
                "role": "assistant",
                "model": "h",
                "content": [],
                "usage": {"input_tokens": 3, "output_tokens": 1},
            },
        }
        block = {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}}
        delta = {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": "Hi. "},
        }
        return (
            sse(start, "message_start")
            + sse(block, "content_block_start")
            + sse(delta, "content_block_delta")
        )
    chunk: dict[str, Any]
    if wire == "gemini":
        chunk = {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hi. "}]}}]}
        return sse(chunk, sep=b"\r\n")
    if wire == "ollama":
        line = {"model": "h", "message": {"role": "assistant", "content": "Hi. "}, "done": False}
        return orjson.dumps(line) + b"\n"
    chunk = {
        "id": "c",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi. "}}],
    }
    return sse(chunk)


def error_event(wire: str, message: str) -> bytes:
    """The format's in-stream error event carrying `message`."""
    if wire == "anthropic":
        return sse({"type": "error", "error": {"type": "api_error", "message": message}}, "error")
    if wire == "gemini":
        return sse({"error": {"code": 500, "message": message, "status": "INTERNAL"}}, sep=b"\r\n")
    if wire == "ollama":
        return orjson.dumps({"error": message}) + b"\n"
    return sse({"error": {"message": message, "type": "server_error"}})


def end_events(wire: str) -> bytes:
    """A proper end of a stream in `wire`."""
    if wire == "anthropic":
        return sse(
            {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {}},
            "message_delta",
        ) + sse({"type": "message_stop"}, "message_stop")
    chunk: dict[str, Any]
    if wire == "gemini":
        chunk = {
            "candidates": [
                {"content": {"role": "model", "parts": [{"text": "."}]}, "finishReason": "STOP"}
            ]
        }
        return sse(chunk, sep=b"\r\n")
    if wire == "ollama":
        done = {"model": "h", "message": {"role": "assistant", "content": ""}, "done": True}
        return orjson.dumps({**done, "done_reason": "stop"}) + b"\n"
    chunk = {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    return sse(chunk) + b"data: [DONE]\n\n"


def leaky_message() -> str:
    return f"invalid request: the key {SECRET} was rejected by the upstream"


# -- scripts --------------------------------------


async def split_error(c: Conn) -> None:
    """An error event quoting the key, written in two reads cut at byte `n` of the event.

    Args: n, where (`mid`: after a first valid event; `first`: as the first event).
    """
    n, where = int(c.seen.args[0]), c.seen.args[1]
    event = error_event(c.wire, leaky_message())
    await c.head()
    if where == "mid":
        await c.write(first_events(c.wire), pause=0.02)
    await c.write(event[:n], pause=0.03)
    await c.write(event[n:])


async def split_body(c: Conn) -> None:
    """A whole 200 answer whose text quotes the key, in two reads cut at byte `n`."""
    n = int(c.seen.args[0])
    body = orjson.dumps(
        {
            "id": "c",
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": leaky_message()},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    )
    await c.head(length=len(body), content_type="application/json")
    await c.write(body[:n], pause=0.03)
    await c.write(body[n:])


async def status_text(c: Conn) -> None:
    """A non-JSON error page (status from args) with the key starting at byte `at`."""
    status, at = int(c.seen.args[0]), int(c.seen.args[1])
    text = ("x" * at + "Bearer " + SECRET + " was refused").encode()
    await c.whole(text, status=status, content_type="text/plain")


async def malformed_line(c: Conn) -> None:
    """A line of broken JSON quoting the key, after a first valid event."""
    await c.head()
    await c.write(first_events(c.wire), pause=0.02)
    broken = b'{"choices": [ not json, ' + b"y" * 150 + SECRET.encode() + b" and more"
    if c.wire == "ollama":
        await c.write(broken + b"\n")
    else:
        await c.write(b"data: " + broken + b"\n\n")


async def usage_is_the_key(c: Conn) -> None:
    """OpenAI data whose `usage.prompt_tokens` is a string: the key."""
    usage = {"prompt_tokens": SECRET, "completion_tokens": 1, "total_tokens": 2}
    if not c.stream:
        body = {
            "id": "c",
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "ok"},
                    "finish_reason": "stop",
                }
            ],
            "usage": usage,
        }
        await c.whole(orjson.dumps(body))
        return
    await c.head()
    await c.write(first_events("openai"), pause=0.01)
    finish = {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    await c.write(
        sse(finish) + sse({"id": "c", "choices": [], "usage": usage}) + b"data: [DONE]\n\n"
    )


CONFUSED: list[Any] = [
    {"choices": "x"},
    {"choices": [5]},
    {"choices": [{"index": 0, "delta": "text"}]},
    {"choices": [{"index": 0, "delta": {"content": 5}}]},
    {"choices": [{"index": 0, "delta": {"tool_calls": "x"}}]},
    {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": "a", "function": 3}]}}]},
    {"choices": [{"index": 0, "delta": {}, "finish_reason": 7}]},
    {"choices": [], "usage": "lots"},
    {"choices": [], "usage": {"prompt_tokens": [1], "completion_tokens": {"a": 1}}},
    {"error": 5},
    {"error": {"message": ["x"], "type": 3}},
    [1, 2, 3],
    "a string",
]


async def confused(c: Conn) -> None:
    """OpenAI stream with a type-confused event: `i` picks it, `where` is first or mid."""
    i, where = int(c.seen.args[0]), c.seen.args[1]
    event = sse(CONFUSED[i])
    if not c.stream:
        await c.whole(orjson.dumps(CONFUSED[i]))
        return
    await c.head()
    if where == "mid":
        await c.write(first_events("openai"), pause=0.01)
    await c.write(event + end_events("openai"))


async def endless_line(c: Conn) -> None:
    """A first event, then one `data:` line that never ends, written as fast as it is read."""
    await c.head()
    await c.write(first_events(c.wire), pause=0.01)
    await c.write(b"data: ")
    block = b"x" * 65536
    for _ in range(20_000):  # 1.3 GB at most: far more than any limit
        await c.write(block)


_BOMB: bytes | None = None


def bomb() -> bytes:
    """About 1 MB of gzip that inflates to 1 GB of spaces (built once, cached)."""
    global _BOMB
    if _BOMB is None:
        out = io.BytesIO()
        with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9) as z:
            block = b" " * (1 << 20)
            for _ in range(1024):
                z.write(block)
        _BOMB = out.getvalue()
    return _BOMB


async def gzip_bomb(c: Conn) -> None:
    """A gzip-encoded body (whole or streamed) that inflates a thousandfold."""
    data = bomb()
    if c.stream:
        await c.head(extra={"Content-Encoding": "gzip"})
        await c.write(data)
        return
    await c.head(
        length=len(data), content_type="application/json", extra={"Content-Encoding": "gzip"}
    )
    await c.write(data)


async def big_events(c: Conn) -> None:
    """A fast stream of 100 KB text events that does not end by itself."""
    await c.head()
    text = "z" * 100_000
    await c.write(first_events("openai"))
    chunk = sse({"id": "c", "choices": [{"index": 0, "delta": {"content": text}}]})
    for _ in range(100_000):
        await c.write(chunk)


#: Events in a `numbered` stream, and the padding that makes each about 1 KB.
NUMBERED = 12_000
PADDING = "y" * 1000


async def numbered(c: Conn) -> None:
    """A fast, finite stream of `NUMBERED` text events of about 1 KB, each starting with its
    number (`<00042>`), then its end: 12 MB, more than the sockets between can hold."""
    await c.head()
    await c.write(first_events("openai"))
    for i in range(NUMBERED):
        delta = {"content": f"<{i:05d}>{PADDING}"}
        await c.write(sse({"id": "c", "choices": [{"index": 0, "delta": delta}]}))
    await c.write(b"data: [DONE]\n\n")


async def trickle(c: Conn) -> None:
    """Headers, then one byte of a valid stream every 50 ms."""
    await c.head()
    data = first_events(c.wire) * 1000
    for b in data:
        await c.write(bytes([b]), pause=0.05)


async def flood(c: Conn) -> None:
    """20,000 tiny events in large writes, then a proper end."""
    await c.head()
    await c.write(first_events("openai"))
    piece = sse({"choices": [{"index": 0, "delta": {"content": "a"}}]})
    block = piece * 500
    for _ in range(40):
        await c.write(block)
    await c.write(end_events("openai"))


async def stall(c: Conn) -> None:
    """Headers and a first event, then nothing for a long time."""
    await c.head()
    await c.write(first_events(c.wire))
    await asyncio.sleep(60)


async def ok(c: Conn) -> None:
    """A well-formed short answer in the format asked for."""
    if not c.stream:
        body = {
            "id": "c",
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "fine"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
        await c.whole(orjson.dumps(body))
        return
    await c.head()
    await c.write(first_events(c.wire) + end_events(c.wire))


SCRIPTS: dict[str, Script] = {
    "split_error": split_error,
    "split_body": split_body,
    "status_text": status_text,
    "malformed_line": malformed_line,
    "usage_is_the_key": usage_is_the_key,
    "confused": confused,
    "endless_line": endless_line,
    "gzip_bomb": gzip_bomb,
    "big_events": big_events,
    "numbered": numbered,
    "trickle": trickle,
    "flood": flood,
    "stall": stall,
    "ok": ok,
}
