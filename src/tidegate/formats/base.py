"""What every wire-format codec shares: stream parsers, stream encoders, upstream JSON helpers.

A codec module (`formats/<wire>.py`) turns its format into the canonical types of `events.py`
and back, as pure functions and incremental classes with no I/O: a `StreamParser` (upstream
bytes in, canonical events out), a `StreamEncoder` (canonical events in, client bytes out), and
functions for requests, whole responses, usage, finish reasons and errors. What they share
lives here: the base classes, the outcome of a stream (`StreamState`) an encoder ends with, and
the helpers that read untrusted upstream JSON without ever letting it crash the gateway.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Protocol, runtime_checkable

import orjson

from tidegate.errors import GatewayError, UpstreamProtocolError, as_gateway_error
from tidegate.events import (
    ChatRequest,
    Completion,
    Event,
    Finish,
    ReasoningDelta,
    Sources,
    StreamError,
    TextDelta,
    ToolCallDelta,
    UsageUpdate,
)
from tidegate.sse import SSEDecoder, SSEEvent, skip_plain_events

#: What a parser may raise on upstream data of the wrong shape or type (a string where a count
#: belongs, a list where an object does): callers turn these into `UpstreamProtocolError`.
PARSE_ERRORS = (ValueError, TypeError, KeyError, AttributeError, IndexError, RecursionError)

#: What reading one event may raise when the event is malformed: it is skipped, not fatal.
SKIPPABLE = (UpstreamProtocolError, *PARSE_ERRORS)

#: Thinking budgets (tokens) for the reasoning efforts of OpenAI-style requests, shared by the
#: formats that take a budget (Anthropic, Gemini). An approximation: see docs/translation.md.
REASONING_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576}


def reasoning_budget(effort: str | None, budget: int | None) -> int | None:
    """The thinking budget a request asks for, given as a budget or as an effort."""
    return budget or REASONING_BUDGETS.get(effort or "")


def reasoning_effort(effort: str | None, budget: int | None) -> str | None:
    """The reasoning effort a request asks for, given as an effort or as a budget (the
    smallest effort whose budget covers it)."""
    if effort is not None or budget is None:
        return effort
    for name in ("low", "medium"):
        if budget <= REASONING_BUDGETS[name]:
            return name
    return "high"


#: Upstream text kept in an error message; the client sees less (redacted, then shortened).
EXCERPT_CHARS = 2000


class PassthroughFilter(ABC):
    """Edits a pass-through byte stream (rarely needed; most pass-through forwards as is)."""

    @abstractmethod
    def feed(self, chunk: bytes) -> bytes:
        """The bytes to forward for this read (possibly fewer, held for the next)."""

    @abstractmethod
    def flush(self) -> bytes:
        """Whatever is still held at the end of the stream."""


class StreamParser(ABC):
    """Turns one upstream wire format into canonical events, incrementally.

    `started` becomes true at the first valid protocol event (the point where the gateway may
    commit its 200), `done` at the upstream's own end marker. `feed` raises
    `UpstreamProtocolError` on data that is not the format; an error the upstream reports in
    the stream comes back as a `StreamError` event.
    """

    started: bool = False
    done: bool = False
    #: Events that could not be read (broken JSON, wrong types) and were skipped, and the
    #: first few of them, unredacted: the relay logs them through the redactor.
    skipped: int = 0
    skipped_samples: list[str] | None = None

    @abstractmethod
    def feed(self, chunk: bytes) -> list[Event]:
        """Decode one network read."""

    def skip(self, data: str | bytes) -> None:
        """One event could not be read: count it and keep a sample, then go on."""
        self.skipped += 1
        if self.skipped_samples is None:
            self.skipped_samples = []
        if len(self.skipped_samples) < 3:
            self.skipped_samples.append(excerpt(data))

    def finish(self) -> list[Event]:
        """The body ended; return any last events (subclasses flush their decoders)."""
        return []

    @property
    def complete(self) -> bool:
        """True when the stream ended the way a successful stream of this format ends."""
        return self.done


class SSEStreamParser(StreamParser):
    """A parser of an SSE wire format that can also run as a pass-through side parser.

    As a side parser (`side=True`) it only needs the events that carry usage, the finish, an
    error or the end: once the first event has been parsed (it decides the commit), whole text
    events are skipped without being decoded.
    """

    _decoder: SSEDecoder
    _side: bool

    @abstractmethod
    def side_marker(self, chunk: bytes) -> int:
        """Where in `chunk` the first event a side parser needs begins; -1 if none."""

    @abstractmethod
    def handle(self, events: list[SSEEvent]) -> list[Event]:
        """The canonical events of these SSE events."""

    def decode(self, chunk: bytes) -> list[Event]:
        """Decode every event of `chunk`."""
        return self.handle(self._decoder.decode(chunk))

    def finish(self) -> list[Event]:
        """The body ended: a last event without its blank line still counts."""
        return self.handle(self._decoder.finish())

    def feed(self, chunk: bytes) -> list[Event]:
        if self._side:
            if self.started:
                chunk = skip_plain_events(self._decoder, chunk, self.side_marker(chunk))
                if not chunk:
                    return []
            else:
                # A fast upstream's first read may hold the whole answer: decode it fully only
                # up to its first event, and let the rest take the side path.
                cut = chunk.find(b"\n\n") + 2
                if 2 <= cut < len(chunk) and b"\r" not in chunk:
                    first = self.decode(chunk[:cut])
                    rest = chunk[cut:]
                    return first + (self.feed(rest) if self.started else self.decode(rest))
        return self.decode(chunk)


class StreamState:
    """What the relay has seen of one stream: usage, finish, sources, and a terminal error."""

    __slots__ = (
        "error",
        "error_forwarded",
        "events_out",
        "finish_reason",
        "last_sent",
        "passthrough",
        "skipped",
        "sources",
        "text_chars",
        "usage",
    )

    def __init__(self) -> None:
        self.passthrough = False  # the client gets the upstream's own bytes
        self.last_sent = b""  # in pass-through, the last bytes forwarded
        self.skipped = 0  # unreadable upstream events skipped (see StreamParser.skip)
        self.usage: Any = None
        self.finish_reason: str | None = None
        self.sources: list[dict[str, Any]] = []
        self.error: GatewayError | None = None
        self.error_forwarded = False
        #: For an estimate when no usage arrives: generated characters seen as events, and
        #: (pass-through) upstream events forwarded, about one token each.
        self.text_chars = 0
        self.events_out = 0

    def estimated_output_tokens(self) -> int:
        """A cheap estimate of the tokens generated so far (when the upstream reported none):
        characters / 4 of the text seen, or one token per forwarded upstream event."""
        return max(self.text_chars // 4 + (1 if self.text_chars % 4 else 0), self.events_out)

    def observe(self, events: list[Event]) -> None:
        """Record the events that matter to the outcome."""
        for event in events:
            if isinstance(event, UsageUpdate):
                self.usage = event.usage
            elif isinstance(event, Finish):
                self.finish_reason = event.reason
            elif isinstance(event, TextDelta | ReasoningDelta):
                # Upstream data: a field may be of any type (type-confused answers are skipped
                # elsewhere, never a failure here).
                self.text_chars += _chars(event.text)
            elif isinstance(event, ToolCallDelta):
                self.text_chars += _chars(event.arguments) + _chars(event.name)
            elif isinstance(event, Sources):
                self.sources = event.items
            elif isinstance(event, StreamError) and self.error is None:
                self.error = as_gateway_error(event.error)


def _chars(text: object) -> int:
    """The length of `text` if it is a string (upstream data may be anything), else 0."""
    return len(text) if isinstance(text, str) else 0


class StreamEncoder(Protocol):
    """An endpoint's streaming wire format."""

    content_type: bytes

    @property
    def ping(self) -> bytes:
        """A keep-alive the endpoint's clients ignore (empty: send none)."""

    def encode(self, events: list[Event]) -> bytes:
        """Canonical events as wire bytes (possibly empty)."""

    def error(self, err: GatewayError) -> bytes:
        """An in-band error after the stream has begun."""

    def end(self, state: StreamState) -> bytes:
        """The stream's final bytes (final event, terminator)."""


