"""Before the first byte: try deployments until one produces a valid first event.

An attempt opens the upstream and reads until its first valid protocol event (or, for a
non-streaming call, its whole body, parsed). What fails is classified:

- deterministic client errors (upstream 400, 413, 422: invalid request, context too long,
  content policy) end the request at once with the upstream's status and message;
- a refused key or unknown model at one deployment (401, 403, 404) moves on to the next;
- everything transient (connect errors and timeouts, first-byte timeout, 408, 409, 429, 5xx,
  a 200 whose first event is an error, HTML or other non-protocol bodies) retries the same
  deployment up to its `retries` with jittered backoff (honouring `Retry-After`), then moves on.

One budget (`routing.max_attempts`, `routing.budget_seconds`) bounds the whole sequence. Every
failed attempt's response is closed before the next begins.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tidegate.context import RequestContext
from tidegate.errors import (
    GatewayError,
    RateLimited,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamUnavailable,
    as_gateway_error,
)
from tidegate.events import Completion, Event, StreamError
from tidegate.providers.base import (
    PARSE_ERRORS,
    Provider,
    StreamParser,
    UpstreamCall,
    UpstreamResponse,
    malformed,
)
from tidegate.routing import Deployment, Router
from tidegate.settings import RoutingConfig
from tidegate.watchdog import Watchdog

ERROR_BODY_LIMIT = 64 * 1024
#: The most bytes of one upstream read that are parsed (and encoded) without yielding the loop.
READ_SLICE = 16 * 1024

T = TypeVar("T")

#: Build the upstream call for a provider: (call, pass-through?).
Prepare = Callable[[Provider], tuple[UpstreamCall, bool]]


class Opened:
    """A deployment whose stream has produced its first valid event, ready to commit."""

    __slots__ = (
        "call",
        "deployment",
        "dog",
        "events",
        "leftover",
        "parser",
        "passthrough",
        "pending",
        "response",
    )

    def __init__(
        self,
        deployment: Deployment,
        call: UpstreamCall,
        passthrough: bool,
        response: UpstreamResponse,
        parser: StreamParser,
        dog: Watchdog,
    ):
        self.deployment = deployment
        self.call = call
        self.passthrough = passthrough
        self.response = response
        self.parser = parser
        self.dog = dog
        self.pending: list[bytes] = []  # bytes read and parsed before the commit
        self.leftover = b""  # bytes read before the commit but not parsed yet (see READ_SLICE)
        self.events: list[Event] = []


def is_transient(err: GatewayError) -> bool:
    """Worth another try (at this or another deployment)."""
    if isinstance(err, UpstreamStatusError):
        status = err.upstream_status or 500
        return status in (401, 403, 404, 408, 409, 425, 429) or status >= 500
    return isinstance(err, UpstreamError)


def _retry_same(err: GatewayError) -> bool:
    return not (isinstance(err, UpstreamStatusError) and err.upstream_status in (401, 403, 404))


async def open_stream(
    ctx: RequestContext, router: Router, model: str, prepare: Prepare, routing: RoutingConfig
) -> Opened:
    """The first deployment of the plan that yields a valid first event."""
    return await _failover(ctx, router, model, prepare, routing, _attempt_stream, holds_slot=True)


async def complete(
    ctx: RequestContext, router: Router, model: str, prepare: Prepare, routing: RoutingConfig
) -> tuple[Deployment, bool, bytes, Completion]:
    """A whole non-streaming answer: (deployment, pass-through?, raw body, parsed completion)."""
    return await _failover(ctx, router, model, prepare, routing, _attempt_whole, holds_slot=False)


async def _failover(
    ctx: RequestContext,
    router: Router,
    model: str,
    prepare: Prepare,
    routing: RoutingConfig,
    attempt: Callable[[RequestContext, Deployment, UpstreamCall, bool], Awaitable[T]],
    *,
    holds_slot: bool,
) -> T:
    """Run `attempt` over the plan until one succeeds. A streaming success keeps its slot."""
    start = time.monotonic()
    plan = router.plan(model)
    last: GatewayError | None = None
    skipped_cooling: list[Deployment] = []
    skipped_busy = False
    for deployment in plan:
        now = time.monotonic()
        if not deployment.health.available(now):
            skipped_cooling.append(deployment)
            ctx.skipped += 1
            continue
        if deployment.saturated:
            skipped_busy = True
            ctx.skipped += 1
            continue
        for n in range(1 + deployment.config.retries):
            elapsed = time.monotonic() - start
            if ctx.attempts >= routing.max_attempts or elapsed >= routing.budget_seconds:
                break
            if n:
                delay = _backoff(n, routing, getattr(last, "retry_after", None))
                delay = min(delay, routing.budget_seconds - elapsed)
                waited = time.perf_counter()
                try:
                    await asyncio.sleep(delay)
                finally:
                    ctx.waited += time.perf_counter() - waited
                if not deployment.health.available(time.monotonic()):
                    break
            ctx.attempts += 1
            call, passthrough = prepare(deployment.provider)
            deployment.in_flight += 1
            deployment.health.attempt(time.monotonic())
            try:
                result = await attempt(ctx, deployment, call, passthrough)
            except GatewayError as err:
                deployment.in_flight -= 1
                last = err
                if not is_transient(err):
                    raise
                deployment.health.failure(
                    time.monotonic(), err.retry_after if err.status == 429 else None
                )
                if not _retry_same(err):
                    break
                continue
            except BaseException:
                deployment.in_flight -= 1
                raise
            deployment.health.success()
            ctx.dropped = call.dropped
            ctx.deployment = deployment.key
            ctx.upstream = deployment.provider.label
            if not holds_slot:
                deployment.in_flight -= 1
            return result
        if (
            ctx.attempts >= routing.max_attempts
            or time.monotonic() - start >= routing.budget_seconds
        ):
            break
    if last is not None:
        raise last
    if skipped_busy:
        raise RateLimited(
            f"every deployment of {model!r} is at its concurrency limit", retry_after=1
        )
    soonest = min((d.health.until for d in skipped_cooling), default=time.monotonic())
    raise UpstreamUnavailable(
        f"every deployment of {model!r} is cooling down after repeated failures",
        retry_after=max(1.0, soonest - time.monotonic()),
    )


def _backoff(n: int, routing: RoutingConfig, retry_after: float | None) -> float:
    if retry_after is not None:
        return float(retry_after)
    base = min(routing.max_backoff_seconds, routing.backoff_seconds * 2.0 ** (n - 1))
    return base * random.uniform(0.5, 1.5)


async def _send(
    ctx: RequestContext, deployment: Deployment, call: UpstreamCall
) -> UpstreamResponse:
    assert ctx.session is not None
    provider = deployment.provider
    t0 = time.perf_counter()
    try:
        response = await provider.open(ctx.session, call)
    finally:
        ctx.waited += time.perf_counter() - t0
    if not 200 <= response.status < 300:
        try:
            body = await response.read_body(ERROR_BODY_LIMIT)
        finally:
            response.close()
        raise provider.error_from_status(response.status, body, response.retry_after)
    if "text/html" in response.content_type:
        response.close()
        raise UpstreamProtocolError("upstream answered with an HTML page instead of its API format")
    return response


async def _attempt_stream(
    ctx: RequestContext, deployment: Deployment, call: UpstreamCall, passthrough: bool
) -> Opened:
    provider = deployment.provider
    dog = Watchdog(provider.timeouts, streaming=True)
    response: UpstreamResponse | None = None
    try:
        response = await _send(ctx, deployment, call)
        opened = Opened(
            deployment, call, passthrough, response, provider.stream_parser(side=passthrough), dog
        )
        parser = opened.parser
        held = 0
        while not parser.started and not parser.done:
            t0 = time.perf_counter()
            try:
                chunk = await response.read_chunk()
            finally:
                ctx.waited += time.perf_counter() - t0
            try:
                if not chunk:
                    opened.events += parser.finish()
                    break
                # A large read is parsed a slice at a time: the rest waits for the relay once
                # the first event has been found, so no read costs the loop more than a slice.
                while chunk and not parser.started and not parser.done:
                    piece, chunk = chunk[:READ_SLICE], chunk[READ_SLICE:]
                    opened.pending.append(piece)
                    opened.events += parser.feed(piece)
                opened.leftover = chunk
            except PARSE_ERRORS as exc:
                raise malformed(exc) from None
            if any(isinstance(e, StreamError) for e in opened.events):
                break
            held += len(chunk)
            if held > provider.max_event_bytes and not parser.started:
                raise UpstreamProtocolError(
                    f"upstream sent {held} bytes without a first event (limit "
                    f"{provider.max_event_bytes})"
                )
        for event in opened.events:
            if isinstance(event, StreamError):
                raise as_gateway_error(event.error)
        if not parser.started:
            raise UpstreamProtocolError("upstream ended the stream before sending any event")
        return opened
    except asyncio.CancelledError:
        dog.stop()
        if response is not None:
            response.close()
        if dog.cancelled_us():
            raise dog.error() from None
        raise
    except BaseException:
        dog.stop()
        if response is not None:
            response.close()
        raise


async def _attempt_whole(
    ctx: RequestContext, deployment: Deployment, call: UpstreamCall, passthrough: bool
) -> tuple[Deployment, bool, bytes, Completion]:
    provider = deployment.provider
    dog = Watchdog(provider.timeouts, streaming=False)
    response: UpstreamResponse | None = None
    try:
        response = await _send(ctx, deployment, call)
        t0 = time.perf_counter()
        try:
            raw = await response.read_body(provider.max_response_bytes + 1)
            if len(raw) > provider.max_response_bytes:
                raise UpstreamProtocolError(
                    f"upstream answer is larger than {provider.max_response_bytes} bytes"
                )
        finally:
            ctx.waited += time.perf_counter() - t0
    except asyncio.CancelledError:
        if dog.cancelled_us():
            raise dog.error() from None
        raise
    finally:
        dog.stop()
        if response is not None:
            response.close()
    # A 200 whose body is an error (or is not the format) fails over like any other failure.
    try:
        completion = provider.usage_of_body(raw) if passthrough else provider.parse_completion(raw)
    except PARSE_ERRORS as exc:
        raise malformed(exc) from None
    return deployment, passthrough, raw, completion
