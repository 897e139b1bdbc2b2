"""Who a request comes from: client keys and admin keys, and the identity a key stands for.

Keys are compared by their SHA-256 (a dictionary lookup, timing-independent of how much of a
guess matches). A client key may carry a user (`auth.api_keys: [{key, user, name}]`): that user
is the request's identity for everything that is per user — sessions, per-user upstream keys,
token caches —, and no request field can claim another. Logs name a key by its `name`, or by a
short prefix of its hash, never by the key.

The static keys of the config are one `KeyStore`; managed keys in the database
(`tidegate keys create`, `/admin/keys`) are another, `ManagedKeys`: lookups are cached in the
process for a few seconds, found and not found alike, and every instance forgets its cache when
a key is created, disabled or rotated anywhere (a message on the state's `tidegate:keys`
channel). `Keys` asks the config first, then the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from tidegate.asgi import Request
from tidegate.errors import StoreUnavailable
from tidegate.settings import AuthConfig, ClientKey, KeyPolicy
from tidegate.state import State

if TYPE_CHECKING:  # the store (SQLAlchemy) is imported by who opens one, not by every user
    from tidegate.store.keys import KeyRecord, KeyRepository


@dataclass(frozen=True, slots=True)
class Identity:
    """The caller: which key, its name, the user it belongs to, and client or admin."""

    key_id: str
    name: str | None = None
    user: str | None = None
    kind: Literal["client", "admin"] = "client"
    #: The key's models and limits; None for admin keys and plain static keys (no limits).
    policy: KeyPolicy | None = None

    @property
    def subject(self) -> str:
        """Who owns per-user state: the user, else the key."""
        return self.user or self.key_id

    @property
    def label(self) -> str:
        """How logs name the key."""
        return self.name or self.key_id

    def may_use(self, model: str) -> bool:
        """True unless the key's policy lists models and not this one."""
        policy = self.policy
        return policy is None or not policy.models or model in policy.models


ANONYMOUS = Identity("anonymous")


def key_hash(key: bytes) -> str:
    """The SHA-256 of a key, hex: what is stored and compared instead of the key."""
    return hashlib.sha256(key).hexdigest()


def key_id(key: bytes) -> str:
    """How logs name a key without revealing it: a short prefix of its hash."""
    return "key-" + key_hash(key)[:10]


class KeyStore(Protocol):
    """Looks up client keys by hash (the config's keys; a database's managed keys)."""

    async def find(self, digest: str) -> Identity | None:
        """The identity of the key whose SHA-256 is `digest`, or None."""


class StaticKeys:
    """The client and admin keys of the config."""

    __slots__ = ("_admin", "_clients")

    def __init__(self, auth: AuthConfig):
        self._clients: dict[str, Identity] = {}
        for entry in auth.api_keys:
            key = entry.key if isinstance(entry, ClientKey) else entry
            raw = key.get_secret_value().encode()
            name = entry.name if isinstance(entry, ClientKey) else None
            user = entry.user if isinstance(entry, ClientKey) else None
            policy = entry.policy() if isinstance(entry, ClientKey) else None
            if policy == KeyPolicy():
                policy = None
            self._clients[key_hash(raw)] = Identity(key_id(raw), name, user, policy=policy)
        self._admin = {
            key_hash(k.get_secret_value().encode()): Identity(
                key_id(k.get_secret_value().encode()), kind="admin"
            )
            for k in auth.admin_keys
        }

    @property
    def has_client_keys(self) -> bool:
        """True when the config lists client keys."""
        return bool(self._clients)

    @property
    def has_admin_keys(self) -> bool:
        """True when the config lists admin keys."""
        return bool(self._admin)

    async def find(self, digest: str) -> Identity | None:
        """A client key of the config, by hash."""
        return self._clients.get(digest)

    def admin(self, digest: str) -> Identity | None:
        """An admin key of the config, by hash."""
        return self._admin.get(digest)


def presented_key(request: Request, *, admin: bool) -> bytes:
    """The key a request presents: `Authorization: Bearer` or `x-api-key`; for client keys also
    `x-goog-api-key` and `?key=` (Gemini's forms, which admin keys are never sent in)."""
    given = request.header(b"authorization")
    if given[:7].lower() == "bearer ":
        given = given[7:].strip()
    given = given or request.header(b"x-api-key")
    if not admin:
        given = given or request.header(b"x-goog-api-key")
        if not given and request.query_string:
            given = request.query.get("key", "")
    return given.encode()


_NO_POLICY = KeyPolicy()
_T = TypeVar("_T")

#: The state channel on which a change of managed keys is announced to every instance.
KEYS_CHANNEL = "tidegate:keys"
_log = logging.getLogger("tidegate.auth")


