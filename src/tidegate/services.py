"""What request handlers may use: the deployments, the upstream HTTP client, the settings and the
process's shared objects — and nothing else of the application.

The app builds one `Services` per process and hands it to every handler, so that endpoint
modules never import the app (no cycle), and tests can build one around an in-memory upstream.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tidegate import __version__, pricing
from tidegate.auth import Keys, ManagedKeys, StaticKeys
from tidegate.clock import SYSTEM_CLOCK, Clock
from tidegate.context import CLIENT_CLOSED, RequestContext
from tidegate.deployments import Router
from tidegate.events import Usage
from tidegate.limits import Limits
from tidegate.loopwatch import LoopLag
from tidegate.providers.credentials import ProviderRuntime
from tidegate.providers.h1client import H1Client
from tidegate.providers.http import AiohttpClient, UpstreamClient
from tidegate.redact import RUNTIME_SECRETS, Redactor
from tidegate.settings import Config
from tidegate.state import State, open_state
from tidegate.streams import StreamRegistry

if TYPE_CHECKING:  # imported by who opens a store (app.create_app), not by every user
    from tidegate.store import Store


class Services:
    """The shared objects of one gateway process."""

    __slots__ = (
        "client",
        "clock",
        "config",
        "keys",
        "limits",
        "loop_lag",
        "redactor",
        "router",
        "runtime",
        "state",
        "store",
        "streams",
    )

    def __init__(
        self,
        config: Config,
        *,
        router: Router | None = None,
        clock: Clock = SYSTEM_CLOCK,
        state: State | None = None,
        client: UpstreamClient | None = None,
        wall: Callable[[], float] = time.time,
        store: Store | None = None,
    ):
        self.config = config
        self.router = router or Router(config)
        self.redactor = Redactor(config.secrets(), RUNTIME_SECRETS)
        self.clock = clock
        self.loop_lag = LoopLag()
        #: Shared state (memory, or Redis for several instances); connects on first use.
        self.state: State = state if state is not None else open_state(config.state)
        #: The database of managed keys and the usage ledger (None: neither, as in-process
        #: tests that do not ask for one).
        self.store = store
        managed = (
            ManagedKeys(store.keys, self.state, ttl=config.auth.managed_cache_seconds)
            if store is not None
            else None
        )
        #: The client and admin keys (the config's, and managed ones), and who they stand for.
        self.keys = Keys(StaticKeys(config.auth), managed)
        secret = config.secret_key.get_secret_value() if config.secret_key else None
        #: Per-user upstream keys and auth tokens, lent to every provider.
        self.runtime = ProviderRuntime(self.state, secret_key=secret, wall=wall)
        self.router.bind(self.runtime)
        #: Client keys' limits (rpm, tpm, streams, budget), counted in the state.
        self.limits = Limits(self.state, config.prices, wall)
        #: The streams this process is serving (stop one, or all at shutdown).
        self.streams = StreamRegistry(self.state)
        #: The one pooled upstream client, open between the app's start-up and shutdown.
        self.client: UpstreamClient = client or make_client(config)

    @property
    def ready(self) -> bool:
        """True once the HTTP client is up and until shutdown begins."""
        return self.client.ready

    @property
    def stream_ask_model(self) -> str:
        """The model `/stream-ask` uses when a request names none."""
        return self.config.stream_ask.model or self.config.models[0].name

    # -- the usage ledger -----------------------------------------------------------------

    def ledger_begin(self, ctx: RequestContext) -> None:
        """Queue the `pending` ledger row of a request that reached a model (once)."""
        if self.store is None or ctx.ledger_row is not None:
            return
        identity = ctx.identity
        ctx.ledger_row = self.store.ledger.begin(
            {
                "request_id": ctx.request_id,
                "key_id": identity.key_id if identity is not None else None,
                "key_name": identity.name if identity is not None else None,
                "user": identity.user if identity is not None else None,
                "endpoint": ctx.endpoint[:200],
                "model": ctx.model,
            }
        )

    def ledger_finish(self, ctx: RequestContext, body_bytes: int = 0) -> None:
        """Queue the completion of a request's ledger row: status, tokens (estimated when the
        upstream reported none), cost, timings."""
        if self.store is None or ctx.ledger_row is None:
            return
        now = time.perf_counter()
        usage, estimated = ctx.usage, False
        if usage is None:
            output = ctx.estimated_output
            estimated = output > 0 or ctx.first_byte_at is not None
            usage = Usage(
                input_tokens=(body_bytes + 3) // 4 if ctx.first_byte_at is not None else 0,
                output_tokens=output,
            )
        deployment = ctx.deployment or ctx.tried
        price = pricing.price_for(self.config.prices, ctx.model or "", deployment)
        fields: dict[str, Any] = {
            "status": ledger_status(ctx),
            "http_status": ctx.status or CLIENT_CLOSED,
            "error": ctx.error_code,
            "deployment": deployment,
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cache_read_tokens": usage.cache_read_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
            "reasoning_tokens": usage.reasoning_tokens,
            "estimated": estimated,
            "cost": pricing.cost(price, usage),
            "ttfb_ms": (
                round((ctx.first_byte_at - ctx.start) * 1000, 2)
                if ctx.first_byte_at is not None
                else None
            ),
            "duration_ms": round((now - ctx.start) * 1000, 2),
            "attempts": ctx.attempts,
            "stream_id": ctx.stream_id,
        }
        self.store.ledger.finish(ctx.ledger_row, fields)


def ledger_status(ctx: RequestContext) -> str:
    """How a request ended, in the ledger's words."""
    code = ctx.error_code
    if code == "cancelled":
        return "cancelled"
    if code in ("client_closed", "client_stalled") or ctx.status in (0, CLIENT_CLOSED):
        return "client_closed"
    if code is None and 200 <= ctx.status < 300:
        return "ok"
    return "error"


def make_client(config: Config) -> UpstreamClient:
    """The upstream client `http.client` names, sized by `http.pool_size`."""
    http = config.http
    kind = H1Client if http.client == "builtin" else AiohttpClient
    return kind(
        pool_size=http.pool_size,
        keepalive_seconds=http.keepalive_seconds,
        user_agent=f"tidegate/{__version__}",
    )