class UpstreamCodec(Protocol):
    """What a provider needs of its wire format (a codec module satisfies it)."""

    def request_to_wire(self, request: ChatRequest, model: str) -> tuple[dict[str, Any], list[str]]:
        """The upstream request body for a canonical request, and the fields it cannot carry."""

    def completion_from_wire(self, body: bytes) -> Completion:
        """A whole upstream response body as a canonical completion."""

    def stream_parser(self, *, side: bool = False, max_event_bytes: int = ...) -> StreamParser:
        """A parser for one streamed upstream response."""


@runtime_checkable
class PassthroughCodec(UpstreamCodec, Protocol):
    """A codec whose format also has an inbound endpoint: bodies can pass through as they came."""

    def passthrough_to_wire(
        self, body: dict[str, Any], model: str, stream: bool
    ) -> tuple[dict[str, Any], PassthroughFilter | None]:
        """A client's body of this format, made ready for an upstream of the same format."""


def upstream_error_body(err: GatewayError, wire_format: str) -> dict[str, Any] | None:
    """The upstream's own JSON error body when it came from an upstream of `wire_format`, else
    None: a client of the same format gets the upstream's error object, every field kept."""
    body = getattr(err, "upstream_body", None)
    if body is None or getattr(err, "upstream_format", None) != wire_format:
        return None
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) and isinstance(value.get("error"), dict) else None


