"""The `/stream-ask` request (docs/protocol.md) as a schema: the same fields whether they came as
JSON, as a urlencoded form or as multipart form data (where every field is a string)."""

from __future__ import annotations

from typing import Any, Literal

from tidegate.formats.common import Inbound, Schema, quoted_wording

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
