"""The store's parts in one process, on a SQLite file (and Redis for the cross-instance cache
test when TIDEGATE_TEST_REDIS_URL is set, PostgreSQL for the ledger's values when
TIDEGATE_TEST_POSTGRES_URL is): the key cache and its invalidation, the ledger's
batching, and the URL handling."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tidegate.auth import Keys, ManagedKeys, StaticKeys, key_hash
from tidegate.settings import AuthConfig, LedgerConfig
from tidegate.state import State
from tidegate.state.memory import MemoryState
from tidegate.store import Store, ledger
from tidegate.store.engine import StoreError, async_url, describe
from tidegate.store.keys import KeyRequestError, new_key_request
from tidegate.store.tables import usage

REDIS = os.environ.get("TIDEGATE_TEST_REDIS_URL")


def with_store(
    tmp_path: Path, test: Callable[[Store], Awaitable[None]], database: str | None = None
) -> None:
    """Run `test` on a store: a new SQLite one, created and upgraded, unless `database` names
    another (the project's tests are sync)."""

    async def main() -> None:
        store = Store(database or f"sqlite:///{tmp_path}/units.db", LedgerConfig(flush_rows=3))
        await store.open()
        try:
            await test(store)
        finally:
            await store.aclose()

    asyncio.run(main())


def test_database_urls() -> None:
    """postgresql:// becomes asyncpg, sqlite:// aiosqlite; the default is ./tidegate.db;
    passwords never appear in messages."""
    assert async_url(None) == "sqlite+aiosqlite:///tidegate.db"
    assert async_url("postgresql://u:p@h/db") == "postgresql+asyncpg://u:p@h/db"
    assert async_url("postgres://u@h/db") == "postgresql+asyncpg://u@h/db"
    assert describe("postgresql://u:secret@h/db") == "postgresql://u:***@h/db"
    with pytest.raises(StoreError, match="database"):
        async_url("mysql://h/db")


def test_key_requests_name_the_bad_field() -> None:
    """Every bad field of a create request is named."""
    for fields, field in (
        ({}, "name"),
        ({"name": "a b"}, "name"),
        ({"name": "a", "rpm": 0}, "rpm"),
        ({"name": "a", "tpm": True}, "tpm"),
        ({"name": "a", "budget": -1}, "budget"),
        ({"name": "a", "models": [1]}, "models"),
        ({"name": "a", "expires": "2026-13-01"}, "expires"),
    ):
        with pytest.raises(KeyRequestError) as err:
            new_key_request(fields)
        assert err.value.field == field
    request = new_key_request({"name": "a", "models": "m1, m2", "budget": 3, "period": "week"})
    assert request.policy.models == ("m1", "m2") and request.policy.budget == 3.0


class Counting:
    """Counts the repository's lookups."""

    def __init__(self, store: Store):
        self.calls = 0
        self._find = store.keys.find

        async def find(digest: str) -> Any:
            self.calls += 1
            return await self._find(digest)

        store.keys.find = find  # type: ignore[method-assign]


def test_lookups_are_cached_found_or_not_and_forgotten_on_a_change(tmp_path: Path) -> None:
    """A digest is looked up once per `ttl`, found or not; `changed()` forgets at once; an
    expired key is no identity; the identity carries the policy."""
    with_store(tmp_path, _test_lookups_are_cached_found_or_not_and_forgotten_on_a_change)


async def _test_lookups_are_cached_found_or_not_and_forgotten_on_a_change(store: Store) -> None:
    now = [0.0]
    counting = Counting(store)
    managed = ManagedKeys(store.keys, MemoryState(), ttl=5.0, clock=lambda: now[0])
    keys = Keys(StaticKeys(AuthConfig()), managed)
    assert not await keys.has_client_keys()
    record, key = await store.keys.create(new_key_request({"name": "a", "models": ["m"]}))
    assert not await keys.has_client_keys()  # cached "none" until the ttl or a change
    await managed.changed()
    assert await keys.has_client_keys()
    digest = key_hash(key.encode())
    for _ in range(3):
        identity = await keys.find(digest)
        assert identity is not None and identity.key_id == record.id
        assert identity.policy is not None and identity.policy.models == ("m",)
        assert await keys.find("0" * 64) is None
    assert counting.calls == 2
    await store.keys.disable(record.id)
    assert await keys.find(digest) is not None  # still cached
    now[0] = 6.0
    assert await keys.find(digest) is None  # the ttl passed
    _, other = await store.keys.create(new_key_request({"name": "b", "expires": "2000-01-01"}))
    assert await keys.find(key_hash(other.encode())) is None


def test_an_expired_entry_is_refreshed_by_one_query_under_load(tmp_path: Path) -> None:
    """Many requests with the same key when its cache entry expires wait for one lookup
    (not one query each); a change made while that lookup runs is not hidden by it."""
    with_store(tmp_path, _test_an_expired_entry_is_refreshed_by_one_query_under_load)


async def _test_an_expired_entry_is_refreshed_by_one_query_under_load(store: Store) -> None:
    now = [0.0]
    counting = Counting(store)
    managed = ManagedKeys(store.keys, MemoryState(), ttl=5.0, clock=lambda: now[0])
    record, key = await store.keys.create(new_key_request({"name": "a"}))
    digest = key_hash(key.encode())
    found = await asyncio.gather(*(managed.find(digest) for _ in range(50)))
    assert all(i is not None and i.key_id == record.id for i in found)
    assert counting.calls == 1
    now[0] = 6.0
    found = await asyncio.gather(*(managed.find(digest) for _ in range(50)))
    assert all(i is not None for i in found) and counting.calls == 2
    # disabled while a refresh is under way: the refresh's answer is not cached
    now[0] = 12.0
    refresh = asyncio.ensure_future(managed.find(digest))
    await asyncio.sleep(0)
    await store.keys.disable(record.id)
    await managed.changed()
    await refresh
    assert await managed.find(digest) is None


@pytest.mark.parametrize("backend", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
def test_a_change_is_announced_to_other_instances(tmp_path: Path, backend: str) -> None:
    """Two instances sharing a state: a rotation in one makes the other forget its cache."""
    with_store(
        tmp_path, lambda store: _test_a_change_is_announced_to_other_instances(store, backend)
    )


async def _test_a_change_is_announced_to_other_instances(store: Store, backend: str) -> None:
    states: list[State]
    if backend == "memory":
        shared = MemoryState()
        states = [shared, shared]
    else:
        if not REDIS:
            pytest.skip("TIDEGATE_TEST_REDIS_URL is not set: the Redis variant is skipped")
        from tidegate.state.redis import RedisState

        states = [RedisState(REDIS), RedisState(REDIS)]
    here = ManagedKeys(store.keys, states[0], ttl=60)
    there = ManagedKeys(store.keys, states[1], ttl=60)
    await there.listen()
    try:
        record, key = await store.keys.create(new_key_request({"name": f"k{uuid.uuid4().hex}"}))
        assert await there.find(key_hash(key.encode())) is not None
        await store.keys.rotate(record.id)
        await here.changed()
        for _ in range(100):
            if await there.find(key_hash(key.encode())) is None:
                break
            await asyncio.sleep(0.02)
        assert await there.find(key_hash(key.encode())) is None
    finally:
        await there.aclose()
        for state in {id(s): s for s in states}.values():
            await state.aclose()


def _done(**extra: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {name: None for name in ledger.COMPLETION if name != "ended_at"}
    fields.update(
        status="ok",
        input_tokens=1,
        output_tokens=2,
        cache_read_tokens=0,
        cache_write_tokens=0,
        reasoning_tokens=0,
        estimated=False,
        cost=0.5,
        attempts=1,
    )
    fields.update(extra)
    return fields


def test_the_ledger_writes_in_batches(tmp_path: Path) -> None:
    """Rows are only queued until a flush; a row begun and finished between two flushes is
    written once, complete; a finish after its row was written updates it; a failed write
    keeps the rows for the next one."""
    with_store(tmp_path, _test_the_ledger_writes_in_batches)


async def _test_the_ledger_writes_in_batches(store: Store) -> None:
    book = store.ledger
    first = book.begin({"request_id": "r1", "endpoint": "/v1/chat/completions", "model": "m"})
    book.finish(first, _done())
    second = book.begin({"request_id": "r2", "endpoint": "/v1/messages", "model": "m"})
    assert await ledger.recent(store.engine) == []  # nothing written on the request path
    await book.flush()
    rows = {r["request_id"]: r for r in await ledger.recent(store.engine)}
    assert rows["r1"]["status"] == "ok" and rows["r1"]["cost"] == 0.5
    assert rows["r2"]["status"] == "pending" and rows["r2"]["ended_at"] is None
    book.finish(second, _done(status="client_closed", estimated=True, output_tokens=7))

    class Down:
        def begin(self) -> Any:
            raise ConnectionError("database down")

    book._engine = Down()  # type: ignore[assignment]
    with pytest.raises(ConnectionError):
        await book.flush()
    book._engine = store.engine
    await book.flush()
    rows = {r["request_id"]: r for r in await ledger.recent(store.engine)}
    assert rows["r2"]["status"] == "client_closed" and rows["r2"]["output_tokens"] == 7
    assert rows["r2"]["estimated"] is True
    summary = await ledger.summary(store.engine, ["model"])
    assert summary == [
        {"model": "m", "requests": 2, "errors": 1, "input_tokens": 2, "output_tokens": 9,
         "cost": 1.0}
    ]  # fmt: skip


def test_close_marks_its_own_pending_rows_interrupted(tmp_path: Path) -> None:
    """At shutdown the queue is written and this instance's rows still running are
    `interrupted`, never `pending` forever."""
    with_store(tmp_path, _test_close_marks_its_own_pending_rows_interrupted)


async def _test_close_marks_its_own_pending_rows_interrupted(store: Store) -> None:
    store.ledger.begin({"request_id": "r", "endpoint": "/x", "model": "m"})
    await store.ledger.start()
    await store.ledger.close()
    [row] = await ledger.recent(store.engine)
    assert row["status"] == "interrupted" and row["ended_at"] is not None


def test_a_database_that_is_down_is_a_503_not_a_500(tmp_path: Path) -> None:
    """A managed key lookup on a database that is down: `StoreUnavailable` (503), which the
    app renders in the endpoint's format; static keys are still checked first."""
    with_store(tmp_path, _test_a_database_that_is_down_is_a_503_not_a_500)


async def _test_a_database_that_is_down_is_a_503_not_a_500(store: Store) -> None:
    from tidegate.errors import StoreUnavailable

    async def down(*_args: Any) -> Any:
        raise ConnectionError("down")

    store.keys.find = down  # type: ignore[method-assign,assignment]
    store.keys.count_usable = down  # type: ignore[method-assign]
    managed = ManagedKeys(store.keys, MemoryState())
    with pytest.raises(StoreUnavailable) as err:
        await managed.find("0" * 64)
    assert err.value.status == 503
    with pytest.raises(StoreUnavailable):
        await managed.any()
    static = AuthConfig.model_validate({"api_keys": ["static-key-1234"]})
    keys = Keys(StaticKeys(static), managed)
    assert await keys.has_client_keys()
    assert await keys.find(key_hash(b"static-key-1234")) is not None


def test_the_ledger_writes_every_value_as_sqlalchemy_reads_it(
    tmp_path: Path, database: str
) -> None:
    """Many rows begun and finished between two writes, and rows completed after they were
    written: every value reads back as it was queued (times, booleans, floats, NULLs), on
    SQLite and PostgreSQL."""
    with_store(tmp_path, _test_every_value, database)


async def _test_every_value(store: Store) -> None:
    book = store.ledger
    count = 1300
    for i in range(count):
        begun = book.begin(
            {"request_id": f"r{i}", "user": f"u{i % 3}", "key_name": "k", "endpoint": "/e",
             "model": "m"}
        )  # fmt: skip
        book.finish(begun, _done(input_tokens=i, estimated=i % 2 == 1, ttfb_ms=i / 4))
    late = [book.begin({"request_id": f"late{i}", "endpoint": "/e"}) for i in range(3)]
    await book.flush()
    for i, row_id in enumerate(late):
        book.finish(row_id, _done(status="error", http_status=502, error="upstream", cost=1.25 * i))
    await book.flush()
    async with store.engine.connect() as conn:
        rows = {r["request_id"]: r for r in (await conn.execute(select(usage))).mappings()}
    assert len(rows) == count + 3
    for i in (0, 1, count - 1):
        row = rows[f"r{i}"]
        identity = (row["user"], row["key_name"], row["key_id"], row["model"])
        assert identity == (f"u{i % 3}", "k", None, "m")
        assert row["input_tokens"] == i and row["estimated"] is (i % 2 == 1)
        assert row["ttfb_ms"] == i / 4 and row["duration_ms"] is None and row["status"] == "ok"
        assert isinstance(row["started_at"], datetime) and row["ended_at"] >= row["started_at"]
        assert row["day"] == row["started_at"].date().isoformat()
        assert row["instance_id"] == book.instance_id
    for i in range(3):
        row = rows[f"late{i}"]
        assert (row["status"], row["http_status"], row["error"]) == ("error", 502, "upstream")
        assert row["cost"] == 1.25 * i and row["model"] is None and row["ended_at"] is not None
    summary = {r["model"]: r for r in await ledger.summary(store.engine, ["model"])}
    assert summary["m"]["requests"] == count
    assert summary["m"]["input_tokens"] == count * (count - 1) // 2
    assert summary[""]["errors"] == 3
