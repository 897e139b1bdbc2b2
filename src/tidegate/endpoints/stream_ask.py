"""`POST /stream-ask`: the simple SSE protocol for front ends (see docs/protocol.md).

Request: `{"question", "model"?, "session_id"?, "mode"?}` as JSON, as a urlencoded form or as
multipart form data. Response events, each with an `id:` (its sequence number):
`data: {"type":"chunk","content":...}` per piece of text, `data: {"type":"reasoning",...}` for
visible reasoning, `event: sources`, `event: error` for a failure after the stream began, and
always last `event: final_end` with the finish reason, usage and sources.
"""

from __future__ import annotations

from collections.abc import Awaitable
from email.parser import BytesParser
from email.policy import HTTP
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import orjson

from tidegate.asgi import Request, Send
from tidegate.context import RequestContext
from tidegate.errors import GatewayError, InvalidRequest
from tidegate.events import (
    ChatRequest,
    Event,
    Message,
    Part,
    ReasoningDelta,
    Sources,
    TextDelta,
)
from tidegate.providers.base import Provider, UpstreamCall
from tidegate.relay import StreamState, relay_stream
from tidegate.sse import encode_event

if TYPE_CHECKING:
    from tidegate.app import Gateway

MAX_QUESTION_CHARS = 200_000
MODES = ("chat", "query", "automatic")


def handle(gw: Gateway, ctx: RequestContext, request: Request, send: Send) -> Awaitable[None]:
    """Validate the question, then stream the answer from the chosen model."""
    fields = read_fields(request)
    question = fields.get("question")
    if not isinstance(question, str) or not question.strip():
        raise InvalidRequest("'question' is required: a non-empty string")
    if len(question) > MAX_QUESTION_CHARS:
        raise InvalidRequest(f"'question' is longer than {MAX_QUESTION_CHARS} characters")
    model = _optional_str(fields, "model") or gw.stream_ask_model
    session_id = _optional_str(fields, "session_id")
    mode = _optional_str(fields, "mode")
    if mode is not None and mode not in MODES:
        raise InvalidRequest(f"'mode' must be one of {', '.join(MODES)}; got {mode!r}")
    gw.router.group(model)  # 404 before anything else
    chat = ChatRequest(
        model=model,
        messages=[Message("user", [Part("text", text=question)])],
        stream=True,
        include_usage=True,
        session_id=session_id,
        mode=mode,
    )
    ctx.model, ctx.stream = model, True

    def prepare(provider: Provider) -> tuple[UpstreamCall, bool]:
        return provider.build_call(chat), False

    return relay_stream(ctx, gw.router, model, prepare, StreamAskEncoder(), send, gw.config)


def read_fields(request: Request) -> dict[str, Any]:
    """The request's fields from a JSON object, a urlencoded form or multipart form data."""
    kind = request.content_type
    if kind == "application/x-www-form-urlencoded":
        try:
            text = request.body.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequest("form body is not valid UTF-8") from None
        return dict(parse_qsl(text, keep_blank_values=True))
    if kind == "multipart/form-data":
        return _multipart_fields(request)
    if kind not in ("", "application/json", "text/plain") and not kind.endswith("+json"):
        raise InvalidRequest(f"unsupported content type {kind!r}; send application/json or a form")
    return request.json_object()


def _multipart_fields(request: Request) -> dict[str, Any]:
    header = f"Content-Type: {request.header(b'content-type')}\r\n\r\n".encode("latin-1")
    message = BytesParser(policy=HTTP).parsebytes(header + request.body)
    if not message.is_multipart():
        raise InvalidRequest("multipart body could not be parsed (check the boundary)")
    fields: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str) or part.get_filename():
            continue
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            fields[name] = payload.decode(part.get_content_charset() or "utf-8", "replace")
    return fields


def _optional_str(fields: dict[str, Any], name: str) -> str | None:
    value = fields.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"'{name}' must be a string")
    return value


def render_error(err: GatewayError) -> bytes:
    """The error body before the stream began: `{"error": message, "code": code}`."""
    return orjson.dumps({"error": err.message, "code": err.code})


class StreamAskEncoder:
    """Canonical events to the /stream-ask event stream."""

    content_type = b"text/event-stream; charset=utf-8"
    ping = b": ping\n\n"
    __slots__ = ("_seq",)

    def __init__(self) -> None:
        self._seq = 0

    def _frame(self, payload: dict[str, Any], event: bytes | None = None) -> bytes:
        self._seq += 1
        return encode_event(orjson.dumps(payload), event, str(self._seq).encode())

    def encode(self, events: list[Event]) -> bytes:
        out: list[bytes] = []
        for e in events:
            if isinstance(e, TextDelta):
                out.append(self._frame({"type": "chunk", "content": e.text}))
            elif isinstance(e, ReasoningDelta):
                out.append(self._frame({"type": "reasoning", "content": e.text}))
            elif isinstance(e, Sources):
                out.append(self._frame({"type": "sources", "sources": e.items}, b"sources"))
        return b"".join(out)

    def error(self, err: GatewayError) -> bytes:
        return self._frame({"message": err.message, "code": err.code}, b"error")

    def end(self, state: StreamState) -> bytes:
        reason = "error" if state.error is not None else (state.finish_reason or "stop")
        usage = state.usage.as_dict() if state.usage is not None else None
        return self._frame(
            {"finish_reason": reason, "usage": usage, "sources": state.sources}, b"final_end"
        )
