"""The wire format of a described upstream (`providers:`): its framing and its chunks mapped
to canonical events, as the descriptor's `chat` step says (descriptors.py).

- framing: `sse` (each event's data, through the one SSE decoder), `ndjson` (each non-blank
  line, through the one line splitter), `lines` (each line `chunk_match` matches; the others
  are ignored), `json` (the whole body, at its end);
- `chunk_match`: its first group is the chunk's JSON; a chunk it does not match is used whole
  (the seed's rule), but in `lines`. A regex that takes an SSE `data:` line's payload (the
  seed's `data: (.*)`) is what the SSE decoder already does, and is skipped;
- `end`: the chunk that ends the stream (`[DONE]` by default with `sse`, none otherwise);
- `resp`: canonical fields from dotted paths: `text`, `reasoning`, `done`/`finish_reason` (a
  reason, or `true` for `stop`), `error`; `usage`: the counters of events.Usage;
- `chunk_filter`: when its condition holds for a chunk, its `field` is cleared for that chunk;
- `errors`: field rules (a chunk or a whole answer that is an error, and whether it is worth
  another try). Without rules or an `error` field, a chunk with a truthy `error` member is an
  error, as in most JSON APIs.

Paths step into objects by name and into lists by index (`choices.0.delta.content`); a path
the chunk lacks yields nothing. Everything here is pure: no I/O, no templates.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import orjson

from tidegate.descriptors import ChatStep, ErrorRule
from tidegate.errors import UpstreamProtocolError, UpstreamStatusError
from tidegate.events import (
    Completion,
    CompletionBuilder,
    Event,
    Finish,
    ReasoningDelta,
    StreamError,
    TextDelta,
    Usage,
    UsageUpdate,
)
from tidegate.formats.base import PARSE_ERRORS, StreamParser, message_in, status_for_error_type
from tidegate.sse import DEFAULT_MAX_EVENT_BYTES, NDJSONDecoder, SSEDecoder

#: What mapping one chunk gave (`ResponseMap.map`).
ERROR, READ, FINISHED = 0, 1, 2
#: What `Path.find` returns for a path the value lacks.
MISSING: Any = object()
#: The canonical fields `resp` may fill.
OUTPUT_FIELDS = ("text", "reasoning", "done", "finish_reason", "error")
_PATH = re.compile(r"^[^.\s\[\]]+(\.[^.\s\[\]]+)*$")


def as_text(value: Any) -> str:
    """A value as text: strings as they are, null as nothing, booleans `true`/`false`,
    numbers as written, lists and objects as JSON."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int | float):
        return str(value)
    return orjson.dumps(value).decode()


class Path:
    """A compiled dotted path such as `choices.0.delta.content` (digits index lists)."""

    __slots__ = ("steps", "text")

    def __init__(self, text: str):
        self.text = text
        self.steps = tuple(
            (part, int(part) if part.lstrip("-").isdigit() else None) for part in text.split(".")
        )

    def get(self, obj: Any) -> Any:
        """The value at the path, or None when any step is missing."""
        for key, index in self.steps:
            kind = type(obj)
            if kind is dict:
                obj = obj.get(key)
                if obj is None:
                    return None
            elif kind is list and index is not None:
                try:
                    obj = obj[index]
                except IndexError:
                    return None
            else:
                return None
        return obj

    def find(self, obj: Any) -> Any:
        """The value at the path (null included), or `MISSING` when a step is missing."""
        for key, index in self.steps:
            kind = type(obj)
            if kind is dict:
                obj = obj.get(key, MISSING)
                if obj is MISSING:
                    return MISSING
            elif kind is list and index is not None:
                try:
                    obj = obj[index]
                except IndexError:
                    return MISSING
            else:
                return MISSING
        return obj

    def has(self, obj: Any) -> bool:
        """True when every step of the path exists (its value may be null)."""
        return self.find(obj) is not MISSING


def valid_path(text: str) -> bool:
    """True when `text` is a dotted path: non-empty steps without spaces or brackets."""
    return bool(_PATH.match(text))


class Condition:
    """`op` applied to the value at `path`. A missing path makes no condition hold, except
    `exists` with a false `value`."""

    __slots__ = ("op", "path", "value")

    def __init__(self, path: Path, op: str, value: Any):
        self.path = path
        self.op = op
        self.value = value

    def holds(self, obj: Any) -> bool:
        """Whether the condition holds for a chunk."""
        found = self.path.find(obj)
        if self.op == "exists":
            present = found is not MISSING
            return present if self.value is None or bool(self.value) else not present
        if found is MISSING:
            return False
        if self.op == "==":
            return bool(found == self.value)
        if self.op == "!=":
            return bool(found != self.value)
        options = self.value if isinstance(self.value, list | tuple) else [self.value]
        inside = found in options
        return inside if self.op == "in" else not inside


