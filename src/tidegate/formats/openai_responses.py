"""The OpenAI Responses format (`POST /v1/responses`), both ways: its whole vocabulary here.

- **Requests**: the inbound schema (`validate_request`), `request_from_wire` (a Responses
  request as a canonical `ChatRequest`, with the fields it cannot carry), `request_to_wire`
  (the body sent to a Responses upstream) and `passthrough_to_wire`. `input` is a string or a
  list of items: messages (`input_text` / `input_image` / `output_text` parts), `function_call`
  and `function_call_output` items, and `reasoning` items whose summary text becomes the next
  assistant turn's reasoning. A gateway keeps no responses, so `previous_response_id` (and any
  other field that refers to stored state) cannot be honoured when translating: it is named as
  dropped, like every field the canonical request cannot carry.
- **Responses**: a `response` object (`status`, `output` items, `usage`) both ways, the
  request's own settings echoed in it as the API does (`response_echo`).
- **Streams**: named events, `event: <type>` and a `data:` object that repeats the `type` and
  carries a `sequence_number` that grows by one per event. There is no terminator: the
  lifecycle event `response.completed`, `response.incomplete` or `response.failed` ends the
  stream. `ResponsesStreamParser` reads them (unknown event types are ignored);
  `ResponsesEncoder` writes the lifecycle openai-python's `responses.create(stream=True)` and
  `responses.stream(...)` read: created, in_progress, per output item `output_item.added`, its
  parts and deltas, `output_item.done`, then the terminal event with the whole response.
- **Errors**: OpenAI's error object before a stream; inside one, an `error` event, documented
  flat (`code`, `message` beside `type`) and seen nested (an `error` member), and a
  `response.failed` whose response carries the `error`. The parser reads all three.
- **Usage**: `input_tokens` includes `input_tokens_details.cached_tokens`, `output_tokens`
  includes `output_tokens_details.reasoning_tokens`, as the canonical usage counts.
- **Finish**: `completed` is stop (tool_calls when the output has function calls);
  `incomplete` with reason `max_output_tokens` is length, `content_filter` is content_filter.

The module is longer than most (a schema and a codec of a rich format): splitting it would put
one format's vocabulary in two places, which is what this package exists to avoid.
"""

from __future__ import annotations

import re
import time
from typing import Annotated, Any, Literal

import orjson
from pydantic import Discriminator, Field, Tag

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
from tidegate.formats.openai_chat import error_object
from tidegate.sse import DEFAULT_MAX_EVENT_BYTES, SSEDecoder, SSEEvent, encode_comment, encode_event

#: The wire format's name: a client and an upstream both speaking it exchange bytes as they are.
WIRE_FORMAT = "openai-responses"

PositiveInt = Annotated[int, Field(ge=1)]


# -- schema ----------------------------------------------------------------------------------------


class InputText(Inbound):
    """`{"type": "input_text", "text": ...}`."""

    type: Literal["input_text"]
    text: str


class InputImage(Inbound):
    """An image by URL (or `data:` URL), or by the id of an uploaded file."""

    type: Literal["input_image"]
    image_url: str | None = None
    file_id: str | None = None
    detail: str | None = None


class OutputText(Inbound):
    """Text the assistant wrote, in an earlier assistant message."""

    type: Literal["output_text"]
    text: str


class RefusalPart(Inbound):
    """A refusal the assistant wrote, in an earlier assistant message."""

    type: Literal["refusal"]
    refusal: str


class OtherPart(Inbound):
    """A content part the gateway passes through but does not translate (`input_file`)."""

    type: str


ContentPart = Annotated[
    Annotated[InputText, Tag("<input_text>")]
    | Annotated[InputImage, Tag("<input_image>")]
    | Annotated[OutputText, Tag("<output_text>")]
    | Annotated[RefusalPart, Tag("<refusal>")]
    | Annotated[OtherPart, Tag("<other>")],
    by_type(
        frozenset({"input_text", "input_image", "output_text", "refusal"}),
        "a content part object",
    ),
]
Content = Annotated[
    Annotated[str, Tag("<string>")]
    | Annotated[list[ContentPart], Tag("<array>"), Field(max_length=MAX_PARTS)],
    by_kind("a string or an array of content parts"),
]


class MessageItem(Inbound):
    """A message of the conversation (`type` may be left out)."""

    type: Literal["message"] | None = None
    role: Literal["user", "assistant", "system", "developer"]
    content: Content


class FunctionCallItem(Inbound):
    """A function the assistant called earlier, with its arguments as JSON text."""

    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str


class FunctionCallOutputItem(Inbound):
    """The result of a function call."""

    type: Literal["function_call_output"]
    call_id: str
    output: Content


class SummaryText(Inbound):
    """One part of a reasoning summary."""

    type: str
    text: str


class ReasoningItem(Inbound):
    """Earlier reasoning of the assistant: its summary, perhaps its encrypted content."""

    type: Literal["reasoning"]
    summary: Annotated[list[SummaryText], Field(max_length=MAX_PARTS)] = Field(default_factory=list)
    encrypted_content: str | None = None


class OtherItem(Inbound):
    """An input item the gateway passes through but does not translate (`item_reference`)."""

    type: str


