"""Before the first byte: try deployments until one produces a valid first event.

An attempt opens the upstream and reads until its first valid protocol event (or, for a
non-streaming call, its whole body, parsed). What fails is classified:

- deterministic client errors (upstream 400, 413, 422: invalid request, context too long,
  content policy) end the request at once with the upstream's status and message;
- a refused key or unknown model at one deployment (401, 403, 404) moves on to the next;
- everything transient (connect errors and timeouts, first-byte timeout, 408, 409, 429, 5xx,
  a 200 whose first event is an error, HTML or other non-protocol bodies) retries the same
  deployment up to its `retries` with jittered backoff (honouring `Retry-After`), then moves on.

One budget (`routing.max_attempts`, `routing.budget_seconds`) bounds the whole sequence. Each
attempt is an `Attempt` (attempt.py), released before the next begins. When nothing was tried
because every deployment is cooling down, the error says why the last one failed.
"""

from __future__ import annotations

import math
import random
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager

from tidegate.attempt import Attempt
from tidegate.clock import SYSTEM_CLOCK, Clock
from tidegate.context import RequestContext
from tidegate.deployments import Deployment, Router
from tidegate.errors import (
    GatewayError,
    RateLimited,
    UpstreamError,
    UpstreamStatusError,
    UpstreamUnavailable,
)
from tidegate.events import Completion
from tidegate.formats.base import PARSE_ERRORS, malformed
from tidegate.providers.base import Provider
from tidegate.providers.http import UpstreamCall
from tidegate.settings import RoutingConfig

#: Build the upstream call for a provider: (call, pass-through?).
Prepare = Callable[[Provider], tuple[UpstreamCall, bool]]


def is_transient(err: GatewayError) -> bool:
    """Worth another try (at this or another deployment): as an upstream's description says
    (`retryable`), else by the kind of error and its status."""
    if isinstance(err, UpstreamError) and err.retryable is not None:
        return err.retryable
    if isinstance(err, UpstreamStatusError):
        status = err.upstream_status or 500
        return status in (401, 403, 404, 408, 409, 425, 429) or status >= 500
    return isinstance(err, UpstreamError)


def _retry_same(err: GatewayError) -> bool:
    return not (isinstance(err, UpstreamStatusError) and err.upstream_status in (401, 403, 404))


@asynccontextmanager
async def open_stream(
    ctx: RequestContext,
    router: Router,
    model: str,
    prepare: Prepare,
    routing: RoutingConfig,
    clock: Clock = SYSTEM_CLOCK,
) -> AsyncIterator[Attempt]:
    """The attempt of the first deployment that yields a valid first event, held open (slot,
    response, watchdog) until the block ends; `GatewayError` when every attempt failed.

    Once a stream has opened no attempt follows, and nothing of the request is kept: the plan
    (which holds `prepare`, and through it the client's request) is closed, and the upstream
    call drops its body and its source (a described provider's canonical request). A stream
    can stay open for minutes; its prompt can be megabytes."""
    plan = _attempts(ctx, router, model, prepare, routing, clock, streaming=True)
    del prepare  # the plan's alone from here
    async with aclosing(plan) as attempts:
        async for attempt in attempts:
            async with attempt:
                try:
                    await attempt.send(ctx.client)
                    await attempt.first_event()
                except GatewayError as err:
                    attempt.fail(err)
                    if not is_transient(err):
                        raise
                    continue
                attempt.succeed()
                await plan.aclose()
                attempt.call.body, attempt.call.source = b"", None
                yield attempt
                return


async def complete(
    ctx: RequestContext,
    router: Router,
    model: str,
    prepare: Prepare,
    routing: RoutingConfig,
    clock: Clock = SYSTEM_CLOCK,
) -> tuple[bool, bytes, Completion]:
    """A whole non-streaming answer: (pass-through?, raw body, parsed completion)."""
    plan = _attempts(ctx, router, model, prepare, routing, clock, streaming=False)
    async with aclosing(plan) as attempts:
        async for attempt in attempts:
            async with attempt:
                provider = attempt.deployment.provider
                try:
                    await attempt.send(ctx.client)
                    raw = await attempt.whole_body()
                    # A 200 whose body is an error (or not the format) fails over like any other.
                    try:
                        if attempt.passthrough:
                            completion = provider.usage_of_body(raw)
                        else:
                            completion = provider.parse_completion(raw)
                    except PARSE_ERRORS as exc:
                        raise malformed(exc) from None
                except GatewayError as err:
                    attempt.fail(err)
                    if not is_transient(err):
                        raise
                    continue
                attempt.succeed()
            return attempt.passthrough, raw, completion
    raise AssertionError("unreachable: _attempts raises when nothing succeeded")


async def _attempts(
    ctx: RequestContext,
    router: Router,
    model: str,
    prepare: Prepare,
    routing: RoutingConfig,
    clock: Clock,
    *,
    streaming: bool,
) -> AsyncGenerator[Attempt, None]:
    """The attempts to make, in order, each created when its turn comes: skipping cooling and
    saturated deployments, retrying with backoff, within one budget. Reads each attempt's
    `error` when the caller comes back for the next; raises when there is no next."""
    start = clock.now()
    last: GatewayError | None = None
    cooling: list[Deployment] = []
    busy = False
    for deployment in router.plan(model):
        if not deployment.health.available(clock.now()):
            cooling.append(deployment)
            ctx.skipped += 1
            continue
        if deployment.saturated:
            busy = True
            ctx.skipped += 1
            continue
        for n in range(1 + deployment.config.retries):
            elapsed = clock.now() - start
            if ctx.attempts >= routing.max_attempts or elapsed >= routing.budget_seconds:
                break
            if n:
                delay = _backoff(n, routing, last.retry_after if last is not None else None)
                delay = min(delay, routing.budget_seconds - elapsed)
                before = clock.now()
                try:
                    await clock.sleep(delay)
                finally:
                    ctx.waited += clock.now() - before
                if not deployment.health.available(clock.now()):
                    break
            ctx.attempts += 1
            call, passthrough = prepare(deployment.provider)
            # Who the request is for comes from its key's identity, never from its body.
            call.user = ctx.identity.user if ctx.identity is not None else None
            attempt = Attempt(ctx, deployment, call, passthrough, streaming=streaming, clock=clock)
            yield attempt
            if attempt.error is None:
                return
            last = attempt.error
            if not _retry_same(last):
                break
        if ctx.attempts >= routing.max_attempts or clock.now() - start >= routing.budget_seconds:
            break
    raise _exhausted(model, last, cooling, busy, clock.now())


def _exhausted(
    model: str, last: GatewayError | None, cooling: list[Deployment], busy: bool, now: float
) -> GatewayError:
    """The error of a request for which no attempt succeeded."""
    if last is not None:
        return last
    if busy:
        return RateLimited(
            f"every deployment of {model!r} is at its concurrency limit", retry_after=1
        )
    if not cooling:
        return UpstreamUnavailable(f"no deployment of {model!r} could be tried")
    soonest = min(cooling, key=lambda d: d.health.until)
    message = f"every deployment of {model!r} is cooling down after repeated failures"
    cause = soonest.health.last_error
    if cause is not None:
        message += f"; the last failure: {cause.code} ({cause.status}): {cause.message}"
    return UpstreamUnavailable(message, retry_after=max(1, math.ceil(soonest.health.until - now)))


def _backoff(n: int, routing: RoutingConfig, retry_after: float | None) -> float:
    if retry_after is not None:
        return float(retry_after)
    base = min(routing.max_backoff_seconds, routing.backoff_seconds * 2.0 ** (n - 1))
    return base * random.uniform(0.5, 1.5)
