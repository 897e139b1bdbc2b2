"""`POST /v1/chat/completions` and `GET /v1/models`: the OpenAI wire format, inbound.

When the upstream speaks the same format, the client's body goes upstream with only `model`
replaced, and the response bytes come back untouched (a side parser reads usage and the end).
Otherwise the request becomes a canonical `ChatRequest` and the upstream's events are encoded
as `chat.completion.chunk`s here. Either way the stream follows what the openai SDK reads
(protocols reference §2.5): `data:` lines only, never `event:` or `id:`, an in-band error as
`data: {"error": {...}}`, and `data: [DONE]` last.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import orjson

from tidegate.asgi import Request, Send, send_bytes
from tidegate.context import RequestContext
from tidegate.endpoints.chat import serve_chat
from tidegate.errors import GatewayError
from tidegate.events import (
    ChatRequest,
    Completion,
    Event,
    Finish,
    Message,
    Part,
    ReasoningDelta,
    TextDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from tidegate.formats.base import StreamState
from tidegate.formats.openai_chat import validate_request

if TYPE_CHECKING:
    from tidegate.app import Gateway

# Request fields the canonical request carries; any other non-null field is reported as
# dropped when the request is translated for an upstream of another format.
CARRIED = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "stop",
        "tools",
        "tool_choice",
        "response_format",
        "reasoning_effort",
        "user",
        "n",
        "parallel_tool_calls",
    }
)


def handle_chat(gw: Gateway, ctx: RequestContext, request: Request, send: Send) -> Awaitable[None]:
    """Serve one chat completion, streamed or whole (validated here, served by the coroutine)."""
    body = request.json_object()
    valid = validate_request(body)
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
        canonical=lambda: chat_request_from_openai(body),
        encoder=OpenAIChatEncoder(model, include_usage, ctx.request_id),
        render=lambda c: render_completion(c, model, ctx.request_id),
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


# ---------------------------------------------------------------------------------------------
# Request


def chat_request_from_openai(body: dict[str, Any]) -> ChatRequest:
    """An OpenAI chat request as a canonical request (fields it cannot carry listed).

    `body` has passed `tidegate.formats.openai_chat.validate_request`: every field read here
    has the type the schema gives it."""
    stop = body.get("stop")
    fmt = body.get("response_format") or {}
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        choice = {"name": (choice.get("function") or {}).get("name", "")}
    request = ChatRequest(
        model=body["model"],
        messages=[_message_in(m) for m in body["messages"]],
        stream=bool(body.get("stream")),
        max_tokens=body.get("max_completion_tokens") or body.get("max_tokens"),
        temperature=body.get("temperature"),
        top_p=body.get("top_p"),
        stop=[stop] if isinstance(stop, str) else list(stop or []),
        tools=[
            Tool(
                name=(t.get("function") or {}).get("name", ""),
                description=(t.get("function") or {}).get("description") or "",
                parameters=(t.get("function") or {}).get("parameters") or {},
            )
            for t in body.get("tools") or []
            if isinstance(t, dict)
        ],
        tool_choice=choice,
        json_mode=fmt.get("type") == "json_object",
        json_schema=fmt.get("json_schema") if fmt.get("type") == "json_schema" else None,
        reasoning_effort=body.get("reasoning_effort"),
        include_usage=bool((body.get("stream_options") or {}).get("include_usage")),
        user=body.get("user"),
    )
    request.dropped = sorted(k for k, v in body.items() if k not in CARRIED and v is not None)
    if (body.get("n") or 1) > 1:
        request.dropped.append("n")
    return request


def _message_in(m: dict[str, Any]) -> Message:
    role = m["role"]
    role = "system" if role == "developer" else ("tool" if role == "function" else role)
    content = m.get("content")
    parts: list[Part] = []
    if isinstance(content, str):
        parts.append(Part("text", text=content))
    elif isinstance(content, list):
        for p in content:
            if not isinstance(p, dict):
                continue
            if p.get("type") == "text":
                parts.append(Part("text", text=str(p.get("text") or "")))
            elif p.get("type") == "image_url":
                url = str((p.get("image_url") or {}).get("url") or "")
                parts.append(_image_part(url))
    calls = [
        ToolCall(
            id=str(c.get("id") or ""),
            name=str((c.get("function") or {}).get("name") or ""),
            arguments=str((c.get("function") or {}).get("arguments") or ""),
        )
        for c in m.get("tool_calls") or []
        if isinstance(c, dict)
    ]
    return Message(
        role=role,
        content=parts,
        tool_calls=calls,
        tool_call_id=m.get("tool_call_id") or m.get("name") if role == "tool" else None,
        name=m.get("name") if role != "tool" else None,
        reasoning=m.get("reasoning_content"),
    )


def _image_part(url: str) -> Part:
    if url.startswith("data:") and ";base64," in url:
        head, data = url[5:].split(";base64,", 1)
        return Part("image", media_type=head or "image/png", data=data)
    return Part("image", url=url)


# ---------------------------------------------------------------------------------------------
# Response


def openai_usage(usage: Usage) -> dict[str, Any]:
    """Canonical usage in OpenAI's shape (prompt tokens include cached ones, as OpenAI counts)."""
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def render_completion(c: Completion, model: str, request_id: str) -> bytes:
    """A canonical completion as a `chat.completion` object."""
    message: dict[str, Any] = {"role": "assistant", "content": c.text or None}
    if c.reasoning:
        message["reasoning_content"] = c.reasoning
    if c.tool_calls:
        message["tool_calls"] = [
            {"id": t.id, "type": "function", "function": {"name": t.name, "arguments": t.arguments}}
            for t in c.tool_calls
        ]
    elif message["content"] is None:
        message["content"] = ""
    body: dict[str, Any] = {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": c.finish_reason or "stop"}],
    }
    if c.usage is not None:
        body["usage"] = openai_usage(c.usage)
    return orjson.dumps(body)


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


