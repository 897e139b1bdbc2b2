"""The `/stream-ask` protocol (docs/protocol.md), the gateway's own format: its whole vocabulary.

- **Request**: the same fields whether they came as JSON, as a urlencoded form or as multipart
  form data (where every field is a string: `from_form` reads numbers and the structured
  fields, given as JSON text, out of them): `validate_request`.
- **Stream**: every event has an `id:` (its sequence number); first `event: start`
  `{"type":"start","stream_id":...,"resume_token":...}` (to resume or cancel it by), then
  `data: {"type":"chunk","content":...}` per piece of text, `{"type":"reasoning",...}` for
  visible reasoning,
  `event: sources`, `event: error` for a failure after the stream began, and always last
  `event: final_end` with the finish reason (`cancelled` when stopped on request), usage,
  sources (and `skipped_lines` when the upstream sent lines that could not be read).
- **Whole answers** (`POST /ask`): `{answer, sources, usage, session_id, finish_reason}`.
- **Errors** before the stream began: `{"error": message, "code": code}`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import Field

from tidegate.errors import GatewayError, InvalidRequest
from tidegate.events import Completion, Event, ReasoningDelta, Sources, TextDelta
from tidegate.formats.base import StreamState
from tidegate.formats.common import MAX_MESSAGES, Inbound, Schema, quoted_wording
from tidegate.sse import encode_comment, encode_event

MODES = ("chat", "query", "automatic")
TASKS = ("ask", "generate", "fix", "explain", "review")
#: Tasks about a piece of code: with `code`, they need no `question`.
CODE_TASKS = ("fix", "explain", "review")
MAX_TEXT_CHARS = 200_000
MAX_IMAGES = 8
MAX_SESSION_ID_CHARS = 256
#: A data URL of an image, base64-encoded (whitespace inside the data is tolerated).
IMAGE_DATA_URL = r"^data:image/[A-Za-z0-9.+-]+;base64,[A-Za-z0-9+/=\s]+$"

Temperature = Annotated[float, Field(ge=0, le=2)]
TopP = Annotated[float, Field(ge=0, le=1)]


class Turn(Inbound):
    """One earlier turn a client keeps itself."""

    role: Literal["user", "assistant"]
    content: str


class Context(Inbound):
    """Where the user is: the file, its language, the selection and the file's code."""

    file: str | None = None
    language: str | None = None
    selection: str | None = None
    code: str | None = None


class StreamAskRequest(Inbound):
    """A question or a coding task, and how to ask it.

    An empty `model`, `session_id`, `mode` or `task` means "not given", as an empty form field
    does. Whether `question` may be left out depends on the task (`check`).
    """

    question: str | None = None
    model: str | None = None
    session_id: Annotated[str, Field(max_length=MAX_SESSION_ID_CHARS)] | None = None
    mode: Literal["chat", "query", "automatic", ""] | None = None
    history: Annotated[list[Turn], Field(max_length=MAX_MESSAGES)] | None = None
    system: str | None = None
    context: Context | None = None
    images: (
        Annotated[list[Annotated[str, Field(pattern=IMAGE_DATA_URL)]], Field(max_length=MAX_IMAGES)]
        | None
    ) = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    task: Literal["ask", "generate", "fix", "explain", "review", ""] | None = None
    code: str | None = None
    error: str | None = None
    resumable: bool | None = None

    @property
    def task_name(self) -> str:
        """The task, `ask` when none was given."""
        return self.task or "ask"

    def check(self) -> None:
        """Rules across fields: texts of at most `MAX_TEXT_CHARS`, and a question unless a
        code task has code."""
        context = self.context or Context()
        for name, text in (
            ("question", self.question),
            ("system", self.system),
            ("code", self.code),
            ("error", self.error),
            ("context.code", context.code),
            ("context.selection", context.selection),
        ):
            if text is not None and len(text) > MAX_TEXT_CHARS:
                raise InvalidRequest(
                    quoted_wording(name, f"is longer than {MAX_TEXT_CHARS} characters")
                )
        if self.question and self.question.strip():
            return
        if self.task_name in CODE_TASKS and self.code and self.code.strip():
            return
        if self.task_name in CODE_TASKS:
            raise InvalidRequest(
                f"'question' is required: a non-empty string (or 'code' for task {self.task_name})"
            )
        raise InvalidRequest("'question' is required: a non-empty string")


