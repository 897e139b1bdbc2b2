"""Server-Sent Events and NDJSON framing: the one decoder and the one encoder.

`SSEDecoder` follows the WHATWG rules (HTML §9.2.5-9.2.6): one leading BOM is stripped, lines end
at CRLF, LF or a lone CR (a CR at the end of one read and an LF at the start of the next are one
line end), `data` lines join with LF, `:` lines are comments, `id` values containing NUL are
ignored, `retry` takes ASCII digits only, and an event still open at EOF is discarded.

Lines are split as bytes and each field value is decoded from UTF-8 exactly once, so a
multi-byte character cut across network reads is never damaged: the bytes wait in the buffer
until their line is complete. `str.splitlines` is never used: it also splits on U+2028 and
friends, which are legal inside JSON strings.

Both decoders are plain classes with `decode(bytes) -> events` and `flush()`: no event loop.
"""

from __future__ import annotations

import re

from tidegate.errors import UpstreamProtocolError

DEFAULT_MAX_EVENT_BYTES = 1024 * 1024
_BOM = b"\xef\xbb\xbf"
_LINE_END = re.compile(rb"\r\n|\r|\n")


class SSEEvent:
    """One dispatched event: its type (`message` when unnamed), data, last event id and retry."""

    __slots__ = ("data", "event", "id", "retry")

    def __init__(self, data: str, event: str = "message", id: str = "", retry: int | None = None):
        self.data = data
        self.event = event
        self.id = id
        self.retry = retry

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SSEEvent):
            return NotImplemented
        return (self.data, self.event, self.id, self.retry) == (
            other.data,
            other.event,
            other.id,
            other.retry,
        )

    def __repr__(self) -> str:
        return f"SSEEvent(event={self.event!r}, data={self.data!r}, id={self.id!r})"


class SSEDecoder:
    """Incremental WHATWG event-stream decoder: bytes in, `SSEEvent`s out.

    With `keep_stray=True`, lines that are neither a known field nor a comment (for example the
    bare JSON error object Gemini appends to a failing stream) are collected in `stray_lines`
    for the caller to inspect; the WHATWG rules themselves ignore them.

    A line or an event larger than `max_event_bytes` raises `UpstreamProtocolError`: an
    upstream that never ends its line cannot make the decoder grow without bound. A line longer
    than one read is collected as a list of reads and joined once, when it ends.
    """

    __slots__ = (
        "_at_start",
        "_cr_pending",
        "_data",
        "_data_size",
        "_event",
        "_last_id",
        "_max",
        "_pending",
        "_pending_size",
        "_retry",
        "_stray_size",
        "keep_stray",
        "stray_lines",
    )

    def __init__(
        self, *, keep_stray: bool = False, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    ) -> None:
        self._pending: list[bytes] = []  # the reads holding the start of an unfinished line
        self._pending_size = 0
        self._at_start = True
        self._cr_pending = False
        self._data: list[bytes] = []
        self._data_size = 0
        self._event = b""
        self._last_id = ""
        self._retry: int | None = None
        self._max = max_event_bytes
        self._stray_size = 0
        self.keep_stray = keep_stray
        self.stray_lines: list[bytes] = []

    @property
    def has_pending(self) -> bool:
        """True when bytes or an unfinished event are waiting for more input."""
        return bool(self._pending or self._data or self._event or self._cr_pending)

    def decode(self, chunk: bytes) -> list[SSEEvent]:
        """Feed one network read; return the events it completes, in order."""
        if b"\n" not in chunk and b"\r" not in chunk:
            if chunk:
                self._hold(chunk)
            return []
        if self._pending:
            self._pending.append(chunk)
            buf = b"".join(self._pending)
            self._pending = []
            self._pending_size = 0
        else:
            buf = chunk
        if self._at_start:
            self._at_start = False
            if buf.startswith(_BOM):
                buf = buf[3:]
        if self._cr_pending:
            self._cr_pending = False
            if buf[:1] == b"\n":
                buf = buf[1:]
        if b"\r" in buf:
            last = max(buf.rfind(b"\n"), buf.rfind(b"\r"))
            rest = buf[last + 1 :]
            # A CR that ends this read may be the first half of a CRLF split across reads.
            self._cr_pending = buf[last] == 0x0D
            lines = _LINE_END.split(buf[: last + 1])
            lines.pop()  # the empty remainder after the last line end
        else:
            last = buf.rfind(b"\n")
            if last < 0:  # only the LF of a CRLF split across reads: nothing else ended
                if buf:
                    self._hold(buf)
                return []
            rest = buf[last + 1 :]
            lines = buf[:last].split(b"\n")
        if rest:
            self._hold(rest)
        events: list[SSEEvent] = []
        for line in lines:
            self._line(line, events)
        return events

    def flush(self) -> list[SSEEvent]:
        """End of stream: per WHATWG an event without its closing blank line is discarded."""
        self._pending = []
        self._pending_size = 0
        self._data = []
        self._data_size = 0
        self._event = b""
        return []

    def finish(self) -> list[SSEEvent]:
        """End of stream, leniently: a last line without its line end is still a line, and an
        event without its closing blank line is still dispatched (upstreams that end with
        `data: [DONE]\\n` and close mean that event)."""
        events: list[SSEEvent] = []
        if self._pending:
            line = b"".join(self._pending)
            self._pending = []
            self._pending_size = 0
            if self._at_start and line.startswith(_BOM):
                line = line[3:]
            self._line(line, events)
        self._line(b"", events)
        self._cr_pending = False
        return events

    def take_stray(self) -> list[bytes]:
        """The stray lines collected so far (see `keep_stray`), forgetting them."""
        lines, self.stray_lines = self.stray_lines, []
        self._stray_size = 0
        return lines

    def _hold(self, part: bytes) -> None:
        self._pending.append(part)
        self._pending_size += len(part)
        if self._pending_size > self._max:
            raise UpstreamProtocolError(
                f"upstream sent a line longer than {self._max} bytes without ending it"
            )

    def _line(self, line: bytes, events: list[SSEEvent]) -> None:
        if not line:
            if self._data:
                data = b"\n".join(self._data).decode("utf-8", "replace")
                event = self._event.decode("utf-8", "replace") if self._event else "message"
                events.append(SSEEvent(data, event, self._last_id, self._retry))
            self._data = []
            self._data_size = 0
            self._event = b""
            return
        if line[0] == 0x3A:  # ':' comment
            return
        colon = line.find(b":")
        if colon < 0:
            name, value = line, b""
        else:
            name = line[:colon]
            value = line[colon + 1 :]
            if value[:1] == b" ":
                value = value[1:]
        if name == b"data":
            self._data.append(value)
            self._data_size += len(value) + 1
            if self._data_size > self._max:
                raise UpstreamProtocolError(f"upstream sent an event larger than {self._max} bytes")
        elif name == b"event":
            self._event = value
        elif name == b"id":
            if b"\0" not in value:
                self._last_id = value.decode("utf-8", "replace")
        elif name == b"retry":
            if value.isdigit():
                self._retry = int(value)
        elif self.keep_stray:
            self.stray_lines.append(line)
            self._stray_size += len(line) + 1
            if self._stray_size > self._max:
                raise UpstreamProtocolError(
                    f"upstream sent more than {self._max} bytes of lines that are not SSE"
                )


