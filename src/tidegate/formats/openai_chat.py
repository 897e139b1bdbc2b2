"""The OpenAI Chat Completions request (`POST /v1/chat/completions`) as a schema.

Every field the gateway reads, with OpenAI's types (protocols reference §2.1); anything else
passes through untouched. Content parts, tools and tool calls of kinds the gateway does not
translate (audio, files, custom tools) are accepted as objects with a `type`.
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
    quoted_wording,
)

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]
PositiveInt = Annotated[int, Field(ge=1)]


class TextPart(Inbound):
    """`{"type": "text", "text": ...}`."""

    type: Literal["text"]
    text: str


class ImageURL(Inbound):
    """An image by URL, or as a `data:` URL with base64 content."""

    url: str
    detail: str | None = None


class ImagePart(Inbound):
    """`{"type": "image_url", "image_url": {"url": ...}}`."""

    type: Literal["image_url"]
    image_url: ImageURL


class OtherPart(Inbound):
    """A content part of a kind the gateway passes through but does not translate."""

    type: str


ContentPart = Annotated[
    Annotated[TextPart, Tag("<text>")]
    | Annotated[ImagePart, Tag("<image_url>")]
    | Annotated[OtherPart, Tag("<other>")],
    by_type(frozenset({"text", "image_url"}), "a content part object"),
]
Content = Annotated[
    Annotated[str, Tag("<string>")]
    | Annotated[list[ContentPart], Tag("<array>"), Field(max_length=MAX_PARTS)],
    by_kind("a string or an array of content parts"),
]


class FunctionCall(Inbound):
    """The function an assistant called, with its arguments as JSON text."""

    name: str
    arguments: str


class ToolCall(Inbound):
    """One tool call in an assistant message."""

    id: str
    type: str | None = None
    function: FunctionCall | None = None


class Message(Inbound):
    """One message of the conversation."""

    role: Role
    content: Content | None = None
    name: str | None = None
    tool_calls: Annotated[list[ToolCall], Field(max_length=MAX_TOOLS)] | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = None


class StreamOptions(Inbound):
    """`stream_options`: whether the last chunk reports usage."""

    include_usage: bool | None = None


class FunctionDefinition(Inbound):
    """A function the model may call; `parameters` is a JSON Schema object."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolDefinition(Inbound):
    """A tool: a function (or another kind, passed through)."""

    type: str = "function"
    function: FunctionDefinition | None = None


class FunctionName(Inbound):
    """A function named by a tool choice."""

    name: str


class NamedToolChoice(Inbound):
    """`{"type": "function", "function": {"name": ...}}`."""

    type: str
    function: FunctionName | None = None


ToolChoice = Annotated[
    Annotated[Literal["none", "auto", "required"], Tag("<string>")]
    | Annotated[NamedToolChoice, Tag("<object>")],
    by_kind("'none', 'auto', 'required' or an object naming a function"),
]
Stop = Annotated[
    Annotated[str, Tag("<string>")]
    | Annotated[list[str], Tag("<array>"), Field(max_length=MAX_STOP)],
    by_kind("a string or an array of strings"),
]


class JSONSchemaFormat(Inbound):
    """The schema a `json_schema` response must follow."""

    name: str
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(Inbound):
    """`response_format`: text, any JSON object, or JSON following a schema."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None


class ChatCompletionRequest(Inbound):
    """A chat completion request, as much of it as the gateway reads."""

    model: Annotated[str, Field(min_length=1)]
    messages: Annotated[list[Message], Field(min_length=1, max_length=MAX_MESSAGES)]
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    max_tokens: PositiveInt | None = None
    max_completion_tokens: PositiveInt | None = None
    n: PositiveInt | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    stop: Stop | None = None
    tools: Annotated[list[ToolDefinition], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: ToolChoice | None = None
    response_format: ResponseFormat | None = None
    reasoning_effort: str | None = None
    user: str | None = None
    parallel_tool_calls: bool | None = None


SCHEMA = Schema(
    ChatCompletionRequest,
    wording=quoted_wording,
    hints={
        "model": "a non-empty string naming a configured model",
        "messages": "a non-empty array of messages",
        "max_tokens": "a positive integer",
        "max_completion_tokens": "a positive integer",
        "n": "a positive integer",
        "temperature": "a number from 0 to 2",
        "top_p": "a number from 0 to 1",
    },
)


def validate_request(body: dict[str, Any]) -> ChatCompletionRequest:
    """`body` as a chat completion request, or `InvalidRequest` naming the first wrong field
    (`'model' is required (...)`, `messages[0].content must be a string or ...`)."""
    return SCHEMA.validate(body)
