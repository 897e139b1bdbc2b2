"""Shared state: the one place where anything that outlives a request, or is shared between
instances, is kept — token caches, counters, session histories, stream buffers.

`State` is small on purpose: bytes under keys with a time to live, atomic counters, a lock for
"one refresh at a time", append-only event logs that readers can follow (resumable streams),
a broadcast for signals such as "cancel this stream", and the few atomic operations the
per-key limits need (`limits.py`): a sliding-window counter, counted slots with a time to live,
and a float counter for money. `MemoryState` keeps it in the
process (the embedded default); `RedisState` keeps it in Redis, so that N gateway instances
share it (`state: redis://host:6379/0` in the config). Features use this interface and never
talk to Redis directly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Literal, Protocol

#: A subscriber to a broadcast channel: called with each message.
Listener = Callable[[bytes], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class LimitCheck:
    """What one admission checks and takes, in this order (a key left None is not checked):
    a budget (`spend_key` must be under `budget`), a token window (`tpm_key`, a
    `window_take` window, must be under `tpm`), a stream slot (`slots_key`, `max_streams`
    held by distinct holders, taken as `holder` until `now + slot_ttl`), and a request log
    (`rpm_key`, an `events_take` log, fewer than `rpm` in `window` seconds)."""

    now: float
    window: float = 60.0
    spend_key: str | None = None
    budget: float = 0.0
    tpm_key: str | None = None
    tpm: float = 0.0
    slots_key: str | None = None
    holder: str = ""
    max_streams: int = 0
    slot_ttl: float = 0.0
    rpm_key: str | None = None
    rpm: int = 0


@dataclass(frozen=True, slots=True)
class Settlement:
    """What a request charges and gives back, in one operation: `tokens` added to the window
    `tpm_key` (as `window_add`), `money` to the counter `spend_key` (as `incr_float`, a new
    counter expiring after `spend_ttl`), and `holder`'s slot of `slots_key` released. A key
    left None (or a zero amount) is skipped."""

    now: float
    window: float = 60.0
    tpm_key: str | None = None
    tokens: float = 0.0
    spend_key: str | None = None
    money: float = 0.0
    spend_ttl: float | None = None
    slots_key: str | None = None
    holder: str = ""


#: Which limit refused an admission.
Refusal = Literal["budget", "tpm", "streams", "rpm"]


class State(Protocol):
    """Shared state, in the process or in Redis."""

    async def get(self, key: str) -> bytes | None:
        """The value under `key`, or None (missing or expired)."""

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Store `value` under `key`, for `ttl` seconds (None: until deleted)."""

    async def delete(self, key: str) -> None:
        """Forget `key`."""

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        """Add `amount` to the counter `key` atomically and return the new value; a new
        counter starts at 0 and expires after `ttl` seconds."""

    def lock(self, key: str, ttl: float) -> AbstractAsyncContextManager[None]:
        """Hold the lock `key` (at most `ttl` seconds) for the block; others wait."""

    async def append(self, log: str, data: bytes, ttl: float | None = None) -> int:
        """Append one entry to the event log `log`; returns its number (1, 2, 3, ...)."""

    async def close_log(self, log: str, ttl: float) -> None:
        """Mark the log ended; it is forgotten `ttl` seconds later."""

    def read_log(self, log: str, after: int = 0) -> AsyncIterator[tuple[int, bytes]]:
        """The entries of `log` numbered after `after`, then new ones as they are appended,
        until the log is ended (or does not exist)."""

    async def log_exists(self, log: str) -> bool:
        """True while the log has entries and has not expired."""

    async def publish(self, channel: str, message: bytes) -> None:
        """Send `message` to every subscriber of `channel`, in every instance."""

    async def subscribe(self, channel: str, listener: Listener) -> Callable[[], Awaitable[None]]:
        """Call `listener` with each message on `channel`; returns the unsubscribe function."""

    async def window_take(
        self, key: str, amount: float, limit: float, window: float, now: float
    ) -> tuple[bool, float]:
        """Take `amount` from the sliding-window budget `key` of `limit` per `window` seconds,
        atomically: allowed when the window's count is under `limit` and stays within it with
        `amount` (0 only checks). Returns (True, 0.0), or (False, seconds until it would be
        allowed) and takes nothing. `now` is wall-clock seconds (the caller's clock).

        The window is approximated with two fixed windows: the previous one counts in
        proportion to how much of it the sliding window still covers (`window_count`)."""

    async def events_take(
        self, key: str, limit: int, window: float, now: float
    ) -> tuple[bool, float]:
        """Record one event under `key` if fewer than `limit` happened in the `window`
        seconds before `now`, atomically — an exact sliding log (a request counter: it keeps
        one timestamp per event, so `limit` should be modest, like requests per minute).
        Returns (True, 0.0), or (False, seconds until the oldest event leaves the window)."""

    async def window_add(self, key: str, amount: float, window: float, now: float) -> None:
        """Add `amount` (negative: give back) to the window `key` unconditionally."""

    async def slot_acquire(self, key: str, holder: str, limit: int, ttl: float, now: float) -> bool:
        """Hold one of the `limit` slots of `key` as `holder` for `ttl` seconds (from `now`,
        wall-clock); False when all are held. Acquiring a slot already held renews it; slots
        not renewed or released expire (an instance that died does not hold them forever)."""

    async def slot_release(self, key: str, holder: str) -> None:
        """Give back `holder`'s slot of `key` (nothing if it has none)."""

    async def incr_float(self, key: str, amount: float, ttl: float | None = None) -> float:
        """Add `amount` to the float counter `key` atomically and return the new value (0
        reads it); a new counter starts at 0 and expires after `ttl` seconds."""

    async def admit(self, check: LimitCheck) -> tuple[Refusal | None, float]:
        """Check and take every limit of `check` atomically (one round trip in Redis):
        (None, 0.0) when all hold — the slot and the log entry are taken —, else the limit
        that refused and its figure (budget: what was spent; tpm and rpm: seconds until it
        would pass; streams: 0.0), with nothing taken.

        The checks are those of `incr_float(spend_key, 0)`, `window_take(tpm_key, 0, ...)`,
        `slot_acquire` and `events_take`, on the same keys."""

    async def settle(self, settlement: Settlement) -> None:
        """Charge and release what `settlement` says, in one round trip in Redis."""

    async def aclose(self) -> None:
        """Release connections and background tasks."""


