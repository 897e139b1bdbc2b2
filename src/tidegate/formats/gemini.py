"""The Gemini format (`generateContent` / `streamGenerateContent`), both ways: its whole
vocabulary in one module.

- **Requests**: the inbound schema (`validate_request`; the REST API takes camelCase and
  snake_case names alike), `request_from_wire` and `request_to_wire`.
- **Streams**: with `?alt=sse`, each event is one `data:` line holding a whole
  `GenerateContentResponse` (Google frames them with CRLF); without it, one JSON array written
  element by element. Text parts are deltas; thought parts carry `"thought": true`; function
  calls arrive whole. `usageMetadata` is cumulative on every chunk. There is no end marker: the
  connection closes, and a finish reason on the last chunk tells a complete stream from a cut
  one. A failure inside a 200 stream arrives as a bare `{"error": {...}}` object without
  `data:`; python-genai breaks on anything but `data:` lines, so the encoder writes nothing else
  (no comments, no pings).
- **Usage**: `promptTokenCount` includes `cachedContentTokenCount`; `thoughtsTokenCount` is
  separate from `candidatesTokenCount`, so canonical output = candidates + thoughts.
- **Errors**: Google's `{"error": {"code", "message", "status"}}`, with the status names below.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from pydantic import AliasChoices, AliasGenerator, ConfigDict, Field
from pydantic.alias_generators import to_camel

from tidegate.errors import GatewayError, UpstreamStatusError
from tidegate.events import (
    ChatRequest,
    Completion,
    CompletionBuilder,
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
    colon_wording,
)
from tidegate.sse import DEFAULT_MAX_EVENT_BYTES, SSEDecoder, SSEEvent

Int32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
Int32Number = Annotated[float, Field(ge=-(2**31), le=2**31 - 1)]


def _either_spelling(name: str) -> AliasChoices:
    return AliasChoices(to_camel(name), name)


class GeminiModel(Inbound):
    """Base of the Gemini models: fields by camelCase or snake_case name."""

    model_config = ConfigDict(alias_generator=AliasGenerator(validation_alias=_either_spelling))


class FunctionCall(GeminiModel):
    """A function call the model made."""

    name: str
    args: dict[str, Any] | None = None
    id: str | None = None


class FunctionResponse(GeminiModel):
    """The result of a function call."""

    name: str
    response: dict[str, Any] | None = None
    id: str | None = None


class Blob(GeminiModel):
    """Inline data: a MIME type and base64 bytes."""

    mime_type: str
    data: str


class FileData(GeminiModel):
    """Data by URI."""

    mime_type: str | None = None
    file_uri: str


class WirePart(GeminiModel):
    """One part of a content: text, a function call or response, or data."""

    text: str | None = None
    thought: bool | None = None
    function_call: FunctionCall | None = None
    function_response: FunctionResponse | None = None
    inline_data: Blob | None = None
    file_data: FileData | None = None


class Content(GeminiModel):
    """One turn: `role` is `user` or `model`."""

    role: str | None = None
    parts: Annotated[list[WirePart], Field(max_length=MAX_PARTS)] | None = None


class FunctionDeclaration(GeminiModel):
    """A function the model may call."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    parameters_json_schema: dict[str, Any] | None = None


class WireTool(GeminiModel):
    """A tool: function declarations (or another kind, such as search, passed through)."""

    function_declarations: (
        Annotated[list[FunctionDeclaration], Field(max_length=MAX_TOOLS)] | None
    ) = None


class FunctionCallingConfig(GeminiModel):
    """How the model may call functions: a mode and the names it may choose from."""

    mode: str | None = None
    allowed_function_names: list[str] | None = None


class ToolConfig(GeminiModel):
    """`toolConfig`: the function calling configuration."""

    function_calling_config: FunctionCallingConfig | None = None


class ThinkingConfig(GeminiModel):
    """The thinking budget, and whether thoughts are returned."""

    thinking_budget: Int32 | None = None
    include_thoughts: bool | None = None


