"""Shared state kept in the process: the embedded default (one instance, nothing to run).

Expired entries are dropped when they are read and swept now and then on writes, so memory is
bounded by what is live. Locks, logs and broadcasts are asyncio primitives of the one loop.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from tidegate.state import (
    LimitCheck,
    Listener,
    Refusal,
    Settlement,
    admit_in_steps,
    settle_in_steps,
    window_allows,
    window_count,
    window_wait,
)

_SWEEP_EVERY = 1024  # writes between two sweeps of expired entries


class _Log:
    __slots__ = ("changed", "ended", "entries", "expires")

    def __init__(self) -> None:
        self.entries: list[bytes] = []
        self.ended = False
        self.expires: float | None = None
        self.changed = asyncio.Event()


class MemoryState:
    """`State` in this process's memory."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._values: dict[str, tuple[bytes, float | None]] = {}
        self._counters: dict[str, tuple[int, float | None]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._logs: dict[str, _Log] = {}
        self._channels: dict[str, list[Listener]] = {}
        self._floats: dict[str, tuple[float, float | None]] = {}
        #: Sliding logs: key -> the times of the events still in their window, oldest first.
        self._event_logs: dict[str, deque[float]] = {}
        #: Sliding windows: key -> [fixed window number, its count, the previous one's count].
        self._windows: dict[str, list[float]] = {}
        #: Slots: key -> holder -> expiry (wall-clock seconds, as the callers give `now`).
        self._slots: dict[str, dict[str, float]] = {}
        self._writes = 0

    def _expiry(self, ttl: float | None) -> float | None:
        return None if ttl is None else self._clock() + ttl

    def _alive(self, expires: float | None) -> bool:
        return expires is None or expires > self._clock()

    def _wrote(self) -> None:
        self._writes += 1
        if self._writes % _SWEEP_EVERY == 0:
            now = self._clock()
            for table in (self._values, self._counters, self._floats):
                for key in [k for k, (_, exp) in table.items() if exp is not None and exp <= now]:
                    del table[key]
            for key in [k for k, log in self._logs.items() if log.expires and log.expires <= now]:
                del self._logs[key]

    async def get(self, key: str) -> bytes | None:
        """The value under `key`, or None."""
        found = self._values.get(key)
        if found is None or not self._alive(found[1]):
            return None
        return found[0]

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Store `value` under `key` for `ttl` seconds."""
        self._values[key] = (value, self._expiry(ttl))
        self._wrote()

    async def delete(self, key: str) -> None:
        """Forget `key`."""
        self._values.pop(key, None)
        self._counters.pop(key, None)
        self._floats.pop(key, None)

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        """Add to a counter; a new one expires after `ttl`."""
        value, expires = self._counters.get(key, (0, None))
        if value and not self._alive(expires):
            value, expires = 0, None
        if not value and expires is None:
            expires = self._expiry(ttl)
        value += amount
        self._counters[key] = (value, expires)
        self._wrote()
        return value

    @asynccontextmanager
    async def lock(self, key: str, ttl: float) -> AsyncIterator[None]:
        """Hold the lock `key` for the block (`ttl` is ignored: the holder is this process)."""
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            yield

    async def append(self, log: str, data: bytes, ttl: float | None = None) -> int:
        """Append an entry to `log`; returns its number."""
        entry = self._logs.get(log)
        if entry is None or not self._alive(entry.expires):
            entry = self._logs[log] = _Log()
        entry.entries.append(data)
        if ttl is not None:
            entry.expires = self._expiry(ttl)
        entry.changed.set()
        entry.changed = asyncio.Event()
        self._wrote()
        return len(entry.entries)

    async def close_log(self, log: str, ttl: float) -> None:
        """Mark `log` ended; it expires `ttl` seconds later."""
        entry = self._logs.get(log)
        if entry is None:
            return
        entry.ended = True
        entry.expires = self._expiry(ttl)
        entry.changed.set()

    async def read_log(self, log: str, after: int = 0) -> AsyncIterator[tuple[int, bytes]]:
        """Entries after `after`, then new ones, until the log ends."""
        entry = self._logs.get(log)
        if entry is None or not self._alive(entry.expires):
            return
        position = max(0, after)
        while True:
            while position < len(entry.entries):
                position += 1
                yield position, entry.entries[position - 1]
            if entry.ended:
                return
            await entry.changed.wait()

    async def log_exists(self, log: str) -> bool:
        """True while the log exists and has not expired."""
        entry = self._logs.get(log)
        return entry is not None and self._alive(entry.expires)

    async def publish(self, channel: str, message: bytes) -> None:
        """Call every listener of `channel`."""
        for listener in list(self._channels.get(channel, ())):
            result = listener(message)
            if result is not None:
                await result

    async def subscribe(self, channel: str, listener: Listener) -> Callable[[], Awaitable[None]]:
        """Listen on `channel`; returns the unsubscribe function."""
        self._channels.setdefault(channel, []).append(listener)

        async def unsubscribe() -> None:
            listeners = self._channels.get(channel, [])
            if listener in listeners:
                listeners.remove(listener)
            if not listeners:
                self._channels.pop(channel, None)

        return unsubscribe

    def _window(self, key: str, window: float, now: float) -> tuple[list[float], float]:
        """The window `key` rolled forward to `now`, and how far its fixed window has gone."""
        number = float(now // window)
        entry = self._windows.get(key)
        if entry is None:
            if len(self._windows) > 4 * _SWEEP_EVERY:
                self._windows = {
                    k: w for k, w in self._windows.items() if w[0] >= number - 1 and (w[1] or w[2])
                }
            entry = self._windows[key] = [number, 0.0, 0.0]
        elif entry[0] < number:
            entry[2] = entry[1] if entry[0] == number - 1 else 0.0
            entry[0], entry[1] = number, 0.0
        fraction = 0.0 if entry[0] > number else (now - number * window) / window
        return entry, fraction

    async def window_take(
        self, key: str, amount: float, limit: float, window: float, now: float
    ) -> tuple[bool, float]:
        """Take `amount` from the sliding window `key` if it fits (see `State.window_take`)."""
        entry, fraction = self._window(key, window, now)
        used = window_count(entry[2], entry[1], fraction)
        if window_allows(used, amount, limit):
            entry[1] += amount
            return True, 0.0
        return False, window_wait(entry[2], entry[1], fraction, amount, limit, window)

    async def events_take(
        self, key: str, limit: int, window: float, now: float
    ) -> tuple[bool, float]:
        """Record one event in the sliding log `key` if it fits (see `State.events_take`)."""
        times = self._event_logs.get(key)
        if times is None:
            if len(self._event_logs) > 4 * _SWEEP_EVERY:
                self._event_logs = {
                    k: t for k, t in self._event_logs.items() if t and t[-1] > now - window
                }
            times = self._event_logs[key] = deque()
        while times and times[0] <= now - window:
            times.popleft()
        if len(times) < limit:
            times.append(now)
            return True, 0.0
        return False, times[0] + window - now

    async def admit(self, check: LimitCheck) -> tuple[Refusal | None, float]:
        """Every limit of `check` at once (see `State.admit`): nothing in between yields."""
        return await admit_in_steps(self, check)

    async def settle(self, settlement: Settlement) -> None:
        """Charge and release at once (see `State.settle`)."""
        await settle_in_steps(self, settlement)

    async def window_add(self, key: str, amount: float, window: float, now: float) -> None:
        """Add `amount` to the window `key`."""
        entry, _ = self._window(key, window, now)
        entry[1] += amount

    async def slot_acquire(self, key: str, holder: str, limit: int, ttl: float, now: float) -> bool:
        """Hold one of `key`'s slots as `holder` (renewed if held), unless all are held."""
        slots = self._slots.setdefault(key, {})
        for gone in [h for h, expires in slots.items() if expires <= now]:
            del slots[gone]
        if holder in slots or len(slots) < limit:
            slots[holder] = now + ttl
            return True
        return False

    async def slot_release(self, key: str, holder: str) -> None:
        """Give back `holder`'s slot of `key`."""
        slots = self._slots.get(key)
        if slots is not None:
            slots.pop(holder, None)
            if not slots:
                del self._slots[key]

    async def incr_float(self, key: str, amount: float, ttl: float | None = None) -> float:
        """Add to a float counter; a new one expires after `ttl`."""
        value, expires = self._floats.get(key, (0.0, None))
        if not self._alive(expires):
            value, expires = 0.0, None
        if expires is None:
            expires = self._expiry(ttl)
        value += amount
        self._floats[key] = (value, expires)
        self._wrote()
        return value

    async def aclose(self) -> None:
        """Nothing to release."""
