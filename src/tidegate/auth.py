"""Who a request comes from: client keys and admin keys, and the identity a key stands for.

Keys are compared by their SHA-256 (a dictionary lookup, timing-independent of how much of a
guess matches). A client key may carry a user (`auth.api_keys: [{key, user, name}]`): that user
is the request's identity for everything that is per user — sessions, per-user upstream keys,
token caches —, and no request field can claim another. Logs name a key by its `name`, or by a
short prefix of its hash, never by the key.

`KeyStore`s can be added (managed keys in a database); the static keys of the config are one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal, Protocol

from tidegate.asgi import Request
from tidegate.settings import AuthConfig, ClientKey, KeyPolicy


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
