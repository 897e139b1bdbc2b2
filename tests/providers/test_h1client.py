"""The built-in HTTP/1.1 upstream client (`http.client: builtin`) against scripted servers on
127.0.0.1: framing, keep-alive and the pool, bounded inflation, errors, cancellation, deadlines."""

from __future__ import annotations

import asyncio
import gzip
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import uvloop

from tidegate.errors import UpstreamNetworkError, UpstreamProtocolError, UpstreamTimeout
from tidegate.providers.h1client import H1Client
from tidegate.providers.http import INFLATE_STEP, UpstreamCall, UpstreamResponse

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    """A TCP server on 127.0.0.1 running `handler` per connection; counts connections."""

    def __init__(self, handler: Handler):
        self.handler = handler
        self.connections = 0
        self.open = 0
        self.most_open = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1/chat?x=1"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self.open -= 1
            writer.close()


async def read_request(reader: asyncio.StreamReader, server: Server | None = None) -> bytes:
    """One request (head and Content-Length body); b"" when the client closed."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return b""
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    request = head + await reader.readexactly(length)
    if server is not None:
        server.requests.append(request)
    return request


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s"
        % (
            len(body),
            extra,
            body,
        )
    )


def call(url: str, body: bytes = b'{"q": 1}') -> UpstreamCall:
    return UpstreamCall(url, body, {"Authorization": "Bearer k"}, stream=False)


async def client(**kwargs: Any) -> H1Client:
    c = H1Client(
        pool_size=kwargs.pop("pool_size", 8),
        keepalive_seconds=kwargs.pop("keepalive_seconds", 30),
        user_agent="test",
        **kwargs,
    )
    await c.start()
    return c


async def read_all(response: UpstreamResponse) -> list[bytes]:
    parts: list[bytes] = []
    for _ in range(10_000):
        chunk = await response.read_chunk()
        if not chunk:
            return parts
        parts.append(chunk)
    raise AssertionError("body did not end")


def run(coro: Awaitable[None]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(20):
            await coro

    uvloop.run(bounded())  # the gateway's loop (its transports are not asyncio's classes)


def test_keep_alive_reuses_one_connection_and_sends_a_well_formed_request() -> None:
    async def main() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while await read_request(reader, srv):
                writer.write(ok(b'{"n": %d}' % len(srv.requests)))

        async with Server(handler) as srv:
            c = await client()
            for i in range(1, 4):
                response = await c.send(call(srv.url), connect_timeout=2, model="m")
                assert response.status == 200
                assert response.content_type == "application/json"
                assert await response.read_body(1000) == b'{"n": %d}' % i
                response.close()
            assert srv.connections == 1
            head, _, body = srv.requests[0].partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            assert lines[0] == b"POST /v1/chat?x=1 HTTP/1.1"
            assert f"Host: {srv.url.split('/')[2]}".encode() in lines
            assert b"Authorization: Bearer k" in lines
            assert b"Content-Length: 8" in lines
            assert body == b'{"q": 1}'
            await c.aclose()

    run(main())


def test_the_pool_never_opens_more_than_its_size() -> None:
    async def main() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while await read_request(reader):
                await asyncio.sleep(0.05)
                writer.write(ok(b"{}"))

        async with Server(handler) as srv:
            c = await client(pool_size=2)

            async def one() -> bytes:
                response = await c.send(call(srv.url), connect_timeout=5, model="m")
                try:
                    return await response.read_body(100)
                finally:
                    response.close()

            bodies = await asyncio.gather(*(one() for _ in range(8)))
            assert bodies == [b"{}"] * 8
            assert srv.most_open <= 2
            assert srv.connections == 2
            assert c.open_connections <= 2
            await c.aclose()

    run(main())


def test_waiting_for_a_pool_slot_counts_against_the_connect_deadline() -> None:
    async def main() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            await asyncio.sleep(5)  # holds the only slot

        async with Server(handler) as srv:
            c = await client(pool_size=1)
            first = asyncio.create_task(c.send(call(srv.url), connect_timeout=5, model="m"))
            await asyncio.sleep(0.1)
            t0 = time.monotonic()
            with pytest.raises(UpstreamTimeout) as info:
                await c.send(call(srv.url), connect_timeout=0.3, model="m")
            assert info.value.phase == "connect"
            assert 0.25 <= time.monotonic() - t0 < 2
            first.cancel()
            await asyncio.gather(first, return_exceptions=True)
            await c.aclose()

    run(main())


def test_chunked_body_arrives_as_it_is_sent_and_the_connection_is_reused() -> None:
    async def main() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while await read_request(reader):
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                for part in (b"data: 1\n\n", b"data: 2\n\n"):
                    writer.write(b"%x\r\n%s\r\n" % (len(part), part))
                    await writer.drain()
                    await asyncio.sleep(0.02)
                writer.write(b"0\r\n\r\n")

        async with Server(handler) as srv:
            c = await client()
            for _ in range(2):
                response = await c.send(call(srv.url), connect_timeout=2, model="m")
                assert await read_all(response) == [b"data: 1\n\n", b"data: 2\n\n"]
                response.close()
            assert srv.connections == 1
            await c.aclose()

    run(main())


def test_a_close_delimited_body_ends_at_the_close_and_is_not_reused() -> None:
    async def main() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nfirst ")
            await writer.drain()
            await asyncio.sleep(0.02)
            writer.write(b"second")
            await writer.drain()
            writer.close()

        async with Server(handler) as srv:
            c = await client()
            for _ in range(2):
                response = await c.send(call(srv.url), connect_timeout=2, model="m")
                assert b"".join(await read_all(response)) == b"first second"
                response.close()
            assert srv.connections == 2
            await c.aclose()

    run(main())


def test_a_gzip_bomb_is_inflated_in_bounded_steps() -> None:
    bomb = gzip.compress(b"\0" * (64 * INFLATE_STEP))

    async def main() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(ok(bomb, b"Content-Encoding: gzip\r\n"))

        async with Server(handler) as srv:
            c = await client()
            response = await c.send(call(srv.url), connect_timeout=2, model="m")
            sizes = [len(await response.read_chunk()) for _ in range(5)]
            assert all(0 < s <= INFLATE_STEP for s in sizes)
            response.close()
            response = await c.send(call(srv.url), connect_timeout=2, model="m")
            assert len(await response.read_body(3 * INFLATE_STEP)) == 3 * INFLATE_STEP
            response.close()
            await c.aclose()

    run(main())


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 abc Broken\r\n\r\n",
        b"NOTHTTP 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Header Name: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 12x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X-Big: " + b"a" * 200_000 + b"\r\n\r\n",
    ],
    ids=["status", "protocol", "header-name", "content-length", "huge-head"],
)
def test_a_malformed_head_is_a_clean_protocol_error(answer: bytes) -> None:
    async def main() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(answer)
            await writer.drain()
            await asyncio.sleep(1)

        async with Server(handler) as srv:
            c = await client()
            with pytest.raises(UpstreamProtocolError):
                await c.send(call(srv.url), connect_timeout=2, model="m")
            await asyncio.sleep(0.05)
            assert c.open_connections == 0  # closed, not pooled
            await c.aclose()

    run(main())


@pytest.mark.parametrize(
    "partial",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Len",
    ],
    ids=["content-length", "chunked", "in-head"],
)
def test_an_early_close_is_a_disconnect_error(partial: bytes) -> None:
    async def main() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(partial)
            await writer.drain()
            writer.close()

        async with Server(handler) as srv:
            c = await client()
            with pytest.raises(UpstreamNetworkError) as info:
                response = await c.send(call(srv.url), connect_timeout=2, model="m")
                try:
                    await read_all(response)
                finally:
                    response.close()
            assert info.value.code == "upstream_disconnected"
            await c.aclose()

    run(main())


def test_no_reuse_after_an_unfinished_read_a_cancel_or_bytes_after_the_response() -> None:
    async def main() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while request := await read_request(reader):
                if b"/stall" in request:
                    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                    writer.write(b"5\r\nhello\r\n")
                elif b"/junk" in request:
                    writer.write(ok(b"{}") + b"garbage")
                else:
                    writer.write(ok(b"{}"))

        async with Server(handler) as srv:
            base = srv.url.split("/v1")[0]
            c = await client()
            # Closed before the end of the body.
            response = await c.send(call(base + "/stall"), connect_timeout=2, model="m")
            assert await response.read_chunk() == b"hello"
            response.close()
            # Cancelled while waiting for the body.
            response = await c.send(call(base + "/stall"), connect_timeout=2, model="m")
            await response.read_chunk()
            reading = asyncio.create_task(response.read_chunk())
            await asyncio.sleep(0.05)
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)
            response.close()
            # Bytes after a complete response: the response is whole, the connection is not.
            response = await c.send(call(base + "/junk"), connect_timeout=2, model="m")
            await asyncio.sleep(0.05)
            assert await response.read_body(100) == b"{}"
            response.close()
            response = await c.send(call(base + "/fine"), connect_timeout=2, model="m")
            assert await response.read_body(100) == b"{}"
            response.close()
            assert srv.connections == 4
            await c.aclose()

    run(main())


def test_cancelled_while_waiting_for_headers_closes_the_connection() -> None:
    async def main() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while request := await read_request(reader):
                if b"/slow" in request:
                    await asyncio.sleep(0.5)
                writer.write(ok(b"{}"))

        async with Server(handler) as srv:
            base = srv.url.split("/v1")[0]
            c = await client()
            sending = asyncio.create_task(
                c.send(call(base + "/slow"), connect_timeout=2, model="m")
            )
            await asyncio.sleep(0.1)
            sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)
            await asyncio.sleep(0.7)  # the late answer must not reach the next request
            response = await c.send(call(base + "/fine"), connect_timeout=2, model="m")
            assert await response.read_body(100) == b"{}"
            response.close()
            assert srv.connections == 2
            await c.aclose()

    run(main())


def test_redirects_are_answers_not_followed() -> None:
    async def main() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while await read_request(reader, srv):
                writer.write(
                    b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:9/elsewhere\r\n"
                    b"Content-Length: 0\r\n\r\n"
                )

        async with Server(handler) as srv:
            c = await client()
            response = await c.send(call(srv.url), connect_timeout=2, model="m")
            assert response.status == 302
            assert await response.read_body(100) == b""
            response.close()
            assert len(srv.requests) == 1
            await c.aclose()

    run(main())


def test_connect_deadline_covers_a_tls_handshake_that_never_answers() -> None:
    async def main() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await asyncio.sleep(5)  # accepts TCP, never speaks TLS

        async with Server(handler) as srv:
            c = await client()
            url = srv.url.replace("http://", "https://")
            t0 = time.monotonic()
            with pytest.raises(UpstreamTimeout) as info:
                await c.send(call(url), connect_timeout=0.3, model="m")
            assert info.value.phase == "connect"
            assert time.monotonic() - t0 < 2
            await c.aclose()

    run(main())


def test_a_refused_connection_names_the_model_not_the_address() -> None:
    async def main() -> None:
        c = await client()
        with pytest.raises(UpstreamNetworkError) as info:
            await c.send(call("http://127.0.0.1:9/v1"), connect_timeout=2, model="gpt-x")
        assert "gpt-x" in str(info.value)
        assert "127.0.0.1" not in str(info.value)
        await c.aclose()

    run(main())


def test_an_error_status_keeps_its_body_and_retry_after() -> None:
    async def main() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while await read_request(reader):
                body = b'{"error": "slow down"}'
                writer.write(
                    b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 7\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )

        async with Server(handler) as srv:
            c = await client()
            response = await c.send(call(srv.url), connect_timeout=2, model="m")
            assert (response.status, response.retry_after) == (429, 7.0)
            assert await response.read_body(1000) == b'{"error": "slow down"}'
            response.close()
            await c.aclose()

    run(main())


def test_header_injection_is_refused() -> None:
    async def main() -> None:
        c = await client()
        bad = UpstreamCall("http://127.0.0.1:9/", b"", {"X-A": "v\r\nX-B: w"}, stream=False)
        with pytest.raises(UpstreamProtocolError):
            await c.send(bad, connect_timeout=1, model="m")
        await c.aclose()

    run(main())


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_tls_is_verified_and_kept_alive(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=str(cert))

    async def main() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while await read_request(reader):
                writer.write(ok(b"{}"))

        srv = Server(handler)
        srv.server = await asyncio.start_server(srv._serve, "127.0.0.1", 0, ssl=server_ctx)
        url = srv.url.replace("http://", "https://")
        try:
            c = await client(ssl_context=trusting)
            for _ in range(3):
                response = await c.send(call(url), connect_timeout=5, model="m")
                assert await response.read_body(100) == b"{}"
                response.close()
            assert srv.connections == 1
            await c.aclose()
            # The system's trust store does not know this certificate: refused.
            untrusting = await client()
            with pytest.raises(UpstreamNetworkError, match="TLS handshake failed"):
                await untrusting.send(call(url), connect_timeout=5, model="m")
            await untrusting.aclose()
        finally:
            await srv.__aexit__()

    run(main())


def test_a_host_name_is_resolved_and_connected() -> None:
    async def main() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while await read_request(reader, srv):
                writer.write(ok(b"{}"))

        async with Server(handler) as srv:
            c = await client()
            url = srv.url.replace("127.0.0.1", "localhost")
            response = await c.send(call(url), connect_timeout=5, model="m")
            assert await response.read_body(100) == b"{}"
            response.close()
            assert b"\r\nHost: localhost:" in srv.requests[0]
            await c.aclose()

    run(main())


def test_idle_connections_expire_and_a_peer_close_is_noticed() -> None:
    async def main() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while request := await read_request(reader):
                writer.write(ok(b"{}"))
                if b"/bye" in request:  # keep-alive framing, then the server closes anyway
                    await writer.drain()
                    return

        async with Server(handler) as srv:
            base = srv.url.split("/v1")[0]
            c = await client(keepalive_seconds=0.2)
            response = await c.send(call(base + "/a"), connect_timeout=2, model="m")
            await response.read_body(100)
            response.close()
            assert c.open_connections == 1
            await asyncio.sleep(0.6)  # past the keep-alive: the sweeper closed it
            assert c.open_connections == 0
            response = await c.send(call(base + "/bye"), connect_timeout=2, model="m")
            await response.read_body(100)
            response.close()
            await asyncio.sleep(0.1)  # the server's close arrives while the connection is idle
            assert c.open_connections == 0
            response = await c.send(call(base + "/a"), connect_timeout=2, model="m")
            assert await response.read_body(100) == b"{}"
            response.close()
            assert srv.connections == 3
            await c.aclose()

    run(main())


def test_a_full_pool_closes_another_origins_idle_connection_to_make_room() -> None:
    async def main() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while await read_request(reader):
                writer.write(ok(b"{}"))

        async with Server(handler) as one, Server(handler) as two:
            c = await client(pool_size=1)
            for url in (one.url, two.url, one.url):
                response = await c.send(call(url), connect_timeout=2, model="m")
                assert await response.read_body(100) == b"{}"
                response.close()
                assert c.open_connections == 1
            assert (one.connections, two.connections) == (2, 1)
            await c.aclose()

    run(main())


def _chunked_parts(parts: list[bytes], pause: float = 0.02) -> Handler:
    """A server answering every request with `parts` as chunks, `pause` apart."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader):
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for part in parts:
                await asyncio.sleep(pause)
                writer.write(b"%x\r\n%s\r\n" % (len(part), part))
                await writer.drain()
            writer.write(b"0\r\n\r\n")

    return handler


