"""A Python client of the gateway's own protocol: `/stream-ask`, `/ask` and sessions.

```python
from tidegate.client import Chunk, Client

with Client("http://127.0.0.1:8080", key="...") as client:
    with client.stream(task="fix", code=source, error=traceback) as answer:
        for event in answer:
            if isinstance(event, Chunk):
                print(event.text, end="", flush=True)
    print(client.ask("And in one sentence?").answer)
```

`Client` uses the standard library only (`http.client`): no event loop, nothing to install.
`AsyncClient` is the same API for asyncio (`async with`, `async for`, `await`) over aiohttp,
which the gateway already depends on. A stream yields typed events (`Chunk`, `Reasoning`,
`Sources`, then `FinalEnd` last); `stop()` closes it from anywhere (another thread, a signal
handler's `KeyboardInterrupt`), and the gateway, seeing its client gone, cancels the upstream.

Errors:

```
TidegateError
├── HTTPError        the gateway answered an HTTP error before any answer (status, code, message)
├── InBandError      the answer began, then failed: the stream's `error` event (code, message;
│                    the text so far and the `final_end` are kept on it)
└── ConnectionFailed  the gateway could not be reached, or the stream broke before `final_end`
```

With `raise_errors=False` a stream yields the `ErrorEvent` (and then `FinalEnd`) instead of
raising `InBandError`.

One module, though longer than most: the sync and async halves share the events, the errors
and the reader, and `from tidegate.client import ...` is the whole client.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from tidegate import __version__
from tidegate.errors import UpstreamProtocolError
from tidegate.sse import SSEDecoder

if TYPE_CHECKING:
    import aiohttp

DEFAULT_URL = "http://127.0.0.1:8080"
#: Seconds to connect, and the longest silence allowed while reading an answer.
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 600.0
_READ_SIZE = 64 * 1024


# -- events -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of the answer's text."""

    text: str


@dataclass(frozen=True, slots=True)
class Reasoning:
    """A piece of the model's visible reasoning."""

    text: str


@dataclass(frozen=True, slots=True)
class Sources:
    """The citations of the answer (AnythingLLM workspaces)."""

    sources: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    """The answer failed after it began (yielded only with `raise_errors=False`)."""

    message: str
    code: str


@dataclass(frozen=True, slots=True)
class FinalEnd:
    """The end of every stream: why it finished, the usage and the sources."""

    finish_reason: str
    usage: dict[str, int] | None
    sources: list[dict[str, Any]]


StreamEvent = Chunk | Reasoning | Sources | ErrorEvent | FinalEnd


@dataclass(frozen=True, slots=True)
class AskResult:
    """A whole answer from `/ask`, and what the gateway said about it."""

    answer: str
    sources: list[dict[str, Any]]
    usage: dict[str, int] | None
    session_id: str | None
    finish_reason: str
    raw: dict[str, Any] = field(repr=False)
    request_id: str = ""
    dropped_fields: tuple[str, ...] = ()


# -- errors -------------------------------------------------------------------------------------


class TidegateError(Exception):
    """Base of every error this client raises."""


class HTTPError(TidegateError):
    """The gateway answered an HTTP error before any answer: `status`, `code`, `message`."""

    def __init__(self, status: int, code: str, message: str, request_id: str = ""):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id


