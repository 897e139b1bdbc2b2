"""`POST /v1/messages`: the Anthropic Messages API, inbound (the format: formats/anthropic.py)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING

from tidegate.asgi import Request, Send
from tidegate.context import RequestContext
from tidegate.endpoints.chat import serve_chat
from tidegate.formats import anthropic
from tidegate.formats.anthropic import error_body as render_error

if TYPE_CHECKING:
    from tidegate.app import Gateway

__all__ = ["handle", "render_error"]


def handle(gw: Gateway, ctx: RequestContext, request: Request, send: Send) -> Awaitable[None]:
    """Serve one Messages request, streamed or whole (validated here, served by the coroutine)."""
    body = request.json_object()
    valid = anthropic.validate_request(body)
    model = valid.model
    return serve_chat(
        gw,
        ctx,
        send,
        model=model,
        stream=valid.stream,
        wire_format="anthropic",
        body=body,
        canonical=lambda: anthropic.request_from_wire(body),
        encoder=anthropic.AnthropicEncoder(model, ctx.request_id),
        render=lambda c: anthropic.completion_to_wire(c, model, ctx.request_id),
    )
