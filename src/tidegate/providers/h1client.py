"""An upstream HTTP/1.1 client of our own on asyncio protocols: `H1Client` (`http.client:
builtin`).

It implements the `UpstreamClient` interface of http.py with less work per call and per chunk
than aiohttp: a request is one `transport.write` of a head built from cached URL parts, the
response is parsed by httptools' `HttpResponseParser` inside `data_received`, and body bytes go
to the reader through one buffer and one waiter future.

Connections are pooled per origin (scheme, host, port), at most `pool_size` open in all, idle
ones kept `keepalive_seconds`. A connection goes back to the pool only after a complete,
well-formed response whose framing allows keep-alive and with nothing after it; after an error,
a cancellation or an early close it is closed. Redirects are never followed (a 3xx is an
answer like any other). Bodies may be content-length, chunked or delimited by the close of the
connection; gzip and deflate bodies are inflated by http.py's `Inflater` in bounded steps.

Deadlines: `connect_timeout` covers waiting for a pooled slot, resolving the host, the TCP
connect (IPv6 and IPv4 raced, RFC 8305) and the TLS handshake; first-byte, idle and total
deadlines stay the attempt's watchdog's (watchdog.py), which cancels the waiting task — and a
cancelled call closes its connection.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, cast
from urllib.parse import quote, urlsplit

import aiohappyeyeballs
import httptools

from tidegate.errors import (
    UpstreamError,
    UpstreamNetworkError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from tidegate.providers.http import (
    Inflater,
    UpstreamCall,
    UpstreamResponse,
    parse_retry_after,
)

#: Most bytes of a response's status line and headers.
MAX_HEAD_BYTES = 64 * 1024
#: Most headers in a response.
MAX_HEADERS = 256
#: Parsed upstream URLs kept (a described provider may render a URL per request).
MAX_CACHED_URLS = 1024
#: Seconds before the next address is tried while one is still connecting (RFC 8305).
HAPPY_EYEBALLS_DELAY = 0.25
#: Unread body bytes held before the socket stops being read (flow control).
HIGH_WATER = 256 * 1024
_PATH_SAFE = "/%:@!$&'()*+,;=-._~?"
_DISCONNECTED = "upstream closed the connection before the response was complete"


class _Origin:
    """A URL split once: where to connect and the start of the request head."""

    __slots__ = ("host", "key", "port", "target", "tls")

    def __init__(self, url: str):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UpstreamNetworkError("upstream URL is invalid")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        try:
            port = parts.port
        except ValueError:
            raise UpstreamNetworkError("upstream URL is invalid") from None
        self.port = port or (443 if self.tls else 80)
        self.key = (parts.scheme, self.host, self.port)
        netloc = parts.netloc.rpartition("@")[2]  # never send user info as the Host
        path = quote(parts.path or "/", safe=_PATH_SAFE)
        if parts.query:
            path += "?" + quote(parts.query, safe=_PATH_SAFE)
        self.target = f" {path} HTTP/1.1\r\nHost: {netloc}\r\n"


class _Headers(dict[str, str]):
    """Response headers by lower-case name; `get` takes any case."""

    def get(self, key: str, default: Any = None) -> Any:
        """The header's value (the last one sent), or `default`."""
        return dict.get(self, key.lower(), default)


