"""Drive the gateway in-process: the ASGI app with fake receive/send, an in-memory upstream and
a manual clock — for tests of the request pipeline that need no sockets and no sleeps.

    upstream = ScriptedUpstream()
    upstream.on("/v1/chat/completions", lambda call: sse_response(...))
    async with Driver({"models": [...]}, upstream=upstream) as gw:
        result = await gw.post("/v1/chat/completions", {...})

The subprocess suite (conftest.GatewayProcess) stays for the CLI, workers, sockets and
disconnects.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import orjson

from tidegate.app import Gateway, create_app
from tidegate.config import parse_config
from tidegate.providers.http import UpstreamCall, UpstreamResponse
from tidegate.services import Services
from tidegate.state.memory import MemoryState


class ManualClock:
    """A clock that only moves when told to, or when something sleeps on it."""

    def __init__(self, start: float = 1000.0):
        self.t = start
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        self.t += seconds


class ScriptedResponse(UpstreamResponse):
    """An upstream answer given as a status and its body's reads."""

    def __init__(
        self,
        status: int = 200,
        reads: Sequence[bytes | BaseException] = (),
        content_type: str = "text/event-stream",
        retry_after: float | None = None,
    ):
        self.status = status
        self.content_type = content_type
        self.retry_after = retry_after
        self._reads = list(reads)
        self.closed = False

    async def read_chunk(self) -> bytes:
        await asyncio.sleep(0)
        read = self._reads.pop(0) if self._reads else b""
        if isinstance(read, BaseException):
            raise read  # the connection failed here
        return read

    async def read_body(self, limit: int) -> bytes:
        body = b"".join(r for r in self._reads if isinstance(r, bytes))[:limit]
        self._reads = []
        return body

    def close(self) -> None:
        self.closed = True


Script = Callable[[UpstreamCall], ScriptedResponse]


@dataclass
class ScriptedUpstream:
    """An `UpstreamClient` that answers from scripts, chosen by the end of the call's URL."""

    scripts: list[tuple[str, Script]] = field(default_factory=list)
    calls: list[UpstreamCall] = field(default_factory=list)
    responses: list[ScriptedResponse] = field(default_factory=list)
    started: bool = False

    def on(self, url_part: str, script: Script) -> None:
        self.scripts.insert(0, (url_part, script))

    @property
    def ready(self) -> bool:
        return self.started

    async def start(self) -> None:
        self.started = True

    async def aclose(self) -> None:
        self.started = False

    async def send(
        self, call: UpstreamCall, *, connect_timeout: float, model: str
    ) -> UpstreamResponse:
        self.calls.append(call)
        for part, script in self.scripts:
            if part in call.url:
                response = script(call)
                self.responses.append(response)
                return response
        raise AssertionError(f"no script for {call.url}")


@dataclass
class Result:
    """A response as the driver received it."""

    status: int
    headers: dict[str, str]
    body: bytes
    messages: list[dict[str, Any]]

    def json(self) -> Any:
        return orjson.loads(self.body)


class Driver:
    """The app for a config, started, with requests sent through its ASGI callable."""

    def __init__(
        self,
        config: dict[str, Any],
        *,
        upstream: ScriptedUpstream | None = None,
        clock: ManualClock | None = None,
        env: dict[str, str] | None = None,
    ):
        self.config = parse_config(config, env=env)
        self.upstream = upstream or ScriptedUpstream()
        self.clock = clock or ManualClock()
        self.services = Services(
            self.config,
            clock=self.clock,
            state=MemoryState(),
            client=self.upstream,
            wall=self.clock.now,
        )
        self.app: Gateway = create_app(self.config, self.services)

    async def __aenter__(self) -> Driver:
        await self.app.startup()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.app.shutdown()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        *,
        disconnect_after: int | None = None,
    ) -> Result:
        """One request; `disconnect_after`: the client goes away after that many body
        messages of the response."""
        raw = b"" if body is None else orjson.dumps(body)
        query = b""
        if "?" in path:
            path, q = path.split("?", 1)
            query = q.encode()
        scope = {
            "type": "http",
            "method": method,
            "path": path,
            "query_string": query,
            "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
            + [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())],
        }
        gone = asyncio.Event()
        sent: list[dict[str, Any]] = []
        delivered = False

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": raw, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            bodies = [m for m in sent if m["type"] == "http.response.body"]
            if disconnect_after is not None and len(bodies) >= disconnect_after:
                gone.set()
            await asyncio.sleep(0)

        await self.app(scope, receive, send)  # type: ignore[arg-type]
        start = next(m for m in sent if m["type"] == "http.response.start")
        headers_out = {k.decode(): v.decode() for k, v in start.get("headers", [])}
        body_out = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        return Result(start["status"], headers_out, body_out, sent)

    async def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> Result:
        return await self.request("POST", path, body, headers)


def sse(*payloads: Any) -> bytes:
    """OpenAI-style `data:` events for payloads (bytes as they are, others as JSON)."""
    out = b""
    for p in payloads:
        data = p if isinstance(p, bytes) else orjson.dumps(p)
        out += b"data: " + data + b"\n\n"
    return out
