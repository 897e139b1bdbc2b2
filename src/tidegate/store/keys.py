"""Managed client keys in the database: create, list, disable, rotate, and find by digest.

Only a key's SHA-256 is stored. `create` and `rotate` return the new key once; nothing reads
it back afterwards.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from tidegate.settings import KeyPolicy
from tidegate.store.tables import client_keys

KEY_PREFIX = "tg-"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:-]{0,199}")


class KeyRequestError(ValueError):
    """A managed key request that cannot be done: a bad field (named), or a taken name."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class UnknownKey(LookupError):
    """No managed key has that name or id."""


def utcnow() -> datetime:
    """Now, as the naive UTC datetime the tables store."""
    return datetime.now(UTC).replace(tzinfo=None)


def new_key() -> str:
    """A new client key: `tg-` and 32 random bytes, URL-safe."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def digest_of(key: str) -> str:
    """The SHA-256 of a key, hex (as `auth.key_hash`)."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A managed key as stored (without the key)."""

    id: str
    name: str
    user: str | None
    policy: KeyPolicy
    created_at: datetime
    expires_at: datetime | None
    disabled: bool
    rotated_at: datetime | None = None

    def expired(self, now: datetime | None = None) -> bool:
        """True once the key's expiry has passed."""
        return self.expires_at is not None and (now or utcnow()) >= self.expires_at

    def as_json(self) -> dict[str, Any]:
        """The record for the admin API and `keys list`: never the key or its digest."""
        p = self.policy
        return {
            "id": self.id,
            "name": self.name,
            "user": self.user,
            "models": list(p.models),
            "rpm": p.rpm,
            "tpm": p.tpm,
            "max_streams": p.max_streams,
            "budget": p.budget,
            "period": p.period,
            "created": self.created_at.isoformat(timespec="seconds") + "Z",
            "expires": self.expires_at.date().isoformat() if self.expires_at else None,
            "expired": self.expired(),
            "disabled": self.disabled,
        }


@dataclass(frozen=True, slots=True)
class NewKey:
    """What creating a key asks for (already validated by `new_key_request`)."""

    name: str
    user: str | None
    policy: KeyPolicy
    expires: date | None


def new_key_request(fields: dict[str, Any]) -> NewKey:
    """Validate a create request (admin API body or CLI flags); `KeyRequestError` names the
    field."""
    known = {"name", "user", "models", "budget", "period", "rpm", "tpm", "max_streams", "expires"}
    for field in fields:
        if field not in known:
            raise KeyRequestError(field, f"{field}: unknown field (use {', '.join(sorted(known))})")
    name = fields.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise KeyRequestError(
            "name", "name: required, 1-200 characters: letters, digits and . _ @ : -"
        )
    user = fields.get("user")
    if user is not None and (not isinstance(user, str) or not 1 <= len(user) <= 200):
        raise KeyRequestError("user", "user: a string of 1-200 characters")
    models = fields.get("models") or []
    if isinstance(models, str):
        models = [m.strip() for m in models.split(",") if m.strip()]
    if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
        raise KeyRequestError("models", "models: a list of model names")
    if any("," in m for m in models):
        raise KeyRequestError("models", "models: a model name cannot contain a comma")
    policy: dict[str, Any] = {"models": tuple(models)}
    for field in ("rpm", "tpm", "max_streams"):
        value = fields.get(field)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise KeyRequestError(field, f"{field}: a positive integer")
            policy[field] = value
    budget = fields.get("budget")
    if budget is not None:
        if isinstance(budget, bool) or not isinstance(budget, int | float) or budget <= 0:
            raise KeyRequestError("budget", "budget: a positive amount")
        policy["budget"] = float(budget)
    period = fields.get("period")
    if period is not None:
        if period not in ("day", "week", "month"):
            raise KeyRequestError("period", "period: day, week or month")
        policy["period"] = period
    expires = fields.get("expires")
    when: date | None = None
    if expires is not None:
        try:
            when = date.fromisoformat(expires) if isinstance(expires, str) else None
        except ValueError:
            when = None
        if when is None:
            raise KeyRequestError("expires", "expires: a date, YYYY-MM-DD")
    return NewKey(name, user, KeyPolicy(**policy), when)


def _record(row: Any) -> KeyRecord:
    models = tuple(m for m in (row.models or "").split(",") if m)
    policy = KeyPolicy(
        models=models,
        rpm=row.rpm,
        tpm=row.tpm,
        max_streams=row.max_streams,
        budget=row.budget,
        period=row.period,
    )
    return KeyRecord(
        row.id,
        row.name,
        row.user,
        policy,
        row.created_at,
        row.expires_at,
        bool(row.disabled),
        row.rotated_at,
    )


class KeyRepository:
    """Managed client keys in one database."""

    def __init__(self, engine: AsyncEngine):
        self._engine = engine

    async def create(self, request: NewKey) -> tuple[KeyRecord, str]:
        """Store a new key; returns its record and the key (the only time it is seen)."""
        key = new_key()
        now = utcnow().replace(microsecond=0)
        p = request.policy
        key_id = "k" + secrets.token_hex(6)
        values: dict[str, Any] = {
            "id": key_id,
            "name": request.name,
            "digest": digest_of(key),
            "user": request.user,
            "models": ",".join(p.models),
            "rpm": p.rpm,
            "tpm": p.tpm,
            "max_streams": p.max_streams,
            "budget": p.budget,
            "period": p.period,
            "created_at": now,
            "expires_at": (
                datetime(request.expires.year, request.expires.month, request.expires.day)
                if request.expires
                else None
            ),
            "disabled": False,
        }
        try:
            async with self._engine.begin() as conn:
                await conn.execute(client_keys.insert().values(**values))
        except IntegrityError:
            raise KeyRequestError("name", f"name: a key named {request.name!r} exists") from None
        record = await self.get(key_id)
        return record, key

    async def get(self, name_or_id: str) -> KeyRecord:
        """The key with this id or name; `UnknownKey` if none."""
        query = select(client_keys).where(
            or_(client_keys.c.id == name_or_id, client_keys.c.name == name_or_id)
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            raise UnknownKey(name_or_id)
        return _record(row)

    async def list(self) -> list[KeyRecord]:
        """Every managed key, oldest first."""
        query = select(client_keys).order_by(client_keys.c.created_at, client_keys.c.name)
        async with self._engine.connect() as conn:
            return [_record(row) for row in await conn.execute(query)]

    async def count_usable(self) -> int:
        """How many managed keys exist that are not disabled."""
        query = select(func.count()).select_from(client_keys).where(~client_keys.c.disabled)
        async with self._engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def find(self, digest: str) -> KeyRecord | None:
        """The key whose SHA-256 is `digest` (disabled and expired ones included), or None."""
        query = select(client_keys).where(client_keys.c.digest == digest)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return _record(row) if row is not None else None

    async def disable(self, name_or_id: str) -> KeyRecord:
        """Disable a key for good; returns its record."""
        record = await self.get(name_or_id)
        async with self._engine.begin() as conn:
            await conn.execute(
                update(client_keys).where(client_keys.c.id == record.id).values(disabled=True)
            )
        return await self.get(record.id)

    async def rotate(self, name_or_id: str) -> tuple[KeyRecord, str]:
        """Give a key a new secret (the old one stops working); returns the new key once."""
        record = await self.get(name_or_id)
        key = new_key()
        async with self._engine.begin() as conn:
            await conn.execute(
                update(client_keys)
                .where(client_keys.c.id == record.id)
                .values(digest=digest_of(key), rotated_at=utcnow().replace(microsecond=0))
            )
        return await self.get(record.id), key
