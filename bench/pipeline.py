"""The request pipeline's own CPU, in-process: the ASGI app driven directly, with an upstream
client that answers at once, so no socket, no server and no load generator share the figure.

What it measures is everything tidegate does for a non-streaming pass-through request between
the server handing it the request (with the connection callbacks tidegate's server offers) and
the response going back: routing, validation, failover's
attempt, the watchdog, the completion's parsing, redaction, the access-log record, metrics and
(with a database) the ledger row and its writes. `bench/run.py pipeline` prints it with the
database off and on SQLite.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import uvloop

from tidegate.app import create_app
from tidegate.asgi import CONNECTION_EXTENSION
from tidegate.config import parse_config
from tidegate.providers.http import UpstreamCall, UpstreamResponse
from tidegate.server import tune_gc
from tidegate.services import Services
from tidegate.store import Store

COMPLETION = orjson.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "bench-model",
        "choices": [
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 50, "total_tokens": 62},
    }
)
BODY = orjson.dumps(
    {"model": "bench", "messages": [{"role": "user", "content": "Say hello in one sentence."}]}
)


class _Answer(UpstreamResponse):
    status = 200
    content_type = "application/json"
    retry_after = None

    async def read_chunk(self) -> bytes:
        return b""

    async def read_body(self, limit: int) -> bytes:
        return COMPLETION

    def close(self) -> None:
        pass


class _Connection:
    """What tidegate's server protocol offers each request (`asgi.ConnectionWatch`): here, a
    connection that is never lost and offers no direct writer."""

    lost = False

    def add(self, callback: Callable[[], None]) -> None:
        pass

    def discard(self, callback: Callable[[], None]) -> None:
        pass

    def body_writer(self, scope: dict[str, Any]) -> None:
        return None

    def body_received(self, scope: dict[str, Any]) -> bool:
        return True  # the whole body is handed over in one message

    def sends_at_once(self, scope: dict[str, Any]) -> bool:
        return True  # `send` never waits here


class _Upstream:
    """An upstream client whose every call answers `COMPLETION` at once."""

    ready = True

    async def start(self) -> None:
        pass

    async def aclose(self) -> None:
        pass

    async def send(
        self, call: UpstreamCall, *, connect_timeout: float, model: str
    ) -> UpstreamResponse:
        return _Answer()


async def _run(database: str, requests: int) -> float:
    config = parse_config(
        {
            "models": [
                {"name": "bench", "provider": "openai", "base_url": "http://u/v1", "api_key": "k"}
            ],
            "database": database,
        },
        env={},
    )
    store = None if database == "off" else Store(config.database, config.ledger)
    app = create_app(config, Services(config, client=_Upstream(), store=store))
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "query_string": b"",
        "headers": [
            (b"host", b"bench"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(BODY)).encode()),
        ],
        "extensions": {CONNECTION_EXTENSION: {"watch": _Connection()}},
    }
    message = {"type": "http.request", "body": BODY, "more_body": False}

    async def receive() -> dict[str, Any]:
        return message

    async def one() -> None:
        sent: list[dict[str, Any]] = []

        async def send(reply: dict[str, Any]) -> None:
            sent.append(reply)

        await app(dict(scope), receive, send)  # type: ignore[arg-type]
        if sent[0]["status"] != 200:
            raise RuntimeError(f"the pipeline answered {sent}")
        await asyncio.sleep(0)  # the ledger's writer and the log's hand-over get their turn

    await app.startup()
    try:
        for _ in range(max(100, requests // 10)):
            await one()
        tune_gc()
        start = time.process_time()
        for _ in range(requests):
            await one()
        return (time.process_time() - start) / requests
    finally:
        await app.shutdown()


def cpu_per_request(database: str, requests: int) -> float:
    """CPU seconds per request (the whole process: the ledger's writer thread included)."""
    if database == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            return uvloop.run(_run(f"sqlite:///{Path(tmp) / 'bench.db'}", requests))
    return uvloop.run(_run(database, requests))