class GenerationConfig(GeminiModel):
    """Sampling, limits and output format."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: Int32Number | None = None
    max_output_tokens: Int32 | None = None
    candidate_count: Int32 | None = None
    stop_sequences: Annotated[list[str], Field(max_length=MAX_STOP)] | None = None
    response_mime_type: str | None = None
    response_schema: dict[str, Any] | None = None
    response_json_schema: Any = None
    thinking_config: ThinkingConfig | None = None


class GenerateContentRequest(GeminiModel):
    """A generateContent request, as much of it as the gateway reads."""

    contents: Annotated[list[Content], Field(min_length=1, max_length=MAX_MESSAGES)]
    system_instruction: Content | None = None
    tools: Annotated[list[WireTool], Field(max_length=MAX_TOOLS)] | None = None
    tool_config: ToolConfig | None = None
    generation_config: GenerationConfig | None = None


SCHEMA = Schema(
    GenerateContentRequest,
    wording=colon_wording,
    hints={"contents": "a non-empty array of contents"},
)


def validate_request(body: dict[str, Any]) -> GenerateContentRequest:
    """`body` as a generateContent request, or `InvalidRequest` naming the first wrong field
    (`contents[0].parts: must be an array ...`, `generationConfig.candidateCount: must be an
    integer ...`)."""
    return SCHEMA.validate(body)


# -- vocabulary ------------------------------------------------------------------------------------


_FILTERED = {
    "SAFETY",
    "RECITATION",
    "BLOCKLIST",
    "PROHIBITED_CONTENT",
    "SPII",
    "IMAGE_SAFETY",
    "IMAGE_PROHIBITED_CONTENT",
    "IMAGE_RECITATION",
    "LANGUAGE",
}


FINISH_TO_GEMINI = {
    "stop": "STOP",
    "length": "MAX_TOKENS",
    "tool_calls": "STOP",
    "content_filter": "SAFETY",
}


STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "INVALID_ARGUMENT",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


CARRIED = frozenset(
    {
        "contents",
        "systemInstruction",
        "system_instruction",
        "tools",
        "toolConfig",
        "tool_config",
        "generationConfig",
        "generation_config",
    }
)


CARRIED_CONFIG = frozenset(
    {
        "temperature",
        "topP",
        "top_p",
        "topK",
        "top_k",
        "maxOutputTokens",
        "max_output_tokens",
        "stopSequences",
        "stop_sequences",
        "responseMimeType",
        "response_mime_type",
        "responseSchema",
        "response_schema",
        "responseJsonSchema",
        "response_json_schema",
        "thinkingConfig",
        "thinking_config",
        "candidateCount",
        "candidate_count",
    }
)


def finish_from_gemini(reason: str, saw_tool_call: bool) -> str:
    """A Gemini finishReason in the canonical vocabulary."""
    if reason == "STOP":
        return "tool_calls" if saw_tool_call else "stop"
    if reason == "MAX_TOKENS":
        return "length"
    if reason in _FILTERED:
        return "content_filter"
    return reason.lower()


def usage_from_wire(u: dict[str, Any]) -> Usage:
    """Normalize Gemini usageMetadata."""
    thoughts = int(u.get("thoughtsTokenCount") or 0)
    return Usage(
        input_tokens=int(u.get("promptTokenCount") or 0)
        + int(u.get("toolUsePromptTokenCount") or 0),
        output_tokens=int(u.get("candidatesTokenCount") or 0) + thoughts,
        cache_read_tokens=int(u.get("cachedContentTokenCount") or 0),
        reasoning_tokens=thoughts,
    )


def usage_to_wire(usage: Usage) -> dict[str, int]:
    """Canonical usage as Gemini usageMetadata."""
    out = {
        "promptTokenCount": usage.input_tokens,
        "candidatesTokenCount": usage.output_tokens - usage.reasoning_tokens,
        "totalTokenCount": usage.input_tokens + usage.output_tokens,
    }
    if usage.reasoning_tokens:
        out["thoughtsTokenCount"] = usage.reasoning_tokens
    if usage.cache_read_tokens:
        out["cachedContentTokenCount"] = usage.cache_read_tokens
    return out


def error_from_wire(err: Any) -> UpstreamStatusError:
    """The gateway error for a Gemini `error` object."""
    if isinstance(err, dict):
        status = err.get("status")
        message = str(err.get("message") or status or "upstream reported an error")
        code = err.get("code")
        upstream = status_for_error_type(str(status) if status else None, code)
        return UpstreamStatusError(message, upstream_status=upstream, upstream_type=status)
    return UpstreamStatusError(str(err), upstream_status=500)


def error_object(err: GatewayError) -> dict[str, Any]:
    """The Gemini `error` member for a gateway error."""
    return {
        "code": err.status,
        "message": err.message,
        "status": STATUS_NAMES.get(err.status, "UNKNOWN"),
    }


def error_body(err: GatewayError) -> bytes:
    """The error body before the stream began, in Google's shape (a Gemini upstream's own
    error body as it came, when it failed with one)."""
    own = upstream_error_body(err, "gemini")
    return orjson.dumps(own if own is not None else {"error": error_object(err)})


# -- requests --------------------------------------------------------------------------------------


def _get(d: dict[str, Any], camel: str, default: Any = None) -> Any:
    """A field by its camelCase name or its snake_case twin (the REST API accepts both)."""
    if camel in d:
        return d[camel]
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)
    return d.get(snake, default)


def request_from_wire(body: dict[str, Any], model: str) -> ChatRequest:
    """A Gemini request as a canonical request (fields it cannot carry listed).

    `body` has passed `tidegate.formats.gemini.validate_request`: every field read here has
    the type the schema gives it (by whichever spelling `_get` finds first, as the schema
    does)."""
    dropped = sorted(k for k, v in body.items() if k not in CARRIED and v is not None)
    messages: list[Message] = []
    system = _get(body, "systemInstruction")
    if isinstance(system, dict):
        text = "\n".join(str(p.get("text") or "") for p in system.get("parts") or [])
        messages.append(Message("system", [Part("text", text=text)]))
    pending: dict[str, list[str]] = {}  # function name -> ids of calls not yet answered
    counter = 0
    for content in _get(body, "contents"):
        role = "assistant" if content.get("role") == "model" else "user"
        message = Message(role)
        results: list[Message] = []
        reasoning: list[str] = []
        for part in content.get("parts") or []:
            call = _get(part, "functionCall")
            response = _get(part, "functionResponse")
            inline = _get(part, "inlineData")
            file = _get(part, "fileData")
            if part.get("text") is not None:
                if part.get("thought"):
                    reasoning.append(str(part["text"]))
                else:
                    message.content.append(Part("text", text=str(part["text"])))
            elif isinstance(call, dict):
                call_id = str(call.get("id") or f"call_{counter}")
                counter += 1
                pending.setdefault(str(call.get("name")), []).append(call_id)
                args = orjson.dumps(call.get("args") or {}).decode()
                message.tool_calls.append(ToolCall(call_id, str(call.get("name") or ""), args))
            elif isinstance(response, dict):
                name = str(response.get("name") or "")
                ids = pending.get(name) or []
                call_id = str(response.get("id") or (ids.pop(0) if ids else name))
                text = _result_text(response.get("response"))
                results.append(
                    Message("tool", [Part("text", text=text)], tool_call_id=call_id, name=name)
                )
            elif isinstance(inline, dict):
                message.content.append(
                    Part("image", media_type=_get(inline, "mimeType"), data=inline.get("data"))
                )
            elif isinstance(file, dict):
                message.content.append(
                    Part("image", media_type=_get(file, "mimeType"), url=_get(file, "fileUri"))
                )
            else:
                dropped.append(f"parts[{next(iter(part), '?')}]")
        if reasoning:
            message.reasoning = "".join(reasoning)
        messages += results
        if message.content or message.tool_calls or message.reasoning or not results:
            messages.append(message)
    tools: list[Tool] = []
    for tool in _get(body, "tools") or []:
        declarations = _get(tool, "functionDeclarations")
        if declarations is None:
            dropped.append(f"tools[{next(iter(tool), '?')}]")
            continue
        for d in declarations:
            schema = d.get("parameters") or _get(d, "parametersJsonSchema") or {}
            tools.append(Tool(str(d.get("name") or ""), str(d.get("description") or ""), schema))
    calling = _get(_get(body, "toolConfig") or {}, "functionCallingConfig") or {}
    mode = str(calling.get("mode") or "").upper()
    allowed = _get(calling, "allowedFunctionNames") or []
    choice: str | dict[str, Any] | None = {"AUTO": "auto", "ANY": "required", "NONE": "none"}.get(
        mode
    )
    if mode == "ANY" and len(allowed) == 1:
        choice = {"name": allowed[0]}
    config = _get(body, "generationConfig") or {}
    dropped += [f"generationConfig.{k}" for k in config if k not in CARRIED_CONFIG]
    if (_get(config, "candidateCount") or 1) > 1:
        dropped.append("generationConfig.candidateCount")
    schema = _get(config, "responseJsonSchema") or _get(config, "responseSchema")
    thinking = _get(config, "thinkingConfig") or {}
    budget = _get(thinking, "thinkingBudget")
    stop = _get(config, "stopSequences") or []
    return ChatRequest(
        model=model,
        messages=messages,
        max_tokens=_get(config, "maxOutputTokens"),
        temperature=config.get("temperature"),
        top_p=_get(config, "topP"),
        top_k=_whole(_get(config, "topK")),
        stop=[str(s) for s in stop],
        tools=tools,
        tool_choice=choice,
        json_mode=_get(config, "responseMimeType") == "application/json",
        json_schema={"name": "response", "schema": schema} if schema else None,
        reasoning_budget=budget if isinstance(budget, int) and budget > 0 else None,
        dropped=sorted(set(dropped)),
    )


def _whole(value: float | None) -> int | None:
    """topK as an integer: python-genai sends it as a float (40.0)."""
    return None if value is None else int(value)


def _result_text(response: Any) -> str:
    """A functionResponse payload as tool-result text: a lone result string as is, else JSON."""
    if isinstance(response, dict) and len(response) == 1:
        (value,) = response.values()
        if isinstance(value, str):
            return value
    return orjson.dumps(response or {}).decode()


def request_to_wire(request: ChatRequest, model: str) -> tuple[dict[str, Any], list[str]]:
    """A canonical request as a GenerateContentRequest body (the model is in the URL), and
    the fields it cannot carry."""
    dropped: list[str] = []
    body: dict[str, Any] = {"contents": _contents(request, dropped)}
    system = "\n\n".join(m.text() for m in request.messages if m.role == "system")
    if system:
        body["systemInstruction"] = {"parts": [{"text": system}]}
    config: dict[str, Any] = {}
    for key, value in (
        ("temperature", request.temperature),
        ("topP", request.top_p),
        ("topK", request.top_k),
        ("maxOutputTokens", request.max_tokens),
    ):
        if value is not None:
            config[key] = value
    if request.stop:
        config["stopSequences"] = request.stop
    if request.json_schema is not None:
        config["responseMimeType"] = "application/json"
        config["responseJsonSchema"] = request.json_schema.get("schema", request.json_schema)
    elif request.json_mode:
        config["responseMimeType"] = "application/json"
    budget = reasoning_budget(request.reasoning_effort, request.reasoning_budget)
    if budget:
        config["thinkingConfig"] = {"thinkingBudget": budget, "includeThoughts": True}
    if config:
        body["generationConfig"] = config
    if request.tools:
        body["tools"] = [
            {
                "functionDeclarations": [
                    {
                        "name": t.name,
                        "description": t.description,
                        **({"parameters": t.parameters} if t.parameters else {}),
                    }
                    for t in request.tools
                ]
            }
        ]
    choice = request.tool_choice
    if choice is not None:
        if isinstance(choice, dict):
            calling = {"mode": "ANY", "allowedFunctionNames": [choice["name"]]}
        else:
            calling = {
                "mode": {"auto": "AUTO", "none": "NONE", "required": "ANY"}.get(choice, "AUTO")
            }
        body["toolConfig"] = {"functionCallingConfig": calling}
    if request.user:
        dropped.append("user")
    return body, dropped


def _contents(request: ChatRequest, dropped: list[str]) -> list[dict[str, Any]]:
    contents: list[dict[str, Any]] = []
    for m in request.messages:
        if m.role == "system":
            continue
        parts: list[dict[str, Any]] = []
        if m.role == "tool":
            response = arguments_object(m.text())
            if set(response) == {"arguments"}:
                response = {"result": m.text()}
            name = m.name or request.tool_name(m.tool_call_id)
            parts.append({"functionResponse": {"name": name, "response": response}})
        else:
            for p in m.content:
                if p.type == "text":
                    if p.text:
                        parts.append({"text": p.text})
                elif p.url:
                    parts.append(
                        {"fileData": {"mimeType": p.media_type or "image/png", "fileUri": p.url}}
                    )
                else:
                    parts.append(
                        {"inlineData": {"mimeType": p.media_type or "image/png", "data": p.data}}
                    )
            for call in m.tool_calls:
                parts.append(
                    {"functionCall": {"name": call.name, "args": arguments_object(call.arguments)}}
                )
            if m.reasoning and "messages[].reasoning" not in dropped:
                dropped.append("messages[].reasoning")
        role = "model" if m.role == "assistant" else "user"
        if not parts:
            parts.append({"text": ""})
        if contents and contents[-1]["role"] == role and m.role == "tool":
            contents[-1]["parts"] += parts
        else:
            contents.append({"role": role, "parts": parts})
    return contents


def passthrough_to_wire(
    body: dict[str, Any], model: str, stream: bool
) -> tuple[dict[str, Any], PassthroughFilter | None]:
    """A client's Gemini body, sent as it came (the model is in the URL)."""
    return body, None


