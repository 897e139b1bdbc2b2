"""Credentials at run time: per-user upstream keys and cached auth tokens, in the shared state.

`ProviderRuntime` is what providers get from the process (services.py binds it): the shared
`State`, the Fernet key, the book of secrets learned at run time, and a wall clock.

- `UpstreamKeys`: a user's own upstream keys (the seed's `get_llm_user_apikey(apiname, user)`),
  by model (`model:<name>`) or provider (`provider:<name>`), kept in the state encrypted with
  Fernet. A request whose identity carries that user uses that key instead of the model's;
  nobody else ever does.
- `TokenCache`: what a descriptor's auth step returned, per (descriptor, user, credentials),
  in the state (all instances share it) and in this process's memory. A token is refreshed
  `refresh_before` seconds before it expires and once after a 401; concurrent requests wait
  for one refresh: one flight per key in the process, and the state's lock across processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.fernet import Fernet, InvalidToken

from tidegate.errors import InternalError
from tidegate.redact import RUNTIME_SECRETS, SecretBook
from tidegate.state import State

_KEYS = "upstream_keys:user:"
_KEYS_INDEX = "upstream_keys:index"
_TOKENS = "tokens:"
_MEMO_LIMIT = 10_000


class Sealer:
    """Encrypts what is kept in the shared state with the configured Fernet key (values are
    kept as they are when no key is configured)."""

    __slots__ = ("_fernet",)

    def __init__(self, secret_key: str | None):
        self._fernet = Fernet(secret_key.encode()) if secret_key else None

    @property
    def encrypts(self) -> bool:
        """True when a key is configured."""
        return self._fernet is not None

    def seal(self, data: bytes) -> bytes:
        """`data` as stored."""
        if self._fernet is None:
            return b"p:" + data
        return b"f:" + self._fernet.encrypt(data)

    def unseal(self, stored: bytes) -> bytes:
        """What `seal` stored; `InvalidToken` when it was sealed with another key."""
        kind, body = stored[:2], stored[2:]
        if kind == b"p:":
            return body
        if kind == b"f:" and self._fernet is not None:
            return self._fernet.decrypt(body)
        raise InvalidToken


def valid_secret_key(value: str) -> bool:
    """True when `value` is a Fernet key (32 url-safe base64-encoded bytes)."""
    try:
        Fernet(value.encode())
    except (ValueError, TypeError):
        return False
    return True


def new_secret_key() -> str:
    """A fresh Fernet key, for `TIDEGATE_SECRET_KEY`."""
    return Fernet.generate_key().decode()


class UpstreamKeys:
    """Per-user upstream keys, Fernet-encrypted in the shared state: one entry per user (its
    keys by target, `model:<name>` or `provider:<name>`) and an index of the users."""

    def __init__(self, state: State, secret_key: str, book: SecretBook | None = None):
        self._state = state
        self._sealer = Sealer(secret_key)
        self._book = book if book is not None else RUNTIME_SECRETS
        self._plain: dict[bytes, dict[str, str]] = {}  # decrypted entries, by stored bytes

    async def find(self, user: str, model: str, provider: str) -> str | None:
        """The user's key for `model`, else for `provider`, else None."""
        stored = await self._state.get(_KEYS + user)
        if stored is None:
            return None
        keys = self._plain.get(stored)
        if keys is None:
            keys = self._open(stored, user)
            if len(self._plain) >= 1024:
                self._plain.clear()
            self._plain[stored] = keys
            self._book.add(*keys.values())
        return keys.get("model:" + model) or keys.get("provider:" + provider)

    def _open(self, stored: bytes, user: str) -> dict[str, str]:
        try:
            value = orjson.loads(self._sealer.unseal(stored))
        except (InvalidToken, orjson.JSONDecodeError):
            raise InternalError(
                f"the upstream keys of user {user!r} cannot be decrypted with the configured "
                "secret_key (TIDEGATE_SECRET_KEY changed?)"
            ) from None
        return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}

    async def _read(self, user: str) -> dict[str, str]:
        stored = await self._state.get(_KEYS + user)
        return {} if stored is None else self._open(stored, user)

    async def _users(self) -> list[str]:
        raw = await self._state.get(_KEYS_INDEX)
        return [str(u) for u in orjson.loads(raw)] if raw else []

    async def set(self, user: str, target: str, key: str) -> None:
        """Store `key` as the user's key for `target` (`model:<name>` or `provider:<name>`)."""
        async with self._state.lock(_KEYS_INDEX, 30):
            keys = await self._read(user)
            keys[target] = key
            await self._state.set(_KEYS + user, self._sealer.seal(orjson.dumps(keys)))
            users = await self._users()
            if user not in users:
                users.append(user)
                await self._state.set(_KEYS_INDEX, orjson.dumps(sorted(users)))

    async def remove(self, user: str, target: str) -> bool:
        """Forget the user's key for `target`; False when there was none."""
        async with self._state.lock(_KEYS_INDEX, 30):
            keys = await self._read(user)
            if target not in keys:
                return False
            del keys[target]
            if keys:
                await self._state.set(_KEYS + user, self._sealer.seal(orjson.dumps(keys)))
            else:
                await self._state.delete(_KEYS + user)
                users = [u for u in await self._users() if u != user]
                await self._state.set(_KEYS_INDEX, orjson.dumps(users))
            return True

    async def entries(self) -> list[tuple[str, str, str | None]]:
        """Every (user, target, key), by user and target; a user whose keys cannot be
        decrypted with this secret key is listed once, with target `*` and no key."""
        out: list[tuple[str, str, str | None]] = []
        for user in await self._users():
            try:
                keys = await self._read(user)
            except InternalError:
                out.append((user, "*", None))
                continue
            for target, key in sorted(keys.items()):
                out.append((user, target, key))
        return out


