"""Anthropic Messages upstreams: `POST {base_url}/v1/messages` with `x-api-key`.

The stream is named events (protocols reference §4.3): `message_start` (id, input usage),
per content block `content_block_start` / `content_block_delta` (`text_delta`,
`input_json_delta`, `thinking_delta`, `signature_delta`) / `content_block_stop`, then
`message_delta` (stop reason, cumulative usage) and `message_stop`; `ping` anywhere; `error`
for a failure inside a 200 stream. Anthropic's `input_tokens` excludes cache reads and writes;
the canonical input counts all three.

This module also holds the Anthropic vocabulary (stop reasons, usage, error types) that the
inbound `/v1/messages` endpoint shares.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import orjson

from tidegate.errors import UpstreamStatusError
from tidegate.events import (
    ChatRequest,
    Completion,
    Event,
    Finish,
    Message,
    ReasoningDelta,
    StreamError,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageUpdate,
    arguments_object,
)
from tidegate.formats.base import (
    SKIPPABLE,
    SSEStreamParser,
    StreamParser,
    loads_object,
    status_for_error_type,
)
from tidegate.providers.base import Provider, UpstreamCall
from tidegate.settings import ConfigProblem, HttpDeploymentSettings
from tidegate.sse import DEFAULT_MAX_EVENT_BYTES, SSEDecoder, SSEEvent

API_VERSION = "2023-06-01"
DEFAULT_BASE_URL = "https://api.anthropic.com"
DEFAULT_MAX_TOKENS = 4096
# Thinking budgets for OpenAI-style reasoning efforts (an approximation; see docs/translation.md).
EFFORT_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576}

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


def usage_from_anthropic(u: dict[str, Any]) -> Usage:
    """Normalize Anthropic usage (input excludes cache reads and writes)."""
    read = int(u.get("cache_read_input_tokens") or 0)
    write = int(u.get("cache_creation_input_tokens") or 0)
    return Usage(
        input_tokens=int(u.get("input_tokens") or 0) + read + write,
        output_tokens=int(u.get("output_tokens") or 0),
        cache_read_tokens=read,
        cache_write_tokens=write,
    )


def usage_to_anthropic(usage: Usage) -> dict[str, int]:
    """Canonical usage in Anthropic's shape."""
    return {
        "input_tokens": max(
            0, usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens
        ),
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cache_read_tokens,
        "output_tokens": usage.output_tokens,
    }


def error_from_anthropic(err: Any) -> UpstreamStatusError:
    """The gateway error for an Anthropic `error` object (in a stream or a body)."""
    if isinstance(err, dict):
        kind = str(err.get("type") or "api_error")
        message = str(err.get("message") or kind)
        return UpstreamStatusError(
            message, upstream_status=status_for_error_type(kind, None), upstream_type=kind
        )
    return UpstreamStatusError(str(err), upstream_status=500)


class AnthropicSettings(HttpDeploymentSettings):
    """Anthropic's API (or a compatible server at `base_url`)."""

    provider: Literal["anthropic"]

    def problems(self) -> list[ConfigProblem]:
        if self.api_key is None and not self.base_url:
            return [("api_key", "is required for api.anthropic.com", "set it, or a base_url")]
        return []


class AnthropicProvider(Provider):
    """An Anthropic Messages API upstream."""

    name = "anthropic"
    wire_format = "anthropic"
    settings = AnthropicSettings
    default_base_url = DEFAULT_BASE_URL
    path = "/v1/messages"
    key_header = ("x-api-key", "{key}")
    static_headers: ClassVar[dict[str, str]] = {"anthropic-version": API_VERSION}

    def build_passthrough(self, body: dict[str, Any], stream: bool) -> UpstreamCall:
        body["model"] = self.config.upstream_model
        headers = self.headers_for(stream)
        return UpstreamCall(self.url, orjson.dumps(body), headers, stream=stream)

    def build_call(self, request: ChatRequest) -> UpstreamCall:
        dropped: list[str] = []
        system = "\n\n".join(m.text() for m in request.messages if m.role == "system")
        body: dict[str, Any] = {
            "model": self.config.upstream_model,
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
        budget = request.reasoning_budget or EFFORT_BUDGETS.get(request.reasoning_effort or "")
        if budget:
            body["thinking"] = {"type": "enabled", "budget_tokens": max(1024, budget)}
            body["max_tokens"] = max(body["max_tokens"], body["thinking"]["budget_tokens"] + 1024)
            body.pop("temperature", None)
        if request.user:
            body["metadata"] = {"user_id": request.user}
        if request.json_mode or request.json_schema is not None:
            dropped.append("response_format")
        headers = self.headers_for(request.stream)
        return UpstreamCall(
            self.url, orjson.dumps(body), headers, stream=request.stream, dropped=dropped
        )

    def stream_parser(self, *, side: bool = False) -> StreamParser:
        return AnthropicStreamParser(side=side, max_event_bytes=self.max_event_bytes)

    def parse_completion(self, body: bytes) -> Completion:
        data = loads_object(body, "message")
        if data.get("type") == "error" or "error" in data:
            raise error_from_anthropic(data.get("error"))
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
                calls.append(
                    ToolCall(str(block.get("id") or ""), str(block.get("name") or ""), args)
                )
        usage = data.get("usage")
        stop = data.get("stop_reason")
        return Completion(
            text="".join(text),
            reasoning="".join(reasoning),
            tool_calls=calls,
            finish_reason=STOP_TO_FINISH.get(stop, stop) if stop else None,
            usage=usage_from_anthropic(usage) if isinstance(usage, dict) else None,
            upstream_id=data.get("id"),
        )


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
                    out.append(StreamError(error_from_anthropic(data.get("error"))))
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
                out.append(UsageUpdate(usage_from_anthropic(self._usage)))
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
                out.append(UsageUpdate(usage_from_anthropic(self._usage)))
        elif kind == "message_stop":
            self.done = True
