"""`POST /v1/messages`: the Anthropic Messages API, inbound.

The stream uses named events only, as anthropic-python requires (it drops nameless events):
`message_start`, a `ping`, per block `content_block_start` / `_delta` / `_stop`,
`message_delta` with the stop reason and cumulative usage, `message_stop`. An error after the
stream began is `event: error` with `{"type":"error","error":{"type","message"}}`, after which
the connection closes.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import orjson

from tidegate.asgi import Request, Send
from tidegate.context import RequestContext
from tidegate.endpoints.chat import serve_chat
from tidegate.errors import GatewayError, UpstreamError
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
    UsageUpdate,
    arguments_object,
)
from tidegate.formats.anthropic import validate_request
from tidegate.formats.base import StreamState
from tidegate.providers.anthropic import FINISH_TO_STOP, usage_to_anthropic

if TYPE_CHECKING:
    from tidegate.app import Gateway

CARRIED = frozenset(
    {
        "model",
        "messages",
        "system",
        "max_tokens",
        "stream",
        "temperature",
        "top_p",
        "top_k",
        "stop_sequences",
        "tools",
        "tool_choice",
        "thinking",
        "metadata",
    }
)
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_KNOWN_TYPES = set(ERROR_TYPES.values()) | {"api_error", "billing_error"}


def handle(gw: Gateway, ctx: RequestContext, request: Request, send: Send) -> Awaitable[None]:
    """Serve one Messages request, streamed or whole (validated here, served by the coroutine)."""
    body = request.json_object()
    valid = validate_request(body)
    model = valid.model
    return serve_chat(
        gw,
        ctx,
        send,
        model=model,
        stream=valid.stream,
        wire_format="anthropic",
        body=body,
        canonical=lambda: chat_request_from_anthropic(body),
        encoder=AnthropicEncoder(model, ctx.request_id),
        render=lambda c: render_message(c, model, ctx.request_id),
    )


def chat_request_from_anthropic(body: dict[str, Any]) -> ChatRequest:
    """A Messages request as a canonical request (fields it cannot carry listed).

    `body` has passed `tidegate.formats.anthropic.validate_request`: every field read here has
    the type the schema gives it."""
    dropped = sorted(k for k, v in body.items() if k not in CARRIED and v is not None)
    messages: list[Message] = []
    system = body.get("system")
    if isinstance(system, list):
        system = "\n\n".join(str(b.get("text") or "") for b in system if isinstance(b, dict))
        if any(isinstance(b, dict) and b.get("cache_control") for b in body["system"]):
            dropped.append("cache_control")
    if system:
        messages.append(Message("system", [Part("text", text=str(system))]))
    for m in body["messages"]:
        messages += _messages_in(m, dropped)
    tools: list[Tool] = []
    for t in body.get("tools") or []:
        if not isinstance(t, dict):
            continue
        if t.get("type") not in (None, "custom"):
            dropped.append(f"tools[{t.get('type')}]")
            continue
        tools.append(
            Tool(
                str(t.get("name") or ""),
                str(t.get("description") or ""),
                t.get("input_schema") or {},
            )
        )
    choice_in = body.get("tool_choice") or {}
    kind = choice_in.get("type") if isinstance(choice_in, dict) else None
    choice: str | dict[str, Any] | None = {"auto": "auto", "any": "required", "none": "none"}.get(
        kind or ""
    )
    if kind == "tool":
        choice = {"name": choice_in.get("name", "")}
    thinking = body.get("thinking") or {}
    budget = thinking.get("budget_tokens") if thinking.get("type") == "enabled" else None
    stop = body.get("stop_sequences") or []
    return ChatRequest(
        model=body["model"],
        messages=messages,
        stream=bool(body.get("stream")),
        max_tokens=body.get("max_tokens"),
        temperature=body.get("temperature"),
        top_p=body.get("top_p"),
        top_k=body.get("top_k"),
        stop=[str(s) for s in stop] if isinstance(stop, list) else [],
        tools=tools,
        tool_choice=choice,
        reasoning_budget=budget if isinstance(budget, int) else None,
        user=(body.get("metadata") or {}).get("user_id"),
        dropped=sorted(set(dropped)),
    )


def _messages_in(m: dict[str, Any], dropped: list[str]) -> list[Message]:
    content = m["content"]
    if isinstance(content, str):
        return [Message(m["role"], [Part("text", text=content)])]
    out: list[Message] = []
    message = Message(m["role"])
    reasoning: list[str] = []
    for block in content:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if block.get("cache_control"):
            dropped.append("cache_control")
        if kind == "text":
            message.content.append(Part("text", text=str(block.get("text") or "")))
        elif kind == "image":
            source = block["source"]
            if source["type"] == "url":
                message.content.append(Part("image", url=source["url"]))
            elif source["type"] == "base64":
                message.content.append(
                    Part("image", media_type=source["media_type"], data=source["data"])
                )
            else:
                dropped.append(f"content[image.source.{source['type']}]")
        elif kind == "tool_use":
            args = orjson.dumps(block.get("input") or {}).decode()
            message.tool_calls.append(ToolCall(str(block.get("id")), str(block.get("name")), args))
        elif kind == "tool_result":
            result = block.get("content")
            if isinstance(result, list):
                result = "\n".join(str(b.get("text") or "") for b in result if isinstance(b, dict))
            text = str(result or "")
            if block.get("is_error"):
                text = f"Error: {text}"
            out.append(
                Message("tool", [Part("text", text=text)], tool_call_id=block.get("tool_use_id"))
            )
        elif kind == "thinking":
            reasoning.append(str(block.get("thinking") or ""))
        else:
            dropped.append(f"content[{kind}]")
    if reasoning:
        message.reasoning = "".join(reasoning)
    if message.content or message.tool_calls or not out:
        out.append(message)
    return out


def error_type(err: GatewayError) -> str:
    """The Anthropic error type for a gateway error."""
    upstream = getattr(err, "upstream_type", None)
    if isinstance(err, UpstreamError) and upstream in _KNOWN_TYPES:
        return str(upstream)
    return ERROR_TYPES.get(err.status, "api_error")


def render_error(err: GatewayError) -> bytes:
    """The error body before the stream began, in Anthropic's shape."""
    return orjson.dumps(
        {"type": "error", "error": {"type": error_type(err), "message": err.message}}
    )


