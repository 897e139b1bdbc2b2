"""Raw HTTP/1.1 over sockets, for tests that must control the exact bytes on the wire.

A client library would never send half a request line, a bad chunk size or two framing
headers; these helpers do, and read back what the server answers with a small, independent
response reader (content-length, chunked, and bodiless responses). Every read is bounded.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

from tests.conftest import GatewayProcess

HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


def address(gw: GatewayProcess) -> tuple[str, int]:
    host, port = gw.url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def connect(gw: GatewayProcess, timeout: float = 5) -> socket.socket:
    return socket.create_connection(address(gw), timeout=timeout)


def read_until_closed(sock: socket.socket, seconds: float) -> tuple[bytes, bool, float]:
    """Everything the server sends within `seconds`: (bytes, closed by the server?, elapsed)."""
    start = time.monotonic()
    deadline = start + seconds
    data = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return data, False, time.monotonic() - start
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return data, False, time.monotonic() - start
        except ConnectionResetError:
            return data, True, time.monotonic() - start
        if not chunk:
            return data, True, time.monotonic() - start
        data += chunk


def status_of(response: bytes) -> int:
    """The status code of a raw response (0 if there is none)."""
    if not response.startswith(b"HTTP/1.1 "):
        return 0
    return int(response[9:12])


def body_of(response: bytes) -> bytes:
    return response.partition(b"\r\n\r\n")[2]


@dataclass
class Response:
    """One response as read off the wire."""

    status: int
    headers: list[tuple[str, str]]
    #: The body with any chunked framing removed.
    body: bytes
    #: The exact bytes of the response, head and framed body.
    raw: bytes
    #: The sizes of the chunks of a chunked body, the final 0 included; None if not chunked.
    chunk_sizes: list[int] | None = field(default=None)

    def header(self, name: str) -> str | None:
        """The value of the last header called `name` (case-insensitive), or None."""
        found = [v for n, v in self.headers if n.lower() == name.lower()]
        return found[-1] if found else None


class ResponseReader:
    """Reads whole responses, in order, off one connection: a buffer over the socket (or,
    with no socket, over bytes already received).

    `next()` raises `EOFError` if the server closes (or the bytes end) before a whole response
    came, and `TimeoutError` if none came within `seconds`.
    """

    def __init__(self, sock: socket.socket | None, data: bytes = b"") -> None:
        self.sock = sock
        self.buffer = data

    def _fill(self, deadline: float) -> None:
        if self.sock is None:
            raise EOFError(f"no whole response in the bytes; have {self.buffer[:300]!r}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no whole response in time; have {self.buffer[:300]!r}")
        self.sock.settimeout(remaining)
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError(f"closed before a whole response; have {self.buffer[:300]!r}")
        self.buffer += chunk

    def _take_line(self, deadline: float) -> bytes:
        while b"\r\n" not in self.buffer:
            self._fill(deadline)
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def _take(self, size: int, deadline: float) -> bytes:
        while len(self.buffer) < size:
            self._fill(deadline)
        out, self.buffer = self.buffer[:size], self.buffer[size:]
        return out

    def next(self, seconds: float = 5, head_request: bool = False) -> Response:
        """The next response; `head_request` if it answers a HEAD (so it has no body)."""
        deadline = time.monotonic() + seconds
        while b"\r\n\r\n" not in self.buffer:
            self._fill(deadline)
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = status_of(lines[0])
        assert status, f"not a status line: {lines[0]!r}"
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers.append((name.decode("latin-1").strip(), value.decode("latin-1").strip()))
        response = Response(status, headers, b"", head + b"\r\n\r\n")
        if head_request or status < 200 or status in (204, 304):
            return response
        if (response.header("transfer-encoding") or "").lower() == "chunked":
            response.chunk_sizes = []
            while True:
                size_line = self._take_line(deadline)
                size = int(size_line.split(b";")[0], 16)
                response.chunk_sizes.append(size)
                data = self._take(size + 2, deadline)
                assert data.endswith(b"\r\n"), data[-10:]
                response.raw += size_line + b"\r\n" + data
                response.body += data[:-2]
                if size == 0:
                    return response
        length = int(response.header("content-length") or 0)
        response.body = self._take(length, deadline)
        response.raw += response.body
        return response


def parse_responses(data: bytes) -> list[Response]:
    """The whole responses in `data` (bytes already received), in order; an incomplete one at
    the end is left out."""
    reader = ResponseReader(None, data)
    out: list[Response] = []
    while reader.buffer:
        try:
            out.append(reader.next())
        except EOFError:
            break
    return out


def read_responses(sock: socket.socket, count: int, seconds: float = 5) -> list[bytes]:
    """`count` whole responses read from a keep-alive connection, as raw bytes (fewer if the
    server closes the connection first)."""
    deadline = time.monotonic() + seconds
    reader = ResponseReader(sock)
    out: list[bytes] = []
    while len(out) < count:
        try:
            out.append(reader.next(deadline - time.monotonic()).raw)
        except EOFError:
            break
    return out
