"""The Anthropic Messages format, both ways: its whole vocabulary in one module.

- **Requests**: the inbound schema (`validate_request`: every field the gateway reads, with
  Anthropic's types; anything else passes through), `request_from_wire` (a Messages request as
  a canonical `ChatRequest`, with the fields it cannot carry) and `request_to_wire` (the body
  sent to an Anthropic upstream).
- **Responses**: `completion_from_wire` / `completion_to_wire` for whole `message` objects.
- **Streams**: named events only (anthropic-python drops nameless ones): `message_start`, a
  `ping`, per content block `content_block_start` / `content_block_delta` (`text_delta`,
  `input_json_delta`, `thinking_delta`, `signature_delta`) / `content_block_stop`, then
  `message_delta` (stop reason, cumulative usage) and `message_stop`; `error` for a failure
  inside a 200 stream, after which the connection closes. `AnthropicStreamParser` reads them,
  `AnthropicEncoder` writes them.
- **Usage**: Anthropic's `input_tokens` excludes cache reads and writes; the canonical input
  counts all three. **Stop reasons** and **error types** map to the canonical vocabulary in the
  tables below.

The module is longer than most (a schema and a codec of a rich format): splitting it would put
one format's vocabulary in two places, which is what this package exists to avoid.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import Field, Tag

from tidegate.errors import GatewayError, UpstreamError, UpstreamStatusError
from tidegate.events import (
    ChatRequest,
    Completion,
    Event,
    Finish,
    Message,
    Part,
    ReasoningDelta,
    StreamError,
    TextDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageUpdate,
    arguments_object,
)
from tidegate.formats.base import (
    SKIPPABLE,
    PassthroughFilter,
    SSEStreamParser,
    StreamParser,
    StreamState,
    loads_object,
    reasoning_budget,
    status_for_error_type,
    upstream_error_body,
)
from tidegate.formats.common import (
    MAX_MESSAGES,
    MAX_PARTS,
    MAX_STOP,
    MAX_TOOLS,
    Inbound,
    Schema,
    by_kind,
    by_type,
    colon_wording,
)
from tidegate.sse import DEFAULT_MAX_EVENT_BYTES, SSEDecoder, SSEEvent, encode_event

INT32_MAX = 2**31 - 1


class _Block(Inbound):
    cache_control: dict[str, Any] | None = None


class TextBlock(_Block):
    """`{"type": "text", "text": ...}`."""

    type: Literal["text"]
    text: str


class Base64Source(Inbound):
    """Image data inline, base64-encoded."""

    type: Literal["base64"]
    media_type: str
    data: str


class URLSource(Inbound):
    """An image by URL."""

    type: Literal["url"]
    url: str


class OtherSource(Inbound):
    """An image source the gateway passes through but does not translate (a file id)."""

    type: str


ImageSource = Annotated[
    Annotated[Base64Source, Tag("<base64>")]
    | Annotated[URLSource, Tag("<url>")]
    | Annotated[OtherSource, Tag("<other>")],
    by_type(frozenset({"base64", "url"}), "an image source object"),
]


class ImageBlock(_Block):
    """`{"type": "image", "source": {...}}`."""

    type: Literal["image"]
    source: ImageSource


class ToolUseBlock(_Block):
    """A tool call the assistant made."""

    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


class OtherBlock(_Block):
    """A content block the gateway passes through but does not translate."""

    type: str


ResultBlock = Annotated[
    Annotated[TextBlock, Tag("<text>")]
    | Annotated[ImageBlock, Tag("<image>")]
    | Annotated[OtherBlock, Tag("<other>")],
    by_type(frozenset({"text", "image"}), "a content block object"),
]
ResultContent = Annotated[
    Annotated[str, Tag("<string>")]
    | Annotated[list[ResultBlock], Tag("<array>"), Field(max_length=MAX_PARTS)],
    by_kind("a string or an array of content blocks"),
]


class ToolResultBlock(_Block):
    """The result of a tool call, in a user message."""

    type: Literal["tool_result"]
    tool_use_id: str
    content: ResultContent | None = None
    is_error: bool | None = None


class ThinkingBlock(_Block):
    """Earlier visible reasoning of the assistant."""

    type: Literal["thinking"]
    thinking: str
    signature: str | None = None


ContentBlock = Annotated[
    Annotated[TextBlock, Tag("<text>")]
    | Annotated[ImageBlock, Tag("<image>")]
    | Annotated[ToolUseBlock, Tag("<tool_use>")]
    | Annotated[ToolResultBlock, Tag("<tool_result>")]
    | Annotated[ThinkingBlock, Tag("<thinking>")]
    | Annotated[OtherBlock, Tag("<other>")],
    by_type(
        frozenset({"text", "image", "tool_use", "tool_result", "thinking"}),
        "a content block object",
    ),
]
Content = Annotated[
    Annotated[str, Tag("<string>")]
    | Annotated[list[ContentBlock], Tag("<array>"), Field(max_length=MAX_PARTS)],
    by_kind("a string or an array of content blocks"),
]
System = Annotated[
    Annotated[str, Tag("<string>")]
    | Annotated[list[TextBlock], Tag("<array>"), Field(max_length=MAX_PARTS)],
    by_kind("a string or an array of text blocks"),
]


class WireMessage(Inbound):
    """One turn of the conversation."""

    role: Literal["user", "assistant"]
    content: Content


class WireTool(Inbound):
    """A client tool (`input_schema` given), or a server tool with a `type`, passed through."""

    type: str | None = None
    name: str
    description: str | None = None
    input_schema: dict[str, Any] | None = None


class ToolChoice(Inbound):
    """`{"type": "auto" | "any" | "none"}` or `{"type": "tool", "name": ...}`."""

    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Thinking(Inbound):
    """Extended thinking: `{"type": "enabled", "budget_tokens": N}` or disabled."""

    type: str
    budget_tokens: Annotated[int, Field(le=INT32_MAX)] | None = None


class Metadata(Inbound):
    """Request metadata: an opaque user id."""

    user_id: str | None = None


class MessagesRequest(Inbound):
    """A Messages request, as much of it as the gateway reads."""

    model: Annotated[str, Field(min_length=1)]
    max_tokens: Annotated[int, Field(ge=1)]
    messages: Annotated[list[WireMessage], Field(min_length=1, max_length=MAX_MESSAGES)]
    system: System | None = None
    stream: bool = False
    temperature: Annotated[float, Field(ge=0, le=1)] | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop_sequences: Annotated[list[str], Field(max_length=MAX_STOP)] | None = None
    tools: Annotated[list[WireTool], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    metadata: Metadata | None = None


SCHEMA = Schema(
    MessagesRequest,
    wording=colon_wording,
    hints={
        "model": "a non-empty string naming a configured model",
        "max_tokens": "a positive integer",
        "messages": "a non-empty array of messages",
        "temperature": "a number from 0 to 1",
    },
)


def validate_request(body: dict[str, Any]) -> MessagesRequest:
    """`body` as a Messages request, or `InvalidRequest` naming the first wrong field
    (`max_tokens: is required (a positive integer)`, `thinking: must be an object ...`)."""
    return SCHEMA.validate(body)


# -- vocabulary -----------------------------------------------------------------------------------


API_VERSION = "2023-06-01"


DEFAULT_MAX_TOKENS = 4096


STOP_TO_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


FINISH_TO_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}


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


def usage_from_wire(u: dict[str, Any]) -> Usage:
    """Normalize Anthropic usage (input excludes cache reads and writes)."""
    read = int(u.get("cache_read_input_tokens") or 0)
    write = int(u.get("cache_creation_input_tokens") or 0)
    return Usage(
        input_tokens=int(u.get("input_tokens") or 0) + read + write,
        output_tokens=int(u.get("output_tokens") or 0),
        cache_read_tokens=read,
        cache_write_tokens=write,
    )


def usage_to_wire(usage: Usage) -> dict[str, int]:
    """Canonical usage in Anthropic's shape."""
    return {
        "input_tokens": max(
            0, usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens
        ),
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cache_read_tokens,
        "output_tokens": usage.output_tokens,
    }


