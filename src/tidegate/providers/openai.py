"""OpenAI-compatible upstreams: OpenAI, DeepSeek, vLLM, llama.cpp, Ollama's /v1 and kin.

Request: `POST {base_url}/chat/completions` with `Authorization: Bearer`. Stream: `data:` events
of `chat.completion.chunk`, ended by `data: [DONE]`; reasoning arrives as `reasoning_content`
(DeepSeek), `reasoning` (Ollama, OpenRouter) or `thinking`; usage on a last `choices: []` chunk
(OpenAI with `include_usage`) or on the finish chunk (DeepSeek). An in-band failure is a data
event whose object has an `error` member.

As a side parser (pass-through), only the first event, the `[DONE]` marker and events that
mention usage, an error or a non-null finish reason are parsed as JSON; text chunks are skipped.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

import orjson
from pydantic import Field

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
)
from tidegate.formats.base import (
    SKIPPABLE,
    PassthroughFilter,
    SSEStreamParser,
    StreamParser,
    loads_object,
    status_for_error_type,
)
from tidegate.providers.base import Provider, UpstreamCall
from tidegate.settings import DeploymentSettings, HttpDeploymentSettings
from tidegate.sse import DEFAULT_MAX_EVENT_BYTES, SSEDecoder, SSEEvent

_FINISH_SET = re.compile(r'"finish_reason"\s*:\s*"')
_REASONING_KEYS = ("reasoning_content", "reasoning", "thinking")


class OpenAISettings(HttpDeploymentSettings):
    """An OpenAI-compatible API: its root URL (`/chat/completions` is appended), key, model."""

    provider: Literal["openai"]
    base_url: str = Field(description="the API root, for example https://api.openai.com/v1")


class OpenAIProvider(Provider):
    """An OpenAI Chat Completions upstream."""

    name = "openai"
    wire_format = "openai"
    settings: ClassVar[type[DeploymentSettings]] = OpenAISettings
    path = "/chat/completions"

    def build_passthrough(self, body: dict[str, Any], stream: bool) -> UpstreamCall:
        body["model"] = self.config.upstream_model
        strip = False
        if stream:
            options = body.get("stream_options")
            if not isinstance(options, dict) or not options.get("include_usage"):
                # Ask for usage so that no stream is accounted as zero tokens, and remove the
                # extra chunk again before the client, which did not ask for it, sees it.
                body["stream_options"] = {**(options or {}), "include_usage": True}
                strip = True
        headers = self.headers_for(stream)
        call = UpstreamCall(self.url, orjson.dumps(body), headers, stream=stream)
        if strip:
            call.filter = UsageChunkFilter()
        return call

    def build_call(self, request: ChatRequest) -> UpstreamCall:
        body: dict[str, Any] = {
            "model": self.config.upstream_model,
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
        if request.reasoning_effort is not None:
            body["reasoning_effort"] = request.reasoning_effort
        elif request.reasoning_budget is not None:
            budget = request.reasoning_budget
            body["reasoning_effort"] = (
                "low" if budget <= 2048 else "medium" if budget <= 8192 else "high"
            )
        if request.user is not None:
            body["user"] = request.user
        dropped = ["top_k"] if request.top_k is not None else []
        headers = self.headers_for(request.stream)
        return UpstreamCall(
            self.url, orjson.dumps(body), headers, stream=request.stream, dropped=dropped
        )

    def stream_parser(self, *, side: bool = False) -> StreamParser:
        return OpenAIStreamParser(side=side, max_event_bytes=self.max_event_bytes)

    def parse_completion(self, body: bytes) -> Completion:
        return completion_from_openai(loads_object(body, "chat completion"))


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


def usage_from_openai(u: dict[str, Any]) -> Usage:
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


def error_from_openai(err: Any) -> UpstreamStatusError:
    """The gateway error for an OpenAI-style `error` member found inside a stream or body."""
    if isinstance(err, dict):
        message = str(err.get("message") or "upstream reported an error")
        kind = err.get("type") or err.get("code")
        status = status_for_error_type(str(kind) if kind else None, err.get("code"))
        return UpstreamStatusError(
            message, upstream_status=status, upstream_type=str(kind) if kind else None
        )
    return UpstreamStatusError(str(err), upstream_status=500)


def completion_from_openai(data: dict[str, Any]) -> Completion:
    """A chat.completion object as a canonical completion."""
    if data.get("error"):
        raise error_from_openai(data["error"])
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
        usage=usage_from_openai(usage) if isinstance(usage, dict) else None,
        upstream_id=data.get("id"),
    )


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
            out.append(StreamError(error_from_openai(err)))
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
            out.append(UsageUpdate(usage_from_openai(usage)))


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
