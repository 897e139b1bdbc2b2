"""AnythingLLM workspaces (`/api/v1/workspace/{slug}/stream-chat` and `/chat`): the vocabulary.

The stream is `data: <json>` events without names and without a `[DONE]`; the chunk `type`
says what each is (AnythingLLM server, `server/utils/helpers/chat/responses.js`):
`textResponseChunk` carries text (the one with `close: true` and empty text marks the end of
generation); `finalizeResponseStream` ends a successful stream and carries the `sources` and
the token `metrics`; `abort` reports a failure (its key is `uuid` or `id`); `textResponse` is a
whole answer (query-mode refusal, reset) after which nothing follows. `error` is `false`,
`null` or a message.

A workspace keeps the conversation itself (per `sessionId`), so only the last user message is
sent: earlier turns, system prompts and sampling settings cannot be carried and are reported
as dropped.
"""

from __future__ import annotations

from typing import Any

from tidegate.errors import UpstreamError, UpstreamStatusError
from tidegate.events import (
    ChatRequest,
    Completion,
    Event,
    Finish,
    Sources,
    StreamError,
    TextDelta,
    Usage,
    UsageUpdate,
)
from tidegate.formats.base import SKIPPABLE, StreamParser, loads_object
from tidegate.sse import DEFAULT_MAX_EVENT_BYTES, SSEDecoder, SSEEvent


def request_to_wire(
    request: ChatRequest, model: str, default_mode: str = "chat"
) -> tuple[dict[str, Any], list[str]]:
    """A canonical request as a workspace chat body (the workspace is in the URL; only the
    last user message is sent), and the fields it cannot carry."""
    dropped = _dropped_fields(request)
    body: dict[str, Any] = {
        "message": request.last_user_text(),
        "mode": request.mode or default_mode,
    }
    if request.session_id:
        body["sessionId"] = request.session_id
    attachments = _attachments(request)
    if attachments:
        body["attachments"] = attachments
    return body, dropped


def _dropped_fields(request: ChatRequest) -> list[str]:
    dropped: list[str] = []
    last_user = max((i for i, m in enumerate(request.messages) if m.role == "user"), default=-1)
    if any(m.role == "system" for m in request.messages):
        dropped.append("system")
    if any(m.role != "system" for m in request.messages[:last_user]):
        dropped.append("messages (history before the last user message)")
    for name in ("max_tokens", "temperature", "top_p", "reasoning_effort", "reasoning_budget"):
        if getattr(request, name) is not None:
            dropped.append(name)
    if request.stop:
        dropped.append("stop")
    if request.tools:
        dropped.append("tools")
    if request.json_mode or request.json_schema is not None:
        dropped.append("response_format")
    return dropped


def _attachments(request: ChatRequest) -> list[dict[str, str]]:
    for message in reversed(request.messages):
        if message.role != "user":
            continue
        out = []
        for i, part in enumerate(message.content):
            if part.type == "image" and part.data:
                mime = part.media_type or "image/png"
                out.append(
                    {
                        "name": f"image-{i}.{mime.split('/')[-1]}",
                        "mime": mime,
                        "contentString": f"data:{mime};base64,{part.data}",
                    }
                )
        return out
    return []


def completion_from_wire(body: bytes) -> Completion:
    """A `/chat` response body as a canonical completion (an abort or error raises it)."""
    data = loads_object(body, "chat response")
    failure = _failure(data)
    if failure is not None:
        raise failure
    metrics = data.get("metrics")
    return Completion(
        text=str(data.get("textResponse") or ""),
        finish_reason="stop",
        usage=_usage(metrics) if isinstance(metrics, dict) else None,
        sources=_list_of_dicts(data.get("sources")),
        upstream_id=str(data.get("id") or data.get("uuid") or "") or None,
    )


def _usage(metrics: dict[str, Any]) -> Usage:
    return Usage(
        input_tokens=int(metrics.get("prompt_tokens") or 0),
        output_tokens=int(metrics.get("completion_tokens") or 0),
    )


def _list_of_dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _failure(data: dict[str, Any]) -> UpstreamError | None:
    error = data.get("error")
    if data.get("type") == "abort" or (isinstance(error, str) and error):
        message = error if isinstance(error, str) and error else "AnythingLLM aborted the chat"
        return UpstreamStatusError(message, upstream_status=500, upstream_type="abort")
    return None


def stream_parser(
    *, side: bool = False, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
) -> StreamParser:
    """A parser for one stream-chat stream (never passed through: read whole)."""
    return AnythingLLMStreamParser(max_event_bytes=max_event_bytes)


class AnythingLLMStreamParser(StreamParser):
    """AnythingLLM stream-chat chunks to canonical events."""

    __slots__ = ("_decoder", "done", "started")

    def __init__(self, *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._decoder = SSEDecoder(max_event_bytes=max_event_bytes)
        self.started = False
        self.done = False

    def feed(self, chunk: bytes) -> list[Event]:
        return self._handle(self._decoder.decode(chunk))

    def finish(self) -> list[Event]:
        return self._handle(self._decoder.finish())

    def _handle(self, events: list[SSEEvent]) -> list[Event]:
        out: list[Event] = []
        for sse in events:
            if self.done:
                break
            try:
                self._event(loads_object(sse.data, "stream-chat chunk"), out)
            except SKIPPABLE:
                self.skip(sse.data)
        return out

    def _event(self, data: dict[str, Any], out: list[Event]) -> None:
        failure = _failure(data)
        if failure is not None:
            self.done = True
            out.append(StreamError(failure))
            return
        kind = data.get("type")
        self.started = True
        if kind == "textResponseChunk":
            text = data.get("textResponse")
            if text:
                out.append(TextDelta(str(text)))
            if data.get("close") and not text:
                out.append(Finish("stop"))
        elif kind == "finalizeResponseStream":
            self.done = True
            sources = _list_of_dicts(data.get("sources"))
            if sources:
                out.append(Sources(sources))
            metrics = data.get("metrics")
            if isinstance(metrics, dict):
                out.append(UsageUpdate(_usage(metrics)))
        elif kind == "textResponse":
            # A whole answer (query-mode refusal, reset); nothing follows it.
            self.done = True
            text = data.get("textResponse")
            if text:
                out.append(TextDelta(str(text)))
            sources = _list_of_dicts(data.get("sources"))
            if sources:
                out.append(Sources(sources))
            out.append(Finish("stop"))