# -- responses -------------------------------------------------------------------------------------


def completion_from_wire(body: bytes) -> Completion:
    """A generateContent response body as a canonical completion (an error body raises it)."""
    data = loads_object(body, "generateContent response")
    if data.get("error"):
        raise error_from_wire(data["error"])
    parser = GeminiStreamParser()
    events: list[Event] = []
    parser.response(data, events)
    builder = CompletionBuilder()
    for event in events:
        builder.add(event)
    completion = builder.build()
    completion.upstream_id = data.get("responseId")
    return completion


def _response(
    parts: list[dict[str, Any]],
    model: str,
    request_id: str,
    finish: str | None = None,
    usage: dict[str, int] | None = None,
) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    out: dict[str, Any] = {"candidates": [candidate]}
    if usage is not None:
        out["usageMetadata"] = usage
    out["modelVersion"] = model
    out["responseId"] = request_id
    return out


def completion_to_wire(c: Completion, model: str, request_id: str) -> bytes:
    """A canonical completion as a `GenerateContentResponse`."""
    parts: list[dict[str, Any]] = []
    if c.reasoning:
        parts.append({"text": c.reasoning, "thought": True})
    if c.text or not c.tool_calls:
        parts.append({"text": c.text})
    for call in c.tool_calls:
        parts.append(
            {
                "functionCall": {
                    "id": call.id,
                    "name": call.name,
                    "args": arguments_object(call.arguments),
                }
            }
        )
    finish = FINISH_TO_GEMINI.get(c.finish_reason or "stop", "OTHER")
    usage = usage_to_wire(c.usage) if c.usage else None
    return orjson.dumps(_response(parts, model, request_id, finish, usage))


