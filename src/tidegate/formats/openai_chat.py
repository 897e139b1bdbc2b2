"""The OpenAI Chat Completions format, both ways: its whole vocabulary in one module.

- **Requests**: the inbound schema (`validate_request`), `request_from_wire`,
  `request_to_wire`, and `passthrough_to_wire` for a same-format upstream (the body as it came,
  but for the model, and a request for streamed usage).
- **Streams**: `data:` events of `chat.completion.chunk`, ended by `data: [DONE]`. Reasoning
  arrives as `reasoning_content` (DeepSeek), `reasoning` (Ollama, OpenRouter) or `thinking`;
  usage on a last `choices: []` chunk (with `include_usage`) or on the finish chunk (DeepSeek).
  An in-band failure is a data event whose object has an `error` member. The openai SDK reads
  `data:` lines only, so the encoder never writes `event:` or `id:` (a comment is a safe ping
  as long as no `id:` was sent). As a pass-through side parser, only the first event, `[DONE]`
  and events that mention usage, an error or a non-null finish reason are parsed.
- **Usage, finish reasons, errors**: OpenAI's usage object with cached and reasoning details;
  OpenAI's finish reasons are the canonical ones; error types by status below.

The module is longer than most (a schema and a codec of a rich format): splitting it would put
one format's vocabulary in two places, which is what this package exists to avoid.
"""

from __future__ import annotations

import re
import time
from typing import Annotated, Any, Literal

import orjson
from pydantic import Field, Tag

from tidegate.errors import GatewayError, UpstreamStatusError
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
)
from tidegate.formats.base import (
    SKIPPABLE,
    PassthroughFilter,
    SSEStreamParser,
    StreamParser,
    StreamState,
    loads_object,
    reasoning_effort,
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
    quoted_wording,
)
from tidegate.sse import (
    DEFAULT_MAX_EVENT_BYTES,
    SSEDecoder,
    SSEEvent,
    encode_comment,
    encode_event,
)

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]
PositiveInt = Annotated[int, Field(ge=1)]


class TextPart(Inbound):
    """`{"type": "text", "text": ...}`."""

    type: Literal["text"]
    text: str


class ImageURL(Inbound):
    """An image by URL, or as a `data:` URL with base64 content."""

    url: str
    detail: str | None = None


class ImagePart(Inbound):
    """`{"type": "image_url", "image_url": {"url": ...}}`."""

    type: Literal["image_url"]
    image_url: ImageURL


class OtherPart(Inbound):
    """A content part of a kind the gateway passes through but does not translate."""

    type: str


ContentPart = Annotated[
    Annotated[TextPart, Tag("<text>")]
    | Annotated[ImagePart, Tag("<image_url>")]
    | Annotated[OtherPart, Tag("<other>")],
    by_type(frozenset({"text", "image_url"}), "a content part object"),
]
Content = Annotated[
    Annotated[str, Tag("<string>")]
    | Annotated[list[ContentPart], Tag("<array>"), Field(max_length=MAX_PARTS)],
    by_kind("a string or an array of content parts"),
]


class FunctionCall(Inbound):
    """The function an assistant called, with its arguments as JSON text."""

    name: str
    arguments: str


class WireToolCall(Inbound):
    """One tool call in an assistant message."""

    id: str
    type: str | None = None
    function: FunctionCall | None = None


class WireMessage(Inbound):
    """One message of the conversation."""

    role: Role
    content: Content | None = None
    name: str | None = None
    tool_calls: Annotated[list[WireToolCall], Field(max_length=MAX_TOOLS)] | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = None


class StreamOptions(Inbound):
    """`stream_options`: whether the last chunk reports usage."""

    include_usage: bool | None = None


class FunctionDefinition(Inbound):
    """A function the model may call; `parameters` is a JSON Schema object."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolDefinition(Inbound):
    """A tool: a function (or another kind, passed through)."""

    type: str = "function"
    function: FunctionDefinition | None = None


class FunctionName(Inbound):
    """A function named by a tool choice."""

    name: str


class NamedToolChoice(Inbound):
    """`{"type": "function", "function": {"name": ...}}`."""

    type: str
    function: FunctionName | None = None


ToolChoice = Annotated[
    Annotated[Literal["none", "auto", "required"], Tag("<string>")]
    | Annotated[NamedToolChoice, Tag("<object>")],
    by_kind("'none', 'auto', 'required' or an object naming a function"),
]
Stop = Annotated[
    Annotated[str, Tag("<string>")]
    | Annotated[list[str], Tag("<array>"), Field(max_length=MAX_STOP)],
    by_kind("a string or an array of strings"),
]


class JSONSchemaFormat(Inbound):
    """The schema a `json_schema` response must follow."""

    name: str
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(Inbound):
    """`response_format`: text, any JSON object, or JSON following a schema."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None