_ITEM_TYPES = frozenset({"message", "function_call", "function_call_output", "reasoning"})


def _item_tag(value: Any) -> str | None:
    """An input item's union member: by its `type`, a message when it has none."""
    if type(value) is not dict:
        return None
    kind = value.get("type")
    if kind is None:
        return "<message>"
    return f"<{kind}>" if type(kind) is str and kind in _ITEM_TYPES else "<other>"


InputItem = Annotated[
    Annotated[MessageItem, Tag("<message>")]
    | Annotated[FunctionCallItem, Tag("<function_call>")]
    | Annotated[FunctionCallOutputItem, Tag("<function_call_output>")]
    | Annotated[ReasoningItem, Tag("<reasoning>")]
    | Annotated[OtherItem, Tag("<other>")],
    Discriminator(
        _item_tag, custom_error_type="wrong_kind", custom_error_message="an input item object"
    ),
]
Input = Annotated[
    Annotated[str, Tag("<string>")]
    | Annotated[list[InputItem], Tag("<array>"), Field(min_length=1, max_length=MAX_MESSAGES)],
    by_kind("a string or a non-empty array of input items"),
]


class FunctionTool(Inbound):
    """A function the model may call; `parameters` is a JSON Schema object."""

    type: Literal["function"]
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class OtherTool(Inbound):
    """A hosted tool (web search, file search, ...), passed through but not translated."""

    type: str


WireTool = Annotated[
    Annotated[FunctionTool, Tag("<function>")] | Annotated[OtherTool, Tag("<other>")],
    by_type(frozenset({"function"}), "a tool object"),
]


class NamedToolChoice(Inbound):
    """`{"type": "function", "name": ...}`, or a hosted tool's type."""

    type: str
    name: str | None = None


ToolChoice = Annotated[
    Annotated[Literal["none", "auto", "required"], Tag("<string>")]
    | Annotated[NamedToolChoice, Tag("<object>")],
    by_kind("'none', 'auto', 'required' or an object naming a function"),
]


class ReasoningOptions(Inbound):
    """`reasoning`: how hard to think, and whether to return a summary of it."""

    effort: str | None = None
    summary: str | None = None


class TextFormat(Inbound):
    """`text.format`: plain text, any JSON object, or JSON following a schema."""

    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    description: str | None = None
    strict: bool | None = None


class TextOptions(Inbound):
    """`text`: the output's format and verbosity."""

    format: TextFormat | None = None
    verbosity: str | None = None


class StreamOptions(Inbound):
    """`stream_options` (obfuscation padding, which the gateway never adds)."""

    include_obfuscation: bool | None = None


class ResponsesRequest(Inbound):
    """A Responses request, as much of it as the gateway reads."""

    model: Annotated[str, Field(min_length=1)]
    input: Input
    instructions: str | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    max_output_tokens: PositiveInt | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    tools: Annotated[list[WireTool], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    reasoning: ReasoningOptions | None = None
    text: TextOptions | None = None
    user: str | None = None
    # An object whose keys the client chooses: checked no deeper, so that no error message
    # quotes a key as a field path.
    metadata: dict[str, Any] | None = None
    previous_response_id: str | None = None
    store: bool | None = None
    # A short list of names, bounded like `stop` lists are.
    include: Annotated[list[str], Field(max_length=MAX_STOP)] | None = None


SCHEMA = Schema(
    ResponsesRequest,
    wording=quoted_wording,
    hints={
        "model": "a non-empty string naming a configured model",
        "input": "a string or a non-empty array of input items",
        "max_output_tokens": "a positive integer",
        "temperature": "a number from 0 to 2",
        "top_p": "a number from 0 to 1",
    },
)


def validate_request(body: dict[str, Any]) -> ResponsesRequest:
    """`body` as a Responses request, or `InvalidRequest` naming the first wrong field
    (`'input' is required (...)`, `input[0].content[1] must be a content part object ...`)."""
    return SCHEMA.validate(body)


# -- vocabulary ------------------------------------------------------------------------------------


#: Request fields the canonical request carries; any other non-null field is named as dropped
#: when the request is translated (`store` only when true, `parallel_tool_calls` only when
#: false: their other value is what every translated request does anyway).
CARRIED = frozenset(
    {
        "model",
        "input",
        "instructions",
        "stream",
        "stream_options",
        "max_output_tokens",
        "temperature",
        "top_p",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "reasoning",
        "text",
        "user",
        "store",
    }
)

INCOMPLETE_TO_FINISH = {"max_output_tokens": "length", "content_filter": "content_filter"}
FINISH_TO_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}

#: The events that end a stream, and those a pass-through side parser reads after the first.
TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})


def usage_from_wire(u: dict[str, Any]) -> Usage:
    """Normalize a Responses usage object (input includes cached tokens, output reasoning)."""
    details_in = u.get("input_tokens_details") or {}
    details_out = u.get("output_tokens_details") or {}
    return Usage(
        input_tokens=int(u.get("input_tokens") or 0),
        output_tokens=int(u.get("output_tokens") or 0),
        cache_read_tokens=int(details_in.get("cached_tokens") or 0),
        cache_write_tokens=int(details_in.get("cache_write_tokens") or 0),
        reasoning_tokens=int(details_out.get("reasoning_tokens") or 0),
    )


