"""The operator's dashboard: `GET /admin` serves a page that charts spend, tokens and requests
per key and model over time, error rates, open streams and deployment health; its two assets
are `/static/dashboard.js` and `/static/dashboard.css`.

The page itself is public and holds no data (like the playground): every figure comes from
the admin API (`/admin/usage`, `/admin/usage/recent`, `/admin/deployments`, `/admin/runtime`),
which needs an admin key; the page asks for it on a 401 and keeps it in the tab's memory.
It is served under the same strict Content-Security-Policy as the playground.
"""

from __future__ import annotations

from tidegate.endpoints.base import Route
from tidegate.endpoints.health import render_error
from tidegate.endpoints.playground import static_file

#: URL path -> (file in tidegate/static/, content type).
FILES = {
    "/admin": ("dashboard.html", b"text/html; charset=utf-8"),
    "/static/dashboard.js": ("dashboard.js", b"text/javascript; charset=utf-8"),
    "/static/dashboard.css": ("dashboard.css", b"text/css; charset=utf-8"),
}

ROUTES = [
    Route("GET", path, static_file(name, kind), render_error, "public")
    for path, (name, kind) in FILES.items()
]
