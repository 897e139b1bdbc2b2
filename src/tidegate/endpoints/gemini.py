"""`POST /v1beta/models/{model}:generateContent` and `:streamGenerateContent`: Gemini, inbound.

With `?alt=sse` the stream is nothing but `data: <one-line JSON>` events framed with CRLF, as
Google sends them: no comments, `event:`, `id:` or `[DONE]`, which python-genai cannot parse.
Without it the stream is one JSON array written element by element. A failure after the
stream began is a bare `{"error": {...}}` object written on its own, after which the connection
closes; both Google SDKs raise on it (protocols reference §5.6).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import orjson

from tidegate.asgi import Request, Send
from tidegate.context import RequestContext
from tidegate.endpoints.chat import serve_chat
from tidegate.errors import GatewayError, NotFound
from tidegate.events import (
    ChatRequest,
    Completion,
    Event,
    Message,
    Part,
    ReasoningDelta,
    TextDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
    arguments_object,
)
from tidegate.formats.base import StreamState
from tidegate.formats.gemini import validate_request
from tidegate.providers.gemini import FINISH_TO_GEMINI, STATUS_NAMES, usage_to_gemini

if TYPE_CHECKING:
    from tidegate.app import Gateway

PREFIXES = ("/v1beta/models/", "/v1/models/")  # python-genai uses v1beta; newer releases v1
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


def handle(gw: Gateway, ctx: RequestContext, request: Request, send: Send) -> Awaitable[None]:
    """Serve generateContent or streamGenerateContent for the model named in the path."""
    prefix = next(p for p in PREFIXES if request.path.startswith(p))
    model, _, method = request.path[len(prefix) :].rpartition(":")
    if not model or method not in ("generateContent", "streamGenerateContent"):
        raise NotFound(f"no route for {request.path}; use models/{{model}}:generateContent")
    body = request.json_object()
    validate_request(body)
    stream = method == "streamGenerateContent"
    sse = request.query.get("alt") == "sse"
    return serve_chat(
        gw,
        ctx,
        send,
        model=model,
        stream=stream,
        # The upstream is always asked for SSE, so only SSE clients can take its bytes as is.
        wire_format="gemini" if sse or not stream else None,
        body=body,
        canonical=lambda: chat_request_from_gemini(body, model),
        encoder=GeminiEncoder(model, ctx.request_id, sse=sse),
        render=lambda c: render_response(c, model, ctx.request_id),
    )


def _get(d: dict[str, Any], camel: str, default: Any = None) -> Any:
    """A field by its camelCase name or its snake_case twin (the REST API accepts both)."""
    if camel in d:
        return d[camel]
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)
    return d.get(snake, default)


def chat_request_from_gemini(body: dict[str, Any], model: str) -> ChatRequest:
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


def error_object(err: GatewayError) -> dict[str, Any]:
    """The Gemini `error` member for a gateway error."""
    return {
        "code": err.status,
        "message": err.message,
        "status": STATUS_NAMES.get(err.status, "UNKNOWN"),
    }


def render_error(err: GatewayError) -> bytes:
    """The error body before the stream began, in Google's shape."""
    return orjson.dumps({"error": error_object(err)})


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


def render_response(c: Completion, model: str, request_id: str) -> bytes:
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
    usage = usage_to_gemini(c.usage) if c.usage else None
    return orjson.dumps(_response(parts, model, request_id, finish, usage))


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
        usage = usage_to_gemini(state.usage) if state.usage is not None else None
        out = self._frame(_response(parts, self._model, self._request_id, finish, usage))
        return out if self._sse else out + b"]"
