"""`POST /v1/chat/completions`, `GET /v1/models` and `GET /v1/models/{model}`: the OpenAI wire
format, inbound (the format: formats/openai_chat.py). When the upstream speaks the same format,
the client's body goes upstream with only `model` replaced, and the answer comes back
untouched."""

from __future__ import annotations

from typing import Any

import orjson

from tidegate.asgi import Request, Send, send_bytes
from tidegate.context import RequestContext
from tidegate.endpoints.base import ChatCall, ChatEndpoint, Route
from tidegate.endpoints.chat import chat_routes
from tidegate.errors import UnknownModel
from tidegate.formats import openai_chat
from tidegate.services import Services


class OpenAIChatCompletions(ChatEndpoint):
    """Chat completions, answered whole or as `chat.completion.chunk` events."""

    render_error = staticmethod(openai_chat.error_body)

    def read(self, services: Services, ctx: RequestContext, request: Request) -> ChatCall:
        body = request.json_object()
        valid = openai_chat.validate_request(body)
        model = valid.model
        options = valid.stream_options
        include_usage = bool(options is not None and options.include_usage)
        return ChatCall(
            model=model,
            stream=bool(valid.stream),
            canonical=lambda: openai_chat.request_from_wire(body),
            encoder=openai_chat.OpenAIChatEncoder(model, include_usage, ctx.request_id),
            render=lambda c: openai_chat.completion_to_wire(c, model, ctx.request_id),
            body=body,
            wire_format="openai",
        )


def _model_object(services: Services, name: str) -> dict[str, Any]:
    owner = services.router.group(name)[0].provider.name
    return {"id": name, "object": "model", "created": 0, "owned_by": owner}


async def list_models(
    services: Services, ctx: RequestContext, request: Request, send: Send
) -> None:
    """Every configured model the key may use, in OpenAI's list format."""
    data = [_model_object(services, name) for name in _visible(services, ctx)]
    ctx.status = 200
    body = orjson.dumps({"object": "list", "data": data})
    await send_bytes(send, 200, body, headers=ctx.headers_out)


async def get_model(services: Services, ctx: RequestContext, request: Request, send: Send) -> None:
    """One configured model the key may use, or 404 in OpenAI's error format."""
    name = request.params["model"]
    visible = _visible(services, ctx)
    if name not in visible:
        raise UnknownModel(name, visible)
    ctx.status = 200
    await send_bytes(
        send, 200, orjson.dumps(_model_object(services, name)), headers=ctx.headers_out
    )


def _visible(services: Services, ctx: RequestContext) -> list[str]:
    """The model names the request's key may use (all of them for a key without a list)."""
    names = services.router.names()
    identity = ctx.identity
    return names if identity is None else [n for n in names if identity.may_use(n)]


ROUTES = [
    *chat_routes(OpenAIChatCompletions(), ("POST", "/v1/chat/completions")),
    Route("GET", "/v1/models", list_models, openai_chat.error_body),
    Route("GET", "/v1/models/{model}", get_model, openai_chat.error_body),
]
