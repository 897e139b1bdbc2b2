"""The admin API of the store: managed client keys (`/admin/keys`) and the usage ledger
(`/admin/usage`, `/admin/usage/recent`). Admin keys only (everything under `/admin/` is).

A created or rotated key is in the answer of that one call, and nowhere else ever: listings
show names, ids and policies.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import orjson

from tidegate.asgi import Request, Send, send_bytes
from tidegate.context import RequestContext
from tidegate.endpoints.base import Route
from tidegate.endpoints.health import render_error
from tidegate.errors import InvalidRequest, NotFound
from tidegate.services import Services
from tidegate.store import Store, ledger
from tidegate.store.keys import KeyRequestError, UnknownKey, new_key_request


def _store(services: Services) -> Store:
    if services.store is None:
        raise NotFound("this gateway runs without a database (managed keys, usage)")
    return services.store


async def _answer(ctx: RequestContext, send: Send, body: Any, status: int = 200) -> None:
    ctx.status = status
    headers = [
        *ctx.headers_out,
        (b"content-type", b"application/json"),
        (b"cache-control", b"no-store"),
    ]
    await send_bytes(send, status, orjson.dumps(body), headers=headers)


async def list_keys(services: Services, ctx: RequestContext, request: Request, send: Send) -> None:
    """`GET /admin/keys`: every managed key (name, id, user, policy, dates, disabled)."""
    records = await _store(services).keys.list()
    await _answer(ctx, send, {"keys": [r.as_json() for r in records]})


async def create_key(services: Services, ctx: RequestContext, request: Request, send: Send) -> None:
    """`POST /admin/keys`: create a key; the answer holds it, the only time it is shown."""
    store = _store(services)
    try:
        record, key = await store.keys.create(new_key_request(request.json_object()))
    except KeyRequestError as exc:
        raise InvalidRequest(str(exc)) from None
    await _changed(services)
    await _answer(ctx, send, {**record.as_json(), "key": key}, 201)


async def disable_key(
    services: Services, ctx: RequestContext, request: Request, send: Send
) -> None:
    """`POST /admin/keys/{id}/disable`: the key stops working, on every instance."""
    try:
        record = await _store(services).keys.disable(request.params["id"])
    except UnknownKey:
        raise NotFound(f"no managed key has the id or name {request.params['id']!r}") from None
    await _changed(services)
    await _answer(ctx, send, record.as_json())


async def rotate_key(services: Services, ctx: RequestContext, request: Request, send: Send) -> None:
    """`POST /admin/keys/{id}/rotate`: a new secret for the key (in this answer only); the
    old one stops working."""
    try:
        record, key = await _store(services).keys.rotate(request.params["id"])
    except UnknownKey:
        raise NotFound(f"no managed key has the id or name {request.params['id']!r}") from None
    await _changed(services)
    await _answer(ctx, send, {**record.as_json(), "key": key})


async def _changed(services: Services) -> None:
    if services.keys.managed is not None:
        await services.keys.managed.changed()


async def usage(services: Services, ctx: RequestContext, request: Request, send: Send) -> None:
    """`GET /admin/usage?by=day,key&since=YYYY-MM-DD`: requests, errors, tokens and cost per
    group; each row has only its grouping columns and the numbers."""
    store = _store(services)
    try:
        groups = ledger.parse_groups(request.query.get("by", "key"))
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    since_text = request.query.get("since")
    since = None
    if since_text is not None:
        try:
            since = date.fromisoformat(since_text)
        except ValueError:
            raise InvalidRequest("since: a date, YYYY-MM-DD") from None
    await store.ledger.flush()  # what this instance has queued counts too
    rows = await ledger.summary(store.engine, groups, since)
    await _answer(ctx, send, {"by": groups, "since": since_text, "rows": rows})


async def recent(services: Services, ctx: RequestContext, request: Request, send: Send) -> None:
    """`GET /admin/usage/recent?limit=50`: the newest ledger rows, newest first."""
    store = _store(services)
    text = request.query.get("limit", "50")
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        raise InvalidRequest("limit: an integer from 1 to 1000")
    await store.ledger.flush()
    await _answer(ctx, send, {"rows": await ledger.recent(store.engine, int(text))})


ROUTES = [
    Route("GET", "/admin/keys", list_keys, render_error, "admin"),
    Route("POST", "/admin/keys", create_key, render_error, "admin"),
    Route("POST", "/admin/keys/{id}/disable", disable_key, render_error, "admin"),
    Route("POST", "/admin/keys/{id}/rotate", rotate_key, render_error, "admin"),
    Route("GET", "/admin/usage", usage, render_error, "admin"),
    Route("GET", "/admin/usage/recent", recent, render_error, "admin"),
]
