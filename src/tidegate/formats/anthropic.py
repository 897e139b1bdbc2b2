"""The Anthropic Messages request (`POST /v1/messages`) as a schema.

Every field the gateway reads, with Anthropic's types (protocols reference §4.1); anything else
passes through untouched. Content blocks and tools of kinds the gateway does not translate
(documents, server tools, ...) are accepted as objects with a `type`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, Tag

from tidegate.formats.common import (
    MAX_MESSAGES,
    MAX_PARTS,
    MAX_STOP,
    MAX_TOOLS,
    Inbound,
    Schema,
    by_kind,
    by_type,
    colon_wording,
)

INT32_MAX = 2**31 - 1


class _Block(Inbound):
    cache_control: dict[str, Any] | None = None


class TextBlock(_Block):
    """`{"type": "text", "text": ...}`."""

    type: Literal["text"]
    text: str


class Base64Source(Inbound):
    """Image data inline, base64-encoded."""

    type: Literal["base64"]
    media_type: str
    data: str


class URLSource(Inbound):
    """An image by URL."""

    type: Literal["url"]
    url: str


class OtherSource(Inbound):
    """An image source the gateway passes through but does not translate (a file id)."""

    type: str


ImageSource = Annotated[
    Annotated[Base64Source, Tag("<base64>")]
    | Annotated[URLSource, Tag("<url>")]
    | Annotated[OtherSource, Tag("<other>")],
    by_type(frozenset({"base64", "url"}), "an image source object"),
]


class ImageBlock(_Block):
    """`{"type": "image", "source": {...}}`."""

    type: Literal["image"]
    source: ImageSource


class ToolUseBlock(_Block):
    """A tool call the assistant made."""

    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


class OtherBlock(_Block):
    """A content block the gateway passes through but does not translate."""

    type: str


ResultBlock = Annotated[
    Annotated[TextBlock, Tag("<text>")]
    | Annotated[ImageBlock, Tag("<image>")]
    | Annotated[OtherBlock, Tag("<other>")],
    by_type(frozenset({"text", "image"}), "a content block object"),
]
ResultContent = Annotated[
    Annotated[str, Tag("<string>")]
    | Annotated[list[ResultBlock], Tag("<array>"), Field(max_length=MAX_PARTS)],
    by_kind("a string or an array of content blocks"),
]


class ToolResultBlock(_Block):
    """The result of a tool call, in a user message."""

    type: Literal["tool_result"]
    tool_use_id: str
    content: ResultContent | None = None
    is_error: bool | None = None


class ThinkingBlock(_Block):
    """Earlier visible reasoning of the assistant."""

    type: Literal["thinking"]
    thinking: str
    signature: str | None = None


ContentBlock = Annotated[
    Annotated[TextBlock, Tag("<text>")]
    | Annotated[ImageBlock, Tag("<image>")]
    | Annotated[ToolUseBlock, Tag("<tool_use>")]
    | Annotated[ToolResultBlock, Tag("<tool_result>")]
    | Annotated[ThinkingBlock, Tag("<thinking>")]
    | Annotated[OtherBlock, Tag("<other>")],
    by_type(
        frozenset({"text", "image", "tool_use", "tool_result", "thinking"}),
        "a content block object",
    ),
]
Content = Annotated[
    Annotated[str, Tag("<string>")]
    | Annotated[list[ContentBlock], Tag("<array>"), Field(max_length=MAX_PARTS)],
    by_kind("a string or an array of content blocks"),
]
System = Annotated[
    Annotated[str, Tag("<string>")]
    | Annotated[list[TextBlock], Tag("<array>"), Field(max_length=MAX_PARTS)],
    by_kind("a string or an array of text blocks"),
]


class Message(Inbound):
    """One turn of the conversation."""

    role: Literal["user", "assistant"]
    content: Content


class Tool(Inbound):
    """A client tool (`input_schema` given), or a server tool with a `type`, passed through."""

    type: str | None = None
    name: str
    description: str | None = None
    input_schema: dict[str, Any] | None = None


class ToolChoice(Inbound):
    """`{"type": "auto" | "any" | "none"}` or `{"type": "tool", "name": ...}`."""

    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Thinking(Inbound):
    """Extended thinking: `{"type": "enabled", "budget_tokens": N}` or disabled."""

    type: str
    budget_tokens: Annotated[int, Field(le=INT32_MAX)] | None = None


class Metadata(Inbound):
    """Request metadata: an opaque user id."""

    user_id: str | None = None


class MessagesRequest(Inbound):
    """A Messages request, as much of it as the gateway reads."""

    model: Annotated[str, Field(min_length=1)]
    max_tokens: Annotated[int, Field(ge=1)]
    messages: Annotated[list[Message], Field(min_length=1, max_length=MAX_MESSAGES)]
    system: System | None = None
    stream: bool = False
    temperature: Annotated[float, Field(ge=0, le=1)] | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop_sequences: Annotated[list[str], Field(max_length=MAX_STOP)] | None = None
    tools: Annotated[list[Tool], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    metadata: Metadata | None = None


SCHEMA = Schema(
    MessagesRequest,
    wording=colon_wording,
    hints={
        "model": "a non-empty string naming a configured model",
        "max_tokens": "a positive integer",
        "messages": "a non-empty array of messages",
        "temperature": "a number from 0 to 1",
    },
)


def validate_request(body: dict[str, Any]) -> MessagesRequest:
    """`body` as a Messages request, or `InvalidRequest` naming the first wrong field
    (`max_tokens: is required (a positive integer)`, `thinking: must be an object ...`)."""
    return SCHEMA.validate(body)
