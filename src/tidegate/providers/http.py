"""HTTP plumbing of upstream calls: the response interface, aiohttp behind it, bounded
inflation, URL joining, and the one mapping from client-library errors to the error tree.

Providers talk to upstreams only through `UpstreamResponse`, so the client library can be
replaced (see the performance issue) without touching a codec or the relay.
"""

from __future__ import annotations

import asyncio
import os
import zlib
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import aiohttp
from yarl import URL

from tidegate.errors import (
    UpstreamError,
    UpstreamNetworkError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from tidegate.events import ChatRequest
from tidegate.formats.base import PassthroughFilter

#: Most bytes one read of a compressed body may inflate to.
INFLATE_STEP = 256 * 1024


class UpstreamCall:
    """One HTTP request to send upstream, and the request fields it could not carry."""

    __slots__ = (
        "body",
        "dropped",
        "filter",
        "headers",
        "method",
        "source",
        "stream",
        "url",
        "user",
    )

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
        #: The user of the request's identity (None: no user), for per-user upstream keys
        #: and tokens; set by failover, never from a request field.
        self.user: str | None = None
        #: The canonical request, for providers that render their call when they open it.
        self.source: ChatRequest | None = None


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

    #: Whether `splice` may work on this response at all (the built-in client's, uncompressed).
    can_splice = False

    def splice(
        self, sink: Callable[[bytes], bool], flush: Callable[[], None]
    ) -> asyncio.Future[None] | None:
        """Hand the body's reads to `sink` from the client's own I/O callback as they arrive,
        instead of keeping them for `read_chunk` (no task woken per read), and call `flush()`
        at the end of every such callback. Returns a future that is done when the splice may
        have ended — the body's end, an error, a close, `unsplice()`, or `sink` declining a
        read by returning False (that read and the rest are then kept for `read_chunk`) — or
        None when this response cannot splice now (the default). Whatever ended it, the caller
        goes on with `read_chunk`, which returns what is left and raises what went wrong."""
        return None

    def unsplice(self) -> None:
        """Stop handing reads to the sink, and end the splice's future."""
        return None


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
            return await self._inflater.read(self._response.content.readany)
        except aiohttp.ClientError as exc:
            raise upstream_error_from_exception(exc, 0) from exc

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

    async def read(self, read_raw: Callable[[], Awaitable[bytes]]) -> bytes:
        """The next inflated bytes of a body read with `read_raw` (`b""` at its end): one
        bounded step per turn of the loop, input read only when the last was used up."""
        while True:
            out = self.more()
            if out:
                await asyncio.sleep(0)  # one bounded step per turn of the loop, not a burst
                return out
            data = await read_raw()
            if not data:
                return self.finish()
            out = self.feed(data)
            if out:
                return out


class UpstreamClient(Protocol):
    """Sends upstream calls: the process's one pooled HTTP client, or a test's stand-in."""

    @property
    def ready(self) -> bool:
        """True while calls can be sent."""

    async def send(
        self, call: UpstreamCall, *, connect_timeout: float, model: str
    ) -> UpstreamResponse:
        """Send `call`; return once the status and headers arrived. Failures raise the
        gateway's errors (the message names `model`, never the upstream's address)."""

    async def start(self) -> None:
        """Open the connection pool."""

    async def aclose(self) -> None:
        """Close the pool and its connections."""


class AiohttpClient:
    """`UpstreamClient` over one pooled aiohttp session (no cookies, no redirects, no automatic
    decompression: bodies are inflated by `Inflater` in bounded steps)."""

    def __init__(self, *, pool_size: int, keepalive_seconds: float, user_agent: str):
        self._pool_size = pool_size
        self._keepalive = keepalive_seconds
        self._user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None
        self._urls: dict[str, URL] = {}  # parsed once: URL parsing is a visible per-call cost
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    @property
    def ready(self) -> bool:
        """True between `start` and `aclose`."""
        return self._session is not None and not self._session.closed

    async def start(self) -> None:
        """Create the session and its connection pool."""
        connector = aiohttp.TCPConnector(
            limit=self._pool_size,
            limit_per_host=0,
            keepalive_timeout=self._keepalive,
            ttl_dns_cache=300,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None),
            headers={"User-Agent": self._user_agent},
            cookie_jar=aiohttp.DummyCookieJar(),  # upstream APIs set no cookies we should keep
            raise_for_status=False,
        )

    async def send(
        self, call: UpstreamCall, *, connect_timeout: float, model: str
    ) -> UpstreamResponse:
        """Send `call` on the pooled session."""
        session = self._session
        if session is None:
            raise UpstreamNetworkError("the upstream client is not started")
        url = self._urls.get(call.url)
        if url is None:
            url = self._urls[call.url] = URL(call.url)
        timeout = self._timeouts.get(connect_timeout)
        if timeout is None:
            timeout = self._timeouts[connect_timeout] = aiohttp.ClientTimeout(
                total=None, connect=connect_timeout, sock_connect=connect_timeout, sock_read=None
            )
        try:
            response = await session.request(
                call.method,
                url,
                data=call.body,
                headers=call.headers,
                timeout=timeout,
                allow_redirects=False,
                auto_decompress=False,
            )
        except BaseException as exc:
            raise upstream_error_from_exception(exc, connect_timeout, model) from exc
        return HttpUpstreamResponse(response)

    async def aclose(self) -> None:
        """Close the session and its pooled connections."""
        if self._session is not None:
            await self._session.close()


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
