"""Google Gemini upstreams: `models/{model}:generateContent` and `:streamGenerateContent?alt=sse`.

Auth is the `x-goog-api-key` header. Each stream event is one `data:` line holding a whole
`GenerateContentResponse` (Google frames them with CRLF). Text parts are deltas; thought parts
carry `"thought": true`; function calls arrive whole. `usageMetadata` is cumulative on every
chunk. There is no end marker: the connection closes, and a finish reason on the last chunk
tells a complete stream from a cut one. A failure inside a 200 stream arrives as a bare JSON
`{"error": {...}}` object without `data:` (protocols reference §5.5): the decoder keeps such
stray lines and this parser reads them.

Usage: `promptTokenCount` includes `cachedContentTokenCount`; `thoughtsTokenCount` is separate
from `candidatesTokenCount`, so canonical output = candidates + thoughts.

This module also holds the Gemini vocabulary shared with the inbound Gemini endpoint.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson

from tidegate.errors import UpstreamStatusError
from tidegate.events import (
    ChatRequest,
    Completion,
    CompletionBuilder,
    Event,
    Finish,
    ReasoningDelta,
    StreamError,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageUpdate,
    arguments_object,
)
from tidegate.formats.base import SKIPPABLE, StreamParser, loads_object, status_for_error_type
from tidegate.providers.base import Provider, UpstreamCall
from tidegate.settings import ConfigProblem, HttpDeploymentSettings
from tidegate.sse import DEFAULT_MAX_EVENT_BYTES, SSEDecoder, SSEEvent

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
EFFORT_BUDGETS = {"minimal": 512, "low": 2048, "medium": 8192, "high": 24576}
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


def finish_from_gemini(reason: str, saw_tool_call: bool) -> str:
    """A Gemini finishReason in the canonical vocabulary."""
    if reason == "STOP":
        return "tool_calls" if saw_tool_call else "stop"
    if reason == "MAX_TOKENS":
        return "length"
    if reason in _FILTERED:
        return "content_filter"
    return reason.lower()


def usage_from_gemini(u: dict[str, Any]) -> Usage:
    """Normalize Gemini usageMetadata."""
    thoughts = int(u.get("thoughtsTokenCount") or 0)
    return Usage(
        input_tokens=int(u.get("promptTokenCount") or 0)
        + int(u.get("toolUsePromptTokenCount") or 0),
        output_tokens=int(u.get("candidatesTokenCount") or 0) + thoughts,
        cache_read_tokens=int(u.get("cachedContentTokenCount") or 0),
        reasoning_tokens=thoughts,
    )


def usage_to_gemini(usage: Usage) -> dict[str, int]:
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


def error_from_gemini(err: Any) -> UpstreamStatusError:
    """The gateway error for a Gemini `error` object."""
    if isinstance(err, dict):
        status = err.get("status")
        message = str(err.get("message") or status or "upstream reported an error")
        code = err.get("code")
        upstream = status_for_error_type(str(status) if status else None, code)
        return UpstreamStatusError(message, upstream_status=upstream, upstream_type=status)
    return UpstreamStatusError(str(err), upstream_status=500)


class GeminiSettings(HttpDeploymentSettings):
    """Google's Gemini API (or a compatible server at `base_url`)."""

    provider: Literal["gemini"]

    def problems(self) -> list[ConfigProblem]:
        if self.api_key is None and not self.base_url:
            return [("api_key", "is required for Google's API", "set it, or a base_url")]
        return []


class GeminiProvider(Provider):
    """A Gemini API upstream (Google AI Studio's generativelanguage endpoint)."""

    name = "gemini"
    wire_format = "gemini"
    settings = GeminiSettings
    default_base_url = DEFAULT_BASE_URL
    path = "/v1beta/models/{model}:generateContent"
    stream_path = "/v1beta/models/{model}:streamGenerateContent?alt=sse"
    key_header = ("x-goog-api-key", "{key}")

    def build_passthrough(self, body: dict[str, Any], stream: bool) -> UpstreamCall:
        url = self.stream_url if stream else self.url
        headers = self.headers_for(stream)
        return UpstreamCall(url, orjson.dumps(body), headers, stream=stream)

    def build_call(self, request: ChatRequest) -> UpstreamCall:
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
        budget = request.reasoning_budget or EFFORT_BUDGETS.get(request.reasoning_effort or "")
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
        url = self.stream_url if request.stream else self.url
        headers = self.headers_for(request.stream)
        return UpstreamCall(
            url, orjson.dumps(body), headers, stream=request.stream, dropped=dropped
        )

    def stream_parser(self, *, side: bool = False) -> StreamParser:
        return GeminiStreamParser(side=side, max_event_bytes=self.max_event_bytes)

    def parse_completion(self, body: bytes) -> Completion:
        data = loads_object(body, "generateContent response")
        if data.get("error"):
            raise error_from_gemini(data["error"])
        parser = GeminiStreamParser()
        events: list[Event] = []
        parser.response(data, events)
        builder = CompletionBuilder()
        for event in events:
            builder.add(event)
        completion = builder.build()
        completion.upstream_id = data.get("responseId")
        return completion


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
                    out.append(StreamError(error_from_gemini(data["error"])))
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
        out.append(StreamError(error_from_gemini(err)))
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
            out.append(UsageUpdate(usage_from_gemini(usage)))
