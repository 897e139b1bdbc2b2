"""How late the event loop runs: the one number that shows whether anything blocks it.

A timer re-arms itself every `interval` seconds and records how much later than due it ran.
The longest lag since the last reading is what `take_max()` returns; a healthy loop stays at a
millisecond or two, and anything that parses, inflates or copies too much at once shows here.
"""

from __future__ import annotations

import asyncio


class LoopLag:
    """Measures the event loop's scheduling lag with one self re-arming timer."""

    __slots__ = ("_due", "_handle", "_interval", "_loop", "max_lag")

    def __init__(self, interval: float = 0.025):
        self._interval = interval
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0
        self.max_lag = 0.0

    def start(self) -> None:
        """Start measuring on the running loop."""
        self._loop = asyncio.get_running_loop()
        self._due = self._loop.time() + self._interval
        self._handle = self._loop.call_at(self._due, self._tick)

    def stop(self) -> None:
        """Stop measuring."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def take_max(self) -> float:
        """The longest lag in seconds since the previous call (or since `start`)."""
        lag, self.max_lag = self.max_lag, 0.0
        return lag

    def _tick(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        lag = now - self._due
        if lag > self.max_lag:
            self.max_lag = lag
        self._due = now + self._interval
        self._handle = self._loop.call_at(self._due, self._tick)
