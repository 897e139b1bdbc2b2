"""Time as the request pipeline sees it: a clock that tests can replace.

Cooldown, backoff and the failover budget read `Clock.now()` and wait with `Clock.sleep()`, so
that in-process tests drive them with `tests`' manual clock instead of real sleeps. Deadlines on
upstream I/O (the watchdog) use the event loop's own timers.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """Monotonic seconds, and a way to wait for some of them."""

    def now(self) -> float:
        """Seconds on a monotonic clock."""

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds`."""


class SystemClock:
    """The real monotonic clock and `asyncio.sleep`."""

    def now(self) -> float:
        """`time.monotonic()`."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """`asyncio.sleep(seconds)`."""
        await asyncio.sleep(seconds)


SYSTEM_CLOCK = SystemClock()
