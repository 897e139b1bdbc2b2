"""The floor for any Python proxy: a bare HTTP/1.1 relay on asyncio protocols (uvloop + httptools).

No framework, no task per request, no coroutine at all: a client connection's parser hands a
complete request to a pooled upstream connection, and the upstream's bytes go straight from
its `data_received` to the client's transport, as they came (the upstream's own framing,
content-length or chunked), with `pause_reading` / `resume_reading` for flow control. It does
nothing else — no validation, no keys, no parsing of the answer, no log — which is why it is
a floor: what the event loop, the parser and the system calls of a relay cost in Python,
against nginx doing the same in C. The benchmarks run it beside tidegate and `floor.py`.

    python bench/relay.py --upstream-port PORT    # prints "listening on PORT", runs until killed

The request path picks the upstream's response shape, as for `direct` and nginx.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys

import httptools
import uvloop


class Upstream(asyncio.Protocol):
    """One keep-alive connection to the upstream, relaying one response at a time."""

    def __init__(self, pool: list[Upstream]) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.client: Client | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is not None:
            client.write(data)
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        client, self.client = self.client, None
        if self.parser.should_keep_alive():
            if self.transport is not None:
                self.transport.resume_reading()  # a slow client may have paused it
            self.pool.append(self)
        else:
            self.close()
        if client is not None:
            client.done()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self in self.pool:
            self.pool.remove(self)
        client, self.client = self.client, None
        if client is not None:
            client.fail()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()


class Client(asyncio.Protocol):
    """One client connection: requests parsed, relayed one at a time."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.upstream: Upstream | None = None
        self.url = b""
        self.body: list[bytes] = []
        self.content_type = b"application/json"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"content-type":
            self.content_type = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body = b"".join(self.body)
        request = (
            b"POST %s HTTP/1.1\r\nhost: %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n%s"
            % (self.url, self.relay.host, self.content_type, len(body), body)
        )
        self.url, self.body = b"", []
        assert self.transport is not None
        self.transport.pause_reading()  # one request at a time
        self.relay.send(self, request)

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def done(self) -> None:
        self.upstream = None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def fail(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def pause_writing(self) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.client = None
            upstream.close()  # its response is unfinished: the connection cannot be reused
        self.transport = None


class Relay:
    """The listening side and the upstream pool."""

    def __init__(self, loop: asyncio.AbstractEventLoop, port: int) -> None:
        self.loop = loop
        self.port = port
        self.host = b"127.0.0.1:%d" % port
        self.pool: list[Upstream] = []

    def send(self, client: Client, request: bytes) -> None:
        while self.pool:
            upstream = self.pool.pop()
            if not upstream.closed:
                self._start(client, upstream, request)
                return
        connecting = self.loop.create_connection(
            lambda: Upstream(self.pool), "127.0.0.1", self.port
        )
        task = self.loop.create_task(connecting)
        task.add_done_callback(lambda t: self._connected(t, client, request))

    def _connected(self, task: asyncio.Task, client: Client, request: bytes) -> None:  # type: ignore[type-arg]
        if task.cancelled() or task.exception() is not None:
            client.fail()
            return
        _, upstream = task.result()
        self._start(client, upstream, request)

    @staticmethod
    def _start(client: Client, upstream: Upstream, request: bytes) -> None:
        if client.transport is None:  # gone while connecting
            upstream.pool.append(upstream)
            return
        client.upstream, upstream.client = upstream, client
        upstream.parser = httptools.HttpResponseParser(upstream)
        assert upstream.transport is not None
        upstream.transport.write(request)


async def serve(upstream_port: int, port: int) -> None:
    loop = asyncio.get_running_loop()
    relay = Relay(loop, upstream_port)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    server = await loop.create_server(lambda: Client(relay), sock=sock, backlog=2048)
    print(f"listening on {sock.getsockname()[1]}", flush=True)
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream-port", type=int, required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    try:
        uvloop.run(serve(args.upstream_port, args.port))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