@dataclass(slots=True)
class Token:
    """What one auth step returned: the `set_data` values, when they expire and when to
    refresh them (wall-clock seconds, None: never), and an id telling refreshes apart."""

    values: dict[str, Any]
    expires_at: float | None
    refresh_at: float | None
    id: str

    def fresh(self, now: float) -> bool:
        """True while the token need not be refreshed."""
        return self.refresh_at is None or now < self.refresh_at

    def dumps(self) -> bytes:
        """The token as stored."""
        return orjson.dumps(
            {"v": self.values, "e": self.expires_at, "r": self.refresh_at, "id": self.id}
        )

    @classmethod
    def loads(cls, data: bytes) -> Token | None:
        """A stored token, or None when it cannot be read."""
        try:
            raw = orjson.loads(data)
            return cls(dict(raw["v"]), raw["e"], raw["r"], str(raw["id"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None


#: An auth step: the kept values and their lifetime in seconds (None: until refused).
Fetch = Callable[[], Awaitable[tuple[dict[str, Any], float | None]]]


class TokenCache:
    """Tokens per key, in this process's memory and in the shared state; one refresh at a
    time per key (one flight in the process, the state's lock across processes)."""

    def __init__(
        self,
        state: State,
        sealer: Sealer,
        book: SecretBook,
        wall: Callable[[], float] = time.time,
    ):
        self._state = state
        self._sealer = sealer
        self._book = book
        self._wall = wall
        self._memo: dict[str, Token] = {}
        self._flights: dict[str, asyncio.Future[Token]] = {}

    async def get(
        self,
        key: str,
        fetch: Fetch,
        *,
        margin: float,
        lock_ttl: float,
        stale: str | None = None,
    ) -> Token:
        """A fresh token for `key`; `stale`: the id of a token the upstream refused (a 401),
        which is never returned again. `fetch` runs at most once at a time per key, in a task
        of its own (a request that gives up does not cancel it for the others)."""
        memo = self._memo.get(key)
        if memo is not None and memo.id != stale and memo.fresh(self._wall()):
            return memo
        token: Token | None = None
        for _ in range(2):
            flight = self._flights.get(key)
            if flight is None:
                flight = asyncio.ensure_future(self._load(key, fetch, margin, lock_ttl, stale))
                self._flights[key] = flight
                flight.add_done_callback(lambda f, k=key: self._landed(k, f))  # type: ignore[misc]
            token = await asyncio.shield(flight)
            if token.id != stale:
                return token
        assert token is not None
        return token

    def forget(self, key: str) -> None:
        """Drop this process's copy of a key's token (the state keeps its own)."""
        self._memo.pop(key, None)

    def _landed(self, key: str, flight: asyncio.Future[Token]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        if not flight.cancelled():
            flight.exception()  # retrieved: waiters that gave up must not leave it unseen

    async def _load(
        self, key: str, fetch: Fetch, margin: float, lock_ttl: float, stale: str | None
    ) -> Token:
        token = await self._read(key)
        if token is not None and token.id != stale and token.fresh(self._wall()):
            return self._remember(key, token)
        async with self._state.lock(_TOKENS + key, lock_ttl):
            # Another instance may have refreshed it while we waited for the lock.
            token = await self._read(key)
            if token is not None and token.id != stale and token.fresh(self._wall()):
                return self._remember(key, token)
            values, lifetime = await fetch()
            now = self._wall()
            expires = now + lifetime if lifetime is not None else None
            refresh = None
            if lifetime is not None:
                refresh = now + lifetime - min(margin, lifetime / 2)
            token = Token(values, expires, refresh, os.urandom(8).hex())
            self._book.add(*_texts(values))
            await self._state.set(
                _TOKENS + key, self._sealer.seal(token.dumps()), ttl=lifetime or None
            )
            return self._remember(key, token)

    async def _read(self, key: str) -> Token | None:
        stored = await self._state.get(_TOKENS + key)
        if stored is None:
            return None
        with contextlib.suppress(InvalidToken):
            token = Token.loads(self._sealer.unseal(stored))
            if token is not None:
                self._book.add(*_texts(token.values))
            return token
        return None

    def _remember(self, key: str, token: Token) -> Token:
        if key not in self._memo and len(self._memo) >= _MEMO_LIMIT:
            del self._memo[next(iter(self._memo))]
        self._memo[key] = token
        return token


def _texts(values: dict[str, Any]) -> list[str]:
    return [v for v in values.values() if isinstance(v, str)]


class ProviderRuntime:
    """What providers get from the process: the shared state, per-user upstream keys (when a
    secret key is configured), the token cache, the book of runtime secrets, a wall clock."""

    def __init__(
        self,
        state: State,
        *,
        secret_key: str | None = None,
        book: SecretBook | None = None,
        wall: Callable[[], float] = time.time,
    ):
        self.state = state
        self.book = book if book is not None else RUNTIME_SECRETS
        self.wall = wall
        sealer = Sealer(secret_key)
        #: Per-user upstream keys; None without a secret key (then nobody has one).
        self.keys: UpstreamKeys | None = (
            UpstreamKeys(state, secret_key, self.book) if secret_key else None
        )
        self.tokens = TokenCache(state, sealer, self.book, wall)


_DEFAULT: ProviderRuntime | None = None


def default_runtime() -> ProviderRuntime:
    """The runtime of providers no process bound (tests, tools): memory state, no user keys."""
    global _DEFAULT
    if _DEFAULT is None:
        from tidegate.state.memory import MemoryState

        _DEFAULT = ProviderRuntime(MemoryState())
    return _DEFAULT
