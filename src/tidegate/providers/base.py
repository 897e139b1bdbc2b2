"""What every upstream adapter provides, and the HTTP plumbing they share.

A `Provider` is one configured deployment (a `models:` entry) of one wire format. It builds
the upstream call for a canonical request (or for a same-format pass-through body), opens it,
and hands back a `StreamParser` that turns the upstream's bytes into canonical events.
"""

from __future__ import annotations

import asyncio
import os
import zlib
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import aiohttp
import orjson
from yarl import URL

from tidegate.errors import (
    UpstreamError,
    UpstreamNetworkError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from tidegate.events import ChatRequest, Completion, Event
from tidegate.settings import DeploymentSettings, HttpDeploymentSettings
from tidegate.sse import DEFAULT_MAX_EVENT_BYTES, SSEDecoder, SSEEvent, skip_plain_events

#: What a parser may raise on upstream data of the wrong shape or type (a string where a count
#: belongs, a list where an object does): callers turn these into `UpstreamProtocolError`.
PARSE_ERRORS = (ValueError, TypeError, KeyError, AttributeError, IndexError, RecursionError)
#: What reading one event may raise when the event is malformed: it is skipped, not fatal.
SKIPPABLE = (UpstreamProtocolError, *PARSE_ERRORS)
#: Upstream text kept in an error message; the client sees less (redacted, then shortened).
EXCERPT_CHARS = 2000
#: Most bytes one read of a compressed body may inflate to.
INFLATE_STEP = 256 * 1024


class PassthroughFilter(ABC):
    """Edits a pass-through byte stream (rarely needed; most pass-through forwards as is)."""

    @abstractmethod
    def feed(self, chunk: bytes) -> bytes:
        """The bytes to forward for this read (possibly fewer, held for the next)."""

    @abstractmethod
    def flush(self) -> bytes:
        """Whatever is still held at the end of the stream."""


class UpstreamCall:
    """One HTTP request to send upstream, and the request fields it could not carry."""

    __slots__ = ("body", "dropped", "filter", "headers", "method", "stream", "url")

    def __init__(
        self,
        url: str,
        body: bytes,
        headers: dict[str, str],
        *,
        stream: bool,
        method: str = "POST",
        dropped: list[str] | None = None,
    ):
        self.url = url
        # orjson returns bytes with a 4 KiB buffer behind even a short result; a call lives as
        # long as its stream, so keep a right-sized copy (memory per open stream).
        self.body = bytes(memoryview(body))
        self.headers = headers
        self.stream = stream
        self.method = method
        self.dropped = dropped or []
        self.filter: PassthroughFilter | None = None


class UpstreamResponse(ABC):
    """An open upstream response: a status, then the body read chunk by chunk."""

    status: int
    content_type: str
    retry_after: float | None = None

    @abstractmethod
    async def read_chunk(self) -> bytes:
        """The next bytes as they arrived; `b""` at the end of the body."""

    def reader(self) -> Callable[[], Awaitable[bytes]]:
        """`read_chunk`, or a faster equivalent whose client-library errors the caller maps
        with `upstream_error_from_exception` (used by the relay's per-chunk loop)."""
        return self.read_chunk

    @abstractmethod
    async def read_body(self, limit: int) -> bytes:
        """The whole remaining body, at most `limit` bytes (the rest is not read)."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection: back to the pool when the body was read, else closed."""


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


class Provider(ABC):
    """One upstream deployment speaking one wire format."""

    #: The key used in `provider:`; also the registry name.
    name: ClassVar[str]
    #: The wire format it speaks; equal formats allow byte pass-through.
    wire_format: ClassVar[str]

    #: The largest event or line its stream parsers accept (`limits.max_event_bytes`).
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    #: The largest whole answer it reads, inflated (`limits.max_response_bytes`).
    max_response_bytes: int = 10 * 1024 * 1024

    #: The `models:` settings this provider declares (unknown or misplaced fields are refused).
    settings: ClassVar[type[DeploymentSettings]] = HttpDeploymentSettings
    #: Where a `base_url` is optional, the address used without one.
    default_base_url: ClassVar[str | None] = None
    #: The API path of a whole call and of a streamed one, joined to the base URL by
    #: `join_url`; `{model}` is the upstream model, `{settings}` the entry's settings.
    path: ClassVar[str] = ""
    stream_path: ClassVar[str | None] = None
    #: The header that carries the key, and its value with `{key}` in it (None: no key).
    key_header: ClassVar[tuple[str, str] | None] = ("Authorization", "Bearer {key}")
    #: Headers every call carries (an API version, say).
    static_headers: ClassVar[dict[str, str]] = {}

    def __init__(self, config: DeploymentSettings):
        self.config = config
        self.timeouts = config.timeouts
        self._client_timeout = aiohttp.ClientTimeout(
            total=None,
            connect=config.timeouts.connect,
            sock_connect=config.timeouts.connect,
            sock_read=None,
        )
        self._urls: dict[str, URL] = {}  # parsed once: URL parsing is a visible per-call cost
        base = getattr(config, "base_url", None) or self.default_base_url or ""
        fields = {"model": config.upstream_model, "settings": config}
        self.url = join_url(base, self.path.format(**fields))
        self.stream_url = join_url(base, (self.stream_path or self.path).format(**fields))
        headers = {"Content-Type": "application/json", **self.static_headers}
        if isinstance(config, HttpDeploymentSettings):
            if config.api_key is not None and self.key_header is not None:
                name, template = self.key_header
                headers[name] = template.format(key=config.api_key.get_secret_value())
            headers.update({k: v.get_secret_value() for k, v in config.headers.items()})
        headers.setdefault("Accept-Encoding", "gzip, deflate")
        self._headers = headers
        # Streams: SSE accepted, and no compression that would buffer them.
        self._stream_headers = {
            **headers,
            "Accept": "text/event-stream",
            "Accept-Encoding": "identity",
        }

    def headers_for(self, stream: bool) -> dict[str, str]:
        """The headers of a streaming or a whole call."""
        return self._stream_headers if stream else self._headers

    def url_for(self, stream: bool) -> str:
        """The URL of a streaming or a whole call."""
        return self.stream_url if stream else self.url

    @property
    def label(self) -> str:
        """How logs and headers name this deployment: the model name and upstream host."""
        return f"{self.config.name}@{self.name}"

    @abstractmethod
    def build_call(self, request: ChatRequest) -> UpstreamCall:
        """The upstream request for a canonical request."""

    def build_passthrough(self, body: dict[str, Any], stream: bool) -> UpstreamCall:
        """The upstream request for a body already in this provider's own format."""
        raise NotImplementedError(f"{self.name} has no pass-through")

    @abstractmethod
    def stream_parser(self, *, side: bool = False) -> StreamParser:
        """A parser for one streamed response. `side=True`: only usage, finish and errors matter."""

    @abstractmethod
    def parse_completion(self, body: bytes) -> Completion:
        """A non-streaming response body as a canonical completion."""

    def usage_of_body(self, body: bytes) -> Completion:
        """Usage and finish of a pass-through non-streaming body (defaults to a full parse)."""
        return self.parse_completion(body)

    def error_from_status(
        self, status: int, body: bytes, retry_after: float | None
    ) -> UpstreamError:
        """The error an upstream HTTP error response stands for."""
        message = error_message_of(body) or f"HTTP {status}"
        return UpstreamStatusError(
            f"upstream returned HTTP {status}: {message}",
            upstream_status=status,
            retry_after=retry_after,
        )

    async def open(self, session: aiohttp.ClientSession, call: UpstreamCall) -> UpstreamResponse:
        """Send the call and return once the upstream's status and headers have arrived."""
        url = self._urls.get(call.url)
        if url is None:
            url = self._urls[call.url] = URL(call.url)
        try:
            response = await session.request(
                call.method,
                url,
                data=call.body,
                headers=call.headers,
                timeout=self._client_timeout,
                allow_redirects=False,
                # Decoded here, in bounded steps (`Inflater`): a small compressed body must not
                # inflate to a gigabyte inside one read.
                auto_decompress=False,
            )
        except BaseException as exc:
            raise upstream_error_from_exception(
                exc, self.timeouts.connect, self.config.name
            ) from exc
        return HttpUpstreamResponse(response)


class HttpUpstreamResponse(UpstreamResponse):
    """An aiohttp response behind the `UpstreamResponse` interface.

    A gzip or deflate body is inflated here, at most `INFLATE_STEP` bytes per read; any other
    content encoding is refused.
    """

    __slots__ = ("_inflater", "_response", "content_type", "retry_after", "status")

    def __init__(self, response: aiohttp.ClientResponse):
        self._response = response
        self.status = response.status
        self.content_type = response.headers.get("Content-Type", "")
        self.retry_after = parse_retry_after(response.headers)
        encoding = response.headers.get("Content-Encoding", "").strip().lower()
        self._inflater = Inflater(encoding) if encoding not in ("", "identity") else None

    async def read_chunk(self) -> bytes:
        try:
            if self._inflater is None:
                return await self._response.content.readany()
            return await self._read_inflated()
        except aiohttp.ClientError as exc:
            raise upstream_error_from_exception(exc, 0) from exc

    async def _read_inflated(self) -> bytes:
        inflater = self._inflater
        assert inflater is not None
        while True:
            out = inflater.more()
            if out:
                await asyncio.sleep(0)  # one bounded step per turn of the loop, not a burst
                return out
            data = await self._response.content.readany()
            if not data:
                return inflater.finish()
            out = inflater.feed(data)
            if out:
                return out

    def reader(self) -> Callable[[], Awaitable[bytes]]:
        if self._inflater is not None:
            return self.read_chunk
        # aiohttp's own method, without a wrapping coroutine per chunk.
        return self._response.content.readany

    async def read_body(self, limit: int) -> bytes:
        parts: list[bytes] = []
        size = 0
        while True:
            chunk = await self.read_chunk()
            if not chunk:
                break
            parts.append(chunk)
            size += len(chunk)
            if size >= limit:
                break
        return b"".join(parts)[:limit]

    def close(self) -> None:
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


class Inflater:
    """Decodes a gzip or deflate body incrementally, never more than `INFLATE_STEP` at a time.

    Input the step could not take waits as the decompressor's unconsumed tail and is drained by
    `more()` before more input is read, so one read of a compression bomb costs one bounded step.
    """

    __slots__ = ("_decoder", "_raw_fallback")

    def __init__(self, encoding: str):
        if encoding in ("gzip", "x-gzip"):
            self._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
            self._raw_fallback = False
        elif encoding == "deflate":
            self._decoder = zlib.decompressobj(zlib.MAX_WBITS)
            self._raw_fallback = True  # servers send raw deflate as often as zlib-wrapped
        else:
            raise UpstreamProtocolError(
                f"upstream used content encoding {encoding[:40]!r}, which tidegate does not decode"
            )

    def feed(self, data: bytes) -> bytes:
        """Inflate the start of `data` (the rest waits for `more()`)."""
        try:
            return self._decoder.decompress(data, INFLATE_STEP)
        except zlib.error:
            if not self._raw_fallback:
                raise UpstreamProtocolError("upstream sent a corrupt compressed body") from None
            self._raw_fallback = False
            self._decoder = zlib.decompressobj(-zlib.MAX_WBITS)
            return self.feed(data)

    def more(self) -> bytes:
        """Inflate the next step of input already fed; `b""` when none is waiting."""
        tail = self._decoder.unconsumed_tail
        if not tail:
            return b""
        self._raw_fallback = False
        return self.feed(tail)

    def finish(self) -> bytes:
        """The end of the body: whatever the decoder still holds (bounded like a step)."""
        try:
            return self._decoder.flush(INFLATE_STEP)
        except zlib.error:
            raise UpstreamProtocolError("upstream sent a truncated compressed body") from None


def join_url(base: str, path: str) -> str:
    """`base` followed by the part of `path` it does not already end with.

    A base URL may be given with or without the start of the API path (`https://host`,
    `https://host/v1`, `https://host/v1/messages` all mean the same for `/v1/messages`): the
    longest leading run of whole path segments that `base` ends with is not repeated.
    """
    base = base.rstrip("/")
    if not path:
        return base
    cut = len(path)
    while cut > 0:
        if base.endswith(path[:cut]):
            return base + path[cut:]
        cut = path.rfind("/", 0, cut)
    return base + path


def upstream_error_from_exception(
    exc: BaseException, connect_timeout: float = 0, model: str | None = None
) -> BaseException:
    """The one mapping from client-library exceptions to the gateway's error tree.

    Cancellation and errors already in the tree pass through unchanged. Messages name the
    `model` whose upstream failed, never its host or address: those go to `detail`, which
    only the access log shows.
    """
    if isinstance(exc, asyncio.CancelledError | UpstreamError):
        return exc
    if isinstance(exc, aiohttp.ConnectionTimeoutError | aiohttp.ServerTimeoutError):
        return UpstreamTimeout("connect", connect_timeout)
    if isinstance(exc, TimeoutError):
        return UpstreamTimeout("connect", connect_timeout)
    upstream = f"the upstream of model {model!r}" if model else "the upstream"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamNetworkError(
            f"cannot connect to {upstream} ({_connect_failure(exc)})",
            detail=f"cannot connect to {exc.host}:{exc.port}: {exc.strerror}",
        )
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return UpstreamNetworkError(
            "upstream closed the connection before the response was complete",
            code="upstream_disconnected",
        )
    if isinstance(exc, aiohttp.ClientResponseError):
        return UpstreamProtocolError(f"upstream sent an invalid HTTP response: {exc.message}")
    if isinstance(exc, aiohttp.InvalidURL):
        return UpstreamNetworkError("upstream URL is invalid")
    if isinstance(exc, aiohttp.ClientError | OSError):
        return UpstreamNetworkError(
            f"connection to {upstream} failed: {type(exc).__name__}",
            detail=f"{type(exc).__name__}: {exc}",
        )
    return exc


def _connect_failure(exc: aiohttp.ClientConnectorError) -> str:
    """Why a connection failed, in words that name no host or address."""
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "host name not resolved"
    if isinstance(exc, aiohttp.ClientSSLError):
        return "TLS handshake failed"
    if exc.errno and exc.errno > 0:
        return os.strerror(exc.errno).lower()
    return "connection failed"


def parse_retry_after(headers: Any) -> float | None:
    """Seconds from `retry-after-ms` or `Retry-After` (delta-seconds form), if present."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("Retry-After")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            return None
    return None


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