# -- streams ---------------------------------------------------------------------------------------


def stream_parser(
    *, side: bool = False, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
) -> StreamParser:
    """A parser for one Gemini stream (`side`: a pass-through side parser)."""
    return GeminiStreamParser(side=side, max_event_bytes=max_event_bytes)


class GeminiStreamParser(StreamParser):
    """GenerateContentResponse chunks (and a trailing bare error object) to canonical events.

    As a side parser, after the first event only the latest data is kept and parsed at the
    end: usage is cumulative and the finish reason is on the last chunk.
    """

    __slots__ = ("_decoder", "_last", "_side", "_tool_index", "done", "finished", "started")

    def __init__(self, *, side: bool = False, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES):
        self._decoder = SSEDecoder(keep_stray=True, max_event_bytes=max_event_bytes)
        self._side = side
        self._last: str | None = None
        self._tool_index = 0
        self.started = False
        self.finished = False
        self.done = False

    @property
    def complete(self) -> bool:
        return self.finished

    def feed(self, chunk: bytes) -> list[Event]:
        return self._handle(self._decoder.decode(chunk))

    def _handle(self, events: list[SSEEvent]) -> list[Event]:
        out: list[Event] = []
        for sse in events:
            if self._side and self.started and '"error"' not in sse.data:
                self._last = sse.data
                continue
            try:
                data = loads_object(sse.data, "stream chunk")
                if data.get("error"):
                    self.done = True
                    out.append(StreamError(error_from_wire(data["error"])))
                    return out
                self.started = True
                self.response(data, out)
            except SKIPPABLE:
                self.skip(sse.data)
        if self._decoder.stray_lines:
            self._stray(out)
        return out

    def finish(self) -> list[Event]:
        out = self._handle(self._decoder.finish())
        if self.done:
            return out
        if self._decoder.stray_lines:
            self._stray(out, final=True)
        if self._last is not None and not out:
            try:
                self.response(loads_object(self._last, "stream chunk"), out)
            except SKIPPABLE:
                self.skip(self._last)
            self._last = None
        # Closing the connection after a finish reason is how a Gemini stream ends.
        self.done = self.done or self.finished
        return out

    def _stray(self, out: list[Event], final: bool = False) -> None:
        text = b"\n".join(self._decoder.stray_lines)
        if not final and text.count(b"{") != text.count(b"}"):
            return  # the bare object is still arriving
        self._decoder.take_stray()
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            value = None
        err = value.get("error") if isinstance(value, dict) else None
        if err is None:
            self.skip(text)  # a line that is neither SSE nor Google's error object
            return
        out.append(StreamError(error_from_wire(err)))
        self.done = True

    def response(self, data: dict[str, Any], out: list[Event]) -> None:
        """Events of one GenerateContentResponse."""
        candidates = data.get("candidates") or []
        if candidates:
            candidate = candidates[0]
            for part in (candidate.get("content") or {}).get("parts") or ():
                text = part.get("text")
                if text is not None:
                    if part.get("thought"):
                        if text:
                            out.append(ReasoningDelta(text))
                    elif text:
                        out.append(TextDelta(text))
                call = part.get("functionCall")
                if isinstance(call, dict):
                    index = self._tool_index
                    self._tool_index += 1
                    call_id = call.get("id") or f"call_{index}"
                    args = orjson.dumps(call.get("args") or {}).decode()
                    out.append(ToolCallDelta(index, call_id, call.get("name") or "", args))
            reason = candidate.get("finishReason")
            if reason:
                self.finished = True
                out.append(Finish(finish_from_gemini(reason, self._tool_index > 0)))
        elif (data.get("promptFeedback") or {}).get("blockReason"):
            self.finished = True
            out.append(Finish("content_filter"))
        usage = data.get("usageMetadata")
        if isinstance(usage, dict):
            out.append(UsageUpdate(usage_from_wire(usage)))


