"""The `/stream-ask` protocol (docs/protocol.md), the gateway's own format: its whole vocabulary.

- **Request**: the same fields whether they came as JSON, as a urlencoded form or as multipart
  form data (where every field is a string): `validate_request`.
- **Stream**: every event has an `id:` (its sequence number); `data: {"type":"chunk",
  "content":...}` per piece of text, `{"type":"reasoning",...}` for visible reasoning,
  `event: sources`, `event: error` for a failure after the stream began, and always last
  `event: final_end` with the finish reason, usage, sources (and `skipped_lines` when the
  upstream sent lines that could not be read).
- **Errors** before the stream began: `{"error": message, "code": code}`.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson

from tidegate.errors import GatewayError
from tidegate.events import Event, ReasoningDelta, Sources, TextDelta
from tidegate.formats.base import StreamState
from tidegate.formats.common import Inbound, Schema, quoted_wording
from tidegate.sse import encode_comment, encode_event

MODES = ("chat", "query", "automatic")


class StreamAskRequest(Inbound):
    """A question, and optionally the model, session and AnythingLLM mode to ask it with.

    An empty `model`, `session_id` or `mode` means "not given", as an empty form field does.
    """

    question: str
    model: str | None = None
    session_id: str | None = None
    mode: Literal["chat", "query", "automatic", ""] | None = None


SCHEMA = Schema(
    StreamAskRequest,
    wording=quoted_wording,
    hints={"question": "is required: a non-empty string", "mode": "one of " + ", ".join(MODES)},
)


def validate_request(fields: dict[str, Any]) -> StreamAskRequest:
    """`fields` as a /stream-ask request, or `InvalidRequest` naming the first wrong field
    (`'question' is required: a non-empty string`, `'mode' must be one of chat, ...`)."""
    return SCHEMA.validate(fields)


def error_body(err: GatewayError) -> bytes:
    """The error body before the stream began: `{"error": message, "code": code}`."""
    return orjson.dumps({"error": err.message, "code": err.code})


class StreamAskEncoder:
    """Canonical events to the /stream-ask event stream."""

    content_type = b"text/event-stream; charset=utf-8"
    ping = encode_comment(b"ping")
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
        end: dict[str, Any] = {"finish_reason": reason, "usage": usage, "sources": state.sources}
        if state.skipped:
            end["skipped_lines"] = state.skipped
        return self._frame(end, b"final_end")