def render_message(c: Completion, model: str, request_id: str) -> bytes:
    """A canonical completion as an Anthropic `message` object."""
    content: list[dict[str, Any]] = []
    if c.reasoning:
        content.append({"type": "thinking", "thinking": c.reasoning, "signature": ""})
    if c.text or not c.tool_calls:
        content.append({"type": "text", "text": c.text})
    for call in c.tool_calls:
        content.append(
            {
                "type": "tool_use",
                "id": call.id,
                "name": call.name,
                "input": arguments_object(call.arguments),
            }
        )
    body = {
        "id": f"msg_{request_id}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": FINISH_TO_STOP.get(c.finish_reason or "stop", "end_turn"),
        "stop_sequence": None,
        "usage": usage_to_anthropic(c.usage)
        if c.usage
        else {"input_tokens": 0, "output_tokens": 0},
    }
    return orjson.dumps(body)


def _event(name: bytes, payload: dict[str, Any]) -> bytes:
    return b"event: " + name + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


class AnthropicEncoder:
    """Canonical events to Anthropic Messages stream events."""

    content_type = b"text/event-stream; charset=utf-8"
    ping = b'event: ping\ndata: {"type": "ping"}\n\n'
    __slots__ = (
        "_block",
        "_index",
        "_model",
        "_request_id",
        "_started",
        "_stop",
        "_tools",
        "_usage",
    )

    def __init__(self, model: str, request_id: str):
        self._model = model
        self._request_id = request_id
        self._started = False
        self._block: str | None = None  # kind of the open block: text, thinking or tool
        self._index = -1
        self._tools: dict[int, int] = {}  # canonical tool index -> block index
        self._stop: str | None = None
        self._usage: Any = None

    def _start(self, events: list[Event]) -> bytes:
        self._started = True
        usage = next((e.usage for e in events if isinstance(e, UsageUpdate)), None)
        start_usage = (
            usage_to_anthropic(usage) if usage else {"input_tokens": 0, "output_tokens": 0}
        )
        message: dict[str, Any] = {
            "id": f"msg_{self._request_id}",
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": start_usage,
        }
        return _event(b"message_start", {"type": "message_start", "message": message}) + _event(
            b"ping", {"type": "ping"}
        )

    def _open(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close()
        self._index += 1
        self._block = kind
        return out + _event(
            b"content_block_start",
            {"type": "content_block_start", "index": self._index, "content_block": block},
        )

    def _close(self) -> bytes:
        if self._block is None:
            return b""
        self._block = None
        return _event(b"content_block_stop", {"type": "content_block_stop", "index": self._index})

    def _delta(self, index: int, delta: dict[str, Any]) -> bytes:
        return _event(
            b"content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
        )

    def encode(self, events: list[Event]) -> bytes:
        out: list[bytes] = [] if self._started else [self._start(events)]
        for e in events:
            if isinstance(e, TextDelta):
                if self._block != "text":
                    out.append(self._open("text", {"type": "text", "text": ""}))
                out.append(self._delta(self._index, {"type": "text_delta", "text": e.text}))
            elif isinstance(e, ReasoningDelta):
                if self._block != "thinking":
                    out.append(
                        self._open(
                            "thinking", {"type": "thinking", "thinking": "", "signature": ""}
                        )
                    )
                if e.text:
                    out.append(
                        self._delta(self._index, {"type": "thinking_delta", "thinking": e.text})
                    )
                if e.signature:
                    out.append(
                        self._delta(
                            self._index, {"type": "signature_delta", "signature": e.signature}
                        )
                    )
            elif isinstance(e, ToolCallDelta):
                if e.index not in self._tools:
                    block = {
                        "type": "tool_use",
                        "id": e.id or f"toolu_{e.index}",
                        "name": e.name or "",
                        "input": {},
                    }
                    out.append(self._open("tool", block))
                    self._tools[e.index] = self._index
                if e.arguments:
                    delta = {"type": "input_json_delta", "partial_json": e.arguments}
                    out.append(self._delta(self._tools[e.index], delta))
            elif isinstance(e, Finish):
                self._stop = FINISH_TO_STOP.get(e.reason, "end_turn")
            elif isinstance(e, UsageUpdate):
                self._usage = e.usage
        return b"".join(out)

    def error(self, err: GatewayError) -> bytes:
        out = b"" if self._started else self._start([])
        payload = {"type": "error", "error": {"type": error_type(err), "message": err.message}}
        return out + _event(b"error", payload)

    def end(self, state: StreamState) -> bytes:
        if state.error is not None:
            return b""  # the error event ends an Anthropic stream
        out = (b"" if self._started else self._start([])) + self._close()
        usage = state.usage or self._usage
        stop = self._stop or FINISH_TO_STOP.get(state.finish_reason or "stop", "end_turn")
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": None},
            "usage": usage_to_anthropic(usage) if usage else {"output_tokens": 0},
        }
        return (
            out
            + _event(b"message_delta", delta)
            + _event(b"message_stop", {"type": "message_stop"})
        )