class InBandError(TidegateError):
    """The answer began, then failed. `text` is what had arrived; `final` the stream's end."""

    def __init__(self, code: str, message: str, text: str, final: FinalEnd | None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.text = text
        self.final = final


class ConnectionFailed(TidegateError):
    """The gateway could not be reached, or the stream broke before its `final_end`."""


# -- what both clients share --------------------------------------------------------------------


def request_body(question: str | None, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON body of a request: `question` and the given fields (None values left out)."""
    body = {"question": question} if question is not None else {}
    body.update({k: v for k, v in fields.items() if v is not None})
    return body


def http_error(status: int, body: bytes, request_id: str = "") -> HTTPError:
    """The error of a response that is not a 200: the gateway's `{error, code}` when it sent
    one, else the start of whatever came."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return HTTPError(status, str(data.get("code") or "error"), data["error"], request_id)
    text = body[:300].decode("utf-8", "replace").strip() or "no body"
    return HTTPError(status, "http_error", text, request_id)


def ask_result(data: Any, request_id: str = "", dropped: str = "") -> AskResult:
    """An `/ask` response body as an `AskResult`."""
    if not isinstance(data, dict) or not isinstance(data.get("answer"), str):
        raise ConnectionFailed("the gateway's /ask answer is not the documented JSON object")
    return AskResult(
        answer=data["answer"],
        sources=list(data.get("sources") or []),
        usage=data.get("usage"),
        session_id=data.get("session_id"),
        finish_reason=str(data.get("finish_reason") or "stop"),
        raw=data,
        request_id=request_id,
        dropped_fields=tuple(f for f in dropped.split(", ") if f),
    )


class EventReader:
    """The /stream-ask event stream, bytes in, typed events out; raises `InBandError` at the
    end of a failed stream unless `raise_errors` is false. Keeps the answer's `text`."""

    __slots__ = ("_decoder", "_error", "_texts", "final", "raise_errors")

    def __init__(self, raise_errors: bool = True):
        self._decoder = SSEDecoder()
        self._texts: list[str] = []
        self._error: ErrorEvent | None = None
        self.raise_errors = raise_errors
        self.final: FinalEnd | None = None

    @property
    def text(self) -> str:
        """The answer's text so far."""
        return "".join(self._texts)

    def feed(self, data: bytes) -> list[StreamEvent]:
        """The events completed by `data` (nothing after `final_end`)."""
        try:
            raw = self._decoder.decode(data)
        except UpstreamProtocolError as exc:
            raise ConnectionFailed(f"the gateway sent an unreadable stream: {exc}") from None
        out: list[StreamEvent] = []
        for sse in raw:
            if self.final is not None:
                break
            event = self._event(sse.event, sse.data)
            if event is not None:
                out.append(event)
        return out

    def finish(self) -> None:
        """The body ended: `ConnectionFailed` unless `final_end` came."""
        if self.final is None:
            raise ConnectionFailed("the stream ended before its final_end event")

    def _event(self, name: str, data: str) -> StreamEvent | None:
        try:
            payload = json.loads(data)
        except ValueError:
            return None
        if not isinstance(payload, dict):
            return None
        if name == "message" and payload.get("type") == "chunk":
            self._texts.append(str(payload.get("content") or ""))
            return Chunk(self._texts[-1])
        if name == "message" and payload.get("type") == "reasoning":
            return Reasoning(str(payload.get("content") or ""))
        if name == "sources":
            return Sources(list(payload.get("sources") or []))
        if name == "error":
            self._error = ErrorEvent(str(payload.get("message") or ""), str(payload.get("code")))
            return self._error if not self.raise_errors else None
        if name == "final_end":
            self.final = FinalEnd(
                str(payload.get("finish_reason") or "stop"),
                payload.get("usage"),
                list(payload.get("sources") or []),
            )
            if self._error is not None and self.raise_errors:
                raise InBandError(self._error.code, self._error.message, self.text, self.final)
            return self.final
        return None


class _Target:
    """The gateway's address, parsed once: scheme, host, port and any path prefix."""

    __slots__ = ("base_path", "host", "port", "tls", "url")

    def __init__(self, url: str):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} is not an http(s) URL such as {DEFAULT_URL}")
        self.url = url.rstrip("/")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.tls else 80)
        self.base_path = parts.path.rstrip("/")


def _headers(key: str | None, accept: str) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        "Accept": accept,
        "User-Agent": f"tidegate-client/{__version__}",
    }
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return headers


def _session_path(session_id: str) -> str:
    return "/v1/sessions/" + quote(session_id, safe="")


# -- the synchronous client ---------------------------------------------------------------------


