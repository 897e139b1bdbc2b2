"""The flow every chat API shares: pass-through or translation, streamed or whole.

An endpoint reads its request into a `ChatCall` (endpoints/base.py); `serve_chat` does the
rest. For each deployment tried, when the upstream speaks the endpoint's wire format the body
goes upstream as it came (only the model replaced) and the answer comes back untouched;
otherwise the request is translated through the canonical `ChatRequest` and the answer through
canonical events.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from tidegate.asgi import Request, Send, send_bytes
from tidegate.auth import Identity
from tidegate.context import RequestContext
from tidegate.endpoints.base import ChatCall, ChatEndpoint, Route
from tidegate.events import ChatRequest
from tidegate.failover import Prepare
from tidegate.limits import counted
from tidegate.providers.base import Provider
from tidegate.providers.http import UpstreamCall
from tidegate.relay import relay_complete, relay_stream
from tidegate.services import Services
from tidegate.settings import KeyPolicy


def chat_routes(endpoint: ChatEndpoint, *paths: tuple[str, str]) -> list[Route]:
    """Routes serving `endpoint` at each (method, path) through `serve_chat`."""

    def handle(
        services: Services, ctx: RequestContext, request: Request, send: Send
    ) -> Awaitable[None]:
        return serve_chat(services, ctx, endpoint.read(services, ctx, request), send)

    return [
        Route(method, path, handle, endpoint.render_error, key_hint=endpoint.key_hint)
        for method, path in paths
    ]


def serve_chat(
    services: Services, ctx: RequestContext, call: ChatCall, send: Send
) -> Awaitable[None]:
    """The coroutine serving one chat request: an unknown model is a 404 before anything; its
    ledger row begins here; a key with a policy is checked against its models (403) and limits
    (429) before any upstream is contacted."""
    services.router.group(call.model)
    ctx.model, ctx.stream = call.model, call.stream
    services.ledger_begin(ctx)
    identity = ctx.identity
    policy = identity.policy if identity is not None else None
    if policy is not None:
        assert identity is not None
        services.limits.check_model(identity, policy, call.model)
        if counted(policy):
            return _serve_limited(services, ctx, call, send, identity, policy)
    return _serve(services, ctx, call, send)


async def _serve_limited(
    services: Services,
    ctx: RequestContext,
    call: ChatCall,
    send: Send,
    identity: Identity,
    policy: KeyPolicy,
) -> None:
    """Serve a request of a key with limits: admitted (or 403/429) first, its lease ended
    however the request ends — success, error, disconnect, cancel, shutdown."""
    lease = ctx.lease = await services.limits.admit(identity, policy, call.model)
    try:
        serving = _serve(services, ctx, call, send)
        del call  # an open stream keeps nothing of the request (failover.open_stream)
        await serving
        ctx.answered()
    finally:
        await lease.end(ctx.usage, ctx.deployment)


def _serve(services: Services, ctx: RequestContext, call: ChatCall, send: Send) -> Awaitable[None]:
    """The coroutine serving one checked chat request."""
    translated: list[ChatRequest] = []

    def prepare(provider: Provider) -> tuple[UpstreamCall, bool]:
        if call.body is not None and provider.wire_format == call.wire_format:
            return provider.build_passthrough(dict(call.body), call.stream), True
        if not translated:
            translated.append(call.canonical())
            translated[0].inbound = call.body
        chat = translated[0]
        chat.stream = call.stream
        upstream = provider.build_call(chat)
        upstream.dropped = chat.dropped + upstream.dropped
        if call.dropped_for is not None:
            upstream.dropped = call.dropped_for(provider, upstream.dropped)
        return upstream, False

    if call.stream:
        return relay_stream(services, ctx, call.model, prepare, call.encoder, send)
    return _serve_whole(services, ctx, call, prepare, send)


async def _serve_whole(
    services: Services,
    ctx: RequestContext,
    call: ChatCall,
    prepare: Prepare,
    send: Send,
) -> None:
    config = services.config
    passthrough, raw, completion = await relay_complete(services, ctx, call.model, prepare)
    # Every byte a client receives is redacted, a pass-through body's included.
    out = ctx.redact_bytes(raw if passthrough else call.render(completion))
    ctx.status = 200
    ctx.mark_first_byte()
    if ctx.sends_at_once():  # written at once: there is nothing to put a deadline on
        await send_bytes(send, 200, out, headers=ctx.response_headers())
        return
    try:
        async with asyncio.timeout(config.limits.write_timeout):
            await send_bytes(send, 200, out, headers=ctx.response_headers())
    except TimeoutError:
        ctx.error_code = "client_stalled"
