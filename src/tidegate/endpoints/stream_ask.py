"""`POST /stream-ask`: the simple SSE protocol for front ends (the format:
formats/stream_ask.py; the protocol: docs/protocol.md). The question comes as JSON, as a
urlencoded form or as multipart form data, read here with bounded parsers."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from tidegate.asgi import Request
from tidegate.context import RequestContext
from tidegate.endpoints.base import ChatCall, ChatEndpoint
from tidegate.endpoints.chat import chat_routes
from tidegate.errors import InvalidRequest
from tidegate.events import ChatRequest, Message, Part
from tidegate.formats import stream_ask
from tidegate.services import Services

MAX_QUESTION_CHARS = 200_000
# A form carries four fields; bounding their number bounds the CPU a hostile form can cost
# (parsing is synchronous, on the event loop).
MAX_FORM_FIELDS = 64


class StreamAsk(ChatEndpoint):
    """The question from JSON or a form, the answer as the /stream-ask event stream."""

    render_error = staticmethod(stream_ask.error_body)

    def read(self, services: Services, ctx: RequestContext, request: Request) -> ChatCall:
        fields = stream_ask.validate_request(read_fields(request))
        question = fields.question
        if not question.strip():
            raise InvalidRequest("'question' is required: a non-empty string")
        if len(question) > MAX_QUESTION_CHARS:
            raise InvalidRequest(f"'question' is longer than {MAX_QUESTION_CHARS} characters")
        model = fields.model or services.stream_ask_model
        chat = ChatRequest(
            model=model,
            messages=[Message("user", [Part("text", text=question)])],
            stream=True,
            include_usage=True,
            session_id=fields.session_id or None,
            mode=fields.mode or None,
        )
        return ChatCall(
            model=model,
            stream=True,
            canonical=lambda: chat,
            encoder=stream_ask.StreamAskEncoder(),
            render=lambda c: b"",  # /stream-ask always streams
        )


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


ROUTES = chat_routes(StreamAsk(), ("POST", "/stream-ask"))