class _Connection(asyncio.Protocol):
    """One upstream connection and the response being read on it (one at a time)."""

    def __init__(self, pool: H1Client, key: tuple[str, str, int]):
        self._pool = pool
        self._loop = asyncio.get_running_loop()
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser: httptools.HttpResponseParser | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        #: While a response is spliced (H1Response.splice): where its body bytes go, and
        #: what is called at the end of each read that reached the sink.
        self.sink: Callable[[bytes], bool] | None = None
        self.sink_flush: Callable[[], None] | None = None
        self._begin()

    def _begin(self) -> None:
        """Ready for the next response."""
        self.sink = self.sink_flush = None
        self.status = 0
        self.headers = _Headers()
        self.headers_done = False
        self.complete = False
        self.reusable = False
        self.error: UpstreamError | None = None
        # A list, not a deque: it rarely holds more than one read, and an empty deque costs
        # a 64-slot block (about 0.7 KiB per open stream).
        self.chunks: list[bytes] = []
        self.buffered = 0
        self._head_bytes = 0
        self._framed = False  # content-length or chunked: the end is known without a close
        self._messages = 0

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """The connection is open."""
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        """Bytes from the upstream: parsed now; anything outside a response breaks the
        connection."""
        parser = self._parser
        if parser is None or self.complete or self.error is not None:
            # Bytes while idle or after the response: the connection cannot be trusted again
            # (the response already read stays whole).
            self.reusable = False
            self.close()
            return
        if not self.headers_done:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES + 65536:
                self._fail(UpstreamProtocolError("upstream sent a response head that is too large"))
                return
        flush = self.sink_flush if self.sink is not None else None
        try:
            parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            if self.complete:  # a second response after the first: keep the first
                self.close()
            else:
                self._fail(self.error or UpstreamProtocolError("upstream sent an invalid response"))
        except httptools.HttpParserError as exc:
            reason = str(exc)[:80] or type(exc).__name__
            self._fail(UpstreamProtocolError(f"upstream sent an invalid HTTP response: {reason}"))
        if flush is not None:
            flush()  # what the sink made of this read goes out before anything else happens

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection closed: the end of a close-delimited body, or an early close."""
        self.closed = True
        self.transport = None
        if self._parser is not None and not self.complete and self.error is None:
            if self.headers_done and not self._framed:
                self.complete = True  # the body was delimited by the close
                self.reusable = False
            else:
                self.error = UpstreamNetworkError(_DISCONNECTED, code="upstream_disconnected")
        self._wake()
        self._pool._forget(self)

    def pause_writing(self) -> None:
        """Request bodies are bounded and written at once: nothing to pause."""

    def resume_writing(self) -> None:
        """See `pause_writing`."""

    # -- httptools callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        """A response starts; a second one on the same request breaks the connection."""
        self._messages += 1
        if self._messages > 1 and self.status >= 200:
            self.reusable = False
            raise UpstreamProtocolError("upstream sent more than one response")

    def on_header(self, name: bytes, value: bytes) -> None:
        """One header (llhttp joins a header split across reads)."""
        if len(self.headers) >= MAX_HEADERS:
            self.error = UpstreamProtocolError("upstream sent too many headers")
            raise self.error
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1").strip()

    def on_headers_complete(self) -> None:
        """Status and headers are in."""
        assert self._parser is not None
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim answer: the real one follows
            self.status = status
            self.headers = _Headers()
            return
        self.status = status
        self.headers_done = True
        encoding = self.headers.get("transfer-encoding", "")
        self._framed = (
            "chunked" in encoding.lower()
            or "content-length" in self.headers
            or status in (204, 304)
        )
        self._wake()

    def on_body(self, body: bytes) -> None:
        """Body bytes: to the sink of a spliced response, unless it declines them; else
        buffered for the reader, and the socket pauses past `HIGH_WATER`."""
        sink = self.sink
        if sink is not None:
            if sink(body):
                return
            self.sink = self.sink_flush = None
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        """The response ended where its framing said."""
        if not self.headers_done:
            return  # the end of an interim (1xx) answer
        assert self._parser is not None
        self.complete = True
        self.reusable = self._framed and self._parser.should_keep_alive()
        self._wake()

    # -- for the client and the response ----------------------------------------------------

    def start(self, request: bytes) -> None:
        """Send one request; its response is parsed as it arrives."""
        assert self.transport is not None
        self._begin()
        self._parser = httptools.HttpResponseParser(self)
        self.transport.write(request)

    def wait(self) -> asyncio.Future[None]:
        """A future done when the parser has news (headers, body bytes, the end, an error or a
        close): a plain future, no coroutine frame per wait."""
        waiter = self._waiter = self._loop.create_future()
        return waiter

    def take(self) -> bytes:
        """The buffered body bytes (reading resumes if it was paused)."""
        chunks = self.chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.chunks = []
        self.buffered = 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data

    def release(self) -> None:
        """Back to the pool if the response was complete and well formed, else closed."""
        if self.complete and self.reusable and self.error is None and not self.closed:
            self._parser = None
            self._pool._put(self)
        else:
            self.close()

    def close(self) -> None:
        """Close the connection (the pool forgets it once the transport reports the close)."""
        self.reusable = False
        if self.transport is not None and not self.closed:
            self.transport.close()

    def _fail(self, err: UpstreamError) -> None:
        self.error = err
        self.reusable = False
        self._wake()
        self.close()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)


class H1Response(UpstreamResponse):
    """A response read from one pooled connection."""

    __slots__ = (
        "_conn",
        "_inflater",
        "_released",
        "can_splice",
        "content_type",
        "retry_after",
        "status",
    )

    def __init__(self, conn: _Connection):
        self._conn = conn
        self._released = False
        self.status = conn.status
        headers = conn.headers
        self.content_type = headers.get("content-type", "")
        self.retry_after = parse_retry_after(headers)
        encoding = headers.get("content-encoding", "").strip().lower()
        self._inflater = Inflater(encoding) if encoding not in ("", "identity") else None
        # A compressed body is inflated by `read_chunk`: only an uncompressed one is spliced.
        self.can_splice = self._inflater is None

    @property
    def headers(self) -> dict[str, str]:
        """The response headers by lower-case name."""
        return self._conn.headers

    async def _read_raw(self) -> bytes:
        conn = self._conn
        while True:
            if conn.chunks:
                return conn.take()
            if conn.complete:
                return b""
            if conn.error is not None:
                raise conn.error
            await conn.wait()

    async def read_chunk(self) -> bytes:
        """The next body bytes as they arrived (inflated in bounded steps); `b""` at the end."""
        if self._inflater is None:
            return await self._read_raw()
        return await self._inflater.read(self._read_raw)

    def reader(self) -> Callable[[], Awaitable[bytes]]:
        """`read_chunk`; its errors are already the gateway's."""
        return self._read_raw if self._inflater is None else self.read_chunk

    def splice(
        self, sink: Callable[[bytes], bool], flush: Callable[[], None]
    ) -> asyncio.Future[None] | None:
        """See `UpstreamResponse.splice`: only an uncompressed body with nothing buffered,
        not yet ended, can be spliced."""
        conn = self._conn
        if (
            not self.can_splice
            or self._released
            or conn.chunks
            or conn.complete
            or conn.error is not None
            or conn.closed
        ):
            return None
        conn.sink, conn.sink_flush = sink, flush
        return conn.wait()

    def unsplice(self) -> None:
        """See `UpstreamResponse.unsplice`."""
        conn = self._conn
        if conn.sink is not None:
            conn.sink = conn.sink_flush = None
            conn._wake()

    async def read_body(self, limit: int) -> bytes:
        """The whole remaining body, at most `limit` bytes."""
        parts: list[bytes] = []
        size = 0
        while size < limit:
            chunk = await self.read_chunk()
            if not chunk:
                break
            parts.append(chunk)
            size += len(chunk)
        return b"".join(parts)[:limit]

    def close(self) -> None:
        """Return the connection to the pool after a complete response, else close it."""
        if not self._released:
            self._released = True
            self._conn.release()