def usage_to_wire(usage: Usage) -> dict[str, Any]:
    """Canonical usage in the Responses shape."""
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cache_read_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
        },
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


def finish_from_wire(response: dict[str, Any], has_calls: bool) -> str | None:
    """The canonical finish reason of a response object's `status`."""
    status = response.get("status")
    if status == "incomplete":
        reason = str((response.get("incomplete_details") or {}).get("reason") or "length")
        return INCOMPLETE_TO_FINISH.get(reason, reason)
    if status in (None, "completed"):
        return "tool_calls" if has_calls else "stop"
    return str(status)


def error_from_wire(err: Any) -> UpstreamStatusError:
    """The gateway error for a Responses error: an `error` event (its `code` and `message`
    beside its `type`, or nested in an `error` member), a failed response's `error` object, or
    a body's `error` member."""
    if isinstance(err, dict) and isinstance(err.get("error"), dict):
        err = err["error"]
    if not isinstance(err, dict):
        return UpstreamStatusError(str(err or "upstream response failed"), upstream_status=500)
    code = err.get("code")
    kind = err.get("type")
    names = [str(v) for v in (code, kind) if v and v != "error"]
    message = str(err.get("message") or (names[0] if names else "upstream response failed"))
    status = status_for_error_type(" ".join(names), code)
    return UpstreamStatusError(
        message, upstream_status=status, upstream_type=names[0] if names else None
    )


def error_body(err: GatewayError) -> bytes:
    """The error body before the stream began, in OpenAI's shape (a Responses upstream's own
    error object as it came, when it failed with one)."""
    own = upstream_error_body(err, WIRE_FORMAT)
    if own is None:
        return orjson.dumps({"error": error_object(err)})
    if own["error"].get("code") is None:
        own["error"]["code"] = err.code  # the upstream gave none: the gateway's own
    return orjson.dumps(own)


def _failure_code(err: GatewayError) -> str:
    """A code of the failed response's documented vocabulary for a gateway error."""
    if err.status == 429:
        return "rate_limit_exceeded"
    return "invalid_prompt" if err.status == 400 else "server_error"


# -- requests --------------------------------------------------------------------------------------


def request_from_wire(body: dict[str, Any]) -> ChatRequest:
    """A Responses request as a canonical request (fields it cannot carry listed).

    `body` has passed `tidegate.formats.openai_responses.validate_request`: every field read
    here has the type the schema gives it."""
    dropped = [k for k, v in body.items() if k not in CARRIED and v is not None]
    if body.get("store") is True:
        dropped.append("store")
    if body.get("parallel_tool_calls") is False:
        dropped.append("parallel_tool_calls")
    messages: list[Message] = []
    if body.get("instructions"):
        messages.append(Message("system", [Part("text", text=body["instructions"])]))
    items = body["input"]
    if isinstance(items, str):
        messages.append(Message("user", [Part("text", text=items)]))
    else:
        messages += _messages_in(items, dropped)
    tools: list[Tool] = []
    for t in body.get("tools") or ():
        if t.get("type") == "function":
            tools.append(Tool(t["name"], t.get("description") or "", t.get("parameters") or {}))
        else:
            dropped.append(f"tools[{t.get('type')}]")
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        if choice.get("type") == "function" and choice.get("name"):
            choice = {"name": choice["name"]}
        else:
            dropped.append(f"tool_choice[{choice.get('type')}]")
            choice = None
    text = body.get("text") or {}
    if text.get("verbosity") is not None:
        dropped.append("text.verbosity")
    fmt = text.get("format") or {}
    schema = fmt.get("schema") if fmt.get("type") == "json_schema" else None
    json_schema = None
    if schema is not None:
        json_schema = {"name": fmt.get("name") or "response", "schema": schema}
        json_schema.update({k: fmt[k] for k in ("description", "strict") if fmt.get(k) is not None})
    return ChatRequest(
        model=body["model"],
        messages=messages,
        stream=bool(body.get("stream")),
        max_tokens=body.get("max_output_tokens"),
        temperature=body.get("temperature"),
        top_p=body.get("top_p"),
        tools=tools,
        tool_choice=choice,
        json_mode=fmt.get("type") == "json_object"
        or (fmt.get("type") == "json_schema" and schema is None),
        json_schema=json_schema,
        reasoning_effort=(body.get("reasoning") or {}).get("effort"),
        include_usage=True,
        user=body.get("user"),
        dropped=sorted(set(dropped)),
    )


def _messages_in(items: list[dict[str, Any]], dropped: list[str]) -> list[Message]:
    out: list[Message] = []
    reasoning: list[str] = []  # summaries waiting for the assistant turn they belong to
    for item in items:
        kind = item.get("type")
        if kind is None or kind == "message":  # as `_item_tag` tells them apart
            role = "system" if item["role"] == "developer" else item["role"]
            message = Message(role, _parts_in(item["content"], dropped))
            if role == "assistant" and reasoning:
                message.reasoning, reasoning = "\n\n".join(reasoning), []
            out.append(message)
        elif kind == "function_call":
            call = ToolCall(item["call_id"], item["name"], item["arguments"])
            if out and out[-1].role == "assistant":
                out[-1].tool_calls.append(call)  # calls after the assistant's text: one turn
            else:
                out.append(Message("assistant", tool_calls=[call]))
                if reasoning:
                    out[-1].reasoning, reasoning = "\n\n".join(reasoning), []
        elif kind == "function_call_output":
            text = _text_of(item["output"])
            out.append(Message("tool", [Part("text", text=text)], tool_call_id=item["call_id"]))
        elif kind == "reasoning":
            reasoning += [s["text"] for s in item.get("summary") or () if s.get("text")]
            if item.get("encrypted_content"):
                dropped.append("input[reasoning.encrypted_content]")
        else:
            dropped.append(f"input[{kind}]")
    if reasoning:
        dropped.append("input[reasoning]")  # no assistant turn followed it
    return out


