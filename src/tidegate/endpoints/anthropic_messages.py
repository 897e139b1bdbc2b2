"""`POST /v1/messages`: the Anthropic Messages API, inbound (the format: formats/anthropic.py)."""

from __future__ import annotations

from tidegate.asgi import Request
from tidegate.context import RequestContext
from tidegate.endpoints.base import ChatCall, ChatEndpoint
from tidegate.endpoints.chat import chat_routes
from tidegate.formats import anthropic
from tidegate.services import Services


class AnthropicMessages(ChatEndpoint):
    """Messages requests, answered as `message` objects or named stream events."""

    render_error = staticmethod(anthropic.error_body)
    key_hint = "'x-api-key: <key>' (the anthropic SDK's api_key) or 'Authorization: Bearer <key>'"

    def read(self, services: Services, ctx: RequestContext, request: Request) -> ChatCall:
        body = request.json_object()
        valid = anthropic.validate_request(body)
        model = valid.model
        return ChatCall(
            model=model,
            stream=valid.stream,
            canonical=lambda: anthropic.request_from_wire(body),
            encoder=anthropic.AnthropicEncoder(model, ctx.request_id),
            render=lambda c: anthropic.completion_to_wire(c, model, ctx.request_id),
            body=body,
            wire_format="anthropic",
        )


ROUTES = chat_routes(AnthropicMessages(), ("POST", "/v1/messages"))
