"""`tidegate try MODEL "question" [--user alice]`: one request, every stage shown.

The request goes through the gateway's own pipeline (failover, the provider, its parser), in
this process, with an upstream client that records what passes: each request as it was sent
(an auth step's included) with its secrets masked, the upstream's bytes as they arrived, the
canonical events they became, and when each happened. For a described provider this is the
way to see what a descriptor does; it works for every model.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from tidegate import __version__
from tidegate.auth import Identity
from tidegate.config import mask
from tidegate.context import RequestContext
from tidegate.errors import ConfigError, GatewayError, UnknownModel
from tidegate.events import (
    ChatRequest,
    Event,
    Finish,
    Message,
    Part,
    ReasoningDelta,
    StreamError,
    TextDelta,
    ToolCallDelta,
    UsageUpdate,
)
from tidegate.providers.http import AiohttpClient, UpstreamCall, UpstreamClient, UpstreamResponse
from tidegate.redact import Redactor
from tidegate.relay import stream_events
from tidegate.services import Services
from tidegate.settings import Config

#: Header names whose values are shown masked whatever they hold.
_SECRET_HEADERS = frozenset(
    {"authorization", "x-api-key", "api-key", "x-goog-api-key", "cookie", "proxy-authorization"}
)
#: The most bytes of one body shown.
SHOW_BYTES = 4000


class Exchange:
    """One upstream request as sent, and its answer as received."""

    def __init__(self, call: UpstreamCall, at: float):
        self.call = call
        #: The body as sent (an open stream's call lets go of its own).
        self.body = call.body
        self.sent_at = at
        self.answered_at: float | None = None
        self.status: int | None = None
        self.content_type = ""
        self.reads: list[tuple[float, bytes]] = []
        self.error: str | None = None


class RecordingResponse(UpstreamResponse):
    """An upstream response whose reads are recorded."""

    def __init__(self, inner: UpstreamResponse, exchange: Exchange):
        self._inner = inner
        self._exchange = exchange
        self.status = inner.status
        self.content_type = inner.content_type
        self.retry_after = inner.retry_after

    async def read_chunk(self) -> bytes:
        chunk = await self._inner.read_chunk()
        self._exchange.reads.append((time.perf_counter(), chunk))
        return chunk

    def reader(self) -> Callable[[], Awaitable[bytes]]:
        return self.read_chunk

    async def read_body(self, limit: int) -> bytes:
        body = await self._inner.read_body(limit)
        self._exchange.reads.append((time.perf_counter(), body))
        return body

    def close(self) -> None:
        self._inner.close()


class RecordingClient:
    """An `UpstreamClient` that records every exchange of the client it wraps."""

    def __init__(self, inner: UpstreamClient):
        self._inner = inner
        self.exchanges: list[Exchange] = []

    @property
    def ready(self) -> bool:
        """The wrapped client's readiness."""
        return self._inner.ready

    async def start(self) -> None:
        """Start the wrapped client."""
        await self._inner.start()

    async def aclose(self) -> None:
        """Close the wrapped client."""
        await self._inner.aclose()

    async def send(
        self, call: UpstreamCall, *, connect_timeout: float, model: str
    ) -> UpstreamResponse:
        """Send through the wrapped client, recording the call and its answer."""
        exchange = Exchange(call, time.perf_counter())
        self.exchanges.append(exchange)
        try:
            response = await self._inner.send(call, connect_timeout=connect_timeout, model=model)
        except BaseException as exc:
            exchange.error = str(getattr(exc, "message", None) or type(exc).__name__)
            raise
        exchange.answered_at = time.perf_counter()
        exchange.status = response.status
        exchange.content_type = response.content_type
        return RecordingResponse(response, exchange)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `tidegate try`."""
    parser.add_argument("model", help="the model (models: name) to ask")
    parser.add_argument("question", help="the question, sent as one user message")
    parser.add_argument("--user", help="ask as this user (per-user keys, tokens, ${user})")


def run(args: argparse.Namespace, config: Config, out: Any = None) -> int:
    """Run `tidegate try`; print the stages to `out` (stdout). 0 when an answer came."""
    out = out or sys.stdout
    if args.model not in config.model_names():
        error = UnknownModel(args.model, config.model_names())
        print(f"tidegate: {error.message}", file=sys.stderr)
        return 2
    try:
        report, ok = asyncio.run(_trial(config, args.model, args.question, args.user))
    except ConfigError as exc:  # pragma: no cover - the config was validated already
        print(f"tidegate: configuration error: {exc}", file=sys.stderr)
        return 2
    print(report, file=out)
    return 0 if ok else 1


async def _trial(config: Config, model: str, question: str, user: str | None) -> tuple[str, bool]:
    recorder = RecordingClient(
        AiohttpClient(pool_size=4, keepalive_seconds=5, user_agent=f"tidegate/{__version__} (try)")
    )
    services = Services(config, client=recorder)
    ctx = RequestContext("try", "try", recorder, services.redactor)
    if user is not None:
        ctx.identity = Identity("cli", name="tidegate try", user=user)
    chat = ChatRequest(model=model, messages=[Message("user", [Part("text", question)])])
    events: list[tuple[float, Event]] = []
    error: GatewayError | None = None
    await recorder.start()
    start = time.perf_counter()
    try:
        async for batch in stream_events(services, ctx, model, chat):
            now = time.perf_counter()
            events += [(now, e) for e in batch]
    except GatewayError as exc:
        error = exc
    finally:
        await recorder.aclose()
        await services.state.aclose()
    end = time.perf_counter()
    report = _report(config, model, user, recorder.exchanges, events, error, start, end, services)
    return report, error is None


def _report(
    config: Config,
    model: str,
    user: str | None,
    exchanges: list[Exchange],
    events: list[tuple[float, Event]],
    error: GatewayError | None,
    start: float,
    end: float,
    services: Services,
) -> str:
    redact = services.redactor

    def ms(t: float) -> str:
        return f"+{(t - start) * 1000:.1f} ms"

    deployment = services.router.group(model)[0]
    lines = [
        f"tidegate try: model {model} (provider {deployment.provider.name}), "
        f"user {user or 'anonymous'}",
    ]
    for n, ex in enumerate(exchanges, 1):
        call = ex.call
        lines.append("")
        lines.append(f"== {n}. request {ms(ex.sent_at)} (rendered, secrets masked)")
        lines.append(f"{call.method} {redact(call.url)}")
        for name, value in call.headers.items():
            shown = mask(value) if name.lower() in _SECRET_HEADERS else redact(value)
            lines.append(f"{name}: {shown}")
        if ex.body:
            lines.append("")
            lines.append(_body(ex.body, redact))
        lines.append("")
        if ex.status is None:
            lines.append(f"== {n}. no answer: {redact(ex.error or 'failed')}")
            continue
        assert ex.answered_at is not None
        lines.append(
            f"== {n}. upstream answer: HTTP {ex.status} {ex.content_type} "
            f"(headers {ms(ex.answered_at)}), raw bytes as received:"
        )
        for t, chunk in ex.reads:
            if chunk:
                lines.append(f"{ms(t)}  {_raw(chunk, redact)}")
        if ex.reads and not ex.reads[-1][1]:
            lines.append(f"{ms(ex.reads[-1][0])}  (end of body)")
    lines.append("")
    lines.append("== canonical events")
    for t, event in events:
        lines.append(f"{ms(t)}  {_event(event, redact)}")
    if error is not None:
        lines.append(f"error: {error.code} ({error.status}): {redact(error.message)}")
    lines.append("")
    lines.append("== timings")

    def timing(label: str, value: str) -> None:
        lines.append(f"{label.ljust(24)}{value}")

    for n, ex in enumerate(exchanges, 1):
        timing(f"request {n} sent", ms(ex.sent_at))
        if ex.answered_at is not None:
            took = (ex.answered_at - ex.sent_at) * 1000
            timing(f"request {n} headers", f"{ms(ex.answered_at)} ({took:.1f} ms after sending)")
        data = [t for t, chunk in ex.reads if chunk]
        if data:
            timing(f"request {n} bytes", f"first {ms(data[0])}, last {ms(data[-1])}")
    if events:
        timing("first event", ms(events[0][0]))
    text = "".join(e.text for _, e in events if isinstance(e, TextDelta))
    timing("total", f"{ms(end)} ({len(events)} events, {len(text)} characters of text)")
    return "\n".join(lines)


def _body(body: bytes, redact: Redactor) -> str:
    try:
        shown = orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        shown = body.decode("utf-8", "replace")
    return redact.excerpt(shown, SHOW_BYTES)


def _raw(chunk: bytes, redact: Redactor) -> str:
    return redact.excerpt(repr(redact.bytes(chunk))[1:], SHOW_BYTES)


def _event(event: Event, redact: Redactor) -> str:
    if isinstance(event, TextDelta):
        return f"text {event.text!r}"
    if isinstance(event, ReasoningDelta):
        return f"reasoning {event.text!r}"
    if isinstance(event, Finish):
        return f"finish {event.reason}"
    if isinstance(event, UsageUpdate):
        return f"usage {event.usage.as_dict()}"
    if isinstance(event, ToolCallDelta):
        return f"tool call {event.index} {event.name or ''} {event.arguments!r}"
    if isinstance(event, StreamError):
        return f"error {redact(str(event.error))}"
    return type(event).__name__