# -- the answer ----------------------------------------------------------------------------------


class FieldRule:
    """A compiled error rule on a field: the condition, where the message is, what it means."""

    __slots__ = ("as_status", "condition", "message", "retryable")

    def __init__(self, rule: ErrorRule):
        assert rule.name is not None
        self.condition = Condition(Path(rule.name), rule.op, rule.value)
        self.message = Path(rule.message) if rule.message else None
        self.as_status = rule.as_status
        self.retryable = rule.retryable

    def error(self, obj: Any, provider: str) -> UpstreamStatusError:
        """The error a chunk or answer matching this rule stands for."""
        found = self.message.get(obj) if self.message is not None else None
        text = as_text(found) if found is not None else (message_in(obj) or "")
        err = UpstreamStatusError(
            f"upstream ({provider}) reported an error: {text or 'no message'}",
            upstream_status=self.as_status,
        )
        err.retryable = self.retryable
        return err


class ResponseMap:
    """How chunks (or a whole answer) become canonical events: `resp`, `chunk_filter`,
    `usage` and `errors` compiled."""

    __slots__ = (
        "default_errors",
        "error",
        "filters",
        "finish",
        "provider",
        "reasoning",
        "rules",
        "text",
        "usage",
    )

    def __init__(self, chat: ChatStep, provider: str):
        self.provider = provider
        pairs = dict(chat.resp_pairs())
        self.text = Path(pairs["text"]) if "text" in pairs else None
        self.reasoning = Path(pairs["reasoning"]) if "reasoning" in pairs else None
        finish = pairs.get("finish_reason") or pairs.get("done")
        self.finish = Path(finish) if finish else None
        self.error = Path(pairs["error"]) if "error" in pairs else None
        self.filters = [(Condition(Path(f.name), f.op, f.value), f.field) for f in chat.filters()]
        self.usage = [(name, Path(path)) for name, path in chat.usage.items()]
        self.rules = [FieldRule(r) for r in chat.errors if r.name is not None]
        self.default_errors = not self.rules and self.error is None

    def map(self, obj: Any, out: list[Event]) -> int:
        """Append the events of one chunk: `ERROR` when it is an error, `FINISHED` when it
        gave a finish reason, else `READ`."""
        for rule in self.rules:
            if rule.condition.holds(obj):
                out.append(StreamError(rule.error(obj, self.provider)))
                return ERROR
        if self.error is not None:
            found = self.error.get(obj)
            if found:
                out.append(StreamError(self._error(found, obj)))
                return ERROR
        elif self.default_errors and type(obj) is dict:
            found = obj.get("error")
            if found:
                out.append(StreamError(self._error(found, obj)))
                return ERROR
        cleared: set[str] | None = None
        for condition, name in self.filters:
            if condition.holds(obj):
                if cleared is None:
                    cleared = set()
                cleared.add(name)
        if self.reasoning is not None and (cleared is None or "reasoning" not in cleared):
            value = self.reasoning.get(obj)
            if value:
                out.append(ReasoningDelta(value if type(value) is str else as_text(value)))
        if self.text is not None and (cleared is None or "text" not in cleared):
            value = self.text.get(obj)
            if value:
                out.append(TextDelta(value if type(value) is str else as_text(value)))
        if self.usage:
            counts = {name: path.get(obj) for name, path in self.usage}
            numbers = {k: int(v) for k, v in counts.items() if isinstance(v, int | float)}
            if numbers:
                out.append(UsageUpdate(Usage(**numbers)))
        if self.finish is not None and (
            cleared is None or ("done" not in cleared and "finish_reason" not in cleared)
        ):
            value = self.finish.get(obj)
            if value:
                out.append(Finish(value if type(value) is str else "stop"))
                return FINISHED
        return READ

    def _error(self, found: Any, obj: Any) -> UpstreamStatusError:
        kind = found.get("type") if isinstance(found, dict) else None
        code = found.get("code") if isinstance(found, dict) else None
        text = found if isinstance(found, str) else (message_in(obj) or as_text(found))
        return UpstreamStatusError(
            f"upstream ({self.provider}) reported an error: {text}",
            upstream_status=status_for_error_type(kind, code),
            upstream_type=kind if isinstance(kind, str) else None,
        )