class Stream:
    """One answer being streamed (sync): iterate for its events; `stop()` ends it early.

    `text` is the answer so far, `final` the `FinalEnd` once it came; `request_id` and
    `dropped_fields` come from the response headers.
    """

    def __init__(
        self,
        connection: http.client.HTTPConnection,
        response: http.client.HTTPResponse,
        raise_errors: bool,
    ):
        self._connection = connection
        self._response = response
        self._reader = EventReader(raise_errors)
        self._stopped = threading.Event()
        self._reading = False
        self.request_id = response.getheader("x-request-id") or ""
        dropped = response.getheader("x-tidegate-dropped-fields") or ""
        self.dropped_fields = tuple(f for f in dropped.split(", ") if f)

    @property
    def text(self) -> str:
        """The answer's text so far."""
        return self._reader.text

    @property
    def final(self) -> FinalEnd | None:
        """The stream's `FinalEnd`, once it came."""
        return self._reader.final

    def __iter__(self) -> Iterator[StreamEvent]:
        self._reading = True
        try:
            while self._reader.final is None:
                try:
                    data = self._response.read1(_READ_SIZE)
                except (OSError, ValueError, http.client.HTTPException) as exc:
                    if self._stopped.is_set():
                        return
                    raise ConnectionFailed(f"the stream broke: {exc}") from None
                if self._stopped.is_set():
                    return
                if not data:
                    self._reader.finish()
                yield from self._reader.feed(data)
        finally:
            self._reading = False
            self.close()

    def stop(self) -> None:
        """End the stream now (from any thread): the connection is shut down, so the gateway
        cancels the upstream call. Iteration then ends without an error (the iterating thread
        releases the connection; with none, it is released here)."""
        self._stopped.set()
        sock = self._connection.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if not self._reading:
            self.close()

    def close(self) -> None:
        """Release the connection."""
        self._response.close()
        self._connection.close()

    def __enter__(self) -> Stream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._reader.final is None:
            self.stop()
        self.close()


class Client:
    """A synchronous client of one gateway (`url`, and a client `key` when it needs one)."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        key: str | None = None,
        *,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
    ):
        self._target = _Target(url)
        self.key = key
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout

    def _open(
        self, method: str, path: str, body: dict[str, Any] | None, accept: str
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        t = self._target
        connection: http.client.HTTPConnection
        if t.tls:
            context = ssl.create_default_context()
            connection = http.client.HTTPSConnection(
                t.host, t.port, timeout=self.connect_timeout, context=context
            )
        else:
            connection = http.client.HTTPConnection(t.host, t.port, timeout=self.connect_timeout)
        data = json.dumps(body).encode() if body is not None else None
        try:
            connection.connect()
            assert connection.sock is not None
            connection.sock.settimeout(self.read_timeout)
            connection.request(method, t.base_path + path, data, _headers(self.key, accept))
            return connection, connection.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise ConnectionFailed(f"cannot reach the gateway at {t.url}: {reason}") from None

    def _fail(
        self, connection: http.client.HTTPConnection, response: http.client.HTTPResponse
    ) -> HTTPError:
        try:
            body = response.read()
        except (OSError, http.client.HTTPException):
            body = b""
        connection.close()
        return http_error(response.status, body, response.getheader("x-request-id") or "")

    def stream(
        self, question: str | None = None, *, raise_errors: bool = True, **fields: Any
    ) -> Stream:
        """Ask on `/stream-ask` and return the open `Stream` (raises `HTTPError` when the
        gateway refused before the answer began). `fields` are the protocol's: `model`,
        `session_id`, `task`, `code`, `error`, `context`, `history`, `system`, `images`,
        `max_tokens`, `temperature`, `top_p`, `mode`."""
        body = request_body(question, fields)
        connection, response = self._open("POST", "/stream-ask", body, "text/event-stream")
        if response.status != 200:
            raise self._fail(connection, response)
        return Stream(connection, response, raise_errors)

    def ask(self, question: str | None = None, **fields: Any) -> AskResult:
        """Ask on `/ask` and return the whole answer (`HTTPError` on failure)."""
        connection, response = self._open(
            "POST", "/ask", request_body(question, fields), "application/json"
        )
        if response.status != 200:
            raise self._fail(connection, response)
        try:
            data = json.loads(response.read())
        except (OSError, ValueError, http.client.HTTPException) as exc:
            raise ConnectionFailed(f"the /ask answer could not be read: {exc}") from None
        finally:
            connection.close()
        return ask_result(
            data,
            response.getheader("x-request-id") or "",
            response.getheader("x-tidegate-dropped-fields") or "",
        )

    def forget(self, session_id: str) -> bool:
        """Forget a session the gateway keeps: true if it existed, false if it did not."""
        connection, response = self._open("DELETE", _session_path(session_id), None, "*/*")
        if response.status == 404:
            connection.close()
            return False
        if response.status != 204:
            raise self._fail(connection, response)
        connection.close()
        return True

    def close(self) -> None:
        """Nothing is pooled: each call has its own connection."""

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# -- the asynchronous client --------------------------------------------------------------------


class AsyncStream:
    """One answer being streamed (asyncio): `async with` opens it (raising `HTTPError`),
    `async for` yields its events, `stop()` ends it early."""

    def __init__(self, client: AsyncClient, body: dict[str, Any], raise_errors: bool):
        self._client = client
        self._body = body
        self._reader = EventReader(raise_errors)
        self._response: aiohttp.ClientResponse | None = None
        self._stopped = False
        self.request_id = ""
        self.dropped_fields: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        """The answer's text so far."""
        return self._reader.text

    @property
    def final(self) -> FinalEnd | None:
        """The stream's `FinalEnd`, once it came."""
        return self._reader.final

    async def open(self) -> AsyncStream:
        """Send the request; return once the answer has begun (`HTTPError` if it did not)."""
        if self._response is None:
            response = await self._client.request("POST", "/stream-ask", self._body)
            if response.status != 200:
                raise await _async_error(response)
            self._response = response
            self.request_id = response.headers.get("x-request-id", "")
            dropped = response.headers.get("x-tidegate-dropped-fields", "")
            self.dropped_fields = tuple(f for f in dropped.split(", ") if f)
        return self

    async def __aiter__(self) -> AsyncIterator[StreamEvent]:
        import aiohttp

        response = (await self.open())._response
        assert response is not None
        try:
            while self._reader.final is None:
                try:
                    data = await response.content.readany()
                except (aiohttp.ClientError, OSError) as exc:
                    if self._stopped:
                        return
                    raise ConnectionFailed(f"the stream broke: {exc}") from None
                if self._stopped:
                    return
                if not data:
                    self._reader.finish()
                for event in self._reader.feed(data):
                    yield event
        finally:
            response.close()

    def stop(self) -> None:
        """End the stream now: the connection is closed, so the gateway cancels the upstream
        call. Iteration then ends without an error."""
        self._stopped = True
        if self._response is not None:
            self._response.close()

    async def __aenter__(self) -> AsyncStream:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._response is not None:
            self._response.close()


