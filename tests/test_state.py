"""The shared-state interface, the same tests against the process's memory and a real Redis.

Invariants: values and counters expire; counters are atomic under concurrency; a lock has one
holder at a time; a log's reader gets every entry after the one it names, then the live ones,
and stops at the end; a broadcast reaches every subscriber.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

import pytest

from tidegate.state import LimitCheck, Settlement, State, open_state

REDIS_URL = os.environ.get("TIDEGATE_TEST_REDIS_URL")


@pytest.fixture(
    params=[
        "memory",
        pytest.param(
            "redis",
            marks=[
                pytest.mark.redis,
                pytest.mark.skipif(
                    not REDIS_URL, reason="TIDEGATE_TEST_REDIS_URL is not set (no Redis here)"
                ),
            ],
        ),
    ]
)
def state_url(request: pytest.FixtureRequest) -> str:
    return "memory" if request.param == "memory" else str(REDIS_URL)


def run(url: str, test: object) -> None:
    async def main() -> None:
        state = open_state(url)
        try:
            await test(state, uuid.uuid4().hex)  # type: ignore[operator]
        finally:
            await state.aclose()

    asyncio.run(main())


def test_values_expire(state_url: str) -> None:
    async def test(state: State, ns: str) -> None:
        await state.set(ns + "a", b"1", ttl=0.2)
        await state.set(ns + "b", b"2")
        assert await state.get(ns + "a") == b"1"
        await asyncio.sleep(0.3)
        assert await state.get(ns + "a") is None
        assert await state.get(ns + "b") == b"2"
        await state.delete(ns + "b")
        assert await state.get(ns + "b") is None

    run(state_url, test)


def test_counters_are_atomic_and_expire(state_url: str) -> None:
    async def test(state: State, ns: str) -> None:
        results = await asyncio.gather(*(state.incr(ns + "c", 1, ttl=0.3) for _ in range(200)))
        assert sorted(results) == list(range(1, 201))
        assert await state.incr(ns + "c", 5) == 205
        await asyncio.sleep(0.4)
        assert await state.incr(ns + "c", 1, ttl=10) == 1

    run(state_url, test)


def test_a_lock_has_one_holder(state_url: str) -> None:
    async def test(state: State, ns: str) -> None:
        inside = 0
        most = 0

        async def worker() -> None:
            nonlocal inside, most
            async with state.lock(ns + "l", ttl=5):
                inside += 1
                most = max(most, inside)
                await asyncio.sleep(0.01)
                inside -= 1

        await asyncio.gather(*(worker() for _ in range(10)))
        assert most == 1

    run(state_url, test)


def test_logs_replay_then_follow_then_end(state_url: str) -> None:
    async def test(state: State, ns: str) -> None:
        log = ns + "log"
        assert not await state.log_exists(log)
        for i in range(1, 4):
            assert await state.append(log, f"e{i}".encode(), ttl=30) == i
        assert await state.log_exists(log)

        async def read(after: int) -> list[tuple[int, bytes]]:
            return [entry async for entry in state.read_log(log, after)]

        follower = asyncio.ensure_future(read(1))
        await asyncio.sleep(0.05)
        await state.append(log, b"e4", ttl=30)
        await state.close_log(log, ttl=30)
        assert await asyncio.wait_for(follower, 5) == [(2, b"e2"), (3, b"e3"), (4, b"e4")]
        assert await read(3) == [(4, b"e4")]
        assert await read(0) == [(1, b"e1"), (2, b"e2"), (3, b"e3"), (4, b"e4")]
        assert [e async for e in state.read_log(ns + "missing")] == []

    run(state_url, test)


def test_broadcasts_reach_subscribers(state_url: str) -> None:
    async def test(state: State, ns: str) -> None:
        got: list[bytes] = []
        arrived = asyncio.Event()

        def listener(message: bytes) -> None:
            got.append(message)
            arrived.set()

        unsubscribe = await state.subscribe(ns + "ch", listener)
        await asyncio.sleep(0.1)  # Redis: the subscription is in place
        await state.publish(ns + "ch", b"stop it")
        await asyncio.wait_for(arrived.wait(), 5)
        assert got == [b"stop it"]
        await unsubscribe()

    run(state_url, test)


def test_sliding_windows_take_check_and_say_when(state_url: str) -> None:
    async def test(state: State, ns: str) -> None:
        key, t0 = ns + "w", 6000.0  # the start of a fixed 60 s window
        results = await asyncio.gather(*(state.window_take(key, 1, 5, 60, t0) for _ in range(8)))
        assert sorted(ok for ok, _ in results) == [False] * 3 + [True] * 5
        allowed, wait = await state.window_take(key, 1, 5, 60, t0 + 10)
        # the previous window slides out: 5 * (1 - f) + 1 <= 5 at f = 0.2, 12 s into the next
        assert not allowed and wait == pytest.approx(62)
        # 15 s into the next window a quarter of the previous one has slid out: 3.75 + 1 <= 5
        assert await state.window_take(key, 1, 5, 60, t0 + 75) == (True, 0.0)
        allowed, wait = await state.window_take(key, 1, 5, 60, t0 + 75)
        # 3.75 + 1 + 1 > 5: wait until 5 * (1 - f) + 1 + 1 <= 5, f = 0.4, 9 s later
        assert not allowed and wait == pytest.approx(9)
        # a check (amount 0) passes under the limit; adds are unconditional
        assert (await state.window_take(key, 0, 6, 60, t0 + 75))[0]
        await state.window_add(key, 10, 60, t0 + 75)
        assert not (await state.window_take(key, 0, 6, 60, t0 + 75))[0]
        await state.window_add(key, -10, 60, t0 + 75)
        assert (await state.window_take(key, 0, 6, 60, t0 + 75))[0]
        # two windows later nothing is left
        assert await state.window_take(key, 5, 5, 60, t0 + 185) == (True, 0.0)

    run(state_url, test)


def test_a_sliding_log_admits_exactly_the_limit_in_any_window(state_url: str) -> None:
    async def test(state: State, ns: str) -> None:
        key, t0 = ns + "e", 6050.0  # 50 s into a fixed minute: a boundary falls inside
        # at t0, t0+4, ..., t0+28: the 6th to 8th are over, whatever minute they fall in
        results = [await state.events_take(key, 5, 60, t0 + i * 4) for i in range(8)]
        assert [ok for ok, _ in results] == [True] * 5 + [False] * 3
        # refused: until the oldest (t0) leaves the window, 60 - 28 = 32 s after the last try
        assert not results[-1][0] and results[-1][1] == pytest.approx(32)
        allowed, wait = await state.events_take(key, 5, 60, t0 + 59.5)
        assert not allowed and wait == pytest.approx(0.5)
        assert await state.events_take(key, 5, 60, t0 + 60) == (True, 0.0)
        assert not (await state.events_take(key, 5, 60, t0 + 61))[0]  # t0+4 is still in
        assert await state.events_take(key, 5, 60, t0 + 64) == (True, 0.0)
        # much later the whole log has left the window; at once, exactly five of nine get in
        many = await asyncio.gather(*(state.events_take(key, 5, 60, t0 + 500) for _ in range(9)))
        assert sorted(ok for ok, _ in many) == [False] * 4 + [True] * 5

    run(state_url, test)


def test_an_admission_checks_every_limit_at_once_and_takes_nothing_when_refused(
    state_url: str,
) -> None:
    async def test(state: State, ns: str) -> None:
        t0 = 6030.0

        def check(holder: str, now: float = t0, **limits: Any) -> LimitCheck:
            return LimitCheck(
                now,
                60.0,
                spend_key=ns + "spend",
                tpm_key=ns + "tpm",
                slots_key=ns + "slots",
                rpm_key=ns + "rpm",
                holder=holder,
                slot_ttl=30.0,
                **limits,
            )

        limits = {"budget": 1.0, "tpm": 100.0, "max_streams": 2, "rpm": 3}
        assert await state.admit(check("a", **limits)) == (None, 0.0)
        assert await state.admit(check("b", **limits)) == (None, 0.0)
        # two slots held: refused, and no request was logged for it
        assert await state.admit(check("c", **limits)) == ("streams", 0.0)
        await state.slot_release(ns + "slots", "a")
        assert await state.admit(check("c", **limits)) == (None, 0.0)
        await state.slot_release(ns + "slots", "b")
        # three requests logged: the fourth is refused until the first leaves the minute,
        # and the slot it would have taken is still free
        refused, wait = await state.admit(check("d", now=t0 + 10, **limits))
        assert refused == "rpm" and wait == pytest.approx(50)
        assert await state.slot_acquire(ns + "slots", "x", 2, 30.0, t0 + 10)
        await state.slot_release(ns + "slots", "x")
        # tokens: the window is checked, not charged
        await state.window_add(ns + "tpm", 100, 60.0, t0 + 61)
        refused, wait = await state.admit(check("e", now=t0 + 61, **limits))
        assert refused == "tpm" and wait > 0
        # money: the budget is checked first of all
        await state.incr_float(ns + "spend", 1.5)
        assert await state.admit(check("f", now=t0 + 61, **limits)) == ("budget", 1.5)
        # a check without keys admits at once
        assert await state.admit(LimitCheck(t0)) == (None, 0.0)

    run(state_url, test)


def test_a_settlement_charges_and_releases_in_one_operation(state_url: str) -> None:
    async def test(state: State, ns: str) -> None:
        t0 = 6030.0
        assert await state.slot_acquire(ns + "slots", "h", 1, 30.0, t0)
        await state.settle(
            Settlement(
                t0,
                60.0,
                tpm_key=ns + "tpm",
                tokens=40,
                spend_key=ns + "spend",
                money=0.25,
                spend_ttl=100.0,
                slots_key=ns + "slots",
                holder="h",
            )
        )
        assert await state.incr_float(ns + "spend", 0.0) == 0.25
        assert not (await state.window_take(ns + "tpm", 61, 100, 60.0, t0))[0]  # 40 + 61 > 100
        assert (await state.window_take(ns + "tpm", 60, 100, 60.0, t0))[0]
        assert await state.slot_acquire(ns + "slots", "other", 1, 30.0, t0)  # released
        # only a charge: the slot is kept
        await state.settle(Settlement(t0, spend_key=ns + "spend", money=0.25))
        assert await state.incr_float(ns + "spend", 0.0) == 0.5
        assert not await state.slot_acquire(ns + "slots", "third", 1, 30.0, t0)

    run(state_url, test)


def test_slots_are_counted_renewed_released_and_expire(state_url: str) -> None:
    async def test(state: State, ns: str) -> None:
        key, now = ns + "s", 5000.0
        results = await asyncio.gather(
            *(state.slot_acquire(key, f"h{i}", 2, 30, now) for i in range(6))
        )
        assert sum(results) == 2
        holders = [f"h{i}" for i, ok in enumerate(results) if ok]
        assert await state.slot_acquire(key, holders[0], 2, 30, now + 20)  # renewed
        assert not await state.slot_acquire(key, "other", 2, 30, now + 20)
        await state.slot_release(key, holders[1])
        await state.slot_release(key, "never-held")
        assert await state.slot_acquire(key, "other", 2, 30, now + 21)
        assert not await state.slot_acquire(key, "third", 2, 30, now + 21)
        # holders[0] was renewed until now + 50; "other" holds until now + 51
        assert await state.slot_acquire(key, "third", 2, 30, now + 50.5)
        await state.slot_release(key, "other")
        await state.slot_release(key, "third")

    run(state_url, test)


def test_float_counters_add_and_expire(state_url: str) -> None:
    async def test(state: State, ns: str) -> None:
        key = ns + "f"
        assert await state.incr_float(key, 0, ttl=0.3) == 0.0
        results = await asyncio.gather(*(state.incr_float(key, 0.25, ttl=0.3) for _ in range(8)))
        assert max(results) == pytest.approx(2.0)
        assert await state.incr_float(key, -0.5) == pytest.approx(1.5)
        await asyncio.sleep(0.4)
        assert await state.incr_float(key, 0.1, ttl=10) == pytest.approx(0.1)
        await state.delete(key)

    run(state_url, test)
