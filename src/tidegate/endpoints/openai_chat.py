"""`POST /v1/chat/completions` and `GET /v1/models`: the OpenAI wire format, inbound (the format:
formats/openai_chat.py). When the upstream speaks the same format, the client's body goes
upstream with only `model` replaced, and the response bytes come back untouched."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING

import orjson

from tidegate.asgi import Request, Send, send_bytes
from tidegate.context import RequestContext
from tidegate.endpoints.chat import serve_chat
from tidegate.formats import openai_chat
from tidegate.formats.openai_chat import error_body as render_error

if TYPE_CHECKING:
    from tidegate.app import Gateway

__all__ = ["handle_chat", "handle_models", "render_error"]


def handle_chat(gw: Gateway, ctx: RequestContext, request: Request, send: Send) -> Awaitable[None]:
    """Serve one chat completion, streamed or whole (validated here, served by the coroutine)."""
    body = request.json_object()
    valid = openai_chat.validate_request(body)
    model = valid.model
    options = valid.stream_options
    include_usage = bool(options is not None and options.include_usage)
    return serve_chat(
        gw,
        ctx,
        send,
        model=model,
        stream=bool(valid.stream),
        wire_format="openai",
        body=body,
        canonical=lambda: openai_chat.request_from_wire(body),
        encoder=openai_chat.OpenAIChatEncoder(model, include_usage, ctx.request_id),
        render=lambda c: openai_chat.completion_to_wire(c, model, ctx.request_id),
    )


async def handle_models(gw: Gateway, ctx: RequestContext, request: Request, send: Send) -> None:
    """List the configured model names in OpenAI's format."""
    data = [
        {"id": name, "object": "model", "created": 0, "owned_by": group[0].provider.name}
        for name, group in gw.router.groups.items()
    ]
    ctx.status = 200
    await send_bytes(
        send, 200, orjson.dumps({"object": "list", "data": data}), headers=ctx.headers_out
    )
