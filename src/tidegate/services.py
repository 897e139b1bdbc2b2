"""What request handlers may use: the deployments, the upstream HTTP client, the settings and the
process's shared objects — and nothing else of the application.

The app builds one `Services` per process and hands it to every handler, so that endpoint
modules never import the app (no cycle), and tests can build one around an in-memory upstream.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tidegate import __version__
from tidegate.auth import StaticKeys
from tidegate.clock import SYSTEM_CLOCK, Clock
from tidegate.deployments import Router
from tidegate.loopwatch import LoopLag
from tidegate.providers.credentials import ProviderRuntime
from tidegate.providers.h1client import H1Client
from tidegate.providers.http import AiohttpClient, UpstreamClient
from tidegate.redact import RUNTIME_SECRETS, Redactor
from tidegate.settings import Config
from tidegate.state import State, open_state
from tidegate.streams import StreamRegistry


class Services:
    """The shared objects of one gateway process."""

    __slots__ = (
        "client",
        "clock",
        "config",
        "keys",
        "loop_lag",
        "redactor",
        "router",
        "runtime",
        "state",
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
    ):
        self.config = config
        self.router = router or Router(config)
        self.redactor = Redactor(config.secrets(), RUNTIME_SECRETS)
        self.clock = clock
        self.loop_lag = LoopLag()
        #: The client and admin keys, and who they stand for.
        self.keys = StaticKeys(config.auth)
        #: Shared state (memory, or Redis for several instances); connects on first use.
        self.state: State = state if state is not None else open_state(config.state)
        secret = config.secret_key.get_secret_value() if config.secret_key else None
        #: Per-user upstream keys and auth tokens, lent to every provider.
        self.runtime = ProviderRuntime(self.state, secret_key=secret, wall=wall)
        self.router.bind(self.runtime)
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


def make_client(config: Config) -> UpstreamClient:
    """The upstream client `http.client` names, sized by `http.pool_size`."""
    http = config.http
    kind = H1Client if http.client == "builtin" else AiohttpClient
    return kind(
        pool_size=http.pool_size,
        keepalive_seconds=http.keepalive_seconds,
        user_agent=f"tidegate/{__version__}",
    )