async def _async_error(response: aiohttp.ClientResponse) -> HTTPError:
    try:
        body = await response.read()
    finally:
        response.close()
    return http_error(response.status, body, response.headers.get("x-request-id", ""))


class AsyncClient:
    """An asyncio client of one gateway (`url`, and a client `key` when it needs one); one
    pooled aiohttp session, closed by `aclose()` or `async with`."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        key: str | None = None,
        *,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
    ):
        self._target = _Target(url)
        self.key = key
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._session: aiohttp.ClientSession | None = None

    async def request(
        self, method: str, path: str, body: dict[str, Any] | None
    ) -> aiohttp.ClientResponse:
        """Send one request and return its response once its head arrived (the caller reads
        and closes it); `ConnectionFailed` when the gateway cannot be reached."""
        import aiohttp

        if self._session is None:
            timeout = aiohttp.ClientTimeout(
                total=None, sock_connect=self.connect_timeout, sock_read=self.read_timeout
            )
            self._session = aiohttp.ClientSession(timeout=timeout)
        accept = "text/event-stream" if path == "/stream-ask" else "application/json"
        try:
            return await self._session.request(
                method,
                self._target.url + path,
                data=json.dumps(body).encode() if body is not None else None,
                headers=_headers(self.key, accept),
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ConnectionFailed(
                f"cannot reach the gateway at {self._target.url}: {exc or type(exc).__name__}"
            ) from None

    def stream(
        self, question: str | None = None, *, raise_errors: bool = True, **fields: Any
    ) -> AsyncStream:
        """A stream on `/stream-ask`, sent when entered (`async with`) or iterated; the fields
        are those of `Client.stream`."""
        return AsyncStream(self, request_body(question, fields), raise_errors)

    async def ask(self, question: str | None = None, **fields: Any) -> AskResult:
        """Ask on `/ask` and return the whole answer (`HTTPError` on failure)."""
        response = await self.request("POST", "/ask", request_body(question, fields))
        if response.status != 200:
            raise await _async_error(response)
        try:
            data = json.loads(await response.read())
        except ValueError as exc:
            raise ConnectionFailed(f"the /ask answer could not be read: {exc}") from None
        finally:
            response.close()
        return ask_result(
            data,
            response.headers.get("x-request-id", ""),
            response.headers.get("x-tidegate-dropped-fields", ""),
        )

    async def forget(self, session_id: str) -> bool:
        """Forget a session the gateway keeps: true if it existed, false if it did not."""
        response = await self.request("DELETE", _session_path(session_id), None)
        if response.status not in (204, 404):
            raise await _async_error(response)
        response.close()
        return response.status == 204

    async def aclose(self) -> None:
        """Close the pooled connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
