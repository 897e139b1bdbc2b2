"""`tidegate keys create | list | disable | rotate` (managed client keys), `tidegate db
upgrade | current` (the schema) and `tidegate usage` (the ledger, summed).

Managed keys live in the database of the config (`database:`, `./tidegate.db` by default).
`create` and `rotate` print the new key once, on stdout alone (the rest goes to stderr), so
that `KEY=$(tidegate keys create --name ci)` works; only its SHA-256 is stored. A change is
announced on the shared state, so running gateways forget their cached lookups at once (with
`state: memory` they do within a few seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from datetime import date
from typing import TYPE_CHECKING, Any

from tidegate.errors import ConfigError
from tidegate.settings import Config

if TYPE_CHECKING:
    from tidegate.store import Store
    from tidegate.store.keys import KeyRecord

# The store (SQLAlchemy) is imported only by the commands that use it: `tidegate check` and
# the other commands start as fast as before.

EXIT_CONFIG = 2
KEY_COMMANDS = ("create", "list", "disable", "rotate")


def add_key_commands(
    commands: Any, config_arguments: Callable[[argparse.ArgumentParser], None]
) -> None:
    """Add the managed key commands to `tidegate keys` (`commands`: its subparsers)."""
    create = commands.add_parser("create", help="create a client key (printed once)")
    config_arguments(create)
    create.add_argument("--name", required=True, help="a unique name (logs and usage show it)")
    create.add_argument("--user", help="the user the key belongs to")
    create.add_argument("--models", help="the models it may use, comma-separated (default all)")
    create.add_argument("--budget", type=float, help="money it may spend per --period")
    create.add_argument("--period", choices=["day", "week", "month"], help="the budget's period")
    create.add_argument("--rpm", type=int, help="requests per minute")
    create.add_argument("--tpm", type=int, help="tokens per minute")
    create.add_argument("--max-streams", type=int, help="streams open at once")
    create.add_argument("--expires", help="the day it stops working, YYYY-MM-DD (UTC)")
    listing = commands.add_parser("list", help="list managed client keys (never the keys)")
    config_arguments(listing)
    for name, help_text in (
        ("disable", "disable a managed key for good"),
        ("rotate", "give a managed key a new secret (printed once; the old one stops working)"),
    ):
        command = commands.add_parser(name, help=help_text)
        config_arguments(command)
        command.add_argument("key", metavar="NAME|ID", help="the key's name or id")


def add_db_commands(
    commands: Any, config_arguments: Callable[[argparse.ArgumentParser], None]
) -> None:
    """Add `tidegate db upgrade | current` (`commands`: the subparsers of `db`)."""
    upgrade = commands.add_parser("upgrade", help="bring the database schema up to date")
    config_arguments(upgrade)
    current = commands.add_parser("current", help="print the schema revision of the database")
    config_arguments(current)


def add_usage_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `tidegate usage`."""
    parser.add_argument(
        "--by", default="key", help="key, model, day, or a combination such as day,key"
    )
    parser.add_argument("--since", help="from this day on, YYYY-MM-DD (UTC)")


def handles_keys(args: argparse.Namespace) -> bool:
    """True when `args` is one of the managed key commands."""
    return getattr(args, "keys_command", None) in KEY_COMMANDS


