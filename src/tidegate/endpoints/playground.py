"""The browser playground: `GET /` serves a page that asks `/stream-ask` or runs a workflow
(`GET /v1/workflows`, `POST /v1/workflows/{name}`, Stop through `POST /v1/streams/{id}/cancel`)
and renders the answer as it streams; `GET /static/playground.js` and `/static/playground.css`
are its two assets.

The files ship inside the package (`tidegate/static/`) and are read when first asked for, not at
import. They are routes of their own, one per file, so no path from a client ever reaches the
file system. The routes are public like the health checks: the page holds no secret, and asks
the person for a client key only when the gateway answers 401 (it keeps the key in memory).

Every response carries a strict Content-Security-Policy: scripts, styles and requests from this
origin only, no inline script or style, no frames, no plugins, no form posts elsewhere; the
page's JavaScript builds the answer from text nodes, so a model's output is never markup.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from tidegate.asgi import Request, Send, send_bytes
from tidegate.context import RequestContext
from tidegate.endpoints.base import Handler, Route
from tidegate.endpoints.health import render_error
from tidegate.services import Services

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
#: Sent with every file: the policy above, no MIME sniffing, no framing, no referrer, and a
#: check with the gateway before a cached copy is reused (the files change with the package).
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-cache"),
]

#: URL path -> (file in tidegate/static/, content type).
FILES = {
    "/": ("playground.html", b"text/html; charset=utf-8"),
    "/static/playground.js": ("playground.js", b"text/javascript; charset=utf-8"),
    "/static/playground.css": ("playground.css", b"text/css; charset=utf-8"),
}


@cache
def read_static(name: str) -> bytes:
    """The bytes of one of the package's static files (read once per process)."""
    return files("tidegate").joinpath("static", name).read_bytes()


def static_file(name: str, content_type: bytes) -> Handler:
    """A handler that serves the static file `name` as `content_type`."""

    async def serve(services: Services, ctx: RequestContext, request: Request, send: Send) -> None:
        ctx.status = 200
        headers = ctx.headers_out + SECURITY_HEADERS
        await send_bytes(send, 200, read_static(name), content_type, headers)

    serve.__doc__ = f"Serve {name}."
    return serve


ROUTES = [
    Route("GET", path, static_file(name, kind), render_error, "public")
    for path, (name, kind) in FILES.items()
]