class ChatCompletionRequest(Inbound):
    """A chat completion request, as much of it as the gateway reads."""

    model: Annotated[str, Field(min_length=1)]
    messages: Annotated[list[WireMessage], Field(min_length=1, max_length=MAX_MESSAGES)]
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    max_tokens: PositiveInt | None = None
    max_completion_tokens: PositiveInt | None = None
    n: PositiveInt | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    stop: Stop | None = None
    tools: Annotated[list[ToolDefinition], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: ToolChoice | None = None
    response_format: ResponseFormat | None = None
    reasoning_effort: str | None = None
    user: str | None = None
    parallel_tool_calls: bool | None = None


SCHEMA = Schema(
    ChatCompletionRequest,
    wording=quoted_wording,
    hints={
        "model": "a non-empty string naming a configured model",
        "messages": "a non-empty array of messages",
        "max_tokens": "a positive integer",
        "max_completion_tokens": "a positive integer",
        "n": "a positive integer",
        "temperature": "a number from 0 to 2",
        "top_p": "a number from 0 to 1",
    },
)


def validate_request(body: dict[str, Any]) -> ChatCompletionRequest:
    """`body` as a chat completion request, or `InvalidRequest` naming the first wrong field
    (`'model' is required (...)`, `messages[0].content must be a string or ...`)."""
    return SCHEMA.validate(body)


# -- vocabulary ------------------------------------------------------------------------------------


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


_REASONING_KEYS = ("reasoning_content", "reasoning", "thinking")


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


def usage_from_wire(u: dict[str, Any]) -> Usage:
    """Normalize an OpenAI-style usage object (DeepSeek's cache counters included)."""
    prompt_details = u.get("prompt_tokens_details") or {}
    completion_details = u.get("completion_tokens_details") or {}
    cached = prompt_details.get("cached_tokens") or u.get("prompt_cache_hit_tokens") or 0
    return Usage(
        input_tokens=int(u.get("prompt_tokens") or 0),
        output_tokens=int(u.get("completion_tokens") or 0),
        cache_read_tokens=int(cached),
        cache_write_tokens=int(prompt_details.get("cache_write_tokens") or 0),
        reasoning_tokens=int(completion_details.get("reasoning_tokens") or 0),
    )


def usage_to_wire(usage: Usage) -> dict[str, Any]:
    """Canonical usage in OpenAI's shape (prompt tokens include cached ones, as OpenAI counts)."""
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def error_from_wire(err: Any) -> UpstreamStatusError:
    """The gateway error for an OpenAI-style `error` member found inside a stream or body."""
    if isinstance(err, dict):
        message = str(err.get("message") or "upstream reported an error")
        kind = err.get("type") or err.get("code")
        status = status_for_error_type(str(kind) if kind else None, err.get("code"))
        return UpstreamStatusError(
            message, upstream_status=status, upstream_type=str(kind) if kind else None
        )
    return UpstreamStatusError(str(err), upstream_status=500)


def error_object(err: GatewayError) -> dict[str, Any]:
    """The OpenAI `error` member for a gateway error."""
    kind = _ERROR_TYPES.get(
        err.status, "api_error" if err.status >= 500 else "invalid_request_error"
    )
    return {"message": err.message, "type": kind, "param": None, "code": err.code}


def error_body(err: GatewayError) -> bytes:
    """The error body before the stream began, in OpenAI's shape (an OpenAI-compatible
    upstream's own error object as it came, when it failed with one)."""
    own = upstream_error_body(err, "openai")
    if own is None:
        return orjson.dumps({"error": error_object(err)})
    if own["error"].get("code") is None:
        own["error"]["code"] = err.code  # the upstream gave none: the gateway's own
    return orjson.dumps(own)


# -- requests --------------------------------------------------------------------------------------


def request_from_wire(body: dict[str, Any]) -> ChatRequest:
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


def request_to_wire(request: ChatRequest, model: str) -> tuple[dict[str, Any], list[str]]:
    """A canonical request as a Chat Completions body for `model`, and the fields it cannot
    carry."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [_message_out(m) for m in request.messages],
    }
    if request.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    if request.max_tokens is not None:
        body["max_tokens"] = request.max_tokens
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.stop:
        body["stop"] = request.stop
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters or {"type": "object", "properties": {}},
                },
            }
            for t in request.tools
        ]
    if request.tool_choice is not None:
        choice = request.tool_choice
        body["tool_choice"] = (
            {"type": "function", "function": {"name": choice["name"]}}
            if isinstance(choice, dict)
            else choice
        )
    if request.json_schema is not None:
        body["response_format"] = {"type": "json_schema", "json_schema": request.json_schema}
    elif request.json_mode:
        body["response_format"] = {"type": "json_object"}
    effort = reasoning_effort(request.reasoning_effort, request.reasoning_budget)
    if effort is not None:
        body["reasoning_effort"] = effort
    if request.user is not None:
        body["user"] = request.user
    dropped = ["top_k"] if request.top_k is not None else []
    return body, dropped


def _message_out(m: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role}
    if m.role == "tool":
        out["tool_call_id"] = m.tool_call_id or ""
        out["content"] = m.text()
        return out
    if any(p.type != "text" for p in m.content):
        parts: list[dict[str, Any]] = []
        for p in m.content:
            if p.type == "text":
                parts.append({"type": "text", "text": p.text})
            else:
                url = p.url or f"data:{p.media_type or 'image/png'};base64,{p.data}"
                parts.append({"type": "image_url", "image_url": {"url": url}})
        out["content"] = parts
    else:
        out["content"] = m.text() if m.content or not m.tool_calls else None
    if m.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in m.tool_calls
        ]
    if m.reasoning and m.role == "assistant":
        out["reasoning_content"] = m.reasoning
    if m.name:
        out["name"] = m.name
    return out


def passthrough_to_wire(
    body: dict[str, Any], model: str, stream: bool
) -> tuple[dict[str, Any], PassthroughFilter | None]:
    """A client's chat body for `model`. A stream always asks for usage, so that no stream is
    accounted as zero tokens; when the client did not ask for it, the filter returned removes
    the extra chunk again before the client sees it."""
    body["model"] = model
    if stream:
        options = body.get("stream_options")
        if not isinstance(options, dict) or not options.get("include_usage"):
            body["stream_options"] = {**(options or {}), "include_usage": True}
            return body, UsageChunkFilter()
    return body, None


# -- responses -------------------------------------------------------------------------------------


def completion_from_wire(body: bytes) -> Completion:
    """A chat.completion body as a canonical completion (an error body raises it)."""
    return completion_from_object(loads_object(body, "chat completion"))


def completion_from_object(data: dict[str, Any]) -> Completion:
    """A chat.completion object as a canonical completion."""
    if data.get("error"):
        raise error_from_wire(data["error"])
    choices = data.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    calls = [
        ToolCall(
            id=str(c.get("id") or ""),
            name=str((c.get("function") or {}).get("name") or ""),
            arguments=str((c.get("function") or {}).get("arguments") or ""),
        )
        for c in message.get("tool_calls") or []
    ]
    reasoning = next((message[k] for k in _REASONING_KEYS if message.get(k)), "")
    usage = data.get("usage")
    return Completion(
        text=message.get("content") or message.get("refusal") or "",
        reasoning=reasoning,
        tool_calls=calls,
        finish_reason=choice.get("finish_reason"),
        usage=usage_from_wire(usage) if isinstance(usage, dict) else None,
        upstream_id=data.get("id"),
    )


def completion_to_wire(c: Completion, model: str, request_id: str) -> bytes:
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
        body["usage"] = usage_to_wire(c.usage)
    return orjson.dumps(body)


# -- streams ---------------------------------------------------------------------------------------


def stream_parser(
    *, side: bool = False, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
) -> StreamParser:
    """A parser for one chat.completion.chunk stream (`side`: a pass-through side parser)."""
    return OpenAIStreamParser(side=side, max_event_bytes=max_event_bytes)


_FINISH_SET = re.compile(r'"finish_reason"\s*:\s*"')


_SIDE_NEEDLES = (b"[DONE]", b'"usage"', b'"error"', b'"finish_reason":"', b'"finish_reason": "')


def _side_marker(chunk: bytes) -> int:
    """Where the first thing a side parser needs (end, usage, error, finish) starts; -1: none.

    Plain `find`s (memchr-fast) for compact and for `": "`-spaced JSON, the two ways servers
    write it; `"finish_reason":null` on every chunk matches neither.
    """
    best = -1
    for needle in _SIDE_NEEDLES:
        i = chunk.find(needle)
        if i >= 0 and (best < 0 or i < best):
            best = i
    return best


class OpenAIStreamParser(SSEStreamParser):
    """`chat.completion.chunk` events to canonical events."""

    __slots__ = ("_decoder", "_side", "done", "finished", "started")

    def __init__(self, *, side: bool = False, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES):
        self._decoder = SSEDecoder(max_event_bytes=max_event_bytes)
        self._side = side
        self.started = False
        self.done = False
        self.finished = False

    @property
    def complete(self) -> bool:
        # Some servers (AnythingLLM's OpenAI endpoint, older proxies) close after the finish
        # chunk without [DONE]; a finish reason is as good an end as the marker.
        return self.done or self.finished

    def side_marker(self, chunk: bytes) -> int:
        return _side_marker(chunk)

    def handle(self, events: list[SSEEvent]) -> list[Event]:
        out: list[Event] = []
        for sse in events:
            data = sse.data
            if data == "[DONE]":
                self.done = True
                break
            if (
                self._side
                and self.started
                and '"usage"' not in data
                and '"error"' not in data
                and not _FINISH_SET.search(data)
            ):
                continue  # a text chunk: nothing a side parser needs
            try:
                self._event(loads_object(data, "stream chunk"), out)
            except SKIPPABLE:
                self.skip(data)
        return out

    def _event(self, obj: dict[str, Any], out: list[Event]) -> None:
        err = obj.get("error")
        if err:
            out.append(StreamError(error_from_wire(err)))
            return
        self.started = True
        for choice in obj.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue  # n > 1 is not carried by the canonical stream
            delta = choice.get("delta") or {}
            if not self._side:
                for key in _REASONING_KEYS:
                    text = delta.get(key)
                    if text:
                        out.append(ReasoningDelta(text))
                        break
                text = delta.get("content")
                if text:
                    out.append(TextDelta(text))
                refusal = delta.get("refusal")
                if refusal:
                    out.append(TextDelta(refusal))
                for call in delta.get("tool_calls") or ():
                    fn = call.get("function") or {}
                    out.append(
                        ToolCallDelta(
                            int(call.get("index") or 0),
                            call.get("id"),
                            fn.get("name"),
                            fn.get("arguments") or "",
                        )
                    )
            reason = choice.get("finish_reason")
            if reason:
                self.finished = True
                out.append(Finish(reason))
        usage = obj.get("usage")
        if isinstance(usage, dict):
            out.append(UsageUpdate(usage_from_wire(usage)))


DONE = encode_event(b"[DONE]")


class OpenAIChatEncoder:
    """Canonical events to `chat.completion.chunk` events."""

    content_type = b"text/event-stream; charset=utf-8"
    ping = encode_comment(b"ping")  # safe: this stream never sends `id:`
    __slots__ = ("_finish_sent", "_head", "_include_usage", "_role_sent", "_tools_seen")

    def __init__(self, model: str, include_usage: bool, request_id: str):
        self._head = (
            b'{"id":"chatcmpl-'
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
        return encode_event(self._head + orjson.dumps([choice]) + b"}")

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
        return encode_event(orjson.dumps({"error": error_object(err)}))

    def end(self, state: StreamState) -> bytes:
        if state.passthrough:
            # The upstream's own chunks (its finish and usage included) went out as they came:
            # only its missing terminator is added, never a second finish or usage chunk.
            return DONE
        out = b""
        if state.error is None:
            out += self.encode([])  # the role chunk, if nothing else was sent
            if not self._finish_sent:
                out += self._chunk({}, state.finish_reason or "stop")
        if self._include_usage and state.usage is not None:
            usage = orjson.dumps(usage_to_wire(state.usage))
            out += encode_event(self._head + b'[],"usage":' + usage + b"}")
        return out + DONE


_USAGE_ONLY = re.compile(rb'"choices"\s*:\s*\[\s*\]')


_BOUNDARIES = (b"\r\n\r\n", b"\n\n", b"\r\r")


class UsageChunkFilter(PassthroughFilter):
    """Forwards whole events only, minus the usage-only chunk the gateway asked for itself.

    Bytes after the last event boundary of a read wait for the next read, so that an event is
    never half forwarded when it turns out to be the one to remove.
    """

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held = b""

    def feed(self, chunk: bytes) -> bytes:
        buf = self._held + chunk if self._held else chunk
        end = _after_last_boundary(buf, len(buf))
        if end == 0:
            self._held = buf
            return b""
        out, self._held = buf[:end], buf[end:]
        if b'"usage"' in out:
            out = _without_usage_only_event(out)
        return out

    def flush(self) -> bytes:
        rest, self._held = self._held, b""
        return rest


def _after_last_boundary(buf: bytes, end: int) -> int:
    """The index just after the last event boundary ending at or before `end` (0 if none)."""
    if b"\r" not in buf:
        i = buf.rfind(b"\n\n", 0, end)
        return i + 2 if i >= 0 else 0
    best = 0
    for sep in _BOUNDARIES:
        i = buf.rfind(sep, 0, end)
        if i >= 0:
            best = max(best, i + len(sep))
    return best


def _without_usage_only_event(block: bytes) -> bytes:
    """`block` (whole events) minus the event that carries usage with empty choices, if any."""
    pos = block.rfind(b'"usage"')
    start = _after_last_boundary(block, pos)
    end = _after_last_boundary(block, len(block))
    following = [i for i in (block.find(sep, pos) for sep in _BOUNDARIES) if i >= 0]
    if following:
        first = min(following)
        end = next(first + len(sep) for sep in _BOUNDARIES if block.startswith(sep, first))
    if _USAGE_ONLY.search(block, start, end):
        return block[:start] + block[end:]
    return block
