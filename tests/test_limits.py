"""Limits before authentication: header size and count, header and body timeouts, connections.

Every test talks raw HTTP/1.1 over sockets to a real `tidegate serve` process, because these
limits live below any HTTP client library: a client library would never send half a request
line. Every loop is bounded by a deadline.
"""

from __future__ import annotations

import contextlib
import http.client
import selectors
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest

from tests.conftest import CLIENT_KEY, GatewayProcess
from tests.rawhttp import (
    HEALTHZ,
    address,
    body_of,
    connect,
    read_responses,
    read_until_closed,
    status_of,
)

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
CONFIG: dict[str, Any] = {
    "models": [{"name": "demo", "provider": "demo", "pace": 0.001}],
    "auth": {"api_keys": [CLIENT_KEY]},
    "limits": {"header_timeout": HEADER_TIMEOUT, "body_timeout": BODY_TIMEOUT},
}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A gateway with one-second header and body timeouts and the default size limits."""
    process = GatewayProcess(CONFIG, tmp_path_factory.mktemp("limits"))
    yield process
    process.stop()


class HealthProbe:
    """Asks `/healthz` every 20 ms on one keep-alive connection, in a thread, recording the time
    each answer took; `stop()` returns them."""

    def __init__(self, gw: GatewayProcess):
        self._address = address(gw)
        self._stop = threading.Event()
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        deadline = time.monotonic() + 2
        while len(self.latencies) + len(self.failures) < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        conn = http.client.HTTPConnection(*self._address, timeout=2)
        while not self._stop.is_set():
            start = time.perf_counter()
            try:
                conn.request("GET", "/healthz")
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    self.failures.append(f"status {response.status}")
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection(*self._address, timeout=2)
                continue
            self.latencies.append(time.perf_counter() - start)
            self._stop.wait(0.02)
        conn.close()

    def check(self) -> None:
        """Every probe was answered, and answered within 50 ms.

        The median and the 90th percentile must be under 50 ms; a single slower answer is
        tolerated (up to 250 ms) because the test machine's two cores are shared with other
        test runs, which a busy-looping gateway would not explain away.
        """
        assert not self.failures, self.failures
        assert len(self.latencies) >= 10
        ordered = sorted(self.latencies)
        assert statistics.median(ordered) < 0.05, ordered
        assert ordered[int(len(ordered) * 0.9) - 1] < 0.05, ordered
        assert ordered[-1] < 0.25, ordered


# -- header size and count -----------------------------------------------------------------


def test_huge_header_values_get_431_without_being_buffered(gw: GatewayProcess) -> None:
    """Invariant: a request head larger than `max_header_bytes` is refused with 431 and the
    connection closed, after reading no more than the cap: sixteen 1 MB header values at once
    leave the gateway's memory where it was, and `/healthz` keeps answering."""
    process = psutil.Process(gw.proc.pid)
    rss_before = process.memory_info().rss
    value = b"a" * 1_000_000
    results: list[tuple[bytes, bool, float]] = []
    sockets = [connect(gw) for _ in range(16)]

    def attack(sock: socket.socket) -> None:
        # The server may stop reading once it has refused the request.
        with contextlib.suppress(OSError):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + value)
        results.append(read_until_closed(sock, 5))

    with HealthProbe(gw) as probe:
        threads = [threading.Thread(target=attack, args=(s,)) for s in sockets]
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)
        growth = process.memory_info().rss - rss_before
    for sock in sockets:
        sock.close()
    assert len(results) == 16
    for response, closed, _ in results:
        assert status_of(response) == 431, response[:200]
        assert b"connection: close" in response.lower()
        assert closed
    assert growth < 8 * 1024 * 1024, f"RSS grew by {growth / 1e6:.1f} MB"
    probe.check()


def test_too_many_headers_get_431(gw: GatewayProcess) -> None:
    """More than `max_headers` header lines (default 100) is refused with 431, connection closed."""
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(150))
    with connect(gw) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        response, closed, _ = read_until_closed(sock, 5)
    assert status_of(response) == 431, response[:200]
    assert closed


def test_a_head_within_the_limits_is_served(gw: GatewayProcess) -> None:
    """Sixty headers and a 32 KiB header value are within the defaults."""
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(60)) + b"X-Big: " + b"b" * 32768
    with connect(gw) as sock:
        sock.sendall(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\nConnection: close\r\n\r\n"
        )
        response, closed, _ = read_until_closed(sock, 5)
    assert status_of(response) == 200, response[:200]
    assert closed


# -- header timeout ------------------------------------------------------------------------


def test_slow_request_heads_are_closed_within_the_header_timeout(gw: GatewayProcess) -> None:
    """Invariant: a connection that has not finished its request head `header_timeout` seconds
    after it opened is answered 408 and closed; a hundred of them at once do not slow
    `/healthz` down."""
    with HealthProbe(gw) as probe:
        sockets = [connect(gw) for _ in range(100)]
        start = time.monotonic()
        for sock in sockets:
            sock.sendall(b"GET /heal")
        closed_after: dict[socket.socket, float] = {}
        received: dict[socket.socket, bytes] = {s: b"" for s in sockets}
        with selectors.DefaultSelector() as selector:
            for sock in sockets:
                sock.setblocking(False)
                selector.register(sock, selectors.EVENT_READ)
            deadline = start + HEADER_TIMEOUT + 3
            while len(closed_after) < len(sockets) and time.monotonic() < deadline:
                for key, _ in selector.select(timeout=0.1):
                    ready = key.fileobj
                    assert isinstance(ready, socket.socket)
                    sock = ready
                    try:
                        chunk = sock.recv(4096)
                    except ConnectionResetError:
                        chunk = b""
                    received[sock] += chunk
                    if not chunk:
                        closed_after[sock] = time.monotonic() - start
                        selector.unregister(sock)
        for sock in sockets:
            sock.close()
    assert len(closed_after) == 100, f"only {len(closed_after)} of 100 connections were closed"
    assert max(closed_after.values()) <= HEADER_TIMEOUT + 1
    assert all(status_of(data) == 408 for data in received.values())
    probe.check()