def test_a_spliced_body_goes_to_the_sink_and_the_connection_is_reused() -> None:
    """Splicing hands each read to the sink from the I/O callback, and calls `flush` at the
    end of each callback; the splice's future is done at the body's end, `read_chunk` then
    says the body is over, and the connection goes back to the pool."""

    async def main() -> None:
        parts = [b"data: 1\n\n", b"data: 2\n\n", b"data: 3\n\n"]
        async with Server(_chunked_parts(parts)) as srv:
            c = await client()
            for _ in range(2):
                response = await c.send(call(srv.url), connect_timeout=2, model="m")
                seen: list[bytes] = []

                def sink(data: bytes, seen: list[bytes] = seen) -> bool:
                    seen.append(data)
                    return True

                def flush(seen: list[bytes] = seen) -> None:
                    seen.append(b"|")

                assert response.can_splice
                ended = response.splice(sink, flush)
                assert ended is not None
                await ended
                response.unsplice()
                assert await response.read_chunk() == b""
                # One read per part (they are 20 ms apart), each followed by its flush; the
                # last read also carries the body's end.
                assert b"".join(seen).replace(b"|", b"") == b"".join(parts)
                assert seen[:2] == [parts[0], b"|"]
                assert seen[-1] == b"|"
                response.close()
            assert srv.connections == 1
            await c.aclose()

    run(main())


