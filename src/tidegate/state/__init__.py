"""Shared state: the one place where anything that outlives a request, or is shared between
instances, is kept — token caches, counters, session histories, stream buffers.

`State` is small on purpose: bytes under keys with a time to live, atomic counters, a lock for
"one refresh at a time", append-only event logs that readers can follow (resumable streams),
and a broadcast for signals such as "cancel this stream". `MemoryState` keeps it in the
process (the embedded default); `RedisState` keeps it in Redis, so that N gateway instances
share it (`state: redis://host:6379/0` in the config). Features use this interface and never
talk to Redis directly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol

#: A subscriber to a broadcast channel: called with each message.
Listener = Callable[[bytes], Awaitable[None] | None]


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

    async def aclose(self) -> None:
        """Release connections and background tasks."""


def open_state(url: str | None) -> State:
    """The state store a config names: `None` or `memory` for the process, `redis://...`."""
    if url is None or url == "memory":
        from tidegate.state.memory import MemoryState

        return MemoryState()
    if url.startswith(("redis://", "rediss://", "unix://")):
        from tidegate.state.redis import RedisState

        return RedisState(url)
    raise ValueError(f"unknown state store {url!r}: use memory or a redis:// URL")


__all__ = ["Listener", "State", "open_state"]
