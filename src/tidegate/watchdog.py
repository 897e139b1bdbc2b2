"""One timer per upstream call that enforces the first-byte, idle and total deadlines.

Re-arming a timer for every chunk would cost a heap operation per chunk. Instead the relay
only records when it started waiting for the upstream (`begin_wait`, a float store) and the
single timer, when it fires, re-arms itself for the true deadline if activity moved it.
A deadline that really passes cancels the relay task; the relay turns that cancellation into
`UpstreamTimeout` after checking, with `Task.uncancel`, that the cancellation was ours.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from tidegate.errors import UpstreamTimeout
from tidegate.settings import Timeouts

_EARLY = 0.002  # timers may fire up to a clock tick early


class WaitMeter(Protocol):
    """Where the seconds spent waiting for upstreams are added up (a request's context)."""

    waited: float


class _Meter:
    waited = 0.0


class Watchdog:
    """Watches one upstream call; `expired` names the deadline that passed, if one did."""

    __slots__ = (
        "_first_byte_at",
        "_handle",
        "_idle",
        "_loop",
        "_task",
        "_total_at",
        "expired",
        "meter",
        "phase",
        "timeouts",
        "wait_started",
        "waiting",
    )

    def __init__(self, timeouts: Timeouts, *, streaming: bool, meter: WaitMeter | None = None):
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None, "Watchdog must be created inside a task"
        self._task = task
        self.timeouts = timeouts
        now = self._loop.time()
        self._total_at = now + timeouts.total
        self._first_byte_at = now + timeouts.first_byte
        self._idle = timeouts.idle
        self.phase = "first_byte" if streaming else "total"
        self.wait_started = now
        self.waiting = True
        self.meter: WaitMeter = meter or _Meter()  # where the seconds spent waiting are added up
        self.expired: str | None = None
        self._handle = self._loop.call_at(self._deadline(), self._fire)

    def streaming(self) -> None:
        """The first event has arrived: from now on the idle gap is watched."""
        self.phase = "idle"
        self._handle.cancel()
        self.wait_started = self._loop.time()
        self._handle = self._loop.call_at(self._deadline(), self._fire)

    def begin_wait(self) -> None:
        """The relay starts waiting for the upstream's next chunk."""
        self.wait_started = self._loop.time()
        self.waiting = True

    def end_wait(self) -> None:
        """A chunk arrived; time spent writing to the client is not an upstream gap."""
        self.waiting = False
        self.meter.waited += self._loop.time() - self.wait_started

    def stop(self) -> None:
        """Disarm the timer."""
        self._handle.cancel()

    def cancelled_us(self) -> bool:
        """Call on CancelledError: true if this watchdog caused it (and it is now absorbed)."""
        return self.expired is not None and self._task.uncancel() == 0

    def error(self) -> UpstreamTimeout:
        """The timeout error for the deadline that passed."""
        phase = self.expired or self.phase
        seconds = getattr(self.timeouts, phase)
        return UpstreamTimeout(phase, seconds)

    def _deadline(self) -> float:
        if self.phase == "first_byte":
            return min(self._first_byte_at, self._total_at)
        if self.phase == "idle":
            return min(self.wait_started + self._idle, self._total_at)
        return self._total_at

    def _fire(self) -> None:
        now = self._loop.time()
        if now + _EARLY >= self._total_at:
            self.expired = "total"
        elif self.phase == "idle" and not self.waiting:
            self._handle = self._loop.call_at(now + self._idle, self._fire)
            return
        elif now + _EARLY >= self._deadline():
            self.expired = self.phase
        else:
            self._handle = self._loop.call_at(self._deadline(), self._fire)
            return
        self._task.cancel()