def _parts_in(content: str | list[dict[str, Any]], dropped: list[str]) -> list[Part]:
    if isinstance(content, str):
        return [Part("text", text=content)]
    parts: list[Part] = []
    for p in content:
        kind = p.get("type")
        if kind in ("input_text", "output_text"):
            parts.append(Part("text", text=p["text"]))
        elif kind == "refusal":
            parts.append(Part("text", text=p["refusal"]))
        elif kind == "input_image" and p.get("image_url"):
            parts.append(_image_part(p["image_url"]))
        elif kind == "input_image":
            dropped.append("input[].content[input_image.file_id]")
        else:
            dropped.append(f"input[].content[{kind}]")
    return parts


def _text_of(content: str | list[dict[str, Any]]) -> str:
    if isinstance(content, str):
        return content
    return "".join(str(p.get("text") or "") for p in content if isinstance(p, dict))


def _image_part(url: str) -> Part:
    if url.startswith("data:") and ";base64," in url:
        head, data = url[5:].split(";base64,", 1)
        return Part("image", media_type=head or "image/png", data=data)
    return Part("image", url=url)


def request_to_wire(request: ChatRequest, model: str) -> tuple[dict[str, Any], list[str]]:
    """A canonical request as a Responses body for `model`, and the fields it cannot carry.

    Leading system messages become `instructions` (unless nothing follows them); `store` is
    false, since nothing ever refers back to a response the gateway asked for."""
    dropped: list[str] = []
    messages = request.messages
    lead = 0
    while lead < len(messages) and messages[lead].role == "system":
        lead += 1
    if lead == len(messages):
        lead = 0  # nothing but instructions: they are the input then (`input` may not be empty)
    body: dict[str, Any] = {"model": model}
    if lead:
        body["instructions"] = "\n\n".join(m.text() for m in messages[:lead])
    body["input"] = _items_out(messages[lead:], dropped)
    body["store"] = False
    if request.stream:
        body["stream"] = True
    if request.max_tokens is not None:
        body["max_output_tokens"] = request.max_tokens
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.top_k is not None:
        dropped.append("top_k")
    if request.stop:
        dropped.append("stop")
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "name": t.name,
                "description": t.description,
                "parameters": t.parameters or {"type": "object", "properties": {}},
                # The API's default is strict, which refuses most schemas written for others.
                "strict": False,
            }
            for t in request.tools
        ]
    choice = request.tool_choice
    if choice is not None:
        body["tool_choice"] = (
            {"type": "function", "name": choice["name"]} if isinstance(choice, dict) else choice
        )
    if request.json_schema is not None:
        fmt = {"type": "json_schema", "name": "response", "schema": {}, **request.json_schema}
        body["text"] = {"format": fmt}
    elif request.json_mode:
        body["text"] = {"format": {"type": "json_object"}}
    effort = reasoning_effort(request.reasoning_effort, request.reasoning_budget)
    if effort is not None:
        # A summary is what the API shows of its reasoning: ask for it, so that the client
        # sees reasoning as it would from any other upstream.
        body["reasoning"] = {"effort": effort, "summary": "auto"}
    if request.user is not None:
        body["user"] = request.user
    return body, dropped


def _items_out(messages: list[Message], dropped: list[str]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "tool":
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": m.tool_call_id or "",
                    "output": m.text(),
                }
            )
            continue
        if m.role == "assistant":
            if m.reasoning and "messages[].reasoning" not in dropped:
                # Reasoning items are the API's own (an id, encrypted content): none to send.
                dropped.append("messages[].reasoning")
            text = m.text()
            if text or not m.tool_calls:
                items.append({"type": "message", "role": "assistant", "content": text})
            items += [
                {"type": "function_call", "call_id": c.id, "name": c.name, "arguments": c.arguments}
                for c in m.tool_calls
            ]
            continue
        parts: list[dict[str, Any]] = []
        for p in m.content:
            if p.type == "text":
                parts.append({"type": "input_text", "text": p.text})
            else:
                url = p.url or f"data:{p.media_type or 'image/png'};base64,{p.data}"
                parts.append({"type": "input_image", "image_url": url, "detail": "auto"})
        items.append({"type": "message", "role": m.role, "content": parts})
    return items


def passthrough_to_wire(
    body: dict[str, Any], model: str, stream: bool
) -> tuple[dict[str, Any], PassthroughFilter | None]:
    """A client's Responses body, sent as it came but for the upstream's model name (usage is
    always in the terminal event: nothing to ask for)."""
    body["model"] = model
    return body, None