def error_object(err: GatewayError) -> dict[str, Any]:
    """The OpenAI `error` member for a gateway error."""
    kind = _ERROR_TYPES.get(
        err.status, "api_error" if err.status >= 500 else "invalid_request_error"
    )
    return {"message": err.message, "type": kind, "param": None, "code": err.code}


def render_error(err: GatewayError) -> bytes:
    """The error body before the stream began, in OpenAI's shape."""
    return orjson.dumps({"error": error_object(err)})


class OpenAIChatEncoder:
    """Canonical events to `chat.completion.chunk` events."""

    content_type = b"text/event-stream; charset=utf-8"
    ping = b": ping\n\n"  # safe: this stream never sends `id:` (protocols reference §2.5)
    __slots__ = ("_finish_sent", "_head", "_include_usage", "_role_sent", "_tools_seen")

    def __init__(self, model: str, include_usage: bool, request_id: str):
        self._head = (
            b'data: {"id":"chatcmpl-'
            + request_id.encode()
            + b'","object":"chat.completion.chunk","created":'
            + str(int(time.time())).encode()
            + b',"model":'
            + orjson.dumps(model)
            + b',"choices":'
        )
        self._include_usage = include_usage
        self._role_sent = False
        self._finish_sent = False
        self._tools_seen: set[int] = set()

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return self._head + orjson.dumps([choice]) + b"}\n\n"

    def encode(self, events: list[Event]) -> bytes:
        out: list[bytes] = []
        if not self._role_sent:
            self._role_sent = True
            out.append(self._chunk({"role": "assistant", "content": ""}))
        for e in events:
            if isinstance(e, TextDelta):
                out.append(self._chunk({"content": e.text}))
            elif isinstance(e, ReasoningDelta):
                out.append(self._chunk({"reasoning_content": e.text}))
            elif isinstance(e, ToolCallDelta):
                call: dict[str, Any] = {"index": e.index}
                if e.index not in self._tools_seen:
                    self._tools_seen.add(e.index)
                    call["id"] = e.id or f"call_{e.index}"
                    call["type"] = "function"
                    call["function"] = {"name": e.name or "", "arguments": e.arguments}
                else:
                    call["function"] = {"arguments": e.arguments}
                out.append(self._chunk({"tool_calls": [call]}))
            elif isinstance(e, Finish) and not self._finish_sent:
                self._finish_sent = True
                out.append(self._chunk({}, e.reason))
        return b"".join(out)

    def error(self, err: GatewayError) -> bytes:
        return b"data: " + orjson.dumps({"error": error_object(err)}) + b"\n\n"

    def end(self, state: StreamState) -> bytes:
        out = b""
        if state.error is None:
            out += self.encode([])  # the role chunk, if nothing else was sent
            if not self._finish_sent:
                out += self._chunk({}, state.finish_reason or "stop")
        if self._include_usage and state.usage is not None:
            usage = orjson.dumps(openai_usage(state.usage))
            out += self._head + b'[],"usage":' + usage + b"}\n\n"
        return out + b"data: [DONE]\n\n"