def error_from_wire(err: Any) -> UpstreamStatusError:
    """The gateway error for an Anthropic `error` object (in a stream or a body)."""
    if isinstance(err, dict):
        kind = str(err.get("type") or "api_error")
        message = str(err.get("message") or kind)
        return UpstreamStatusError(
            message, upstream_status=status_for_error_type(kind, None), upstream_type=kind
        )
    return UpstreamStatusError(str(err), upstream_status=500)


def error_type(err: GatewayError) -> str:
    """The Anthropic error type for a gateway error."""
    upstream = getattr(err, "upstream_type", None)
    if isinstance(err, UpstreamError) and upstream in _KNOWN_TYPES:
        return str(upstream)
    return ERROR_TYPES.get(err.status, "api_error")


def error_body(err: GatewayError) -> bytes:
    """The error body before the stream began, in Anthropic's shape (an Anthropic upstream's
    own error body as it came, when it failed with one)."""
    own = upstream_error_body(err, "anthropic")
    if own is not None:
        return orjson.dumps(own)
    return orjson.dumps(
        {"type": "error", "error": {"type": error_type(err), "message": err.message}}
    )


# -- requests -------------------------------------------------------------------------------------


def request_from_wire(body: dict[str, Any]) -> ChatRequest:
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


def request_to_wire(request: ChatRequest, model: str) -> tuple[dict[str, Any], list[str]]:
    """A canonical request as a Messages request body for `model`, and the fields it cannot
    carry."""
    dropped: list[str] = []
    system = "\n\n".join(m.text() for m in request.messages if m.role == "system")
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
        "messages": _messages_out(request.messages, dropped),
    }
    if system:
        body["system"] = system
    if request.stream:
        body["stream"] = True
    if request.temperature is not None:
        body["temperature"] = min(request.temperature, 1.0)
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.top_k is not None:
        body["top_k"] = request.top_k
    if request.stop:
        body["stop_sequences"] = request.stop
    if request.tools:
        body["tools"] = [
            {
                "name": t.name,
                "description": t.description,
                "input_schema": t.parameters or {"type": "object", "properties": {}},
            }
            for t in request.tools
        ]
    choice = request.tool_choice
    if isinstance(choice, dict):
        body["tool_choice"] = {"type": "tool", "name": choice["name"]}
    elif choice in ("auto", "none"):
        body["tool_choice"] = {"type": choice}
    elif choice == "required":
        body["tool_choice"] = {"type": "any"}
    budget = reasoning_budget(request.reasoning_effort, request.reasoning_budget)
    if budget:
        body["thinking"] = {"type": "enabled", "budget_tokens": max(1024, budget)}
        body["max_tokens"] = max(body["max_tokens"], body["thinking"]["budget_tokens"] + 1024)
        body.pop("temperature", None)
    if request.user:
        body["metadata"] = {"user_id": request.user}
    if request.json_mode or request.json_schema is not None:
        dropped.append("response_format")
    return body, dropped