# -- responses -------------------------------------------------------------------------------------


def completion_from_wire(body: bytes) -> Completion:
    """A `response` object as a canonical completion (a failed response or an error body
    raises its error)."""
    data = loads_object(body, "response")
    if data.get("error") or data.get("status") == "failed":
        raise error_from_wire(data.get("error"))
    text: list[str] = []
    reasoning: list[str] = []
    calls: list[ToolCall] = []
    for item in data.get("output") or ():
        kind = item.get("type")
        if kind == "message":
            for part in item.get("content") or ():
                if part.get("type") == "output_text":
                    text.append(str(part.get("text") or ""))
                elif part.get("type") == "refusal":
                    text.append(str(part.get("refusal") or ""))
        elif kind == "function_call":
            call_id = str(item.get("call_id") or item.get("id") or "")
            arguments = str(item.get("arguments") or "")
            calls.append(ToolCall(call_id, str(item.get("name") or ""), arguments))
        elif kind == "reasoning":
            summary = _reasoning_text(item)
            if summary:
                reasoning.append(summary)
    usage = data.get("usage")
    return Completion(
        text="".join(text),
        reasoning="\n\n".join(reasoning),
        tool_calls=calls,
        finish_reason=finish_from_wire(data, bool(calls)),
        usage=usage_from_wire(usage) if isinstance(usage, dict) else None,
        upstream_id=data.get("id"),
    )


def _reasoning_text(item: dict[str, Any]) -> str:
    """A reasoning item's summary, or its raw reasoning text (open-weight models' servers)."""
    summary = [str(s.get("text") or "") for s in item.get("summary") or ()]
    if any(summary):
        return "\n\n".join(summary)
    return "".join(str(c.get("text") or "") for c in item.get("content") or ())


def response_echo(body: dict[str, Any]) -> dict[str, Any]:
    """The request's settings as a `response` object repeats them, from a validated request
    body (defaults where it set none). `store` and `previous_response_id` say what the gateway
    did: it stored nothing and continued no earlier response."""
    reasoning = body.get("reasoning") or {}
    return {
        "background": False,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "metadata": body.get("metadata") or {},
        "parallel_tool_calls": body.get("parallel_tool_calls") is not False,
        "previous_response_id": None,
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "store": False,
        "temperature": body.get("temperature"),
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p"),
        "truncation": "disabled",
        "user": body.get("user"),
    }


def _response(
    response_id: str,
    created_at: int,
    model: str,
    echo: dict[str, Any],
    *,
    status: str,
    output: list[dict[str, Any]],
    usage: Usage | None,
    finish: str | None = None,
    error: GatewayError | None = None,
) -> dict[str, Any]:
    reason = FINISH_TO_INCOMPLETE.get(finish or "")
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "completed_at": int(time.time()) if status == "completed" else None,
        "error": None
        if error is None
        else {"code": _failure_code(error), "message": error.message},
        "incomplete_details": {"reason": reason} if status == "incomplete" else None,
        "model": model,
        "output": output,
        "usage": usage_to_wire(usage) if usage is not None else None,
        **echo,
    }


def status_of(finish: str | None) -> str:
    """The response status for a canonical finish reason."""
    return "incomplete" if (finish or "") in FINISH_TO_INCOMPLETE else "completed"


def completion_to_wire(
    c: Completion, model: str, request_id: str, echo: dict[str, Any] | None = None
) -> bytes:
    """A canonical completion as a `response` object (`echo`: the request's settings)."""
    status = status_of(c.finish_reason)
    output: list[dict[str, Any]] = []
    if c.reasoning:
        output.append(_reasoning_item(f"rs_{request_id}_0", c.reasoning))
    if c.text or not c.tool_calls:
        item_status = "completed" if status == "completed" else "incomplete"
        output.append(_message_item(f"msg_{request_id}_{len(output)}", c.text, item_status))
    for call in c.tool_calls:
        item_id = f"fc_{request_id}_{len(output)}"
        output.append(_call_item(item_id, call.id, call.name, call.arguments, "completed"))
    body = _response(
        f"resp_{request_id}",
        int(time.time()),
        model,
        echo if echo is not None else response_echo({}),
        status=status,
        output=output,
        usage=c.usage,
        finish=c.finish_reason,
    )
    return orjson.dumps(body)


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def _message_item(item_id: str, text: str | None, status: str) -> dict[str, Any]:
    content = [] if text is None else [_text_part(text)]
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "content": content,
        "role": "assistant",
    }


def _reasoning_item(item_id: str, text: str | None) -> dict[str, Any]:
    summary = [] if text is None else [{"type": "summary_text", "text": text}]
    return {"id": item_id, "type": "reasoning", "summary": summary}


def _call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str
) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


# -- streams: reading ------------------------------------------------------------------------------


def stream_parser(
    *, side: bool = False, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
) -> StreamParser:
    """A parser for one Responses stream (`side`: a pass-through side parser)."""
    return ResponsesStreamParser(side=side, max_event_bytes=max_event_bytes)