class DescribedStreamParser(StreamParser):
    """One described answer to canonical events, in the descriptor's framing.

    `sse`: each event's data; `ndjson`: each non-blank line; `lines`: each line `chunk_match`
    matches (others are ignored); `json`: the whole body at its end. `chunk_match`'s first group
    is the chunk's JSON (a chunk it does not match is used whole, as in the seed, but in
    `lines`); the `end` chunk ends the stream.
    """

    __slots__ = (
        "_decoder",
        "_end",
        "_end_bytes",
        "_expects_end",
        "_framing",
        "_held",
        "_held_size",
        "_lines",
        "_map",
        "_match",
        "_match_bytes",
        "_max",
        "done",
        "finished",
        "started",
    )

    def __init__(self, spec: AnswerSpec, *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES):
        self._framing = spec.framing
        self._map = spec.response
        self._match = spec.match
        self._match_bytes = spec.match_bytes
        self._end = spec.end
        self._end_bytes = spec.end.encode() if spec.end is not None else None
        self._max = max_event_bytes
        self._decoder = SSEDecoder(max_event_bytes=max_event_bytes)
        self._lines = NDJSONDecoder(max_line_bytes=max_event_bytes)
        self._held: list[bytes] = []
        self._held_size = 0
        self.started = False
        self.done = False
        self.finished = False
        self._expects_end = spec.expects_end

    @property
    def complete(self) -> bool:
        """Ended by the end chunk, by a finish reason, or (when the descriptor has neither) by
        the end of the body."""
        return self.done or self.finished or not self._expects_end

    def feed(self, chunk: bytes) -> list[Event]:
        out: list[Event] = []
        framing = self._framing
        if framing == "sse":
            for event in self._decoder.decode(chunk):
                self._text_chunk(event.data, out)
                if self.done:
                    break
        elif framing == "json":
            self._held.append(chunk)
            self._held_size += len(chunk)
            if self._held_size > self._max:
                raise UpstreamProtocolError(f"upstream answer is larger than {self._max} bytes")
        else:
            for line in self._lines.decode(chunk):
                self._line(line, out)
                if self.done:
                    break
        return out

    def finish(self) -> list[Event]:
        out: list[Event] = []
        framing = self._framing
        if framing == "sse":
            for event in self._decoder.finish():
                if not self.done:
                    self._text_chunk(event.data, out)
        elif framing == "json":
            body, self._held = b"".join(self._held), []
            if body.strip():
                self._object(body, out)
                self.done = True
        else:
            for line in self._lines.flush():
                if not self.done:
                    self._line(line, out)
        return out

    def _text_chunk(self, data: str, out: list[Event]) -> None:
        if self._match is not None:
            m = self._match.search(data)
            if m is not None:
                data = m.group(1)
        if data == self._end:
            self.done = True
            return
        if data:
            self._object(data, out)

    def _line(self, line: bytes, out: list[Event]) -> None:
        if self._match_bytes is not None:
            m = self._match_bytes.search(line)
            if m is not None:
                line = m.group(1)
            elif self._framing == "lines":
                return
        if line == self._end_bytes:
            self.done = True
            return
        if line.strip():
            self._object(line, out)

    def _object(self, data: str | bytes, out: list[Event]) -> None:
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            self.skip(data)
            return
        mark = len(out)
        try:
            outcome = self._map.map(obj, out)
        except PARSE_ERRORS:
            del out[mark:]
            self.skip(data)
            return
        if outcome == ERROR:
            self.done = True
            return
        self.started = True
        if outcome == FINISHED:
            self.finished = True


class AnswerSpec:
    """How a described upstream's answer is framed and mapped."""

    __slots__ = ("end", "expects_end", "framing", "match", "match_bytes", "response")

    def __init__(self, chat: ChatStep, provider: str, match: re.Pattern[str] | None):
        self.framing: Literal["sse", "ndjson", "lines", "json"] = chat.framing
        self.response = ResponseMap(chat, provider)
        self.end = chat.end_marker()
        if match is not None and chat.framing == "sse" and _matches_data_line(match):
            match = None  # `data: (.*)`: the SSE decoder has done that already
        self.match = match
        self.match_bytes = re.compile(match.pattern.encode()) if match is not None else None
        has_finish = self.response.finish is not None
        self.expects_end = chat.framing != "json" and (has_finish or self.end is not None)


def _matches_data_line(match: re.Pattern[str]) -> bool:
    """True when the regex takes the payload of an SSE `data:` line (the seed's `data: (.*)`)."""
    for sample in ('data: {"a": 1}', 'data:{"a": 1}'):
        m = match.search(sample)
        if m is None or m.groups() == () or m.group(1) != '{"a": 1}':
            return False
    return True


def completion_from_wire(spec: AnswerSpec, body: bytes, max_bytes: int) -> Completion:
    """A whole answer, in any framing (a stream is read whole), as a completion; an error
    in it raises."""
    parser = DescribedStreamParser(spec, max_event_bytes=max(max_bytes, len(body) + 1))
    builder = CompletionBuilder()
    for event in parser.feed(body) + parser.finish():
        if isinstance(event, StreamError):
            raise event.error
        builder.add(event)
    if not parser.started:
        raise UpstreamProtocolError(
            f"upstream ({spec.response.provider}) answered without a readable chunk"
        )
    return builder.build()
