"""Operations endpoints: `/healthz`, `/readyz`, `/admin/deployments` (deployment health) and
`/admin/runtime` (the process: event-loop lag, tasks, open upstream calls)."""

from __future__ import annotations

import asyncio

import orjson

from tidegate.asgi import Request, Send, send_bytes
from tidegate.context import RequestContext
from tidegate.endpoints.base import Route
from tidegate.errors import GatewayError
from tidegate.services import Services


async def healthz(services: Services, ctx: RequestContext, request: Request, send: Send) -> None:
    """Always 200 while the process serves requests."""
    ctx.status = 200
    await send_bytes(send, 200, b'{"status":"ok"}', headers=ctx.headers_out)


async def readyz(services: Services, ctx: RequestContext, request: Request, send: Send) -> None:
    """200 once the configuration is loaded and the upstream client pool is open, else 503."""
    ready = services.ready
    ctx.status = 200 if ready else 503
    body = {"status": "ready" if ready else "not ready", "models": len(services.router.groups)}
    await send_bytes(send, ctx.status, orjson.dumps(body), headers=ctx.headers_out)


async def deployments(
    services: Services, ctx: RequestContext, request: Request, send: Send
) -> None:
    """Every deployment's health, open streams and cooldown; the process's task count."""
    body = {"deployments": services.router.snapshot(), "tasks": len(asyncio.all_tasks())}
    ctx.status = 200
    await send_bytes(send, 200, orjson.dumps(body), headers=ctx.headers_out)


async def runtime(services: Services, ctx: RequestContext, request: Request, send: Send) -> None:
    """The process's own health: the event loop's longest lag since the last call, tasks."""
    body = {
        "loop_lag_max_ms": round(services.loop_lag.take_max() * 1000, 2),
        "tasks": len(asyncio.all_tasks()),
        "in_flight": sum(d.in_flight for g in services.router.groups.values() for d in g),
    }
    ctx.status = 200
    await send_bytes(send, 200, orjson.dumps(body), headers=ctx.headers_out)


def render_error(err: GatewayError) -> bytes:
    """The error body of routes that belong to no particular API."""
    return orjson.dumps({"error": {"message": err.message, "code": err.code}})


ROUTES = [
    Route("GET", "/healthz", healthz, render_error, "public"),
    Route("GET", "/readyz", readyz, render_error, "public"),
    Route("GET", "/admin/deployments", deployments, render_error, "admin"),
    Route("GET", "/admin/runtime", runtime, render_error, "admin"),
]