#: The events that carry a piece of an item's content in their `delta`.
_DELTAS = frozenset(
    {
        "response.output_text.delta",
        "response.refusal.delta",
        "response.function_call_arguments.delta",
        "response.reasoning_summary_text.delta",
        "response.reasoning_text.delta",
    }
)
#: Where the text of an output message part is, by the part's type.
_PART_TEXT = {"output_text": "text", "refusal": "refusal"}
_SIDE_NEEDLES = (b"response.completed", b"response.incomplete", b"response.failed", b"error")


class ResponsesStreamParser(SSEStreamParser):
    """Responses stream events to canonical events.

    Function calls are numbered among function calls only (canonical `index`), whatever their
    output index. An upstream that sends an item whole, without deltas (some compatible
    servers do), is read from its `.done` event. As a side parser only the first event, the
    terminal events and `error` are parsed; the finish then comes from the terminal response's
    `output`.
    """

    __slots__ = ("_decoder", "_side", "_streamed", "_tools", "done", "started")

    def __init__(self, *, side: bool = False, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES):
        self._decoder = SSEDecoder(max_event_bytes=max_event_bytes)
        self._side = side
        self._tools: dict[int, int] = {}  # output index -> canonical tool index
        self._streamed: set[int] = set()  # output indices that sent deltas
        self.started = False
        self.done = False

    def side_marker(self, chunk: bytes) -> int:
        """Where a terminal event or an error may begin in `chunk` (-1: nowhere)."""
        found = [i for i in (chunk.find(n) for n in _SIDE_NEEDLES) if i >= 0]
        return min(found, default=-1)

    def handle(self, events: list[SSEEvent]) -> list[Event]:
        """The canonical events of these events; an unreadable one is skipped and counted."""
        out: list[Event] = []
        for sse in events:
            name = sse.event
            if (
                self._side
                and self.started
                and name.startswith("response.")
                and name not in TERMINAL
            ):
                continue  # a content event: nothing a side parser needs
            try:
                data = loads_object(sse.data, f"{name} event")
                kind = data.get("type") or name
                self._event(str(kind), data, out)
            except SKIPPABLE:
                self.skip(sse.data)
                continue
            if self.done:
                break
        return out

    def _event(self, kind: str, data: dict[str, Any], out: list[Event]) -> None:
        if kind == "error":
            out.append(StreamError(error_from_wire(data)))
            self.done = True
            return
        if not kind.startswith("response."):
            return  # not this format's: ignored
        self.started = True
        at = int(data.get("output_index") or 0)
        if kind in _DELTAS:
            delta = data["delta"]
            self._streamed.add(at)
            if not delta:
                return
            if kind == "response.function_call_arguments.delta":
                out.append(ToolCallDelta(self._tool(at, None, out), None, None, str(delta)))
            elif kind.startswith("response.reasoning"):
                out.append(ReasoningDelta(str(delta)))
            else:
                out.append(TextDelta(str(delta)))
        elif kind == "response.reasoning_summary_part.added":
            if int(data.get("summary_index") or 0) > 0:
                out.append(ReasoningDelta("\n\n"))  # parts of one summary, kept apart
        elif kind == "response.output_item.added":
            item = data.get("item") or {}
            if item.get("type") == "function_call":
                self._tool(at, item, out)
        elif kind == "response.output_item.done":
            self._item_done(at, data.get("item") or {}, out)
        elif kind in TERMINAL:
            self._end(kind, data.get("response") or {}, out)

    def _tool(self, output_index: int, item: dict[str, Any] | None, out: list[Event]) -> int:
        """The canonical index of the call at `output_index`, announced when first seen."""
        index = self._tools.get(output_index)
        if index is None:
            index = self._tools[output_index] = len(self._tools)
            item = item or {}
            call_id = item.get("call_id") or item.get("id")
            arguments = str(item.get("arguments") or "")
            if arguments:
                self._streamed.add(output_index)
            out.append(ToolCallDelta(index, call_id, item.get("name"), arguments))
        return index

    def _item_done(self, output_index: int, item: dict[str, Any], out: list[Event]) -> None:
        """An item's whole content, when none of it came as deltas."""
        kind = item.get("type")
        if kind == "function_call":
            index = self._tool(output_index, item, out)
            if output_index not in self._streamed and item.get("arguments"):
                out.append(ToolCallDelta(index, None, None, str(item["arguments"])))
        elif output_index in self._streamed:
            return
        elif kind == "message":
            for part in item.get("content") or ():
                text = part.get(_PART_TEXT.get(part.get("type"), ""))
                if text:
                    out.append(TextDelta(str(text)))
        elif kind == "reasoning":
            text = _reasoning_text(item)
            if text:
                out.append(ReasoningDelta(text))
        self._streamed.add(output_index)

    def _end(self, kind: str, response: dict[str, Any], out: list[Event]) -> None:
        self.done = True
        if kind == "response.failed":
            out.append(StreamError(error_from_wire(response.get("error"))))
            return
        usage = response.get("usage")
        if isinstance(usage, dict):
            out.append(UsageUpdate(usage_from_wire(usage)))
        has_calls = bool(self._tools) or any(
            isinstance(item, dict) and item.get("type") == "function_call"
            for item in response.get("output") or ()
        )
        if kind == "response.incomplete" and response.get("status") is None:
            response = {**response, "status": "incomplete"}
        finish = finish_from_wire(response, has_calls)
        if finish:
            out.append(Finish(finish))


