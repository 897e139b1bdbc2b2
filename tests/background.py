"""Test servers on 127.0.0.1 that run on their own event loop in a daemon thread, so that the
tests using them stay synchronous: the fake upstreams, the hostile upstream, proxies."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Self

from aiohttp import web


class BackgroundServer:
    """A server on its own loop in a daemon thread. Subclasses bind in `_start` (setting
    `port`) and let go in `_stop`; `start()` and `stop()` wait for them (bounded)."""

    def __init__(self) -> None:
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> Self:
        """Start the loop and the server; returns once it listens."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        """Stop the server, then the loop and its thread."""
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _start(self) -> None:
        raise NotImplementedError

    async def _stop(self) -> None:
        raise NotImplementedError


class AiohttpServer(BackgroundServer):
    """A `BackgroundServer` serving the aiohttp application of `make_app()`, with
    `runner_options` for its `web.AppRunner`."""

    def __init__(self, **runner_options: Any) -> None:
        super().__init__()
        self._runner_options = runner_options
        self._runner: web.AppRunner | None = None

    def make_app(self) -> web.Application:
        """The application to serve."""
        raise NotImplementedError

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.make_app(), access_log=None, **self._runner_options)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
