"""The canonical request, stream events and response shared by every provider and endpoint.

A provider adapter turns its upstream's wire format into these events; an endpoint encoder
turns them into its client's wire format. Adding a provider or an endpoint is one module on one
side of this file. The byte pass-through (inbound format == upstream format) skips the events
for forwarding but still produces them from a side parser, for usage and completion.

Usage is normalized here, whatever the provider calls its counters:
`input_tokens` counts every prompt token, cached ones included; `cache_read_tokens` and
`cache_write_tokens` are the parts of it read from or written to a prompt cache;
`output_tokens` counts every generated token, reasoning included; `reasoning_tokens` is the
part of it spent on reasoning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

# ---------------------------------------------------------------------------------------------
# Request


@dataclass(slots=True)
class Part:
    """One piece of message content: text, or an image given by URL or base64 data."""

    type: str  # "text" | "image"
    text: str = ""
    url: str | None = None
    media_type: str | None = None
    data: str | None = None  # base64, without the data: URL prefix


@dataclass(slots=True)
class ToolCall:
    """A complete tool call made by the assistant; `arguments` is JSON text."""

    id: str
    name: str
    arguments: str


@dataclass(slots=True)
class Message:
    """One turn: `role` is system, user, assistant or tool."""

    role: str
    content: list[Part] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None
    reasoning: str | None = None

    def text(self) -> str:
        """The text parts joined with newlines."""
        return "\n".join(p.text for p in self.content if p.type == "text")


@dataclass(slots=True)
class Tool:
    """A function the model may call; `parameters` is a JSON Schema object."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class ChatRequest:
    """What a client asked for, independent of the wire format it used."""

    model: str
    messages: list[Message]
    stream: bool = False
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: list[str] = field(default_factory=list)
    tools: list[Tool] = field(default_factory=list)
    tool_choice: str | dict[str, Any] | None = None  # "auto" | "none" | "required" | {"name": ...}
    json_mode: bool = False
    json_schema: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    reasoning_budget: int | None = None
    include_usage: bool = False
    session_id: str | None = None
    mode: str | None = None
    user: str | None = None
    #: The /stream-ask coding task the messages were rendered for (already in their text).
    task: str | None = None
    # Fields of the inbound request the chosen upstream cannot carry, named for the client.
    dropped: list[str] = field(default_factory=list)
    #: The inbound body as the client sent it, when its endpoint keeps one: described
    #: providers read any field of it by name (`${request.field}`).
    inbound: dict[str, Any] | None = None

    def tool_name(self, call_id: str | None) -> str:
        """The function name of an earlier assistant tool call, found by its id."""
        for message in self.messages:
            for call in message.tool_calls:
                if call.id == call_id:
                    return call.name
        return call_id or ""

    def last_user_text(self) -> str:
        """The text of the last user message, or an empty string."""
        for message in reversed(self.messages):
            if message.role == "user":
                return message.text()
        return ""


def arguments_object(text: str) -> dict[str, Any]:
    """Tool-call arguments (JSON text) as an object, for formats that carry objects."""
    if not text.strip():
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {"arguments": text}  # not JSON: keep the text rather than lose it
    return value if isinstance(value, dict) else {"value": value}


# ---------------------------------------------------------------------------------------------
# Stream events


@dataclass(slots=True)
class Usage:
    """Normalized token counts (see the module docstring for what each one includes)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counts as a plain dict, with a total."""
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.input_tokens + self.output_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "reasoning_tokens": self.reasoning_tokens,
        }


class Event:
    """Base of the canonical stream events."""

    __slots__ = ()


class TextDelta(Event):
    """A piece of the answer's text."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text


class ReasoningDelta(Event):
    """A piece of the model's visible reasoning (DeepSeek reasoning_content, thinking blocks)."""

    __slots__ = ("signature", "text")

    def __init__(self, text: str, signature: str | None = None):
        self.text = text
        self.signature = signature


class ToolCallDelta(Event):
    """A tool call's start (id and name) and/or a fragment of its JSON arguments."""

    __slots__ = ("arguments", "id", "index", "name")

    def __init__(self, index: int, id: str | None, name: str | None, arguments: str):
        self.index = index
        self.id = id
        self.name = name
        self.arguments = arguments


