"""The flow every chat endpoint shares: pass-through or translation, streamed or whole.

An endpoint module validates its own request format, then hands over here with its encoder
(canonical events to its wire format) and renderer (a whole completion in its format). For each
deployment tried, when the upstream speaks the endpoint's wire format the body goes upstream as
it came (only the model replaced) and the answer comes back untouched; otherwise the request
is translated through the canonical `ChatRequest` and the answer through canonical events.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from tidegate.asgi import Send, send_bytes
from tidegate.context import RequestContext
from tidegate.events import ChatRequest, Completion
from tidegate.formats.base import StreamEncoder
from tidegate.providers.base import Provider, UpstreamCall
from tidegate.relay import relay_complete, relay_stream

if TYPE_CHECKING:
    from tidegate.app import Gateway


def serve_chat(
    gw: Gateway,
    ctx: RequestContext,
    send: Send,
    *,
    model: str,
    stream: bool,
    wire_format: str | None,
    body: dict[str, Any],
    canonical: Callable[[], ChatRequest],
    encoder: StreamEncoder,
    render: Callable[[Completion], bytes],
) -> Awaitable[None]:
    """The coroutine serving one chat request. `wire_format=None` means never pass through."""
    gw.router.group(model)  # 404 before anything else
    ctx.model, ctx.stream = model, stream
    translated: list[ChatRequest] = []

    def prepare(provider: Provider) -> tuple[UpstreamCall, bool]:
        if wire_format is not None and provider.wire_format == wire_format:
            return provider.build_passthrough(dict(body), stream), True
        if not translated:
            translated.append(canonical())
        chat = translated[0]
        chat.stream = stream
        call = provider.build_call(chat)
        call.dropped = chat.dropped + call.dropped
        return call, False

    if stream:
        return relay_stream(ctx, gw.router, model, prepare, encoder, send, gw.config)
    return _serve_whole(gw, ctx, send, model, prepare, render)


async def _serve_whole(
    gw: Gateway,
    ctx: RequestContext,
    send: Send,
    model: str,
    prepare: Callable[[Provider], tuple[UpstreamCall, bool]],
    render: Callable[[Completion], bytes],
) -> None:
    routing = gw.config.routing
    passthrough, raw, completion = await relay_complete(ctx, gw.router, model, prepare, routing)
    # Every byte a client receives is redacted, a pass-through body's included.
    out = ctx.redact_bytes(raw if passthrough else render(completion))
    ctx.status = 200
    ctx.mark_first_byte()
    try:
        async with asyncio.timeout(gw.config.limits.write_timeout):
            await send_bytes(send, 200, out, headers=ctx.response_headers())
    except TimeoutError:
        ctx.error_code = "client_stalled"