def window_count(previous: float, current: float, fraction: float) -> float:
    """The sliding window's count: the current fixed window's, and the previous one's in
    proportion to the part of it the sliding window still covers (`fraction` is how far the
    current fixed window has gone, 0..1)."""
    return previous * (1.0 - fraction) + current


def window_allows(used: float, amount: float, limit: float) -> bool:
    """Whether `amount` may be taken from a window that counts `used` of `limit`."""
    return used < limit and used + amount <= limit


def window_wait(
    previous: float, current: float, fraction: float, amount: float, limit: float, window: float
) -> float:
    """Seconds until `window_allows` holds for `amount`, if nothing else is taken meanwhile."""
    room = max(0.0, limit - amount) if amount > 0 else limit * (1.0 - 1e-9)
    if current <= room and previous > 0:
        # previous * (1 - f) + current <= room, within this fixed window
        needed = 1.0 - (room - current) / previous
        return max(0.0, (needed - fraction) * window)
    if current <= room:
        return 0.0
    # in the next fixed window the current one is the previous: current * (1 - f) <= room
    needed = 1.0 - room / current if current > 0 else 0.0
    return (1.0 - fraction) * window + max(0.0, needed) * window


async def admit_in_steps(state: State, check: LimitCheck) -> tuple[Refusal | None, float]:
    """`State.admit` by its single operations, for a state in which a coroutine without
    awaits between them is atomic (the process's memory)."""
    c = check
    if c.spend_key is not None:
        spent = await state.incr_float(c.spend_key, 0.0)
        if spent >= c.budget:
            return "budget", spent
    if c.tpm_key is not None:
        ok, wait = await state.window_take(c.tpm_key, 0, c.tpm, c.window, c.now)
        if not ok:
            return "tpm", wait
    if c.slots_key is not None and not await state.slot_acquire(
        c.slots_key, c.holder, c.max_streams, c.slot_ttl, c.now
    ):
        return "streams", 0.0
    if c.rpm_key is not None:
        ok, wait = await state.events_take(c.rpm_key, c.rpm, c.window, c.now)
        if not ok:
            if c.slots_key is not None:
                await state.slot_release(c.slots_key, c.holder)
            return "rpm", wait
    return None, 0.0


async def settle_in_steps(state: State, settlement: Settlement) -> None:
    """`State.settle` by its single operations."""
    s = settlement
    if s.tokens and s.tpm_key is not None:
        await state.window_add(s.tpm_key, s.tokens, s.window, s.now)
    if s.money and s.spend_key is not None:
        await state.incr_float(s.spend_key, s.money, ttl=s.spend_ttl)
    if s.slots_key is not None:
        await state.slot_release(s.slots_key, s.holder)


def open_state(url: str | None) -> State:
    """The state store a config names: `None` or `memory` for the process, `redis://...`."""
    if url is None or url == "memory":
        from tidegate.state.memory import MemoryState

        return MemoryState()
    if url.startswith(("redis://", "rediss://", "unix://")):
        from tidegate.state.redis import RedisState

        return RedisState(url)
    raise ValueError(f"unknown state store {url!r}: use memory or a redis:// URL")


__all__ = [
    "LimitCheck",
    "Listener",
    "Refusal",
    "Settlement",
    "State",
    "admit_in_steps",
    "open_state",
    "settle_in_steps",
    "window_allows",
    "window_count",
    "window_wait",
]
