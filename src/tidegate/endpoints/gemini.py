"""`POST /v1beta/models/{model}:generateContent` and `:streamGenerateContent`: Gemini, inbound
(the format: formats/gemini.py). With `?alt=sse` the stream is SSE; without it, a JSON array.
python-genai calls `/v1beta/...`; newer releases call `/v1/...`: both are served."""

from __future__ import annotations

from tidegate.asgi import Request
from tidegate.context import RequestContext
from tidegate.endpoints.base import ChatCall, ChatEndpoint
from tidegate.endpoints.chat import chat_routes
from tidegate.errors import NotFound
from tidegate.formats import gemini
from tidegate.services import Services

METHODS = ("generateContent", "streamGenerateContent")


class GeminiGenerateContent(ChatEndpoint):
    """generateContent and streamGenerateContent for the model named in the path."""

    render_error = staticmethod(gemini.error_body)
    key_hint = "'x-goog-api-key: <key>' (the google-genai SDK's api_key) or '?key=<key>'"

    def read(self, services: Services, ctx: RequestContext, request: Request) -> ChatCall:
        model, method = request.params["model"], request.params["method"]
        if method not in METHODS:
            raise NotFound(f"no route for {request.path}; use models/{{model}}:generateContent")
        body = request.json_object()
        gemini.validate_request(body)
        stream = method == "streamGenerateContent"
        sse = request.query.get("alt") == "sse"
        return ChatCall(
            model=model,
            stream=stream,
            canonical=lambda: gemini.request_from_wire(body, model),
            encoder=gemini.GeminiEncoder(model, ctx.request_id, sse=sse),
            render=lambda c: gemini.completion_to_wire(c, model, ctx.request_id),
            body=body,
            # The upstream is always asked for SSE, so only SSE clients take its bytes as is.
            wire_format="gemini" if sse or not stream else None,
        )


ROUTES = chat_routes(
    GeminiGenerateContent(),
    ("POST", "/v1beta/models/{model}:{method}"),
    ("POST", "/v1/models/{model}:{method}"),
)