class UsageUpdate(Event):
    """The cumulative usage as last reported; a later update replaces an earlier one."""

    __slots__ = ("usage",)

    def __init__(self, usage: Usage):
        self.usage = usage


class Finish(Event):
    """Why generation stopped: stop, length, tool_calls, content_filter, or a provider's word."""

    __slots__ = ("reason",)

    def __init__(self, reason: str):
        self.reason = reason


class Sources(Event):
    """Citations for the answer (AnythingLLM workspace documents)."""

    __slots__ = ("items",)

    def __init__(self, items: list[dict[str, Any]]):
        self.items = items


class StreamError(Event):
    """The upstream reported a failure inside its stream."""

    __slots__ = ("error",)

    def __init__(self, error: Exception):
        self.error = error


# ---------------------------------------------------------------------------------------------
# Non-streaming response


@dataclass(slots=True)
class Completion:
    """A whole answer, as a non-streaming call returns it."""

    text: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage | None = None
    sources: list[dict[str, Any]] = field(default_factory=list)
    upstream_id: str | None = None


class CompletionBuilder:
    """Accumulates stream events into a `Completion` (tool-call fragments joined by index)."""

    __slots__ = ("_calls", "_reasoning", "_text", "completion")

    def __init__(self) -> None:
        self.completion = Completion()
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._calls: dict[int, list[str]] = {}

    def add(self, event: Event) -> None:
        """Fold one event into the completion."""
        c = self.completion
        if isinstance(event, TextDelta):
            self._text.append(event.text)
        elif isinstance(event, ReasoningDelta):
            self._reasoning.append(event.text)
        elif isinstance(event, ToolCallDelta):
            parts = self._calls.get(event.index)
            if parts is None:
                parts = self._calls[event.index] = [event.id or "", event.name or ""]
            else:
                if event.id:
                    parts[0] = event.id
                if event.name:
                    parts[1] = event.name
            parts.append(event.arguments)
        elif isinstance(event, UsageUpdate):
            c.usage = event.usage
        elif isinstance(event, Finish):
            c.finish_reason = event.reason
        elif isinstance(event, Sources):
            c.sources = event.items

    def build(self) -> Completion:
        """The accumulated completion."""
        c = self.completion
        c.text = "".join(self._text)
        c.reasoning = "".join(self._reasoning)
        c.tool_calls = [
            ToolCall(id=parts[0], name=parts[1], arguments="".join(parts[2:]))
            for _, parts in sorted(self._calls.items())
        ]
        return c


# ---------------------------------------------------------------------------------------------
# Workflow runs: what a run says, in order — `RunStart`, per step `StepStart`, `Progress`,
# `Chunk`s and `StepEnd`, then on failure a `RunError`, and always last `RunEnd`.


@dataclass(slots=True)
class RunStart:
    """The run began."""

    run_id: str
    workflow: str
    total_steps: int


@dataclass(slots=True)
class StepStart:
    """A step began (`index` counts from 1)."""

    index: int
    total: int
    name: str


@dataclass(slots=True)
class Progress:
    """Where the run is: step `index` of `total`, time so far and the estimated time left
    (from the steps' durations in earlier runs; None until every remaining step has one)."""

    step: str
    index: int
    total: int
    elapsed_ms: int
    eta_ms: int | None


@dataclass(slots=True)
class Chunk:
    """A piece of a step's output."""

    step: str
    content: str


@dataclass(slots=True)
class StepEnd:
    """A step ended (`skipped` when its `when:` did not hold)."""

    index: int
    name: str
    usage: Usage | None
    duration_ms: int
    skipped: bool = False


@dataclass(slots=True)
class RunError:
    """A step failed; the run ends after it."""

    message: str
    code: str
    step: str | None


@dataclass(slots=True)
class RunEnd:
    """The run ended: `completed`, `error` or `cancelled`; the usage of all its model steps."""

    status: str
    run_id: str
    usage: Usage | None
    outputs: dict[str, str] = field(default_factory=dict)


WorkflowEvent = RunStart | StepStart | Progress | Chunk | StepEnd | RunError | RunEnd
