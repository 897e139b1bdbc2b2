"""The flow every chat endpoint shares: pass-through or translation, streamed or whole.

An endpoint module validates its own request format, then hands over here with its encoder
(canonical events to its wire format) and renderer (a whole completion in its format). When the
model's upstream speaks the endpoint's wire format the body goes upstream as it came (only the
model replaced) and the answer comes back untouched; otherwise the request is translated
through the canonical `ChatRequest` and the answer through canonical events.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tidegate.asgi import Send, send_bytes
from tidegate.context import RequestContext
from tidegate.events import ChatRequest, Completion
from tidegate.relay import StreamEncoder, relay_complete, relay_stream

if TYPE_CHECKING:
    from tidegate.app import Gateway


async def serve_chat(
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
) -> None:
    """Serve one chat request. `wire_format=None` means never pass through."""
    provider = gw.deployment(model)
    ctx.model, ctx.upstream, ctx.stream = model, provider.label, stream
    passthrough = wire_format is not None and provider.wire_format == wire_format
    if passthrough:
        call = provider.build_passthrough(body, stream)
    else:
        chat = canonical()
        chat.stream = stream
        call = provider.build_call(chat)
        call.dropped = chat.dropped + call.dropped
    gw.note_dropped(ctx, call.dropped)
    if stream:
        await relay_stream(ctx, provider, call, encoder, send, passthrough=passthrough)
        return
    raw = await relay_complete(ctx, provider, call)
    if passthrough:
        completion = provider.usage_of_body(raw)
        out = raw
    else:
        completion = provider.parse_completion(raw)
        out = render(completion)
    ctx.usage, ctx.finish_reason = completion.usage, completion.finish_reason
    ctx.status = 200
    ctx.mark_first_byte()
    await send_bytes(send, 200, out, headers=ctx.headers_out)