# -- streams: writing ------------------------------------------------------------------------------


class _Item:
    """One output item being written: its index, id, kind and what it holds so far."""

    __slots__ = ("call_id", "delta_head", "id", "index", "kind", "name", "open", "pieces")

    def __init__(self, kind: str, index: int, item_id: str, delta_head: bytes):
        self.kind = kind  # message, reasoning or function_call
        self.index = index
        self.id = item_id
        self.delta_head = delta_head  # the delta event's JSON up to its `delta` value
        self.pieces: list[str] = []  # joined once, when the item is done
        self.call_id = ""
        self.name = ""
        self.open = True

    def as_dict(self) -> dict[str, Any]:
        """The item as the final response lists it (an item still open is incomplete)."""
        status = "completed" if not self.open else "incomplete"
        text = "".join(self.pieces)
        if self.kind == "message":
            return _message_item(self.id, text, status)
        if self.kind == "reasoning":
            return _reasoning_item(self.id, text)
        return _call_item(self.id, self.call_id, self.name, text, status)


_DELTA_NAMES = {
    "message": b"response.output_text.delta",
    "reasoning": b"response.reasoning_summary_text.delta",
    "function_call": b"response.function_call_arguments.delta",
}
_ID_PREFIXES = {"message": "msg", "reasoning": "rs", "function_call": "fc"}
_SEQUENCE_IN = re.compile(rb'"sequence_number"\s*:\s*(\d+)')


