"""`GET /metrics`: the process's (or, with `--workers N`, every worker's) metrics in
Prometheus' text format (tidegate/metrics.py). An admin key is needed unless
`metrics.public: true`; `metrics.enabled: false` removes the route."""

from __future__ import annotations

from tidegate import metrics
from tidegate.asgi import Request, Send, send_bytes
from tidegate.context import RequestContext
from tidegate.endpoints.base import Route
from tidegate.endpoints.health import render_error
from tidegate.services import Services


async def scrape(services: Services, ctx: RequestContext, request: Request, send: Send) -> None:
    """The current metrics."""
    body, content_type = metrics.exposition()
    ctx.status = 200
    await send_bytes(send, 200, body, content_type.encode(), headers=ctx.headers_out)


ROUTES = [Route("GET", "/metrics", scrape, render_error, "admin")]