def error_message_of(body: bytes) -> str:
    """The human message inside a JSON error body of any known provider, else a short excerpt."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = excerpt(body).strip()
        if text.startswith("<"):
            return "non-JSON (HTML) error page"
        return text
    return message_in(data) or excerpt(body)


def message_in(data: Any) -> str | None:
    """Find the error message in `{"error": "..."}`, `{"error": {"message": ...}}` and kin."""
    if isinstance(data, list) and data:
        data = data[0]
    if not isinstance(data, dict):
        return None
    err = data.get("error")
    if isinstance(err, str) and err:
        return err
    if isinstance(err, dict):
        msg = err.get("message")
        if isinstance(msg, str):
            return msg
    msg = data.get("message")
    return msg if isinstance(msg, str) else None


def status_for_error_type(kind: str | None, code: Any) -> int:
    """An HTTP status for an error reported inside a 200 stream, from its code or type name."""
    if isinstance(code, int) and 400 <= code <= 599:
        return code
    kind = (kind or "").lower()
    for needle, status in (
        ("rate_limit", 429),
        ("too_many", 429),
        ("resource_exhausted", 429),
        ("overloaded", 529),
        ("unavailable", 503),
        ("invalid", 400),
        ("authentication", 401),
        ("permission", 403),
        ("not_found", 404),
        ("timeout", 504),
    ):
        if needle in kind:
            return status
    return 500


def excerpt(data: str | bytes) -> str:
    """Upstream data as text for an error message, bounded but not redacted: the message is
    redacted where it leaves the process, before it is shortened for the client."""
    text = data if isinstance(data, str) else data[: EXCERPT_CHARS * 4].decode("utf-8", "replace")
    return text[:EXCERPT_CHARS]


def malformed(exc: BaseException) -> UpstreamProtocolError:
    """The protocol error for a `PARSE_ERRORS` exception raised while reading upstream data.

    Only the exception's type is named: its text may quote the upstream's data.
    """
    return UpstreamProtocolError(
        f"upstream sent data of the wrong shape or type ({type(exc).__name__})"
    )


def loads_object(data: str | bytes, what: str) -> dict[str, Any]:
    """Parse one JSON object from upstream or raise `UpstreamProtocolError` naming `what`."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise UpstreamProtocolError(f"upstream sent malformed {what}: {excerpt(data)!r}") from None
    if not isinstance(value, dict):
        raise UpstreamProtocolError(f"upstream sent {what} that is not a JSON object")
    return value