def run(args: argparse.Namespace, load: Callable[[], Config]) -> int:
    """Run a `keys` (managed), `db` or `usage` command; returns the exit status."""
    from tidegate.store import StoreError

    try:
        config = load()
    except ConfigError as exc:
        print(f"tidegate: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if config.database == "off":
        print(
            "tidegate: the config says database: off — there are no managed keys or usage "
            "ledger; set database: to a sqlite:/// or postgresql:// URL",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    try:
        return asyncio.run(_run(args, config))
    except StoreError as exc:
        print(f"tidegate: {exc}", file=sys.stderr)
        return EXIT_CONFIG


async def _run(args: argparse.Namespace, config: Config) -> int:
    from tidegate.store import Store

    store = Store(config.database, config.ledger)
    try:
        if args.command == "db":
            return await _db(args, store)
        await store.open()
        if args.command == "usage":
            return await _usage(args, store)
        return await _keys(args, config, store)
    finally:
        await store.aclose()


async def _db(args: argparse.Namespace, store: Store) -> int:
    from tidegate.store import StoreError, migrate

    if args.db_command == "current":
        try:
            at = await migrate.current(store.engine)
        except Exception as exc:
            raise StoreError(f"database: cannot connect to {store.label}: {exc}") from None
        head = await asyncio.to_thread(migrate.head)
        state = "up to date" if at == head else f"behind: run `tidegate db upgrade` to {head}"
        print(f"{store.label}: revision {at or '(none)'} ({state})")
        return 0
    before, after = await store.upgrade()
    if before == after:
        print(f"{store.label}: already at revision {after}")
    else:
        print(f"{store.label}: upgraded from {before or '(empty)'} to {after}")
    return 0


async def _keys(args: argparse.Namespace, config: Config, store: Store) -> int:
    from tidegate.store.keys import KeyRequestError, UnknownKey, new_key_request

    repo = store.keys
    try:
        if args.keys_command == "list":
            _print_keys(await repo.list())
            return 0
        if args.keys_command == "create":
            fields = {
                "name": args.name,
                "user": args.user,
                "models": args.models,
                "budget": args.budget,
                "period": args.period,
                "rpm": args.rpm,
                "tpm": args.tpm,
                "max_streams": args.max_streams,
                "expires": args.expires,
            }
            request = new_key_request({k: v for k, v in fields.items() if v is not None})
            record, key = await repo.create(request)
            print(f"created {record.name} ({record.id}); the key, shown once:", file=sys.stderr)
            print(key)
        elif args.keys_command == "disable":
            record = await repo.disable(args.key)
            print(f"disabled {record.name} ({record.id})")
        else:
            record, key = await repo.rotate(args.key)
            print(
                f"rotated {record.name} ({record.id}); the old key no longer works; "
                "the new key, shown once:",
                file=sys.stderr,
            )
            print(key)
    except KeyRequestError as exc:
        option = "--" + exc.field.replace("_", "-")
        print(f"tidegate: {option}: {str(exc).split(': ', 1)[-1]}", file=sys.stderr)
        return EXIT_CONFIG
    except UnknownKey as exc:
        print(f"tidegate: no managed key has the name or id {exc.args[0]!r}", file=sys.stderr)
        return 1
    await _announce(config)
    return 0


async def _announce(config: Config) -> None:
    """Tell running gateways (through the shared state) to forget cached key lookups."""
    from tidegate.auth import KEYS_CHANNEL
    from tidegate.state import open_state

    if config.state == "memory":
        return  # nothing shared: gateways forget within seconds by themselves
    state = open_state(config.state)
    try:
        await state.publish(KEYS_CHANNEL, b"changed")
    except Exception as exc:
        print(f"tidegate: warning: could not tell running gateways: {exc}", file=sys.stderr)
    finally:
        await state.aclose()


def policy_text(record: KeyRecord) -> str:
    """A key's policy in a few words (`-` when it has none)."""
    p = record.policy
    parts = []
    if p.models:
        parts.append("models=" + ",".join(p.models))
    for name in ("rpm", "tpm", "max_streams"):
        value = getattr(p, name)
        if value is not None:
            parts.append(f"{name}={value}")
    if p.budget is not None:
        parts.append(f"budget={p.budget:g}/{p.period}")
    return " ".join(parts) or "-"


def _print_keys(records: list[KeyRecord]) -> None:
    if not records:
        print("no managed keys (create one with `tidegate keys create --name NAME`)")
        return
    rows = [["NAME", "ID", "USER", "POLICY", "CREATED", "EXPIRES", "DISABLED"]]
    for r in records:
        info = r.as_json()
        expires = info["expires"] or "-"
        if info["expired"]:
            expires += " (expired)"
        rows.append(
            [
                r.name,
                r.id,
                r.user or "-",
                policy_text(r),
                info["created"],
                expires,
                "yes" if r.disabled else "no",
            ]
        )
    print(table(rows))


def table(rows: list[list[str]]) -> str:
    """Rows as left-aligned columns (the first row is the header)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


async def _usage(args: argparse.Namespace, store: Store) -> int:
    from tidegate.store import ledger

    try:
        groups = ledger.parse_groups(args.by)
    except ValueError as exc:
        print(f"tidegate: --{exc}", file=sys.stderr)
        return EXIT_CONFIG
    since = None
    if args.since is not None:
        try:
            since = date.fromisoformat(args.since)
        except ValueError:
            print("tidegate: --since: a date, YYYY-MM-DD", file=sys.stderr)
            return EXIT_CONFIG
    rows = await ledger.summary(store.engine, groups, since)
    if not rows:
        print("no usage recorded" + (f" since {since}" if since else ""))
        return 0
    numbers = ["requests", "errors", "input_tokens", "output_tokens", "cost"]
    lines = [[g.upper() for g in groups] + [n.upper() for n in numbers]]
    for row in rows:
        lines.append(
            [str(row[g]) for g in groups]
            + [str(row[n]) for n in numbers[:-1]]
            + [f"{row['cost']:.6f}"]
        )
    print(table(lines))
    return 0


async def check_for_serve(config: Config) -> tuple[str | None, int]:
    """Before serving: (a problem with the database, or None; how many usable managed keys).
    A new SQLite file is created and brought up to date here."""
    if config.database == "off":
        return None, 0
    from tidegate.store import Store, StoreError

    store = Store(config.database, config.ledger)
    try:
        await store.open()
        return None, await store.keys.count_usable()
    except StoreError as exc:
        return str(exc), 0
    except Exception as exc:
        return f"database: {store.label}: {type(exc).__name__}: {exc}", 0
    finally:
        await store.aclose()