class ManagedKeys:
    """Managed keys of the database, behind a short in-process cache of found and not-found
    digests (`ttl` seconds), forgotten on any change announced on `KEYS_CHANNEL`."""

    MAX_CACHED = 50_000

    def __init__(
        self,
        repository: KeyRepository,
        state: State,
        ttl: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.repository = repository
        self._state = state
        self._ttl = ttl
        self._clock = clock
        #: digest -> (until when, the record or None, the identity it stands for)
        self._cache: dict[str, tuple[float, KeyRecord | None, Identity | None]] = {}
        self._any: tuple[float, bool] | None = None
        #: lookups under way, shared by the requests that wait for them
        self._inflight: dict[str, asyncio.Future[Any]] = {}
        self._generation = 0
        self._unsubscribe: Callable[[], Awaitable[None]] | None = None

    async def find(self, digest: str) -> Identity | None:
        """The identity of a managed key that is neither disabled nor expired, or None."""
        hit = self._cache.get(digest)
        if hit is None or hit[0] <= self._clock():
            hit = await self._once("key:" + digest, lambda: self._fetch_key(digest))
        record = hit[1]
        if record is None or record.disabled or record.expired():
            return None
        return hit[2]

    async def _fetch_key(self, digest: str) -> tuple[float, KeyRecord | None, Identity | None]:
        generation = self._generation
        record = await self._read(self.repository.find(digest))
        identity = None
        if record is not None:
            policy = record.policy if record.policy != _NO_POLICY else None
            identity = Identity(record.id, record.name, record.user, policy=policy)
        hit = (self._clock() + self._ttl, record, identity)
        if generation == self._generation:  # not read before a change it must not hide
            if len(self._cache) >= self.MAX_CACHED:
                self._cache.clear()
            self._cache[digest] = hit
        return hit

    async def any(self) -> bool:
        """True when the database holds a usable managed key (cached like lookups)."""
        if self._any is None or self._any[0] <= self._clock():
            return await self._once("any", self._fetch_any)
        return self._any[1]

    async def _fetch_any(self) -> bool:
        generation = self._generation
        found = await self._read(self.repository.count_usable()) > 0
        if generation == self._generation:
            self._any = (self._clock() + self._ttl, found)
        return found

    async def _read(self, query: Awaitable[_T]) -> _T:
        try:
            return await query
        except Exception as exc:
            _log.warning("managed keys: lookup failed: %s", type(exc).__name__)
            raise StoreUnavailable("client keys cannot be checked: the database is down") from None

    async def _once(self, name: str, fetch: Callable[[], Awaitable[_T]]) -> _T:
        """`fetch()`, run once for every caller asking for `name` while it runs: when a cached
        entry expires under load, one query refreshes it instead of one per request."""
        running = self._inflight.get(name)
        if running is None:
            running = asyncio.ensure_future(fetch())
            self._inflight[name] = running
            running.add_done_callback(lambda done: self._landed(name, done))
        result: _T = await asyncio.shield(running)
        return result

    def _landed(self, name: str, done: asyncio.Future[Any]) -> None:
        if self._inflight.get(name) is done:
            del self._inflight[name]
        if not done.cancelled():
            done.exception()  # retrieved: every waiter may have gone

    def forget(self) -> None:
        """Drop everything cached (a key changed); lookups under way are not cached."""
        self._generation += 1
        self._cache.clear()
        self._any = None
        self._inflight.clear()

    async def changed(self) -> None:
        """A key was created, disabled or rotated here: forget, and tell every instance."""
        self.forget()
        try:
            await self._state.publish(KEYS_CHANNEL, b"changed")
        except Exception as exc:  # the others forget within `ttl` seconds anyway
            _log.warning("could not announce a managed key change: %s", exc)

    async def listen(self) -> None:
        """Forget the cache whenever another instance announces a change."""

        def on_message(_message: bytes) -> None:
            self.forget()

        self._unsubscribe = await self._state.subscribe(KEYS_CHANNEL, on_message)

    async def aclose(self) -> None:
        """Stop listening."""
        if self._unsubscribe is not None:
            with contextlib.suppress(Exception):
                await self._unsubscribe()
            self._unsubscribe = None


class Keys:
    """Every key the gateway knows: the config's, then the database's managed keys."""

    __slots__ = ("managed", "static")

    def __init__(self, static: StaticKeys, managed: ManagedKeys | None = None):
        self.static = static
        self.managed = managed

    async def has_client_keys(self) -> bool:
        """True when any client key exists (config or database): requests need one."""
        if self.static.has_client_keys:
            return True
        return self.managed is not None and await self.managed.any()

    @property
    def has_admin_keys(self) -> bool:
        """True when the config lists admin keys."""
        return self.static.has_admin_keys

    async def find(self, digest: str) -> Identity | None:
        """A client key by hash: the config's, else a usable managed key."""
        found = await self.static.find(digest)
        if found is None and self.managed is not None:
            found = await self.managed.find(digest)
        return found

    def admin(self, digest: str) -> Identity | None:
        """An admin key of the config, by hash."""
        return self.static.admin(digest)