SCHEMA = Schema(
    StreamAskRequest,
    wording=quoted_wording,
    hints={
        "question": "is required: a non-empty string",
        "mode": "one of " + ", ".join(MODES),
        "task": "one of " + ", ".join(TASKS),
        "history[].role": "user or assistant",
        "images[]": "a data URL such as data:image/png;base64,...",
        "max_tokens": "a positive integer",
        "temperature": "a number from 0 to 2",
        "top_p": "a number from 0 to 1",
    },
)

#: Fields a form carries as text: numbers, and structures as JSON text.
_FORM_NUMBERS = {"max_tokens": int, "temperature": float, "top_p": float}
_FORM_BOOLEANS = ("resumable",)
_FORM_JSON = ("history", "context", "images")


def validate_request(fields: dict[str, Any]) -> StreamAskRequest:
    """`fields` as a /stream-ask request, or `InvalidRequest` naming the first wrong field
    (`'question' is required: a non-empty string`, `'mode' must be one of chat, ...`)."""
    request = SCHEMA.validate(fields)
    request.check()
    return request


def from_form(fields: dict[str, str]) -> dict[str, Any]:
    """Form fields (all text) as the JSON fields they stand for: `max_tokens`, `temperature`
    and `top_p` as numbers, `history`, `context` and `images` parsed from JSON text. A value
    that does not parse is left as it came, for validation to name; an empty one is left out."""
    out: dict[str, Any] = dict(fields)
    for name, kind in _FORM_NUMBERS.items():
        value = fields.get(name)
        if value is not None:
            try:
                out[name] = kind(value)
            except ValueError:
                if not value.strip():
                    del out[name]
    for name in _FORM_JSON:
        value = fields.get(name)
        if value is not None:
            try:
                out[name] = orjson.loads(value)
            except orjson.JSONDecodeError:
                if not value.strip():
                    del out[name]
    for name in _FORM_BOOLEANS:
        value = fields.get(name)
        if value is not None:
            flag = value.strip().lower()
            if flag in ("true", "1", "on", "yes", "false", "0", "off", "no", ""):
                out[name] = flag in ("true", "1", "on", "yes")
    return out


def error_body(err: GatewayError) -> bytes:
    """The error body before the stream began: `{"error": message, "code": code}`."""
    return orjson.dumps({"error": err.message, "code": err.code})


class StreamAskEncoder:
    """Canonical events to the /stream-ask event stream."""

    content_type = b"text/event-stream; charset=utf-8"
    ping = encode_comment(b"ping")
    #: Its events are numbered, so the relay keeps them for `GET /v1/streams/{id}`.
    resumable = True
    __slots__ = ("_seq", "resume_token", "stream_id")

    def __init__(self) -> None:
        self._seq = 0
        # Set by the relay when the stream is kept: announced by the first event.
        self.stream_id: str | None = None
        self.resume_token: str | None = None

    def _frame(self, payload: dict[str, Any], event: bytes | None = None) -> bytes:
        start = b""
        if self._seq == 0 and self.stream_id is not None:
            self._seq = 1
            announce = {
                "type": "start",
                "stream_id": self.stream_id,
                "resume_token": self.resume_token,
            }
            start = encode_event(orjson.dumps(announce), b"start", b"1")
        self._seq += 1
        return start + encode_event(orjson.dumps(payload), event, str(self._seq).encode())

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
        if err.code == "cancelled":  # asked for: not an error; `final_end` says it
            return b""
        return self._frame({"message": err.message, "code": err.code}, b"error")

    def end(self, state: StreamState) -> bytes:
        if state.error is not None:
            reason = "cancelled" if state.error.code == "cancelled" else "error"
        else:
            reason = state.finish_reason or "stop"
        usage = state.usage.as_dict() if state.usage is not None else None
        end: dict[str, Any] = {"finish_reason": reason, "usage": usage, "sources": state.sources}
        if state.skipped:
            end["skipped_lines"] = state.skipped
        return self._frame(end, b"final_end")


def answer_body(completion: Completion, session_id: str | None) -> bytes:
    """A whole answer (`POST /ask`): `{answer, sources, usage, session_id, finish_reason}`."""
    usage = completion.usage.as_dict() if completion.usage is not None else None
    return orjson.dumps(
        {
            "answer": completion.text,
            "sources": completion.sources,
            "usage": usage,
            "session_id": session_id,
            "finish_reason": completion.finish_reason or "stop",
        }
    )
