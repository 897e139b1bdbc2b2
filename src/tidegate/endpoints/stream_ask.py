"""`POST /stream-ask`: the simple SSE protocol for front ends (see docs/protocol.md).

Request: `{"question", "model"?, "session_id"?, "mode"?}` as JSON, as a urlencoded form or as
multipart form data. Response events, each with an `id:` (its sequence number):
`data: {"type":"chunk","content":...}` per piece of text, `data: {"type":"reasoning",...}` for
visible reasoning, `event: sources`, `event: error` for a failure after the stream began, and
always last `event: final_end` with the finish reason, usage and sources.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import orjson
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

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
from tidegate.formats.base import StreamState
from tidegate.formats.stream_ask import validate_request
from tidegate.providers.base import Provider, UpstreamCall
from tidegate.relay import relay_stream
from tidegate.sse import encode_event

if TYPE_CHECKING:
    from tidegate.app import Gateway

MAX_QUESTION_CHARS = 200_000
# A form carries four fields; bounding their number bounds the CPU a hostile form can cost
# (parsing is synchronous, on the event loop).
MAX_FORM_FIELDS = 64


def handle(gw: Gateway, ctx: RequestContext, request: Request, send: Send) -> Awaitable[None]:
    """Validate the question, then stream the answer from the chosen model."""
    fields = validate_request(read_fields(request))
    question = fields.question
    if not question.strip():
        raise InvalidRequest("'question' is required: a non-empty string")
    if len(question) > MAX_QUESTION_CHARS:
        raise InvalidRequest(f"'question' is longer than {MAX_QUESTION_CHARS} characters")
    model = fields.model or gw.stream_ask_model
    session_id = fields.session_id or None
    mode = fields.mode or None
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
        try:
            pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
        except ValueError:
            raise InvalidRequest(f"form has more than {MAX_FORM_FIELDS} fields") from None
        return dict(pairs)
    if kind == "multipart/form-data":
        return multipart_fields(request.header(b"content-type"), request.body)
    if kind not in ("", "application/json", "text/plain") and not kind.endswith("+json"):
        raise InvalidRequest(f"unsupported content type {kind!r}; send application/json or a form")
    return request.json_object()


def multipart_fields(content_type: str, body: bytes) -> dict[str, str]:
    """The text fields of a multipart/form-data body (file parts are skipped; a repeated name
    keeps its last value). At most `MAX_FORM_FIELDS` parts; a part that is itself multipart
    is refused rather than parsed. A field is at most the body, which the gateway has already
    bounded by `limits.max_body_bytes`."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise InvalidRequest("multipart body has no boundary in its Content-Type")
    form = _Form()
    try:
        parser = MultipartParser(
            boundary,
            {
                "on_part_begin": form.part_begin,
                "on_header_field": form.header_field,
                "on_header_value": form.header_value,
                "on_header_end": form.header_end,
                "on_headers_finished": form.headers_finished,
                "on_part_data": form.part_data,
                "on_part_end": form.part_end,
                "on_end": form.end,
            },
        )
        parser.write(body)
    except FormParserError:
        raise InvalidRequest("multipart body could not be parsed (check the boundary)") from None
    if not form.complete:
        raise InvalidRequest("multipart body ended before its closing boundary")
    return form.fields


class _Form:
    """The callbacks of one multipart parse: collects text fields, refuses what is unbounded."""

    __slots__ = (
        "_charset",
        "_chunks",
        "_field",
        "_headers",
        "_name",
        "_parts",
        "_value",
        "complete",
        "fields",
    )

    def __init__(self) -> None:
        self.fields: dict[str, str] = {}
        self.complete = False
        self._parts = 0
        self._headers: dict[bytes, bytes] = {}
        self._field = self._value = b""
        self._name: str | None = None
        self._charset = "utf-8"
        self._chunks: list[bytes] = []

    def part_begin(self) -> None:
        self._parts += 1
        if self._parts > MAX_FORM_FIELDS:
            raise InvalidRequest(f"multipart body has more than {MAX_FORM_FIELDS} parts")
        self._headers = {}
        self._chunks = []

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def header_end(self) -> None:
        self._headers[self._field.lower()] = self._value
        self._field = self._value = b""

    def headers_finished(self) -> None:
        kind, options = parse_options_header(self._headers.get(b"content-type"))
        if kind.startswith(b"multipart/"):
            raise InvalidRequest("multipart body has a nested multipart part; send plain fields")
        _, disposition = parse_options_header(self._headers.get(b"content-disposition"))
        name = disposition.get(b"name")
        is_file = b"filename" in disposition
        self._name = None if name is None or is_file else name.decode("utf-8", "replace")
        self._charset = options.get(b"charset", b"utf-8").decode("latin-1")

    def part_data(self, data: bytes, start: int, end: int) -> None:
        if self._name is not None:
            self._chunks.append(data[start:end])

    def part_end(self) -> None:
        if self._name is None:
            return
        try:
            self.fields[self._name] = b"".join(self._chunks).decode(self._charset, "replace")
        except (LookupError, ValueError):
            raise InvalidRequest(
                f"multipart field {self._name!r} has an unknown charset {self._charset!r}"
            ) from None

    def end(self) -> None:
        self.complete = True


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