def test_bytes_a_sink_declines_are_read_after_the_splice_ends() -> None:
    """A sink that declines a read ends the splice; that read and the rest of the body come
    from `read_chunk`, in order, nothing lost or repeated."""

    async def main() -> None:
        parts = [b"data: 1\n\n", b"data: 2\n\n", b"data: 3\n\n"]
        async with Server(_chunked_parts(parts)) as srv:
            c = await client()
            response = await c.send(call(srv.url), connect_timeout=2, model="m")
            seen: list[bytes] = []

            def sink(data: bytes) -> bool:
                if seen:
                    return False  # the second read is declined
                seen.append(data)
                return True

            ended = response.splice(sink, lambda: None)
            assert ended is not None
            await ended
            response.unsplice()
            assert seen + await read_all(response) == parts
            response.close()
            await c.aclose()

    run(main())


def test_a_compressed_or_already_buffered_body_is_not_spliced() -> None:
    """Splicing is refused (None) where the sink would get the wrong bytes: a gzip body
    (inflated only by `read_chunk`) or bytes already buffered for `read_chunk`."""

    async def main() -> None:
        packed = gzip.compress(b"data: 1\n\n")

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(ok(packed, b"Content-Encoding: gzip\r\n"))
            await read_request(reader)
            writer.write(ok(b"whole body"))

        async with Server(handler) as srv:
            c = await client()
            response = await c.send(call(srv.url), connect_timeout=2, model="m")
            assert not response.can_splice
            assert response.splice(lambda data: True, lambda: None) is None
            assert b"".join(await read_all(response)) == b"data: 1\n\n"
            response.close()
            response = await c.send(call(srv.url), connect_timeout=2, model="m")
            await asyncio.sleep(0.05)  # the whole body is buffered by now
            assert response.splice(lambda data: True, lambda: None) is None
            assert b"".join(await read_all(response)) == b"whole body"
            response.close()
            await c.aclose()

    run(main())
