"""Ollama's native API: `POST /api/chat`, streamed as NDJSON: the whole vocabulary.

Each line is a `ChatResponse` object: `message.content` and `message.thinking` are deltas,
`message.tool_calls` arrive whole with `arguments` as an object, and the object with
`"done": true` ends the stream with `done_reason` and the token counts `prompt_eval_count` and
`eval_count`. An error inside a 200 stream is a line `{"error": "..."}`. (Ollama's
OpenAI-compatible `/v1` speaks formats/openai_chat.py.)
"""

from __future__ import annotations

from typing import Any

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
from tidegate.formats.base import SKIPPABLE, StreamParser, loads_object
from tidegate.sse import DEFAULT_MAX_EVENT_BYTES, NDJSONDecoder


def request_to_wire(request: ChatRequest, model: str) -> tuple[dict[str, Any], list[str]]:
    """A canonical request as an `/api/chat` body for `model`, and the fields it cannot carry."""
    dropped: list[str] = []
    messages: list[dict[str, Any]] = []
    for m in request.messages:
        out: dict[str, Any] = {"role": m.role, "content": m.text()}
        images = [p.data for p in m.content if p.type == "image" and p.data]
        if any(p.type == "image" and p.url for p in m.content) and "image URLs" not in dropped:
            dropped.append("image URLs")  # Ollama takes base64 images only
        if images:
            out["images"] = images
        if m.tool_calls:
            out["tool_calls"] = [
                {"function": {"name": c.name, "arguments": arguments_object(c.arguments)}}
                for c in m.tool_calls
            ]
        if m.role == "tool":
            out["tool_name"] = m.name or request.tool_name(m.tool_call_id)
        if m.reasoning and m.role == "assistant":
            out["thinking"] = m.reasoning
        messages.append(out)
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "stream": request.stream,
    }
    options: dict[str, Any] = {}
    for key, value in (
        ("temperature", request.temperature),
        ("top_p", request.top_p),
        ("top_k", request.top_k),
        ("num_predict", request.max_tokens),
    ):
        if value is not None:
            options[key] = value
    if request.stop:
        options["stop"] = request.stop
    if options:
        body["options"] = options
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters,
                },
            }
            for t in request.tools
        ]
    if request.json_schema is not None:
        body["format"] = request.json_schema.get("schema", request.json_schema)
    elif request.json_mode:
        body["format"] = "json"
    if request.reasoning_effort or request.reasoning_budget:
        body["think"] = True
    if request.tool_choice not in (None, "auto"):
        dropped.append("tool_choice")
    if request.user:
        dropped.append("user")
    return body, dropped


def completion_from_wire(body: bytes) -> Completion:
    """A non-streaming `/api/chat` body as a canonical completion (an error raises it)."""
    parser = OllamaStreamParser()
    builder = CompletionBuilder()
    events: list[Event] = []
    parser.line(loads_object(body, "chat response"), events)
    for event in events:
        if isinstance(event, StreamError):
            raise event.error
        builder.add(event)
    return builder.build()


def stream_parser(
    *, side: bool = False, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
) -> StreamParser:
    """A parser for one NDJSON chat stream (a side parser reads it whole: it is never passed
    through)."""
    return OllamaStreamParser(max_event_bytes=max_event_bytes)


class OllamaStreamParser(StreamParser):
    """Ollama NDJSON chat lines to canonical events."""

    __slots__ = ("_decoder", "_tool_index", "done", "started")

    def __init__(self, *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._decoder = NDJSONDecoder(max_line_bytes=max_event_bytes)
        self._tool_index = 0
        self.started = False
        self.done = False

    def feed(self, chunk: bytes) -> list[Event]:
        out: list[Event] = []
        for raw in self._decoder.decode(chunk):
            try:
                self.line(loads_object(raw, "NDJSON line"), out)
            except SKIPPABLE:
                self.skip(raw)
            if self.done:
                break
        return out

    def finish(self) -> list[Event]:
        out: list[Event] = []
        for raw in self._decoder.flush():
            if not self.done:
                try:
                    self.line(loads_object(raw, "NDJSON line"), out)
                except SKIPPABLE:
                    self.skip(raw)
        return out

    def line(self, data: dict[str, Any], out: list[Event]) -> None:
        """Events of one ChatResponse object."""
        error = data.get("error")
        if error:
            self.done = True
            out.append(StreamError(UpstreamStatusError(str(error), upstream_status=500)))
            return
        self.started = True
        message = data.get("message") or {}
        if message.get("thinking"):
            out.append(ReasoningDelta(message["thinking"]))
        if message.get("content"):
            out.append(TextDelta(message["content"]))
        for call in message.get("tool_calls") or ():
            fn = call.get("function") or {}
            index = self._tool_index
            self._tool_index += 1
            args = orjson.dumps(fn.get("arguments") or {}).decode()
            out.append(
                ToolCallDelta(index, call.get("id") or f"call_{index}", fn.get("name") or "", args)
            )
        if data.get("done"):
            self.done = True
            reason = data.get("done_reason") or "stop"
            out.append(Finish("tool_calls" if self._tool_index and reason == "stop" else reason))
            out.append(
                UsageUpdate(
                    Usage(
                        input_tokens=int(data.get("prompt_eval_count") or 0),
                        output_tokens=int(data.get("eval_count") or 0),
                    )
                )
            )