def test_an_idle_new_connection_is_closed_without_a_response(gw: GatewayProcess) -> None:
    """A connection that sends nothing is closed after `header_timeout`, with nothing written."""
    with connect(gw) as sock:
        response, closed, elapsed = read_until_closed(sock, HEADER_TIMEOUT + 3)
    assert closed
    assert response == b""
    assert elapsed <= HEADER_TIMEOUT + 1


# -- keep-alive and pipelining -------------------------------------------------------------


def test_keep_alive_and_pipelining_still_work(gw: GatewayProcess) -> None:
    """Two sequential requests, then two pipelined ones, then one after an idle pause longer
    than the header timeout (the pause is the keep-alive timeout's business): all served on
    one connection. A later request head that stalls gets its own header timer: 408."""
    with connect(gw) as sock:
        sock.sendall(HEALTHZ)
        assert [status_of(r) for r in read_responses(sock, 1)] == [200]
        sock.sendall(HEALTHZ)
        assert [status_of(r) for r in read_responses(sock, 1)] == [200]
        sock.sendall(HEALTHZ + HEALTHZ)
        assert [status_of(r) for r in read_responses(sock, 2)] == [200, 200]
        time.sleep(HEADER_TIMEOUT + 0.5)
        sock.sendall(HEALTHZ)
        assert [status_of(r) for r in read_responses(sock, 1)] == [200]
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost")
        response, closed, elapsed = read_until_closed(sock, HEADER_TIMEOUT + 3)
    assert status_of(response) == 408, response
    assert closed
    assert elapsed <= HEADER_TIMEOUT + 1


# -- body timeout --------------------------------------------------------------------------


def chunked_post_head(key: str | None) -> bytes:
    auth = f"Authorization: Bearer {key}\r\n".encode() if key else b""
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + auth
        + b"Transfer-Encoding: chunked\r\n\r\n"
    )


def test_a_body_that_never_ends_gets_408(gw: GatewayProcess) -> None:
    """Invariant: the whole body must arrive within `body_timeout`; else 408 in the route's
    own error shape, and the connection is closed."""
    with connect(gw) as sock:
        sock.sendall(chunked_post_head(CLIENT_KEY) + b'5\r\n{"mod\r\n')
        response, closed, elapsed = read_until_closed(sock, BODY_TIMEOUT + 3)
    assert status_of(response) == 408, response
    error = orjson.loads(body_of(response))["error"]  # OpenAI's error shape
    assert error["code"] == "request_timeout"
    assert "body" in error["message"]
    assert closed
    assert elapsed <= BODY_TIMEOUT + 1


def test_an_endless_body_after_an_early_answer_does_not_hold_the_connection(
    gw: GatewayProcess,
) -> None:
    """A request answered before its body was read (here 401: no key) does not keep its
    connection open while the client keeps trickling the body."""
    with connect(gw) as sock:
        sock.sendall(chunked_post_head(None) + b"1\r\na\r\n")
        start = time.monotonic()
        response = b""
        closed = False
        while time.monotonic() - start < HEADER_TIMEOUT + BODY_TIMEOUT + 3 and not closed:
            try:
                sock.sendall(b"1\r\na\r\n")
            except OSError:
                closed = True
                break
            part, closed, _ = read_until_closed(sock, 0.2)
            response += part
    assert status_of(response) == 401, response
    assert closed
    assert time.monotonic() - start <= 3


def test_client_gone_while_sending_the_body_is_a_quiet_499(gw: GatewayProcess) -> None:
    """A client that disconnects halfway through its body is logged as 499 `client_closed`,
    without a traceback."""
    request_id = "limits-body-gone-1"
    with connect(gw) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: Bearer {CLIENT_KEY}\r\nX-Request-Id: {request_id}\r\n".encode()
            + b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
            + b'{"model":"'
        )
        time.sleep(0.2)
    record = gw.record_for(request_id)
    assert record["status"] == 499
    assert record["error"] == "client_closed"
    time.sleep(0.2)
    output = gw.output()
    assert "Traceback" not in output
    assert "Exception in ASGI application" not in output


# -- connections ---------------------------------------------------------------------------


def test_connections_beyond_max_connections_get_503(tmp_path: Path) -> None:
    """With `max_connections: 4`, a fifth concurrent connection is answered 503 and closed;
    once one closes, a new connection is served again."""
    config = {**CONFIG, "limits": {"max_connections": 4}}
    process = GatewayProcess(config, tmp_path)
    try:
        held = [connect(process) for _ in range(4)]
        time.sleep(0.2)
        with connect(process) as extra:
            extra.sendall(HEALTHZ)
            response, closed, _ = read_until_closed(extra, 5)
        assert status_of(response) == 503, response
        assert closed
        held.pop().close()
        time.sleep(0.2)
        with connect(process) as again:
            again.sendall(HEALTHZ)
            assert [status_of(r) for r in read_responses(again, 1)] == [200]
        for sock in held:
            sock.close()
    finally:
        process.stop()
