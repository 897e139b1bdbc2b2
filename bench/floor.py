"""The floor for a Python proxy on this stack: uvicorn + aiohttp with nothing else.

A minimal ASGI app that forwards the request body to the upstream with one shared aiohttp
session and streams the response back, without validation, failover, parsing or logging. The
benchmarks run it beside tidegate to show how much of tidegate's cost is the stack itself.

    python bench/floor.py --upstream http://127.0.0.1:PORT/c50/d0/v1/chat/completions --port 0
"""

from __future__ import annotations

import argparse
import socket
import sys
from typing import Any

import aiohttp
import uvicorn


def make_app(upstream: str) -> Any:
    state: dict[str, aiohttp.ClientSession] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    state["session"] = aiohttp.ClientSession(
                        connector=aiohttp.TCPConnector(limit=2048)
                    )
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await state["session"].close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        async with state["session"].post(
            upstream, data=body, headers={"Content-Type": "application/json"}
        ) as r:
            await send(
                {
                    "type": "http.response.start",
                    "status": r.status,
                    "headers": [(b"content-type", r.headers["Content-Type"].encode())],
                }
            )
            async for chunk in r.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(2048)
    print(f"listening on {sock.getsockname()[1]}", file=sys.stderr, flush=True)
    config = uvicorn.Config(
        make_app(args.upstream),
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_config=None,
        access_log=False,
        proxy_headers=False,
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
