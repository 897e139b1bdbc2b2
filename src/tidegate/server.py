"""Running the ASGI app under uvicorn (uvloop + httptools), in one process or several.

The listening socket is bound by the command before this module runs, so `--port 0` works
and the real address can be announced. With `--workers N` the socket is shared by N worker
processes, each of which loads the configuration again from the same sources.

uvicorn owns the lifecycle, workers and signals; each connection is served by
`server_protocol.LimitedHttpToolsProtocol` (uvicorn's httptools protocol with the `limits:`
on request heads and connections), whose settings travel in `GatewayServerConfig`.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import socket
import sys
import tempfile
from typing import Any

import uvicorn

from tidegate import __version__
from tidegate.app import create_app
from tidegate.config import load_config, read_environment
from tidegate.logs import setup_logging, startup_line
from tidegate.redact import RUNTIME_SECRETS, Redactor
from tidegate.server_protocol import GatewayServerConfig, LimitedHttpToolsProtocol
from tidegate.settings import Config

_LOOP = "uvloop" if sys.platform != "win32" else "asyncio"
#: The cyclic garbage collector's thresholds for a serving process (CPython's are 700, 10, 10).
GC_THRESHOLDS = (20_000, 50, 100)


def tune_gc() -> None:
    """Make the cyclic garbage collector cheaper for a process about to serve: everything
    imported and built so far (modules, schemas, the app) is frozen out of its reach, and it
    runs less often. A request allocates a few hundred containers, almost all freed by
    reference counting; with CPython's thresholds the collector ran every few requests and
    every full pass walked the whole import graph again — 11 to 15% of the CPU of a small
    request here (docs/performance.md)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def serve(config: Config, sock: socket.socket, args: argparse.Namespace) -> int:
    """Serve until interrupted; return the exit status."""
    json = args.log_format == "json"
    listener = setup_logging(args.log_level, Redactor(config.secrets(), RUNTIME_SECRETS), json=json)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    keys = len(config.auth.api_keys)
    auth = f"{keys} client key(s)" if keys else "no client keys"
    if config.auth.admin_keys:
        auth += f", {len(config.auth.admin_keys)} admin key(s)"
    # Printed whatever the log level: operators and test harnesses read the bound address here.
    announce = (
        f"tidegate {__version__} listening on http://{shown}:{port} "
        f"(models: {', '.join(config.model_names())}; {auth}; config: {config.source}; "
        f"workers: {args.workers})"
    )
    print(startup_line(announce, json=json), file=sys.stderr, flush=True)
    options: dict[str, Any] = {
        "loop": _LOOP,
        "http": LimitedHttpToolsProtocol,
        "ws": "none",  # no WebSocket routes: an upgrade request is served as plain HTTP
        "lifespan": "on",
        "interface": "asgi3",
        "log_config": None,
        "access_log": False,
        "server_header": False,
        "proxy_headers": False,  # client addresses are not used; skip the middleware
        # uvicorn waits a little longer than the app's grace, in which every stream ends.
        "timeout_graceful_shutdown": int(config.server.shutdown_grace) + 5,
    }
    metrics_dir: str | None = None
    try:
        if args.workers == 1:
            uv_config = GatewayServerConfig(create_app(config), limits=config.limits, **options)
            server = uvicorn.Server(uv_config)
            tune_gc()
            server.run(sockets=[sock])
        else:
            # Workers are separate interpreters: they rebuild the app from the same sources.
            if args.config:
                os.environ["TIDEGATE_CONFIG"] = os.path.abspath(args.config)
            os.environ["TIDEGATE_ENV_FILE"] = os.path.abspath(args.env_file)
            os.environ["TIDEGATE_LOG_LEVEL"] = args.log_level
            os.environ["TIDEGATE_LOG_FORMAT"] = args.log_format
            if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
                # Each worker counts into files here; /metrics on any worker sums them all.
                metrics_dir = tempfile.mkdtemp(prefix="tidegate-metrics-")
                os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
            factory = "tidegate.server:app_from_environment"
            uv_config = GatewayServerConfig(
                factory, limits=config.limits, factory=True, workers=args.workers, **options
            )
            from uvicorn.supervisors import Multiprocess

            Multiprocess(uv_config, sockets=[sock]).run()
    finally:
        listener.stop()
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def app_from_environment() -> object:
    """The app factory of a worker process."""
    env = read_environment(os.environ.get("TIDEGATE_ENV_FILE", ".env"))
    config = load_config(None, env)
    setup_logging(
        os.environ.get("TIDEGATE_LOG_LEVEL", "info"),
        Redactor(config.secrets(), RUNTIME_SECRETS),
        json=os.environ.get("TIDEGATE_LOG_FORMAT", "json") == "json",
    )
    app = create_app(config)
    tune_gc()
    return app
