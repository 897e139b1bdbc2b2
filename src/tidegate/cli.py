"""The `tidegate` command: `serve` runs the gateway, `check` validates a configuration, `ask`
asks a running gateway from the terminal (terminal.py), `try` sends one request and shows each
stage (trial.py), `keys` manages managed client keys (store_commands.py) and per-user upstream
keys (upstream_keys.py), `db` the database schema, `usage` sums the usage ledger."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import socket
import sys
from collections.abc import Sequence

from tidegate import __version__, store_commands, terminal, trial, upstream_keys
from tidegate.config import load_config, mask, mask_url, read_environment
from tidegate.errors import ConfigError
from tidegate.settings import Config, HttpDeploymentSettings

EXIT_CONFIG = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit status."""
    parser = argparse.ArgumentParser(prog="tidegate", description="A streaming LLM gateway.")
    parser.add_argument("--version", action="version", version=f"tidegate {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway")
    _config_arguments(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks one)")
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    serve.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="allow a non-loopback address without client keys (auth.api_keys)",
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument(
        "--log-format",
        default="json",
        choices=["json", "text"],
        help="json: every line a JSON object (default); text: messages as plain lines",
    )

    check = commands.add_parser("check", help="validate a configuration and print its models")
    _config_arguments(check)

    ask = commands.add_parser("ask", help="ask a running gateway; the answer streams as markdown")
    terminal.add_arguments(ask)

    attempt = commands.add_parser(
        "try", help="send one request to a model and show each stage (request, bytes, events)"
    )
    _config_arguments(attempt)
    trial.add_arguments(attempt)

    keys = commands.add_parser("keys", help="manage keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    store_commands.add_key_commands(key_commands, _config_arguments)
    upstream_keys.add_commands(key_commands, _config_arguments)

    db = commands.add_parser("db", help="the database of managed keys and usage")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    store_commands.add_db_commands(db_commands, _config_arguments)

    usage = commands.add_parser("usage", help="the usage ledger, summed (a table)")
    _config_arguments(usage)
    store_commands.add_usage_arguments(usage)

    args = parser.parse_args(argv)
    if args.command == "ask":
        # A client of a gateway, not a gateway: only the process environment is read.
        return terminal.run(args, read_environment(None))
    if args.command == "keys" and upstream_keys.handles(args):
        return upstream_keys.run(
            args, lambda: load_config(args.config, read_environment(args.env_file))
        )
    if args.command in ("db", "usage") or (
        args.command == "keys" and store_commands.handles_keys(args)
    ):
        return store_commands.run(
            args, lambda: load_config(args.config, read_environment(args.env_file))
        )
    try:
        config = load_config(args.config, read_environment(args.env_file))
    except ConfigError as exc:
        print(f"tidegate: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "check":
        print(describe(config))
        return 0
    if args.command == "try":
        return trial.run(args, config)
    return _serve(args, config)


def _config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config file (default: $TIDEGATE_CONFIG)")
    parser.add_argument("--env-file", default=".env", help="dotenv file to load (default .env)")


def describe(config: Config) -> str:
    """A human summary of a configuration: secrets (keys, extra headers, URL passwords) masked."""
    lines = [f"config: {config.source}", "models:"]
    for m in config.models:
        lines.append(f"  - {m.name}: provider={m.provider}")
        if isinstance(m, HttpDeploymentSettings):
            if m.base_url:
                lines.append(f"      base_url: {mask_url(m.base_url)}")
            lines.append(f"      upstream model: {getattr(m, 'workspace', m.upstream_model)}")
            lines.append(f"      api_key: {mask(m.api_key)}")
            for header, value in m.headers.items():
                lines.append(f"      header {header}: {mask(value)}")
        t = m.timeouts
        lines.append(
            f"      timeouts: connect={t.connect:g}s first_byte={t.first_byte:g}s "
            f"idle={t.idle:g}s total={t.total:g}s"
        )
    for d in config.providers:
        users = [m.name for m in config.models if m.provider == d.name]
        auth = f"token from {mask_url(d.auth.url)}" if d.auth is not None else "no auth step"
        lines.append(
            f"provider {d.name}: {d.chat.framing}, {auth}; models: {', '.join(users) or '(none)'}"
        )
    lines.append(f"stream_ask.model: {config.stream_ask.model or config.models[0].name}")
    keys = config.auth.api_keys
    lines.append(f"client keys: {len(keys)}" if keys else "client keys: none (no auth)")
    admin = len(config.auth.admin_keys)
    if admin:
        lines.append(f"admin keys: {admin}")
    else:
        lines.append("admin keys: none (/admin/ " + ("closed)" if keys else "open)"))
    lines.append(f"database: {mask_url(config.database or 'sqlite:///tidegate.db')}")
    lim = config.limits
    lines.append(
        f"limits: body {lim.max_body_bytes} bytes in {lim.body_timeout:g}s, "
        f"headers {lim.max_header_bytes} bytes / {lim.max_headers} lines in "
        f"{lim.header_timeout:g}s, {lim.max_connections} connections"
    )
    lines.append("ok")
    return "\n".join(lines)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _serve(args: argparse.Namespace, config: Config) -> int:
    problem, managed = asyncio.run(store_commands.check_for_serve(config))
    if problem is not None:
        print(f"tidegate: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    if (
        not _is_loopback(args.host)
        and not config.auth.api_keys
        and not managed
        and not args.allow_unauthenticated
    ):
        print(
            f"tidegate: refusing to serve {args.host} without client keys: set auth.api_keys "
            "in the config (or TIDEGATE_API_KEY), create one with `tidegate keys create`, or "
            "pass --allow-unauthenticated",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    if args.workers < 1:
        print("tidegate: --workers must be at least 1", file=sys.stderr)
        return EXIT_CONFIG
    try:
        sock = _bind(args.host, args.port)
    except OSError as exc:
        print(
            f"tidegate: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr
        )
        return 1
    from tidegate.server import serve

    return serve(config, sock, args)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    # Listen now, so that connections made as soon as the address is announced wait in the
    # backlog for the server instead of being refused.
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