class H1Client:
    """`UpstreamClient` on asyncio protocols and httptools (see the module docstring)."""

    def __init__(
        self,
        *,
        pool_size: int,
        keepalive_seconds: float,
        user_agent: str,
        ssl_context: ssl.SSLContext | None = None,
    ):
        self._pool_size = pool_size
        self._keepalive = keepalive_seconds
        self._user_agent = user_agent
        self._ssl = ssl_context
        self._origins: dict[str, _Origin] = {}
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._all: set[_Connection] = set()
        self._connecting = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self._started = False

    @property
    def ready(self) -> bool:
        """True between `start` and `aclose`."""
        return self._started

    @property
    def open_connections(self) -> int:
        """Connections open or being opened (busy and idle)."""
        return len(self._all) + self._connecting

    async def start(self) -> None:
        """Ready the pool (connections open on demand)."""
        if self._ssl is None:
            self._ssl = default_ssl_context()
        self._started = True

    async def aclose(self) -> None:
        """Close every connection; waiting callers fail."""
        self._started = False
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in list(self._all):
            conn.close()
        self._idle.clear()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
        await asyncio.sleep(0)  # let the transports report their close

    async def send(
        self, call: UpstreamCall, *, connect_timeout: float, model: str
    ) -> UpstreamResponse:
        """Send `call` on a pooled connection; return once the status and headers arrived."""
        if not self._started:
            raise UpstreamNetworkError("the upstream client is not started")
        origin = self._origins.get(call.url)
        if origin is None:
            if len(self._origins) >= MAX_CACHED_URLS:  # URLs rendered per request must not pile up
                self._origins.clear()
            origin = self._origins[call.url] = _Origin(call.url)
        request = self._head(call, origin) + call.body
        conn = self._take_idle(origin.key)
        if conn is None:
            conn = await self._connect(origin, connect_timeout, model)
        try:
            conn.start(request)
            while not conn.headers_done:
                if conn.error is not None:
                    raise conn.error
                if conn.closed:
                    raise UpstreamNetworkError(_DISCONNECTED, code="upstream_disconnected")
                await conn.wait()
            return H1Response(conn)
        except BaseException:
            conn.close()
            raise

    def _head(self, call: UpstreamCall, origin: _Origin) -> bytes:
        lines = [call.method, origin.target]
        seen = set()
        for name, value in call.headers.items():
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
                raise UpstreamProtocolError(f"header {name[:40]!r} has a character not allowed")
            lower = name.lower()
            if lower in ("host", "content-length", "transfer-encoding", "connection"):
                continue
            seen.add(lower)
            lines.append(f"{name}: {value}\r\n")
        if "user-agent" not in seen:
            lines.append(f"User-Agent: {self._user_agent}\r\n")
        if "accept" not in seen:
            lines.append("Accept: */*\r\n")
        if "accept-encoding" not in seen:
            lines.append("Accept-Encoding: gzip, deflate\r\n")
        if call.body or call.method not in ("GET", "HEAD"):
            lines.append(f"Content-Length: {len(call.body)}\r\n")
        lines.append("\r\n")
        return "".join(lines).encode("utf-8")

    # -- the pool ---------------------------------------------------------------------------

    def _take_idle(self, key: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        limit = asyncio.get_running_loop().time() - self._keepalive
        while idle:
            conn = idle.pop()  # the most recently used: the least likely to be closed by now
            if not conn.closed and conn.idle_since >= limit:
                return conn
            conn.close()
        return None

    async def _connect(self, origin: _Origin, seconds: float, model: str) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(seconds):
                while self.open_connections >= self._pool_size:
                    if not self._evict_idle():
                        waiter = loop.create_future()
                        self._waiters.append(waiter)
                        try:
                            await waiter
                        finally:
                            if waiter in self._waiters:
                                self._waiters.remove(waiter)
                        if not self._started:
                            raise UpstreamNetworkError("the upstream client is closed")
                        conn = self._take_idle(origin.key)
                        if conn is not None:
                            return conn
                self._connecting += 1
                try:
                    conn = _Connection(self, origin.key)
                    infos = await loop.getaddrinfo(
                        origin.host, origin.port, type=socket.SOCK_STREAM
                    )
                    # IPv6 and IPv4 raced as RFC 8305 says, as aiohttp does (uvloop's own
                    # create_connection tries one address after the other).
                    sock = await aiohappyeyeballs.start_connection(
                        infos, happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY, loop=loop
                    )
                    try:
                        await loop.create_connection(
                            lambda: conn,
                            sock=sock,
                            ssl=self._ssl if origin.tls else None,
                            server_hostname=origin.host if origin.tls else None,
                        )
                    except BaseException:
                        sock.close()
                        raise
                finally:
                    self._connecting -= 1
        except TimeoutError:
            self._wake_waiter()
            raise UpstreamTimeout("connect", seconds) from None
        except (OSError, ssl.SSLError) as exc:
            self._wake_waiter()
            raise _connect_error(exc, origin, model) from None
        except BaseException:
            self._wake_waiter()
            raise
        self._all.add(conn)
        if conn.closed:  # closed before we saw it
            self._all.discard(conn)
            raise UpstreamNetworkError(_DISCONNECTED, code="upstream_disconnected")
        return conn

    def _evict_idle(self) -> bool:
        """Close the longest-idle connection of any origin to make room; False if none."""
        oldest: _Connection | None = None
        for idle in self._idle.values():
            if idle and (oldest is None or idle[0].idle_since < oldest.idle_since):
                oldest = idle[0]
        if oldest is None:
            return False
        self._idle[oldest.key].remove(oldest)
        self._all.discard(oldest)  # counted free now; its close is reported later
        oldest.close()
        return True

    def _put(self, conn: _Connection) -> None:
        """A connection whose response was complete: idle until reused or expired."""
        loop = asyncio.get_running_loop()
        conn.idle_since = loop.time()
        if not self._started:
            conn.close()
            return
        self._idle.setdefault(conn.key, []).append(conn)
        if self._sweeper is None:
            self._sweeper = loop.call_later(self._keepalive, self._sweep)
        self._wake_waiter()

    def _forget(self, conn: _Connection) -> None:
        """The connection closed (ours or the peer's doing)."""
        if conn in self._all:
            self._all.discard(conn)
            idle = self._idle.get(conn.key)
            if idle and conn in idle:
                idle.remove(conn)
            self._wake_waiter()

    def _wake_waiter(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _sweep(self) -> None:
        self._sweeper = None
        loop = asyncio.get_running_loop()
        limit = loop.time() - self._keepalive
        left = False
        for idle in self._idle.values():
            for conn in [c for c in idle if c.idle_since < limit]:
                idle.remove(conn)
                conn.close()
            left = left or bool(idle)
        if left and self._started:
            self._sweeper = loop.call_later(self._keepalive / 2, self._sweep)


def default_ssl_context() -> ssl.SSLContext:
    """The system's trust store, or certifi's when the system has none."""
    context = ssl.create_default_context()
    if not context.cert_store_stats().get("x509_ca"):
        try:
            import certifi
        except ImportError:
            return context
        context.load_verify_locations(cafile=certifi.where())
    return context


def _connect_error(exc: BaseException, origin: _Origin, model: str) -> UpstreamNetworkError:
    """A failed connect in words that name the model, never the host (that goes to detail)."""
    upstream = f"the upstream of model {model!r}" if model else "the upstream"
    if isinstance(exc, socket.gaierror):
        why = "host name not resolved"
    elif isinstance(exc, ssl.SSLError | ssl.CertificateError):
        why = "TLS handshake failed"
    elif isinstance(exc, OSError) and exc.errno and exc.errno > 0:
        why = os.strerror(exc.errno).lower()
    else:
        why = "connection failed"
    return UpstreamNetworkError(
        f"cannot connect to {upstream} ({why})",
        detail=f"cannot connect to {origin.host}:{origin.port}: {exc}",
    )
