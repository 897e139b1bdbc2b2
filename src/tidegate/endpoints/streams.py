"""Streams by id: resume one, cancel one (docs/protocol.md, "Resuming and cancelling").

- `GET /v1/streams/{id}` with `Last-Event-ID: N` (or `?last_event_id=N`): the events after N,
  then the live ones until the stream ends — what a browser `EventSource` asks for by itself
  when it reconnects. Streams that keep their events (`/stream-ask`, workflows) can be resumed.
- `POST /v1/streams/{id}/cancel`: stop the stream (any streaming endpoint), wherever it runs;
  the stream ends in-band with a `cancelled` outcome.

Only the key that started a stream may resume or cancel it: for any other key the stream does
not exist (404), so ids cannot be probed. A browser `EventSource` cannot send a key: it resumes
with the stream's resume token instead (`?token=`, from the stream's first event), which
opens that one stream for reading and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib

import orjson

from tidegate.asgi import Request, Send, send_bytes
from tidegate.context import RequestContext
from tidegate.endpoints.base import Route
from tidegate.endpoints.health import render_error
from tidegate.errors import InvalidRequest, NotFound, StreamCancelled
from tidegate.relay import stream_headers
from tidegate.services import Services
from tidegate.sse import encode_comment
from tidegate.streams import LOG_PREFIX, RESUMED_KEY, owner_of, request_cancel, token_matches

CONTENT_TYPE = b"text/event-stream; charset=utf-8"
_PING = encode_comment(b"ping")
#: An EventSource that loses this response reconnects (with Last-Event-ID) after a second.
_RETRY = b"retry: 1000\n\n"
#: How long a resume waits for its first event before answering (to tell "ended" from "live").
_FIRST_WAIT = 0.25
_DONE = object()


class StreamNotFound(NotFound):
    """No stream of this key has that id (unknown, expired, or another key's)."""

    code = "stream_not_found"


class StreamEnded(InvalidRequest):
    """The stream to cancel has already ended."""

    status = 409
    code = "stream_ended"


async def _owned(services: Services, ctx: RequestContext, stream_id: str) -> bool:
    """Whether the stream has ended; StreamNotFound unless this client started it."""
    owner, ended = await owner_of(services.state, stream_id)
    if owner != ctx.owner:
        raise StreamNotFound(f"no stream {stream_id!r} (unknown, expired, or not this key's)")
    return ended


def _last_event_id(request: Request) -> int:
    raw = request.header(b"last-event-id") or request.query.get("last_event_id", "0")
    try:
        after = int(raw.strip() or "0")
    except ValueError:
        after = -1
    if after < 0:
        raise InvalidRequest(
            f"Last-Event-ID must be the number of an event of this stream, not {raw[:40]!r}"
        )
    return after


async def resume(services: Services, ctx: RequestContext, request: Request, send: Send) -> None:
    """Replay a stream's events after the client's last one, then follow it to its end; 204
    when there is nothing left to send (an `EventSource` then stops reconnecting)."""
    stream_id = request.params["id"]
    token = request.query.get("token")
    if ctx.identity is None and token is not None:
        if not await token_matches(services.state, stream_id, token):
            raise StreamNotFound(f"no stream {stream_id!r} with this token")
    else:
        await _owned(services, ctx, stream_id)
    after = _last_event_id(request)
    log = LOG_PREFIX + stream_id
    if not await services.state.log_exists(log):
        raise StreamNotFound(
            f"stream {stream_id!r} cannot be resumed: only /stream-ask and workflow streams "
            "keep their events, for streams.retention seconds after they end"
        )
    ctx.stream, ctx.stream_id = True, stream_id
    await services.state.set(RESUMED_KEY + stream_id, b"1", services.config.streams.retention)
    entries: asyncio.Queue[object] = asyncio.Queue(maxsize=64)

    async def read() -> None:
        try:
            async for _, frame in services.state.read_log(log, after):
                await entries.put(frame)
        finally:
            await entries.put(_DONE)

    reader = asyncio.create_task(read())
    try:
        try:
            async with asyncio.timeout(_FIRST_WAIT):
                first = await entries.get()
        except TimeoutError:
            first = b""  # a live stream with nothing new yet: answer now, follow it
        if first is _DONE:
            ctx.status = 204
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        ctx.status = 200
        ctx.committed = True
        ctx.mark_first_byte()
        headers = [*stream_headers(CONTENT_TYPE), (b"x-tidegate-stream-id", stream_id.encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        assert isinstance(first, bytes)
        await send({"type": "http.response.body", "body": _RETRY + first, "more_body": True})
        interval = services.config.routing.ping_interval
        while True:
            try:
                async with asyncio.timeout(interval):
                    item = await entries.get()
            except TimeoutError:
                item = _PING
            if item is _DONE:
                break
            assert isinstance(item, bytes)
            await send({"type": "http.response.body", "body": item, "more_body": True})
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    async with asyncio.timeout(services.config.limits.write_timeout):
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def cancel(services: Services, ctx: RequestContext, request: Request, send: Send) -> None:
    """Stop a running stream: at once when it runs here, through the other instances else."""
    stream_id = request.params["id"]
    ended = await _owned(services, ctx, stream_id)
    ctx.stream_id = stream_id
    running = services.streams.get(stream_id)
    if ended:
        raise StreamEnded(f"stream {stream_id!r} has already ended")
    if running is not None:
        if not running.stop(StreamCancelled("the stream was cancelled by its client")):
            raise StreamEnded(f"stream {stream_id!r} has already ended")
        status, outcome = 200, "cancelled"
    else:
        await request_cancel(services.state, stream_id, ctx.owner)
        status, outcome = 202, "cancelling"
    ctx.status = status
    body = orjson.dumps({"stream_id": stream_id, "status": outcome})
    await send_bytes(send, status, body, headers=ctx.response_headers())


ROUTES = [
    Route("GET", "/v1/streams/{id}", resume, render_error, "client_or_token"),
    Route("POST", "/v1/streams/{id}/cancel", cancel, render_error),
]
