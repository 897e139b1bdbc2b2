"""Upstream to client: commit, forward, and end every stream properly.

`relay_stream` lets `failover.open_stream` find a deployment whose stream produced a valid
first event (so every failure up to then is still a proper HTTP error), commits the 200, then
forwards. In pass-through mode (same wire format on both sides) each upstream read is
forwarded as one write, untouched, while a side parser watches for usage, the finish and
errors; otherwise the parser's canonical events go through the endpoint's encoder.

If no first event arrives within `routing.commit_after` seconds the response commits anyway
and keeps the connection alive with the encoder's ping (nothing on Gemini, whose SDKs accept
no comments), while failover goes on unseen. From the commit on, every failure (network drop,
stall past the idle timeout, malformed data, an upstream error event, a stream that just
stops, every deployment failing) becomes an in-band error in the endpoint's format followed by
its normal end.

The upstream response is closed and the deployment's stream slot released in a `finally`,
whatever happens, including cancellation when the client goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from tidegate.asgi import BodyWriter, ResponseBody, Send
from tidegate.attempt import READ_SLICE, Attempt
from tidegate.context import RequestContext
from tidegate.errors import (
    ClientDisconnected,
    GatewayError,
    UpstreamProtocolError,
    as_gateway_error,
)
from tidegate.events import ChatRequest, Completion, Event, StreamError
from tidegate.failover import Prepare, complete, open_stream
from tidegate.formats.base import (
    PARSE_ERRORS,
    PassthroughFilter,
    StreamEncoder,
    StreamParser,
    StreamState,
    malformed,
)
from tidegate.limits import Lease
from tidegate.logs import log
from tidegate.providers.base import Provider
from tidegate.providers.http import (
    UpstreamCall,
    UpstreamResponse,
    upstream_error_from_exception,
)
from tidegate.redact import StreamRedactor
from tidegate.services import Services
from tidegate.settings import RoutingConfig
from tidegate.streams import DEFAULT_RESUME_GRACE, RunningStream, StreamLog, keep_for_resume
from tidegate.watchdog import Watchdog

#: The longest error message a client sees (redacted first, then shortened to this).
MESSAGE_CHARS = 1000


def stream_headers(content_type: bytes) -> list[tuple[bytes, bytes]]:
    """The headers of every streamed response: no caching, no proxy buffering."""
    return [
        (b"content-type", content_type),
        (b"cache-control", b"no-cache"),
        (b"connection", b"keep-alive"),
        (b"x-accel-buffering", b"no"),
    ]


async def relay_stream(
    services: Services,
    ctx: RequestContext,
    model: str,
    prepare: Prepare,
    encoder: StreamEncoder,
    send: Send,
) -> None:
    """Stream one request. Raises `GatewayError` only when it fails before anything was sent.

    Every byte that reaches the client passes one `StreamRedactor`, whichever way it was made.
    The upstream is released before the stream's last write, and that write is bounded by
    `limits.write_timeout`: a client that stops reading holds nothing of the upstream.
    """
    config = services.config
    state = StreamState()
    redactor = ctx.redactor.stream()
    running = await services.streams.start(ctx.owner)
    ctx.stream_id = running.id
    ctx.headers_out.append((b"x-tidegate-stream-id", running.id.encode()))
    log = await _resumable(services, ctx, encoder, running)
    if log is not None:
        send = log.tee(send)
        ctx.send_wrapped()  # the log must see every write
    keepalive = KeepAlive(ctx, encoder, send, config.routing)
    skip_end = False
    opened = False
    opening = open_stream(ctx, services.router, model, prepare, config.routing, services.clock)
    del prepare  # held by the attempts alone, which let the request go once the stream opens
    try:
        async with opening as attempt:
            opened = True
            await keepalive.stop()
            skip_end = await _forward(ctx, attempt, encoder, state, send, redactor, running)
        # Leaving the block released the upstream: the last write below holds nothing of it.
    except asyncio.CancelledError:
        # Stopped before the first event (cancelled, shutting down): an error like any other.
        reason = running.absorb()
        if reason is None:  # the client left
            if log is not None:
                await _close_log(log, encoder, state, ctx)
            raise
        await keepalive.stop()
        if not ctx.committed:
            raise reason from None
        state.error = reason
    except GatewayError as err:
        if opened:
            raise
        await keepalive.stop()
        if not ctx.committed:
            raise
        state.error = err
    finally:
        await services.streams.end(running, keep=config.streams.retention if log else 0)
        keepalive.cancel()
        ctx.usage = state.usage
        ctx.estimated_output = state.estimated_output_tokens()
        ctx.finish_reason = state.finish_reason
        if state.error is not None:
            ctx.error_code = state.error.code
    tail = b""
    if state.error is not None and not state.error_forwarded:
        state.error.message = ctx.redactor.excerpt(state.error.message, MESSAGE_CHARS)
        tail += encoder.error(state.error)
    if not skip_end:
        tail += encoder.end(state)
    if tail and state.passthrough:
        # The upstream may have been cut inside an event: end that one before ours begin.
        tail = _event_end(state.last_sent) + tail
    tail = redactor.feed(tail) + redactor.flush()
    last: ResponseBody = {"type": "http.response.body", "body": tail, "more_body": False}
    try:
        if ctx.sends_at_once():  # written at once: there is nothing to put a deadline on
            await send(last)
        else:
            async with asyncio.timeout(config.limits.write_timeout):
                await send(last)
    except TimeoutError:
        ctx.error_code = "client_stalled"
    finally:
        if log is not None:
            await log.close()


async def _resumable(
    services: Services, ctx: RequestContext, encoder: StreamEncoder, running: RunningStream
) -> StreamLog | None:
    """The log that makes this stream resumable, when its protocol numbers its events (the
    encoder says `resumable`); a request that asked for it keeps generating a while after its
    client leaves (`streams.resume_grace`)."""
    if not getattr(encoder, "resumable", False):
        return None
    settings = services.config.streams
    log = StreamLog(services.state, running.id, settings.retention)
    encoder.stream_id = running.id  # type: ignore[attr-defined]
    encoder.resume_token = await log.begin()  # type: ignore[attr-defined]
    grace = settings.resume_grace or (DEFAULT_RESUME_GRACE if ctx.resumable else 0.0)
    if grace and ctx.watcher is not None:
        ctx.watcher.on_disconnect = keep_for_resume(services.state, running, grace)
    return log


async def _close_log(
    log: StreamLog, encoder: StreamEncoder, state: StreamState, ctx: RequestContext
) -> None:
    """End the log of a stream whose client left: a later resume finds a complete stream."""
    state.error = ClientDisconnected("the client disconnected before the answer ended")
    with contextlib.suppress(Exception):
        await log.append(encoder.error(state.error) + encoder.end(state))
        await log.close()


async def _forward(
    ctx: RequestContext,
    opened: Attempt,
    encoder: StreamEncoder,
    state: StreamState,
    send: Send,
    redactor: StreamRedactor,
    running: RunningStream,
) -> bool:
    """Commit and forward until the upstream ends or fails; true if its end was forwarded."""
    ctx.mark_first_byte()
    if not ctx.committed:
        await _commit(ctx, encoder, send)
    state.observe(opened.events)
    lease = ctx.lease if ctx.lease is not None and ctx.lease.charges else None
    if lease is not None:
        lease.observe(opened.events, b"".join(opened.pending))
    passthrough = opened.passthrough
    filt = opened.call.filter if passthrough else None
    first = b"".join(opened.pending) if passthrough else encoder.encode(opened.events)
    # Nothing of the request or the first read needs to live as long as the stream.
    opened.pending, opened.events = [], []
    if passthrough:
        state.events_out += _events_in(first)
    if filt is not None:
        first = filt.feed(first)
    first = redactor.feed(first)
    state.passthrough = passthrough
    if first:
        state.last_sent = first
        await send({"type": "http.response.body", "body": first, "more_body": True})
    opened.dog.streaming()
    try:
        writer = ctx.body_writer() if ctx.body_writer is not None else None
        await _pump(opened, encoder, state, send, filt, redactor, lease, writer)
    except asyncio.CancelledError:
        own = _own_cancellation(opened, running)
        if own is None:
            raise
        state.error = own
    except GatewayError as err:
        state.error = err
    except Exception as exc:
        mapped = upstream_error_from_exception(exc)
        if isinstance(mapped, GatewayError):
            state.error = mapped
        else:
            log.exception("relay failed after the response began")
            state.error = as_gateway_error(exc)
    if state.error is not None:
        opened.fail(state.error)
    parser = opened.parser
    assert parser is not None
    if parser.skipped:
        state.skipped = ctx.skipped_lines = parser.skipped
        log.warning(
            "request %s: skipped %d unreadable event(s) from %s, the first: %s",
            ctx.request_id,
            parser.skipped,
            ctx.upstream,
            # Redacted before it is shortened: a cut must not keep half a key.
            "; ".join(repr(ctx.redactor.excerpt(s, 200)) for s in parser.skipped_samples or ()),
        )
    return passthrough and parser.done


async def relay_complete(
    services: Services, ctx: RequestContext, model: str, prepare: Prepare
) -> tuple[bool, bytes, Completion]:
    """One whole answer: (pass-through?, raw body, parsed completion)."""
    routing = services.config.routing
    passthrough, raw, completion = await complete(
        ctx, services.router, model, prepare, routing, services.clock
    )
    ctx.usage, ctx.finish_reason = completion.usage, completion.finish_reason
    return passthrough, raw, completion


async def _commit(ctx: RequestContext, encoder: StreamEncoder, send: Send) -> None:
    ctx.committed = True
    ctx.status = 200
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": stream_headers(encoder.content_type) + ctx.response_headers(),
        }
    )


class KeepAlive:
    """Commits after `commit_after` seconds without a first event, then pings now and then.

    Most streams produce their first event well before `commit_after`, so what waits is a
    timer; a task (and its frame) exists only once the timer has fired.
    """

    __slots__ = ("_args", "_handle", "_task")

    def __init__(
        self, ctx: RequestContext, encoder: StreamEncoder, send: Send, routing: RoutingConfig
    ):
        self._args = (ctx, encoder, send, routing)
        self._task: asyncio.Task[None] | None = None
        self._handle = asyncio.get_running_loop().call_later(routing.commit_after, self._start)

    def _start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        ctx, encoder, send, routing = self._args
        await _commit(ctx, encoder, send)
        ping = encoder.ping
        while ping:
            await send({"type": "http.response.body", "body": ping, "more_body": True})
            await asyncio.sleep(routing.ping_interval)

    def cancel(self) -> None:
        """Stop without waiting (the request is ending anyway)."""
        self._handle.cancel()
        if self._task is not None:
            self._task.cancel()

    async def stop(self) -> None:
        """Stop, and wait until nothing of it can write any more."""
        self._handle.cancel()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def _pump(
    opened: Attempt,
    encoder: StreamEncoder,
    state: StreamState,
    send: Send,
    filt: PassthroughFilter | None,
    redactor: StreamRedactor,
    lease: Lease | None,
    writer: BodyWriter | None,
) -> None:
    parser, dog, passthrough = opened.parser, opened.dog, opened.passthrough
    assert parser is not None and opened.response is not None
    response = opened.response
    read = response.reader()
    redact = redactor.feed

    def step(chunk: bytes) -> bytes:
        """One upstream read: parsed (on the side, in pass-through), counted, charged,
        filtered and redacted; returns what goes to the client."""
        try:
            events = parser.feed(chunk)
        except PARSE_ERRORS as exc:
            raise malformed(exc) from None
        if events:
            state.observe(events)
        if lease is not None:
            lease.observe(events, chunk)  # tokens charged as they stream
        if passthrough:
            state.events_out += _events_in(chunk)
            if state.error is not None:
                state.error_forwarded = True  # the upstream's own error event goes out as it came
            if filt is not None:
                chunk = filt.feed(chunk) + (filt.flush() if state.error is not None else b"")
            chunk = redact(chunk)
            if chunk:
                state.last_sent = chunk
            return chunk
        return redact(encoder.encode(events)) if events else b""

    splice = (
        _Splice(step, writer, response, state, parser, dog)
        if writer is not None and response.can_splice
        else None
    )
    rest, opened.leftover = opened.leftover, b""  # read before the commit, not parsed yet
    while state.error is None and not parser.done:
        if rest:
            await asyncio.sleep(0)  # let others run between the slices of one large read
            chunk, rest = rest, b""
        else:
            if splice is not None and await splice.run():
                continue  # the splice ended: the loop goes on from where it left off
            dog.begin_wait()
            chunk = await read()
            dog.end_wait()
        if len(chunk) > READ_SLICE:
            chunk, rest = chunk[:READ_SLICE], chunk[READ_SLICE:]
        if not chunk:
            try:
                events = parser.finish()
            except PARSE_ERRORS as exc:
                raise malformed(exc) from None
            state.observe(events)
            if lease is not None:
                lease.observe(events)
            if passthrough:
                rest = redact(filt.flush()) if filt is not None else b""
                if rest:
                    state.last_sent = rest
                # The upstream's last event may lack its blank line (`data: [DONE]\n`, then
                # close): complete it, so that the client's reader sees a whole event.
                await _send_body(send, rest + _event_end(state.last_sent))
                state.last_sent = b"\n\n"
                if state.error is not None:
                    state.error_forwarded = True  # a trailing error object was forwarded as is
            elif events:
                await _send_body(send, redact(encoder.encode(events)))
            if state.error is None and not parser.complete:
                state.error = UpstreamProtocolError(
                    "upstream stream ended before its end marker (truncated answer)"
                )
            return
        out = step(chunk)
        if out:
            await send({"type": "http.response.body", "body": out, "more_body": True})


class _Splice:
    """A stream's steady state from inside the upstream client's I/O callback: each read goes
    through the same `step` as in `_pump`'s loop, and what one callback produced is written
    at its end with the server's `BodyWriter` — no task woken and no ASGI message per read.

    It covers the steady state only. Whatever is not routine ends it and hands the stream back
    to `_pump`'s loop, which deals with it as it always does: the body's end, an upstream
    error or close, more than `READ_SLICE` bytes in one callback (the rest is sliced by the
    loop, which yields between slices), a client that stops reading (the loop's `send` waits
    for it to drain, and the upstream is paused when reads pile up), the parser done or
    reporting an error, or `step` raising. Deadlines stay the watchdog's: it cancels the task
    waiting for the splice to end, like a waiting read; the time spent in `step` is not
    counted as waiting for the upstream.
    """

    __slots__ = (
        "_budget",
        "_dog",
        "_out",
        "_parser",
        "_response",
        "_state",
        "_step",
        "_writer",
        "error",
    )

    def __init__(
        self,
        step: Callable[[bytes], bytes],
        writer: BodyWriter,
        response: UpstreamResponse,
        state: StreamState,
        parser: StreamParser,
        dog: Watchdog,
    ) -> None:
        self._step = step
        self._writer = writer
        self._response = response
        self._state = state
        self._parser = parser
        self._dog = dog
        self._out: list[bytes] = []
        self._budget = READ_SLICE
        self.error: BaseException | None = None

    async def run(self) -> bool:
        """Splice until something needs the loop; False if it could not start at all."""
        if self._writer.paused:
            return False
        ended = self._response.splice(self._sink, self._flush)
        if ended is None:
            return False
        dog = self._dog
        dog.begin_wait()
        try:
            await ended
        finally:
            self._response.unsplice()
        dog.end_wait()
        if self.error is not None:
            raise self.error
        return True

    def _sink(self, chunk: bytes) -> bool:
        """One read, stepped now; False (declined) past this callback's budget or while the
        client is not keeping up."""
        if len(chunk) > self._budget or self._writer.paused:
            return False
        self._budget -= len(chunk)
        dog = self._dog
        dog.end_wait()
        try:
            out = self._step(chunk)
        except Exception as exc:  # raised in the task, by `run`, as `_pump` would have
            self.error = exc
            self._response.unsplice()
            return True
        finally:
            dog.begin_wait()
        if out:
            self._out.append(out)
        if self._state.error is not None or self._parser.done:
            self._response.unsplice()
        return True

    def _flush(self) -> None:
        """The end of one I/O callback: write what its reads produced, in one write."""
        self._budget = READ_SLICE
        out = self._out
        if out:
            data = out[0] if len(out) == 1 else b"".join(out)
            out.clear()
            try:
                self._writer.write(data)
            except Exception as exc:
                self.error = exc
                self._response.unsplice()
                return
        if self._writer.paused:
            self._response.unsplice()


def _events_in(chunk: bytes) -> int:
    """About how many upstream events `chunk` holds (SSE `data:` lines, else NDJSON lines):
    an estimate of generated tokens for a stream whose usage never comes."""
    return chunk.count(b"data:") or chunk.count(b"\n")


def _own_cancellation(attempt: Attempt, running: RunningStream) -> GatewayError | None:
    """On `CancelledError` in the relay: the error of the relay's own cancellations (a deadline
    of the watchdog, a stop of the stream), each absorbed; None if another cancellation (the
    client went away) remains, which must propagate."""
    causes: list[GatewayError] = []
    if attempt.dog.expired is not None:
        causes.append(attempt.dog.error())
    if running.reason is not None:
        causes.append(running.reason)
    task = asyncio.current_task()
    if not causes or task is None:
        return None
    left = 0
    for _ in causes:
        left = task.uncancel()
    return causes[-1] if left == 0 else None


def _event_end(sent: bytes) -> bytes:
    """What completes the last event of `sent`: nothing, a line end, or a line end and a blank
    line."""
    if not sent or sent.endswith((b"\n\n", b"\r\n\r\n", b"\r\r")):
        return b""
    if sent.endswith(b"\r\n"):
        return b"\r\n"
    if sent.endswith((b"\n", b"\r")):
        return sent[-1:]
    return b"\n\n"


async def _send_body(send: Send, body: bytes) -> None:
    if body:
        await send({"type": "http.response.body", "body": body, "more_body": True})


async def stream_events(
    services: Services, ctx: RequestContext, model: str, chat: ChatRequest
) -> AsyncIterator[list[Event]]:
    """The canonical events of `model`'s answer to `chat`, read by the gateway itself (a
    workflow step): failover and deadlines as for any stream, the upstream released when the
    iteration ends. Failures raise `GatewayError`, before or after the first events."""
    chat.stream = True

    def prepare(provider: Provider) -> tuple[UpstreamCall, bool]:
        return provider.build_call(chat), False

    routing = services.config.routing
    async with open_stream(
        ctx, services.router, model, prepare, routing, services.clock
    ) as attempt:
        parser, response = attempt.parser, attempt.response
        assert parser is not None and response is not None
        events, attempt.events = attempt.events, []
        rest, attempt.leftover = attempt.leftover, b""
        attempt.dog.streaming()
        try:
            while True:
                for event in events:
                    if isinstance(event, StreamError):
                        raise as_gateway_error(event.error)
                if events:
                    yield events
                if parser.done:
                    return
                if rest:
                    chunk, rest = rest, b""
                else:
                    attempt.dog.begin_wait()
                    chunk = await response.read_chunk()
                    attempt.dog.end_wait()
                try:
                    events = parser.feed(chunk) if chunk else parser.finish()
                except PARSE_ERRORS as exc:
                    raise malformed(exc) from None
                if not chunk:
                    if not parser.complete and not any(isinstance(e, StreamError) for e in events):
                        raise UpstreamProtocolError(
                            "upstream stream ended before its end marker (truncated answer)"
                        )
                    for event in events:
                        if isinstance(event, StreamError):
                            raise as_gateway_error(event.error)
                    if events:
                        yield events
                    return
        except asyncio.CancelledError:
            if not attempt.dog.cancelled_us():
                raise
            raise attempt.dog.error() from None
        except GatewayError as err:
            attempt.fail(err)
            raise
