"""One upstream attempt, from taking the deployment's slot to releasing it: `Attempt`.

An attempt is an async context manager. Entering takes the deployment's in-flight slot, tells
its health that a call is starting (a half-open deployment's probe) and arms the watchdog;
leaving closes the upstream response, stops the watchdog and frees the slot, exactly once,
however the attempt ends (success, failure, cancellation). In between, `send` opens the call,
`first_event` reads a stream until its first valid event and `whole_body` reads a complete
answer; `succeed` and `fail` record the deployment's verdict. Every wait for the upstream goes
through the watchdog, which adds it to the request's wait clock (`RequestContext.waited`).

Failover (failover.py) creates attempts and decides what to try next; the relay (relay.py)
uses the one that produced a first event for the rest of the stream.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

from tidegate import metrics
from tidegate.clock import Clock
from tidegate.context import RequestContext
from tidegate.deployments import Deployment
from tidegate.errors import GatewayError, UpstreamError, UpstreamProtocolError, as_gateway_error
from tidegate.events import Event, StreamError
from tidegate.formats.base import PARSE_ERRORS, StreamParser, malformed
from tidegate.providers.http import UpstreamCall, UpstreamClient, UpstreamResponse
from tidegate.watchdog import Watchdog

#: The most of an upstream error body that is read.
ERROR_BODY_LIMIT = 64 * 1024
#: The most bytes of one upstream read that are parsed (and encoded) without yielding the loop.
READ_SLICE = 16 * 1024


class Attempt:
    """One call to one deployment: slot, health verdict, watchdog, response and wait clock."""

    __slots__ = (
        "_clock",
        "_ctx",
        "_released",
        "_streaming",
        "call",
        "deployment",
        "dog",
        "error",
        "events",
        "leftover",
        "parser",
        "passthrough",
        "pending",
        "response",
    )

    def __init__(
        self,
        ctx: RequestContext,
        deployment: Deployment,
        call: UpstreamCall,
        passthrough: bool,
        *,
        streaming: bool,
        clock: Clock,
    ):
        self._ctx = ctx
        self._clock = clock
        self._streaming = streaming
        self._released = True  # nothing to release until entered
        self.deployment = deployment
        self.call = call
        self.passthrough = passthrough
        self.response: UpstreamResponse | None = None
        self.parser: StreamParser | None = None
        self.error: GatewayError | None = None
        self.events: list[Event] = []  # parsed before the commit
        self.pending: list[bytes] = []  # read and parsed before the commit
        self.leftover = b""  # read before the commit but not parsed yet (see READ_SLICE)

    async def __aenter__(self) -> Attempt:
        self.deployment.in_flight += 1
        self._released = False
        # The log names the deployment tried last, whether or not it served the request.
        self._ctx.tried = self.deployment.key
        self._ctx.upstream = self.deployment.provider.label
        self.deployment.health.attempt(self._clock.now())
        timeouts = self.deployment.provider.timeouts
        self.dog = Watchdog(timeouts, streaming=self._streaming, meter=self._ctx)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def release(self) -> None:
        """Close the upstream response, stop the watchdog and free the slot (once)."""
        if self._released:
            return
        self._released = True
        self.dog.stop()
        if self.response is not None:
            self.response.close()
        self.deployment.in_flight -= 1

    # -- verdicts ---------------------------------------------------------------------------

    def succeed(self) -> None:
        """The deployment answered well: it serves this request."""
        metrics.labelled(metrics.ATTEMPTS, self.deployment.key, "ok").inc()
        self.deployment.health.success()
        self._ctx.dropped = self.call.dropped
        self._ctx.deployment = self.deployment.key

    def fail(self, err: GatewayError) -> None:
        """The attempt failed; an upstream failure counts against the deployment."""
        self.error = err
        metrics.labelled(metrics.ATTEMPTS, self.deployment.key, err.code).inc()
        if isinstance(err, UpstreamError):
            retry_after = err.retry_after if err.status == 429 else None
            health = self.deployment.health
            trips = health.trips
            health.failure(self._clock.now(), retry_after, err)
            if health.trips > trips:
                metrics.labelled(metrics.COOLDOWNS, self.deployment.key).inc()

    # -- I/O ----------------------------------------------------------------------------------

    async def send(self, client: UpstreamClient) -> None:
        """Open the call: status and headers received; an error status raises its error."""
        provider = self.deployment.provider
        try:
            self.dog.begin_wait()
            try:
                response = self.response = await provider.open(client, self.call)
            finally:
                self.dog.end_wait()
            if not 200 <= response.status < 300:
                body = await self._read_body(ERROR_BODY_LIMIT)
                raise provider.error_from_status(response.status, body, response.retry_after)
            if "text/html" in response.content_type:
                raise UpstreamProtocolError(
                    "upstream answered with an HTML page instead of its API format"
                )
        except asyncio.CancelledError:
            if self.dog.cancelled_us():
                raise self.dog.error() from None
            raise

    async def first_event(self) -> None:
        """Read the stream until its first valid event; an error before it raises."""
        assert self.response is not None
        provider = self.deployment.provider
        parser = self.parser = provider.stream_parser(side=self.passthrough)
        held = 0
        try:
            while not parser.started and not parser.done:
                self.dog.begin_wait()
                try:
                    chunk = await self.response.read_chunk()
                finally:
                    self.dog.end_wait()
                held += len(chunk)
                try:
                    if not chunk:
                        self.events += parser.finish()
                        break
                    # A large read is parsed a slice at a time: the rest waits for the relay
                    # once the first event is found, so no read costs the loop more than a slice.
                    while chunk and not parser.started and not parser.done:
                        piece, chunk = chunk[:READ_SLICE], chunk[READ_SLICE:]
                        self.pending.append(piece)
                        self.events += parser.feed(piece)
                    self.leftover = chunk
                except PARSE_ERRORS as exc:
                    raise malformed(exc) from None
                if any(isinstance(e, StreamError) for e in self.events):
                    break
                if held > provider.max_event_bytes and not parser.started:
                    raise UpstreamProtocolError(
                        f"upstream sent more than {provider.max_event_bytes} bytes without a "
                        "first event"
                    )
        except asyncio.CancelledError:
            if self.dog.cancelled_us():
                raise self.dog.error() from None
            raise
        for event in self.events:
            if isinstance(event, StreamError):
                raise as_gateway_error(event.error)
        if not parser.started:
            raise UpstreamProtocolError("upstream ended the stream before sending any event")

    async def whole_body(self) -> bytes:
        """The complete answer, at most `max_response_bytes` (inflated); larger is an error."""
        limit = self.deployment.provider.max_response_bytes
        try:
            raw = await self._read_body(limit + 1)
        except asyncio.CancelledError:
            if self.dog.cancelled_us():
                raise self.dog.error() from None
            raise
        if len(raw) > limit:
            raise UpstreamProtocolError(f"upstream answer is larger than {limit} bytes")
        return raw

    async def _read_body(self, limit: int) -> bytes:
        assert self.response is not None
        self.dog.begin_wait()
        try:
            return await self.response.read_body(limit)
        finally:
            self.dog.end_wait()
