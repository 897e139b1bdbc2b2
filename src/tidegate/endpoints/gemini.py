"""`POST /v1beta/models/{model}:generateContent` and `:streamGenerateContent`: Gemini, inbound
(the format: formats/gemini.py). With `?alt=sse` the stream is SSE; without it, a JSON array."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING

from tidegate.asgi import Request, Send
from tidegate.context import RequestContext
from tidegate.endpoints.chat import serve_chat
from tidegate.errors import NotFound
from tidegate.formats import gemini
from tidegate.formats.gemini import error_body as render_error

if TYPE_CHECKING:
    from tidegate.app import Gateway

__all__ = ["PREFIXES", "handle", "render_error"]

PREFIXES = ("/v1beta/models/", "/v1/models/")  # python-genai uses v1beta; newer releases v1


def handle(gw: Gateway, ctx: RequestContext, request: Request, send: Send) -> Awaitable[None]:
    """Serve generateContent or streamGenerateContent for the model named in the path."""
    prefix = next(p for p in PREFIXES if request.path.startswith(p))
    model, _, method = request.path[len(prefix) :].rpartition(":")
    if not model or method not in ("generateContent", "streamGenerateContent"):
        raise NotFound(f"no route for {request.path}; use models/{{model}}:generateContent")
    body = request.json_object()
    gemini.validate_request(body)
    stream = method == "streamGenerateContent"
    sse = request.query.get("alt") == "sse"
    return serve_chat(
        gw,
        ctx,
        send,
        model=model,
        stream=stream,
        # The upstream is always asked for SSE, so only SSE clients can take its bytes as is.
        wire_format="gemini" if sse or not stream else None,
        body=body,
        canonical=lambda: gemini.request_from_wire(body, model),
        encoder=gemini.GeminiEncoder(model, ctx.request_id, sse=sse),
        render=lambda c: gemini.completion_to_wire(c, model, ctx.request_id),
    )
