"""`POST /v1/responses`: the OpenAI Responses API, inbound (the format:
formats/openai_responses.py). When the upstream speaks the same format, the client's body goes
upstream with only `model` replaced, and the answer comes back untouched; otherwise the answer
is a `response` object or its stream of events, written by the gateway."""

from __future__ import annotations

from tidegate.asgi import Request
from tidegate.context import RequestContext
from tidegate.endpoints.base import ChatCall, ChatEndpoint
from tidegate.endpoints.chat import chat_routes
from tidegate.formats import openai_responses
from tidegate.services import Services


class OpenAIResponses(ChatEndpoint):
    """Responses requests, answered as `response` objects or Responses stream events."""

    render_error = staticmethod(openai_responses.error_body)

    def read(self, services: Services, ctx: RequestContext, request: Request) -> ChatCall:
        """The validated body (400 naming the field), its encoder and renderer, which repeat
        the request's settings in the `response` object as the API does."""
        body = request.json_object()
        valid = openai_responses.validate_request(body)
        model = valid.model
        echo = openai_responses.response_echo(body)
        request_id = ctx.request_id
        return ChatCall(
            model=model,
            stream=bool(valid.stream),
            canonical=lambda: openai_responses.request_from_wire(body),
            encoder=openai_responses.ResponsesEncoder(model, request_id, echo),
            render=lambda c: openai_responses.completion_to_wire(c, model, request_id, echo),
            body=body,
            wire_format=openai_responses.WIRE_FORMAT,
        )


ROUTES = chat_routes(OpenAIResponses(), ("POST", "/v1/responses"))
