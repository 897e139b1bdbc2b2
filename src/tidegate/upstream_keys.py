"""`tidegate keys set-upstream | list-upstream | remove-upstream | new-secret`: per-user
upstream keys.

A user (the `user` of a client key, `auth.api_keys: [{key, user}]`) may have an upstream key
of their own for a model or a provider; requests of that user then carry it instead of the
model's key, and nobody else's ever do. The keys live in the shared state (`state:
redis://...`, where the running gateways read them), encrypted with the Fernet key
`secret_key` / `TIDEGATE_SECRET_KEY`. `set-upstream` reads the key from stdin (or a hidden
prompt), so that it never appears in a command line or a shell history; `list-upstream` shows
keys masked.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Callable
from typing import Any

from tidegate.config import mask
from tidegate.errors import ConfigError
from tidegate.providers import provider_names
from tidegate.providers.credentials import UpstreamKeys, new_secret_key
from tidegate.settings import Config
from tidegate.state import open_state

EXIT_CONFIG = 2


def add_commands(
    commands: Any, config_arguments: Callable[[argparse.ArgumentParser], None]
) -> None:
    """Add the per-user upstream key commands to `tidegate keys` (`commands`: its
    subparsers)."""
    target_help = "the model (models: name) or provider (provider: name) the key is for"
    for name, help_text in (
        ("set-upstream", "store a user's own upstream key (read from stdin)"),
        ("remove-upstream", "forget a user's own upstream key"),
    ):
        command = commands.add_parser(name, help=help_text)
        config_arguments(command)
        command.add_argument("--user", required=True, help="the user (auth.api_keys user:)")
        target = command.add_mutually_exclusive_group(required=True)
        target.add_argument("--model", help=target_help)
        target.add_argument("--provider", help=target_help)
    listing = commands.add_parser("list-upstream", help="list per-user upstream keys, masked")
    config_arguments(listing)
    commands.add_parser("new-secret", help="print a new Fernet key for TIDEGATE_SECRET_KEY")


def handles(args: argparse.Namespace) -> bool:
    """True when `args` is one of these commands."""
    return getattr(args, "keys_command", None) in (
        "set-upstream",
        "remove-upstream",
        "list-upstream",
        "new-secret",
    )


def run(args: argparse.Namespace, load: Callable[[], Config]) -> int:
    """Run one of these commands; `load` reads the configuration. Returns the exit status."""
    if args.keys_command == "new-secret":
        print(new_secret_key())
        return 0
    try:
        config = load()
    except ConfigError as exc:
        print(f"tidegate: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    problem = _unusable(config)
    if problem is not None:
        print(f"tidegate: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    target = None
    if args.keys_command != "list-upstream":
        target, problem = _target(config, args.model, args.provider)
        if problem is not None:
            print(f"tidegate: {problem}", file=sys.stderr)
            return EXIT_CONFIG
    key = None
    if args.keys_command == "set-upstream":
        key = _read_key()
        if not key:
            print("tidegate: no key given on stdin", file=sys.stderr)
            return EXIT_CONFIG
    return asyncio.run(_run(args, config, target, key))


def _unusable(config: Config) -> str | None:
    if config.secret_key is None:
        return (
            "per-user upstream keys are encrypted with secret_key: set TIDEGATE_SECRET_KEY "
            "(generate one with `tidegate keys new-secret`) for this command and the gateway"
        )
    if config.state == "memory":
        return (
            "per-user upstream keys live in the shared state, and `state: memory` is each "
            "process's own: set state: redis://... in the config, for this command and the "
            "gateway"
        )
    return None


def _target(config: Config, model: str | None, provider: str | None) -> tuple[str, str | None]:
    if model is not None:
        if model not in config.model_names():
            known = ", ".join(config.model_names())
            return "", f"--model {model!r}: no models: entry has that name (use one of: {known})"
        return "model:" + model, None
    assert provider is not None
    known_providers = [*provider_names(), *(d.name for d in config.providers)]
    if provider not in known_providers:
        return "", f"--provider {provider!r} is unknown (use one of: {', '.join(known_providers)})"
    return "provider:" + provider, None


def _read_key() -> str:
    if sys.stdin.isatty():
        return getpass.getpass("upstream key: ").strip()
    return sys.stdin.readline().strip()


async def _run(
    args: argparse.Namespace, config: Config, target: str | None, key: str | None
) -> int:
    assert config.secret_key is not None
    state = open_state(config.state)
    try:
        store = UpstreamKeys(state, config.secret_key.get_secret_value())
        if args.keys_command == "set-upstream":
            assert target is not None and key is not None
            await store.set(args.user, target, key)
            print(f"stored: {args.user} {target} {mask(key)}")
            return 0
        if args.keys_command == "remove-upstream":
            assert target is not None
            if await store.remove(args.user, target):
                print(f"removed: {args.user} {target}")
                return 0
            print(f"tidegate: {args.user} has no key for {target}", file=sys.stderr)
            return 1
        entries = await store.entries()
        if not entries:
            print("no per-user upstream keys")
        for user, what, value in entries:
            shown = mask(value) if value is not None else "(cannot be decrypted with this key)"
            print(f"{user}\t{what}\t{shown}")
        return 0
    finally:
        await state.aclose()
