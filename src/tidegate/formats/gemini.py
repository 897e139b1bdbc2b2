"""The Gemini `generateContent` request as a schema.

Every field the gateway reads, with Google's types (protocols reference §5.2); anything else
passes through untouched. The REST API takes each field by its camelCase name or its
snake_case twin; so does the schema (the camelCase name wins when both are sent, as it does in
the endpoint's own reading of the body), and an error names the field as the client spelled
it. Integers are int32, as in Google's API; `topK` may be any number in that range because
python-genai sends it as a float.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AliasChoices, AliasGenerator, ConfigDict, Field
from pydantic.alias_generators import to_camel

from tidegate.formats.common import (
    MAX_MESSAGES,
    MAX_PARTS,
    MAX_STOP,
    MAX_TOOLS,
    Inbound,
    Schema,
    colon_wording,
)

Int32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
Int32Number = Annotated[float, Field(ge=-(2**31), le=2**31 - 1)]


def _either_spelling(name: str) -> AliasChoices:
    return AliasChoices(to_camel(name), name)


class GeminiModel(Inbound):
    """Base of the Gemini models: fields by camelCase or snake_case name."""

    model_config = ConfigDict(alias_generator=AliasGenerator(validation_alias=_either_spelling))


class FunctionCall(GeminiModel):
    """A function call the model made."""

    name: str
    args: dict[str, Any] | None = None
    id: str | None = None


class FunctionResponse(GeminiModel):
    """The result of a function call."""

    name: str
    response: dict[str, Any] | None = None
    id: str | None = None


class Blob(GeminiModel):
    """Inline data: a MIME type and base64 bytes."""

    mime_type: str
    data: str


class FileData(GeminiModel):
    """Data by URI."""

    mime_type: str | None = None
    file_uri: str


class Part(GeminiModel):
    """One part of a content: text, a function call or response, or data."""

    text: str | None = None
    thought: bool | None = None
    function_call: FunctionCall | None = None
    function_response: FunctionResponse | None = None
    inline_data: Blob | None = None
    file_data: FileData | None = None


class Content(GeminiModel):
    """One turn: `role` is `user` or `model`."""

    role: str | None = None
    parts: Annotated[list[Part], Field(max_length=MAX_PARTS)] | None = None


class FunctionDeclaration(GeminiModel):
    """A function the model may call."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    parameters_json_schema: dict[str, Any] | None = None


class Tool(GeminiModel):
    """A tool: function declarations (or another kind, such as search, passed through)."""

    function_declarations: (
        Annotated[list[FunctionDeclaration], Field(max_length=MAX_TOOLS)] | None
    ) = None


class FunctionCallingConfig(GeminiModel):
    """How the model may call functions: a mode and the names it may choose from."""

    mode: str | None = None
    allowed_function_names: list[str] | None = None


class ToolConfig(GeminiModel):
    """`toolConfig`: the function calling configuration."""

    function_calling_config: FunctionCallingConfig | None = None


class ThinkingConfig(GeminiModel):
    """The thinking budget, and whether thoughts are returned."""

    thinking_budget: Int32 | None = None
    include_thoughts: bool | None = None


class GenerationConfig(GeminiModel):
    """Sampling, limits and output format."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: Int32Number | None = None
    max_output_tokens: Int32 | None = None
    candidate_count: Int32 | None = None
    stop_sequences: Annotated[list[str], Field(max_length=MAX_STOP)] | None = None
    response_mime_type: str | None = None
    response_schema: dict[str, Any] | None = None
    response_json_schema: Any = None
    thinking_config: ThinkingConfig | None = None


class GenerateContentRequest(GeminiModel):
    """A generateContent request, as much of it as the gateway reads."""

    contents: Annotated[list[Content], Field(min_length=1, max_length=MAX_MESSAGES)]
    system_instruction: Content | None = None
    tools: Annotated[list[Tool], Field(max_length=MAX_TOOLS)] | None = None
    tool_config: ToolConfig | None = None
    generation_config: GenerationConfig | None = None


SCHEMA = Schema(
    GenerateContentRequest,
    wording=colon_wording,
    hints={"contents": "a non-empty array of contents"},
)


def validate_request(body: dict[str, Any]) -> GenerateContentRequest:
    """`body` as a generateContent request, or `InvalidRequest` naming the first wrong field
    (`contents[0].parts: must be an array ...`, `generationConfig.candidateCount: must be an
    integer ...`)."""
    return SCHEMA.validate(body)
