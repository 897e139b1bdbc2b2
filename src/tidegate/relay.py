"""Upstream to client: the only place that awaits the upstream.

`relay_stream` opens the upstream, reads until its first valid event (so that every failure
up to then is still a proper HTTP error), commits the 200, then forwards. In pass-through
mode (same wire format on both sides) each upstream read is forwarded as one write, untouched,
while a side parser watches for usage, the finish and errors; otherwise the parser's canonical
events go through the endpoint's encoder. After the commit every failure (network drop, stall
past the idle timeout, malformed data, an upstream error event, a stream that just stops)
becomes an in-band error in the endpoint's format followed by its normal end.

The upstream response is closed in a `finally`, whatever happens, including cancellation
when the client goes away.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from tidegate.context import RequestContext
from tidegate.errors import (
    GatewayError,
    InternalError,
    UpstreamError,
    UpstreamProtocolError,
)
from tidegate.events import Event, Finish, Sources, StreamError, UsageUpdate
from tidegate.logs import log
from tidegate.providers.base import PassthroughFilter, Provider, UpstreamCall, UpstreamResponse
from tidegate.watchdog import Watchdog

ERROR_BODY_LIMIT = 64 * 1024
RESPONSE_BODY_LIMIT = 64 * 1024 * 1024

Send = Any  # the ASGI send callable


class StreamState:
    """What the relay has seen of one stream: usage, finish, sources, and a terminal error."""

    __slots__ = ("error", "error_forwarded", "finish_reason", "sources", "usage")

    def __init__(self) -> None:
        self.usage: Any = None
        self.finish_reason: str | None = None
        self.sources: list[dict[str, Any]] = []
        self.error: GatewayError | None = None
        self.error_forwarded = False

    def observe(self, events: list[Event]) -> None:
        """Record the events that matter to the outcome."""
        for event in events:
            if isinstance(event, UsageUpdate):
                self.usage = event.usage
            elif isinstance(event, Finish):
                self.finish_reason = event.reason
            elif isinstance(event, Sources):
                self.sources = event.items
            elif isinstance(event, StreamError) and self.error is None:
                self.error = as_gateway_error(event.error)


class StreamEncoder(Protocol):
    """An endpoint's streaming wire format."""

    content_type: bytes

    def encode(self, events: list[Event]) -> bytes:
        """Canonical events as wire bytes (possibly empty)."""

    def error(self, err: GatewayError) -> bytes:
        """An in-band error after the stream has begun."""

    def end(self, state: StreamState) -> bytes:
        """The stream's final bytes (final event, terminator)."""


def as_gateway_error(exc: BaseException) -> GatewayError:
    """Any exception as a member of the error tree (unknown ones are internal errors)."""
    if isinstance(exc, GatewayError):
        return exc
    return InternalError(f"internal error: {type(exc).__name__}")


def stream_headers(content_type: bytes) -> list[tuple[bytes, bytes]]:
    """The headers of every streamed response: no caching, no proxy buffering."""
    return [
        (b"content-type", content_type),
        (b"cache-control", b"no-cache"),
        (b"connection", b"keep-alive"),
        (b"x-accel-buffering", b"no"),
    ]