def skip_plain_events(decoder: SSEDecoder, chunk: bytes, marker: int) -> bytes:
    """The part of `chunk` a side parser must decode, given where its first marker is (-1: none).

    When the decoder holds nothing and the read is LF-framed, the whole events before the one
    holding the marker cannot matter and are skipped without decoding (a pass-through relay
    forwards them untouched anyway). Otherwise the chunk is returned whole.
    """
    if decoder.has_pending or b"\r" in chunk:
        return chunk
    if marker < 0:
        return b"" if chunk.endswith(b"\n\n") else chunk
    cut = chunk.rfind(b"\n\n", 0, marker)
    return chunk[cut + 2 :] if cut >= 0 else chunk


class NDJSONDecoder:
    """Incremental newline-delimited JSON splitter: bytes in, one `bytes` line per JSON document.

    Blank lines are skipped and a trailing CR is removed; the caller parses each line (orjson
    accepts bytes and validates UTF-8 itself). A line longer than `max_line_bytes` raises
    `UpstreamProtocolError`.
    """

    __slots__ = ("_max", "_pending", "_pending_size")

    def __init__(self, *, max_line_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._max = max_line_bytes

    def decode(self, chunk: bytes) -> list[bytes]:
        """Feed one network read; return the complete lines it finishes."""
        last = chunk.rfind(b"\n")
        if last < 0:
            if chunk:
                self._hold(chunk)
            return []
        if self._pending:
            self._pending.append(chunk)
            buf = b"".join(self._pending)
            last += len(buf) - len(chunk)
            self._pending = []
            self._pending_size = 0
        else:
            buf = chunk
        rest = buf[last + 1 :]
        if rest:
            self._hold(rest)
        lines = [line.rstrip(b"\r") for line in buf[:last].split(b"\n") if line.strip()]
        for line in lines:
            if len(line) > self._max:
                raise UpstreamProtocolError(f"upstream sent a line longer than {self._max} bytes")
        return lines

    def flush(self) -> list[bytes]:
        """End of stream: a last line without its newline is still a document."""
        rest = b"".join(self._pending).strip()
        self._pending = []
        self._pending_size = 0
        return [rest] if rest else []

    def _hold(self, part: bytes) -> None:
        self._pending.append(part)
        self._pending_size += len(part)
        if self._pending_size > self._max:
            raise UpstreamProtocolError(
                f"upstream sent a line longer than {self._max} bytes without ending it"
            )


def encode_event(data: bytes, event: bytes | None = None, id: bytes | None = None) -> bytes:
    """Frame one event. Data containing line breaks becomes several `data:` lines."""
    if b"\n" in data or b"\r" in data:
        body = b"".join(b"data: " + part + b"\n" for part in _LINE_END.split(data))
    else:
        body = b"data: " + data + b"\n"
    if event is not None:
        body = b"event: " + event + b"\n" + body
    if id is not None:
        body = b"id: " + id + b"\n" + body
    return body + b"\n"


def encode_comment(text: bytes = b"") -> bytes:
    """Frame a comment line, the keep-alive that every WHATWG client ignores."""
    return b": " + text + b"\n\n" if text else b":\n\n"
