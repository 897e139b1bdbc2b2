"""The ASGI application: routing, client keys, the shared HTTP client and request logging.

`create_app(config)` returns a `Gateway`. Its lifespan opens and closes the shared objects of
the process (`Services`: the pooled upstream client, the state store). Each request gets a
`RequestContext`; the route's handler does the work; any `GatewayError` raised before the
response began is rendered here, in the route's own error shape; and exactly one access-log
line is written when the request ends, however it ends.

Routes are public (health checks), need a client key (`auth.api_keys`, when any is set), or
belong to the admin API (`/admin/`), which needs an admin key (`auth.admin_keys`) whenever any
key is configured and is open only when none is (local development).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import time
from collections.abc import Awaitable
from dataclasses import replace

from tidegate import metrics
from tidegate.asgi import DisconnectWatcher, Receive, Request, Scope, Send, send_bytes
from tidegate.auth import Identity, key_hash, presented_key
from tidegate.context import CLIENT_CLOSED, RequestContext
from tidegate.endpoints import all_routes, health
from tidegate.endpoints.base import ErrorRenderer, RouteTable
from tidegate.errors import (
    ClientDisconnected,
    Forbidden,
    GatewayError,
    InternalError,
    MethodNotAllowed,
    NotFound,
    RequestTimeout,
    ShuttingDown,
    Unauthorized,
)
from tidegate.logs import AccessLog, log
from tidegate.relay import MESSAGE_CHARS
from tidegate.services import Services
from tidegate.settings import Config
from tidegate.store import Store
from tidegate.streams import Unsubscribe, listen_for_cancels

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


class Gateway:
    """The tidegate ASGI application for one validated configuration."""

    def __init__(self, config: Config, services: Services | None = None):
        self.config = config
        self.services = services or Services(config)
        self.redact = self.services.redactor
        self.access_log = AccessLog(self.redact)
        self.router = self.services.router
        self.max_body = config.limits.max_body_bytes
        self.body_timeout = config.limits.body_timeout
        # Request ids: a random per-process prefix and a counter (unique, and cheap to make).
        self._id_prefix = os.urandom(5).hex()
        self._id_counter = itertools.count(1)
        self.loop_lag = self.services.loop_lag
        routes = all_routes()
        self._metrics = config.metrics.enabled
        if not config.metrics.enabled:
            routes = [r for r in routes if r.path != "/metrics"]
        elif config.metrics.public:
            routes = [replace(r, access="public") if r.path == "/metrics" else r for r in routes]
        self._metric_models = set(config.model_names()) | {
            f"workflow:{w.name}" for w in config.workflows
        }
        self.routes = RouteTable(routes)
        self._draining = False
        self.state = self.services.state
        self._unsubscribe: Unsubscribe | None = None

    @property
    def ready(self) -> bool:
        """True once the HTTP client is up and until shutdown begins."""
        return self.services.ready

    # -- lifespan ---------------------------------------------------------------------------

    def begin_drain(self) -> None:
        """The server stops accepting: open streams get `server.shutdown_grace` seconds to
        finish, then each ends with an in-band "shutting down" error (called by the HTTP
        protocol when the server begins its graceful shutdown)."""
        if self._draining:
            return
        self._draining = True
        reason = ShuttingDown("the gateway is shutting down; retry the request")
        loop = asyncio.get_running_loop()
        loop.call_later(self.config.server.shutdown_grace, self.services.streams.stop_all, reason)

    async def startup(self) -> None:
        """Open the process's pooled upstream HTTP client, the store (managed keys, the usage
        ledger) and start the access log."""
        self.access_log.start()
        self.loop_lag.start()
        store = self.services.store
        if store is not None:
            await store.open()
            await store.ledger.start()
        await self.services.client.start()
        managed = self.services.keys.managed
        if managed is not None:
            try:
                await managed.listen()
            except Exception as exc:  # the cache still expires within seconds
                log.warning(
                    "managed key changes of other instances are not announced here: %s",
                    self.redact(str(exc)),
                )
        try:
            self._unsubscribe = await listen_for_cancels(self.services.streams, self.state)
        except Exception as exc:  # the state store is down: everything else still works
            log.warning(
                "cancelling streams through other instances is unavailable: %s",
                self.redact(str(exc)),
            )

    async def shutdown(self) -> None:
        """Close the HTTP client and its pooled connections; flush the access log."""
        if self._unsubscribe is not None:
            with contextlib.suppress(Exception):
                await self._unsubscribe()
        await self.services.client.aclose()
        store = self.services.store
        if store is not None:
            await store.ledger.close()
            await store.aclose()
        if self.services.keys.managed is not None:
            await self.services.keys.managed.aclose()
        await self.services.state.aclose()
        self.loop_lag.stop()
        self.access_log.close()

    # -- ASGI -------------------------------------------------------------------------------

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """The ASGI 3 entry point. It returns the coroutine rather than awaiting it, so that an
        open stream keeps one frame fewer alive (the server is told the interface is asgi3)."""
        if scope["type"] == "http":
            return self._http(scope, receive, send)
        if scope["type"] == "lifespan":
            return self._lifespan(receive, send)
        return _nothing()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope)
        incoming = request.header(b"x-request-id")
        if incoming and _REQUEST_ID.fullmatch(incoming):
            request_id = incoming
        else:
            request_id = f"{self._id_prefix}{next(self._id_counter):014x}"
        ctx = RequestContext(request_id, request.path, self.services.client, self.redact)
        methods = self.routes.match(request.path)
        found = methods.get(request.method)
        route = found[0] if found is not None else None
        render = route.render_error if route else health.render_error
        watcher: DisconnectWatcher | None = None
        body_bytes = 0
        try:
            if not methods:
                raise NotFound(f"no route for {request.path}")
            if route is None:
                allowed = list(methods)
                raise MethodNotAllowed(f"{request.path} accepts {', '.join(allowed)}", allowed)
            # Anything under /admin/ is admin, whatever its route says.
            access = "admin" if request.path.startswith("/admin/") else route.access
            if access == "client_or_token" and "token" in request.query:
                if presented_key(request, admin=False):
                    ctx.identity = await self._identify_client(request, route.key_hint)
            elif access in ("client", "client_or_token"):
                ctx.identity = await self._identify_client(request, route.key_hint)
            elif access == "admin":
                await self._check_admin_key(request)
            if request.method == "POST":
                await request.read_body(receive, self.max_body, self.body_timeout)
                body_bytes = len(request.body)
            watcher = ctx.watcher = DisconnectWatcher(receive, request.connection)
            if request.connection is not None:
                ctx.body_writer = request.body_writer
                ctx.sends_at_once = request.sends_at_once
            assert found is not None
            request.params = found[1]
            await route.handler(self.services, ctx, request, send)
        except ClientDisconnected as err:
            ctx.status = CLIENT_CLOSED
            ctx.error_code = err.code
        except GatewayError as err:
            await self._send_error(ctx, err, render, send)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if watcher is None or not watcher.disconnected or task is None or task.uncancel():
                ctx.status = CLIENT_CLOSED
                raise
            ctx.status = CLIENT_CLOSED
            ctx.error_code = "client_closed"
        except Exception as exc:
            log.exception("unhandled error in %s", request.path)
            await self._send_error(
                ctx, InternalError(f"internal error: {type(exc).__name__}"), render, send
            )
        finally:
            if watcher is not None:
                watcher.done()
            self.access_log.write(ctx.log_fields())
            if ctx.ledger_row is not None:
                self.services.ledger_finish(ctx, body_bytes)
            if self._metrics:
                self._count(ctx, route.path if route is not None else "unmatched")

    def _count(self, ctx: RequestContext, endpoint: str) -> None:
        """Count the request in the metrics, labelled only with what the config defines."""
        now = time.perf_counter()
        model = ctx.model if ctx.model in self._metric_models else "other"
        ttfb = ctx.first_byte_at - ctx.start if ctx.first_byte_at is not None else None
        status = ctx.status or CLIENT_CLOSED
        error = ctx.error_code
        metrics.count_request(endpoint, model, status, error, now - ctx.start, ttfb, ctx.usage)

    async def _send_error(
        self, ctx: RequestContext, err: GatewayError, render: ErrorRenderer, send: Send
    ) -> None:
        ctx.error_code = err.code
        ctx.error_detail = err.detail
        if ctx.committed:
            return  # the relay already ended the stream with an in-band error
        ctx.status = err.status
        err.message = self.redact.excerpt(err.message, MESSAGE_CHARS)
        headers = ctx.response_headers()
        if err.retry_after is not None:
            headers.append((b"retry-after", str(max(1, round(err.retry_after))).encode()))
        if err.status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        if isinstance(err, MethodNotAllowed):
            headers.append((b"allow", ", ".join(err.allowed).encode()))
        if isinstance(err, RequestTimeout):
            # The rest of a slow body is not worth waiting for on this connection.
            headers.append((b"connection", b"close"))
        # An upstream's own error body may be what is rendered: it is redacted like the rest.
        body = self.redact.bytes(render(err))
        await send_bytes(send, err.status, body, headers=headers)

    async def _identify_client(self, request: Request, hint: str) -> Identity | None:
        """The identity of the client key presented (None when no keys are configured); a
        missing or unknown key is a 401 saying how this API's clients send it."""
        keys = self.services.keys
        if not await keys.has_client_keys():
            return None
        given = presented_key(request, admin=False)
        identity = await keys.find(key_hash(given)) if given else None
        if identity is None:
            raise Unauthorized(f"missing or unknown client key; send it as {hint}")
        return identity

    async def _check_admin_key(self, request: Request) -> None:
        keys = self.services.keys
        if not keys.has_admin_keys:
            if await keys.has_client_keys():
                raise Forbidden("the admin API is closed: set auth.admin_keys to use the admin API")
            return  # no keys configured at all: local development
        given = presented_key(request, admin=True)
        digest = key_hash(given)
        if given and keys.admin(digest) is not None:
            return
        if given and await keys.find(digest) is not None:
            raise Forbidden("this route needs an admin key (auth.admin_keys), not a client key")
        raise Unauthorized("missing or unknown admin key; send it as 'Authorization: Bearer <key>'")


async def _nothing() -> None:
    return None


def create_app(config: Config, services: Services | None = None) -> Gateway:
    """The ASGI application for a validated configuration (with `services` given, around
    them: an in-process test's upstream, clock or state; without, the services of a server,
    with the config's database unless it is `off`)."""
    if services is None:
        store = None if config.database == "off" else Store(config.database, config.ledger)
        services = Services(config, store=store)
    return Gateway(config, services)