class ResponsesEncoder:
    """Canonical events to Responses stream events.

    Item events are written as they come; a delta event is its item's precomputed head, the
    delta and the sequence number, and an item's text is joined once, when it is done. An
    error is written by `end` (with a `response.failed` when the stream was the gateway's
    own): the relay writes an error and the end together, and only the end knows whether the
    upstream's own events were forwarded, which the gateway's lifecycle must not interrupt.
    The `error` event has both documented fields (`code`, `message`) and an `error` member
    (the form OpenAI has been seen to send): with that member openai-python raises `APIError`
    rather than yield an event a client may not look at.
    """

    content_type = b"text/event-stream; charset=utf-8"
    ping = encode_comment(b"ping")  # safe: this stream never sends `id:`
    __slots__ = (
        "_calls",
        "_created",
        "_echo",
        "_error",
        "_finish",
        "_id",
        "_items",
        "_model",
        "_open",
        "_request_id",
        "_seq",
        "_started",
        "_usage",
    )

    def __init__(self, model: str, request_id: str, echo: dict[str, Any] | None = None):
        self._model = model
        self._request_id = request_id
        self._id = f"resp_{request_id}"
        self._echo = echo if echo is not None else response_echo({})
        self._created = int(time.time())
        self._seq = 0
        self._started = False
        self._items: list[_Item] = []
        self._open: list[_Item] = []  # items not done yet, in output order
        self._calls: dict[int, _Item] = {}  # canonical tool index -> its item
        self._finish: str | None = None
        self._usage: Usage | None = None
        self._error: GatewayError | None = None

    # -- framing ------------------------------------------------------------------------------

    def _event(self, name: str, fields: dict[str, Any]) -> bytes:
        payload = {"type": name, **fields, "sequence_number": self._seq}
        self._seq += 1
        return encode_event(orjson.dumps(payload), name.encode())

    def _delta(self, item: _Item, text: str) -> bytes:
        item.pieces.append(text)
        seq = self._seq
        self._seq += 1
        data = item.delta_head + orjson.dumps(text) + b',"sequence_number":%d}' % seq
        return encode_event(data, _DELTA_NAMES[item.kind])

    def _lifecycle(
        self,
        kind: str,
        status: str,
        usage: Usage | None = None,
        finish: str | None = None,
        error: GatewayError | None = None,
    ) -> bytes:
        """A lifecycle event: the whole response as it stands (no output while in progress)."""
        output = [item.as_dict() for item in self._items] if status != "in_progress" else []
        response = _response(
            self._id,
            self._created,
            self._model,
            self._echo,
            status=status,
            output=output,
            usage=usage,
            finish=finish,
            error=error,
        )
        return self._event(kind, {"response": response})

    def _start(self) -> bytes:
        self._started = True
        return self._lifecycle("response.created", "in_progress") + self._lifecycle(
            "response.in_progress", "in_progress"
        )

    # -- items --------------------------------------------------------------------------------

    def _add(self, kind: str, item: dict[str, Any], delta_fields: bytes) -> tuple[_Item, bytes]:
        index = len(self._items)
        item_id = f"{_ID_PREFIXES[kind]}_{self._request_id}_{index}"
        item["id"] = item_id
        head = (
            b'{"type":'
            + orjson.dumps(_DELTA_NAMES[kind].decode())
            + b',"item_id":'
            + orjson.dumps(item_id)
            + b',"output_index":%d' % index
            + delta_fields
            + b',"delta":'
        )
        entry = _Item(kind, index, item_id, head)
        self._items.append(entry)
        self._open.append(entry)
        added = {"item": item, "output_index": index}
        return entry, self._event("response.output_item.added", added)

    def _message(self) -> tuple[_Item, bytes]:
        fields = b',"content_index":0,"logprobs":[]'
        item, out = self._add("message", _message_item("", None, "in_progress"), fields)
        part = {
            "item_id": item.id,
            "output_index": item.index,
            "content_index": 0,
            "part": _text_part(""),
        }
        return item, out + self._event("response.content_part.added", part)

    def _reasoning(self) -> tuple[_Item, bytes]:
        item, out = self._add("reasoning", _reasoning_item("", None), b',"summary_index":0')
        part = {
            "item_id": item.id,
            "output_index": item.index,
            "summary_index": 0,
            "part": {"type": "summary_text", "text": ""},
        }
        return item, out + self._event("response.reasoning_summary_part.added", part)

    def _call(self, e: ToolCallDelta) -> tuple[_Item, bytes]:
        call_id = e.id or f"call_{e.index}"
        name = e.name or ""
        item, out = self._add(
            "function_call", _call_item("", call_id, name, "", "in_progress"), b""
        )
        item.call_id, item.name = call_id, name
        self._calls[e.index] = item
        return item, out

    def _close(self, item: _Item) -> bytes:
        item.open = False
        self._open.remove(item)
        text = "".join(item.pieces)
        where = {"item_id": item.id, "output_index": item.index}
        if item.kind == "message":
            events = [
                (
                    "response.output_text.done",
                    {**where, "content_index": 0, "logprobs": [], "text": text},
                ),
                (
                    "response.content_part.done",
                    {**where, "content_index": 0, "part": _text_part(text)},
                ),
            ]
        elif item.kind == "reasoning":
            part = {"type": "summary_text", "text": text}
            events = [
                (
                    "response.reasoning_summary_text.done",
                    {**where, "summary_index": 0, "text": text},
                ),
                (
                    "response.reasoning_summary_part.done",
                    {**where, "summary_index": 0, "part": part},
                ),
            ]
        else:
            events = [
                (
                    "response.function_call_arguments.done",
                    {**where, "name": item.name, "arguments": text},
                )
            ]
        events.append(
            ("response.output_item.done", {"item": item.as_dict(), "output_index": item.index})
        )
        return b"".join(self._event(name, fields) for name, fields in events)

    def _close_all(self, keep: str | None = None) -> bytes:
        """Finish every open item but those of kind `keep`."""
        return b"".join(self._close(item) for item in list(self._open) if item.kind != keep)

    def _open_item(self, kind: str) -> _Item | None:
        for item in self._open:
            if item.kind == kind:
                return item
        return None

    # -- StreamEncoder ------------------------------------------------------------------------

    def encode(self, events: list[Event]) -> bytes:
        """The events of these canonical events (the lifecycle's start before the first)."""
        out: list[bytes] = [] if self._started else [self._start()]
        for e in events:
            if isinstance(e, TextDelta):
                if not e.text:
                    continue
                item = self._open_item("message")
                if item is None:
                    out.append(self._close_all())
                    item, added = self._message()
                    out.append(added)
                out.append(self._delta(item, e.text))
            elif isinstance(e, ReasoningDelta):
                if not e.text:
                    continue  # a signature alone: the format has no place for it
                item = self._open_item("reasoning")
                if item is None:
                    out.append(self._close_all())
                    item, added = self._reasoning()
                    out.append(added)
                out.append(self._delta(item, e.text))
            elif isinstance(e, ToolCallDelta):
                item = self._calls.get(e.index)
                if item is None:
                    # Calls stay open together, so that interleaved fragments find their item.
                    out.append(self._close_all(keep="function_call"))
                    item, added = self._call(e)
                    out.append(added)
                if e.arguments:
                    out.append(self._delta(item, e.arguments))
            elif isinstance(e, Finish):
                self._finish = e.reason
            elif isinstance(e, UsageUpdate):
                self._usage = e.usage
        return b"".join(out)

    def error(self, err: GatewayError) -> bytes:
        """Nothing yet: `err` is kept, and `end` writes it (see the class docstring)."""
        self._error = err
        return b""  # written by `end` (see the class docstring)

    def _error_event(self, err: GatewayError, seq: int) -> bytes:
        obj = error_object(err)
        payload = {
            "type": "error",
            "code": obj["code"],
            "message": obj["message"],
            "param": None,
            "error": obj,
            "sequence_number": seq,
        }
        self._seq = seq + 1
        return encode_event(orjson.dumps(payload), b"error")

    def end(self, state: StreamState) -> bytes:
        """The stream's last events: open items done and the terminal event; after a failure
        the `error` event and `response.failed`; in pass-through nothing, or the `error`."""
        err = self._error
        if state.passthrough:
            if err is None:
                return b""  # the upstream's own end went out
            # Numbered after the upstream's last event, when the last write shows it.
            found = _SEQUENCE_IN.findall(state.last_sent)
            return self._error_event(err, int(found[-1]) + 1 if found else 0)
        out = b"" if self._started else self._start()
        usage = state.usage or self._usage
        if err is not None:
            out += self._error_event(err, self._seq)
            return out + self._lifecycle("response.failed", "failed", usage=usage, error=err)
        out += self._close_all()
        if not self._items:
            item, added = self._message()
            out += added + self._close(item)
        finish = self._finish or state.finish_reason or "stop"
        status = status_of(finish)
        return out + self._lifecycle(f"response.{status}", status, usage=usage, finish=finish)