async def relay_stream(
    ctx: RequestContext,
    provider: Provider,
    call: UpstreamCall,
    encoder: StreamEncoder,
    send: Send,
    *,
    passthrough: bool,
) -> None:
    """Stream one upstream call to the client. Raises `GatewayError` only before the commit."""
    assert ctx.session is not None
    dog = Watchdog(provider.timeouts, streaming=True)
    parser = provider.stream_parser(side=passthrough)
    state = StreamState()
    response: UpstreamResponse | None = None
    try:
        try:
            response = await provider.open(ctx.session, call)
            await _check_status(provider, response)
            pending: list[bytes] = []
            events: list[Event] = []
            while not parser.started and not parser.done:
                chunk = await response.read_chunk()
                if not chunk:
                    events += parser.finish()
                    break
                pending.append(chunk)
                events += parser.feed(chunk)
                if any(isinstance(e, StreamError) for e in events):
                    break
            for event in events:
                if isinstance(event, StreamError):
                    raise as_gateway_error(event.error)
            if not parser.started:
                raise UpstreamProtocolError("upstream ended the stream before sending any event")
        except asyncio.CancelledError:
            if dog.cancelled_us():
                raise dog.error() from None
            raise

        ctx.mark_first_byte()
        ctx.committed = True
        ctx.status = 200
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": stream_headers(encoder.content_type) + ctx.headers_out,
            }
        )
        state.observe(events)
        filt = call.filter if passthrough else None
        first = b"".join(pending) if passthrough else encoder.encode(events)
        if filt is not None:
            first = filt.feed(first)
        if first:
            await send({"type": "http.response.body", "body": first, "more_body": True})
        dog.streaming()
        try:
            await _pump(
                response, parser, encoder, state, dog, send, passthrough, filt, ctx.redact_bytes
            )
        except asyncio.CancelledError:
            if not dog.cancelled_us():
                raise
            state.error = dog.error()
        except GatewayError as err:
            state.error = err
        except Exception as exc:
            log.exception("relay failed after the response began")
            state.error = as_gateway_error(exc)
        await _finish(ctx, state, encoder, send, skip_end=passthrough and parser.done)
    finally:
        dog.stop()
        if response is not None:
            response.close()
        ctx.usage = state.usage
        ctx.finish_reason = state.finish_reason
        if state.error is not None:
            ctx.error_code = state.error.code


async def _check_status(provider: Provider, response: UpstreamResponse) -> None:
    if not 200 <= response.status < 300:
        body = await response.read_body(ERROR_BODY_LIMIT)
        raise provider.error_from_status(response.status, body, response.retry_after)
    if "text/html" in response.content_type:
        raise UpstreamProtocolError("upstream answered with an HTML page instead of its API format")


async def _pump(
    response: UpstreamResponse,
    parser: Any,
    encoder: StreamEncoder,
    state: StreamState,
    dog: Watchdog,
    send: Send,
    passthrough: bool,
    filt: PassthroughFilter | None,
    redact_bytes: Any,
) -> None:
    while state.error is None and not parser.done:
        dog.begin_wait()
        chunk = await response.read_chunk()
        dog.waiting = False
        if not chunk:
            events = parser.finish()
            state.observe(events)
            if passthrough:
                if filt is not None:
                    await _send_body(send, filt.flush())
                if state.error is not None:
                    state.error_forwarded = True  # a trailing error object was forwarded as is
            elif events:
                await _send_body(send, encoder.encode(events))
            if state.error is None and not parser.complete:
                state.error = UpstreamProtocolError(
                    "upstream stream ended before its end marker (truncated answer)"
                )
            return
        events = parser.feed(chunk)
        if events:
            state.observe(events)
        if passthrough:
            if state.error is not None:
                # The upstream's own error event goes out as it came, minus any secret.
                chunk = redact_bytes(chunk)
                state.error_forwarded = True
            if filt is not None:
                chunk = filt.feed(chunk) + (filt.flush() if state.error is not None else b"")
            if chunk:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        elif events:
            await _send_body(send, encoder.encode(events))


async def _send_body(send: Send, body: bytes) -> None:
    if body:
        await send({"type": "http.response.body", "body": body, "more_body": True})


async def _finish(
    ctx: RequestContext, state: StreamState, encoder: StreamEncoder, send: Send, *, skip_end: bool
) -> None:
    tail = b""
    if state.error is not None and not state.error_forwarded:
        state.error.message = ctx.redact(state.error.message)
        tail += encoder.error(state.error)
    if not skip_end:
        tail += encoder.end(state)
    await send({"type": "http.response.body", "body": tail, "more_body": False})


async def relay_complete(ctx: RequestContext, provider: Provider, call: UpstreamCall) -> bytes:
    """Run one non-streaming upstream call and return its body (bounded by connect and total)."""
    assert ctx.session is not None
    dog = Watchdog(provider.timeouts, streaming=False)
    response: UpstreamResponse | None = None
    try:
        response = await provider.open(ctx.session, call)
        await _check_status(provider, response)
        return await response.read_body(RESPONSE_BODY_LIMIT)
    except asyncio.CancelledError:
        if dog.cancelled_us():
            raise dog.error() from None
        raise
    except UpstreamError:
        raise
    finally:
        dog.stop()
        if response is not None:
            response.close()