def _messages_out(messages: list[Message], dropped: list[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            continue
        if m.role == "tool":
            block = {
                "type": "tool_result",
                "tool_use_id": m.tool_call_id or "",
                "content": m.text(),
            }
            if out and out[-1]["role"] == "user" and isinstance(out[-1]["content"], list):
                out[-1]["content"].append(block)  # consecutive results share one user turn
            else:
                out.append({"role": "user", "content": [block]})
            continue
        blocks: list[dict[str, Any]] = []
        if m.reasoning and m.role == "assistant" and "messages[].reasoning" not in dropped:
            dropped.append("messages[].reasoning")  # thinking blocks need Anthropic's signature
        for part in m.content:
            if part.type == "text":
                if part.text:
                    blocks.append({"type": "text", "text": part.text})
            elif part.url:
                blocks.append({"type": "image", "source": {"type": "url", "url": part.url}})
            else:
                source = {
                    "type": "base64",
                    "media_type": part.media_type or "image/png",
                    "data": part.data or "",
                }
                blocks.append({"type": "image", "source": source})
        for call in m.tool_calls:
            blocks.append(
                {
                    "type": "tool_use",
                    "id": call.id,
                    "name": call.name,
                    "input": arguments_object(call.arguments),
                }
            )
        role = "assistant" if m.role == "assistant" else "user"
        if not blocks:
            blocks.append({"type": "text", "text": ""})
        out.append({"role": role, "content": blocks})
    return out


# -- responses ------------------------------------------------------------------------------------


def completion_from_wire(body: bytes) -> Completion:
    """A Messages response body as a canonical completion (an error body raises it)."""
    data = loads_object(body, "message")
    if data.get("type") == "error" or "error" in data:
        raise error_from_wire(data.get("error"))
    text: list[str] = []
    reasoning: list[str] = []
    calls: list[ToolCall] = []
    for block in data.get("content") or []:
        kind = block.get("type")
        if kind == "text":
            text.append(str(block.get("text") or ""))
        elif kind == "thinking":
            reasoning.append(str(block.get("thinking") or ""))
        elif kind == "tool_use":
            args = orjson.dumps(block.get("input") or {}).decode()
            calls.append(ToolCall(str(block.get("id") or ""), str(block.get("name") or ""), args))
    usage = data.get("usage")
    stop = data.get("stop_reason")
    return Completion(
        text="".join(text),
        reasoning="".join(reasoning),
        tool_calls=calls,
        finish_reason=STOP_TO_FINISH.get(stop, stop) if stop else None,
        usage=usage_from_wire(usage) if isinstance(usage, dict) else None,
        upstream_id=data.get("id"),
    )


def completion_to_wire(c: Completion, model: str, request_id: str) -> bytes:
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
        "usage": usage_to_wire(c.usage) if c.usage else {"input_tokens": 0, "output_tokens": 0},
    }
    return orjson.dumps(body)


def passthrough_to_wire(
    body: dict[str, Any], model: str, stream: bool
) -> tuple[dict[str, Any], PassthroughFilter | None]:
    """A client's Messages body, sent as it came but for the upstream's model name."""
    body["model"] = model
    return body, None


# -- streams --------------------------------------------------------------------------------------


def stream_parser(
    *, side: bool = False, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
) -> StreamParser:
    """A parser for one Messages stream (`side`: a pass-through side parser)."""
    return AnthropicStreamParser(side=side, max_event_bytes=max_event_bytes)


class AnthropicStreamParser(SSEStreamParser):
    """Anthropic Messages events to canonical events.

    Tool-use blocks are numbered among tool calls only (canonical `index`), whatever their
    position among text and thinking blocks. As a side parser only `message_start`,
    `message_delta`, `message_stop` and `error` are parsed.
    """

    __slots__ = ("_decoder", "_side", "_tool_index", "_tools", "_usage", "done", "started")

    def __init__(self, *, side: bool = False, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES):
        self._decoder = SSEDecoder(max_event_bytes=max_event_bytes)
        self._side = side
        self._tools: dict[int, int] = {}  # block index -> canonical tool index
        self._tool_index = 0
        self._usage: dict[str, Any] = {}
        self.started = False
        self.done = False

    def side_marker(self, chunk: bytes) -> int:
        # Only message_* and error events matter to a side parser.
        found = [i for i in (chunk.find(b"message_"), chunk.find(b"error")) if i >= 0]
        return min(found, default=-1)

    def handle(self, events: list[SSEEvent]) -> list[Event]:
        out: list[Event] = []
        for sse in events:
            name = sse.event
            if name == "ping":
                continue
            if self._side and name.startswith("content_block"):
                continue
            try:
                data = loads_object(sse.data, f"{name} event")
                kind = data.get("type", name)
                if kind == "error" or name == "error":
                    out.append(StreamError(error_from_wire(data.get("error"))))
                    self.done = True
                    break
                self._event(kind, data, out)
            except SKIPPABLE:
                self.skip(sse.data)
                continue
            if self.done:
                break
        return out

    def _event(self, kind: str, data: dict[str, Any], out: list[Event]) -> None:
        if kind == "message_start":
            self.started = True
            usage = (data.get("message") or {}).get("usage")
            if isinstance(usage, dict):
                self._usage = dict(usage)
                out.append(UsageUpdate(usage_from_wire(self._usage)))
        elif kind == "content_block_delta":
            delta = data.get("delta") or {}
            dtype = delta.get("type")
            if dtype == "text_delta":
                if delta.get("text"):
                    out.append(TextDelta(delta["text"]))
            elif dtype == "thinking_delta":
                if delta.get("thinking"):
                    out.append(ReasoningDelta(delta["thinking"]))
            elif dtype == "signature_delta":
                out.append(ReasoningDelta("", signature=delta.get("signature")))
            elif dtype == "input_json_delta":
                index = self._tools.get(int(data.get("index") or 0))
                if index is not None and delta.get("partial_json"):
                    out.append(ToolCallDelta(index, None, None, delta["partial_json"]))
        elif kind == "content_block_start":
            block = data.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = self._tool_index
                self._tool_index += 1
                self._tools[int(data.get("index") or 0)] = index
                out.append(ToolCallDelta(index, block.get("id"), block.get("name"), ""))
            elif block.get("type") == "text" and block.get("text"):
                out.append(TextDelta(block["text"]))
        elif kind == "message_delta":
            self.started = True
            stop = (data.get("delta") or {}).get("stop_reason")
            if stop:
                out.append(Finish(STOP_TO_FINISH.get(stop, stop)))
            usage = data.get("usage")
            if isinstance(usage, dict):
                # Counts in message_delta are cumulative and replace those of message_start.
                self._usage.update({k: v for k, v in usage.items() if v is not None})
                out.append(UsageUpdate(usage_from_wire(self._usage)))
        elif kind == "message_stop":
            self.done = True


def _event(name: bytes, payload: dict[str, Any]) -> bytes:
    return encode_event(orjson.dumps(payload), name)


class AnthropicEncoder:
    """Canonical events to Anthropic Messages stream events."""

    content_type = b"text/event-stream; charset=utf-8"
    ping = b'event: ping\ndata: {"type": "ping"}\n\n'
    __slots__ = (
        "_block",
        "_error",
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
        self._error: GatewayError | None = None

    def _start(self, events: list[Event]) -> bytes:
        self._started = True
        usage = next((e.usage for e in events if isinstance(e, UsageUpdate)), None)
        start_usage = usage_to_wire(usage) if usage else {"input_tokens": 0, "output_tokens": 0}
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
        """Nothing yet: `end` writes the error, knowing whether the stream was passed through
        (the upstream's `message_start` already went out) or translated."""
        self._error = err
        return b""

    def end(self, state: StreamState) -> bytes:
        err = self._error
        if err is not None:  # the error event ends an Anthropic stream
            started = self._started or state.passthrough
            payload = {"type": "error", "error": {"type": error_type(err), "message": err.message}}
            return (b"" if started else self._start([])) + _event(b"error", payload)
        if state.error is not None:
            return b""  # the upstream's own error event was forwarded, and ended it
        out = (b"" if self._started else self._start([])) + self._close()
        usage = state.usage or self._usage
        stop = self._stop or FINISH_TO_STOP.get(state.finish_reason or "stop", "end_turn")
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": None},
            "usage": usage_to_wire(usage) if usage else {"output_tokens": 0},
        }
        return (
            out
            + _event(b"message_delta", delta)
            + _event(b"message_stop", {"type": "message_stop"})
        )
