"""The conversations the gateway keeps, at unit level over the in-memory state with a clock.

Invariants: a session outlives its TTL by nothing and each answer restarts it; the kept turns
never exceed the token budget (characters / 4) and are dropped oldest exchange first; one
identity never reads another's session; two answers finishing together are both kept.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import orjson
import pytest

from tidegate.errors import GatewayError
from tidegate.events import Message
from tidegate.sessions import Sessions, estimate_tokens, session_key, trim
from tidegate.state.memory import MemoryState


class Clock:
    """A hand-moved monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run(test: Callable[[Sessions, Clock], Coroutine[Any, Any, None]], budget: int = 8000) -> None:
    clock = Clock()
    sessions = Sessions(MemoryState(clock), budget_tokens=budget, ttl=60)
    asyncio.run(test(sessions, clock))


def texts(turns: Sequence[Message]) -> list[tuple[str, str]]:
    return [(m.role, m.text()) for m in turns]


def test_estimate_is_characters_over_four_rounded_up() -> None:
    assert [estimate_tokens("x" * n) for n in (0, 1, 4, 5, 8)] == [0, 1, 1, 2, 2]


def test_an_exchange_is_kept_and_read_back_in_order() -> None:
    async def test(sessions: Sessions, clock: Clock) -> None:
        assert await sessions.turns("key-a", "s") == []
        assert await sessions.remember("key-a", "s", "q1", "a1")
        assert await sessions.remember("key-a", "s", "q2", "a2")
        assert texts(await sessions.turns("key-a", "s")) == [
            ("user", "q1"),
            ("assistant", "a1"),
            ("user", "q2"),
            ("assistant", "a2"),
        ]

    run(test)


def test_sessions_of_other_identities_are_invisible() -> None:
    async def test(sessions: Sessions, clock: Clock) -> None:
        await sessions.remember("key-a", "shared-id", "secret question", "secret answer")
        assert await sessions.turns("key-b", "shared-id") == []
        assert await sessions.turns(None, "shared-id") == []
        assert not await sessions.forget("key-b", "shared-id")
        assert len(await sessions.turns("key-a", "shared-id")) == 2
        # No session id can reach into another identity's keys.
        assert session_key("key-b", "x:key-a:shared-id") != session_key("key-a", "shared-id")

    run(test)


def test_no_key_means_the_anonymous_identity() -> None:
    assert session_key(None, "s") == "session:anonymous:s"


def test_a_session_expires_after_its_ttl_and_each_answer_restarts_it() -> None:
    async def test(sessions: Sessions, clock: Clock) -> None:
        await sessions.remember("k", "s", "q1", "a1")
        clock.now += 50
        await sessions.remember("k", "s", "q2", "a2")  # restarts the 60 s
        clock.now += 50
        assert len(await sessions.turns("k", "s")) == 4
        clock.now += 11
        assert await sessions.turns("k", "s") == []

    run(test)


def test_trimming_drops_the_oldest_exchanges_to_fit_the_budget() -> None:
    async def test(sessions: Sessions, clock: Clock) -> None:
        for i in range(5):
            # 40 + 40 characters: 20 estimated tokens per exchange.
            await sessions.remember("k", "s", f"q{i}".ljust(40, "."), f"a{i}".ljust(40, "."))
        kept = texts(await sessions.turns("k", "s"))
        assert [role for role, _ in kept] == ["user", "assistant"] * 2
        assert [text[:2] for _, text in kept] == ["q3", "a3", "q4", "a4"]
        assert sum(estimate_tokens(text) for _, text in kept) <= 45

    run(test, budget=45)


def test_an_exchange_larger_than_the_budget_is_not_kept() -> None:
    async def test(sessions: Sessions, clock: Clock) -> None:
        await sessions.remember("k", "s", "small", "small")
        await sessions.remember("k", "s", "x" * 400, "y" * 400)
        assert await sessions.turns("k", "s") == []

    run(test, budget=100)


@pytest.mark.parametrize(
    ("turns", "budget", "kept"),
    [
        ([], 10, 0),
        ([{"role": "user", "content": "x" * 8}] * 4, 8, 4),
        ([{"role": "user", "content": "x" * 8}] * 4, 7, 2),
        ([{"role": "user", "content": "x" * 8}] * 3, 5, 1),
        ([{"role": "user", "content": "x" * 8}] * 4, 1, 0),
    ],
)
def test_trim(turns: list[dict[str, str]], budget: int, kept: int) -> None:
    assert len(trim(turns, budget)) == kept


def test_concurrent_answers_are_both_kept() -> None:
    async def test(sessions: Sessions, clock: Clock) -> None:
        await asyncio.gather(*(sessions.remember("k", "s", f"q{i}", f"a{i}") for i in range(10)))
        assert len(await sessions.turns("k", "s")) == 20

    run(test)


def test_forget() -> None:
    async def test(sessions: Sessions, clock: Clock) -> None:
        await sessions.remember("k", "s", "q", "a")
        assert await sessions.forget("k", "s")
        assert await sessions.turns("k", "s") == []
        assert not await sessions.forget("k", "s")

    run(test)


def test_a_damaged_value_reads_as_an_empty_session() -> None:
    async def test(sessions: Sessions, clock: Clock) -> None:
        await sessions.state.set(session_key("k", "s"), b"{not json")
        assert await sessions.turns("k", "s") == []
        await sessions.state.set(session_key("k", "s"), orjson.dumps([{"role": "system"}, 5]))
        assert await sessions.turns("k", "s") == []
        assert await sessions.remember("k", "s", "q", "a")
        assert len(await sessions.turns("k", "s")) == 2

    run(test)


class BrokenState(MemoryState):
    async def get(self, key: str) -> bytes | None:
        raise ConnectionRefusedError("state store down")


def test_a_store_that_fails_is_a_503_on_read_and_a_warning_on_write() -> None:
    async def main() -> None:
        sessions = Sessions(BrokenState(), budget_tokens=100, ttl=60)
        with pytest.raises(GatewayError) as caught:
            await sessions.turns("k", "s")
        assert caught.value.status == 503
        assert caught.value.code == "session_store_unavailable"
        assert "state store down" not in caught.value.message
        assert not await sessions.remember("k", "s", "q", "a")

    asyncio.run(main())