class GeminiEncoder:
    """Canonical events to Gemini stream chunks (SSE, or one JSON array)."""

    ping = b""  # python-genai fails on anything but data lines, so nothing keeps it alive
    __slots__ = ("_calls", "_model", "_opened", "_request_id", "_sse", "content_type")

    def __init__(self, model: str, request_id: str, *, sse: bool):
        self._model = model
        self._request_id = request_id
        self._sse = sse
        self._opened = False  # array mode: "[" written
        self._calls: dict[int, list[str]] = {}  # index -> [id, name, argument fragments...]
        self.content_type = b"text/event-stream" if sse else b"application/json"

    def _frame(self, payload: dict[str, Any]) -> bytes:
        data = orjson.dumps(payload)
        if self._sse:
            return b"data: " + data + b"\r\n\r\n"
        prefix = b",\r\n" if self._opened else b"["
        self._opened = True
        return prefix + data

    def _complete_calls(self, keep: int | None = None) -> list[dict[str, Any]]:
        """Function calls whose arguments are complete (all but `keep`), in index order."""
        parts = []
        for index in sorted(self._calls):
            if index == keep:
                continue
            call_id, name, *fragments = self._calls.pop(index)
            args = arguments_object("".join(fragments))
            parts.append({"functionCall": {"id": call_id, "name": name, "args": args}})
        return parts

    def encode(self, events: list[Event]) -> bytes:
        parts: list[dict[str, Any]] = []
        for e in events:
            if isinstance(e, TextDelta):
                parts.append({"text": e.text})
            elif isinstance(e, ReasoningDelta):
                if e.text:
                    parts.append({"text": e.text, "thought": True})
            elif isinstance(e, ToolCallDelta):
                if e.index not in self._calls:
                    parts += self._complete_calls()  # Gemini sends calls whole: flush earlier ones
                    self._calls[e.index] = [e.id or f"call_{e.index}", e.name or ""]
                self._calls[e.index].append(e.arguments)
        if not parts:
            return b""
        return self._frame(_response(parts, self._model, self._request_id))

    def error(self, err: GatewayError) -> bytes:
        data = orjson.dumps({"error": error_object(err)})
        if self._sse:
            return data + b"\n"
        prefix = b",\r\n" if self._opened else b"["
        self._opened = True
        return prefix + data

    def end(self, state: StreamState) -> bytes:
        if state.error is not None:
            return b"" if self._sse else b"]"
        parts = self._complete_calls() or [{"text": ""}]
        finish = FINISH_TO_GEMINI.get(state.finish_reason or "stop", "OTHER")
        usage = usage_to_wire(state.usage) if state.usage is not None else None
        out = self._frame(_response(parts, self._model, self._request_id, finish, usage))
        return out if self._sse else out + b"]"
