"""Streams being served: each has an id (`X-Tidegate-Stream-Id`), an owner, and can be stopped.

The relay registers every stream it serves with the process's `StreamRegistry`. Stopping one
(a cancel request, or the end of the shutdown grace period) cancels the task serving it with a
reason; the relay recognises its own stop (`RunningStream.absorb`), ends the stream in-band in
the endpoint's format with that reason, and releases the upstream like after any other end.
"""

from __future__ import annotations

import asyncio
import os

from tidegate.errors import GatewayError


class RunningStream:
    """One stream being served, by this process's task `task`."""

    __slots__ = ("id", "owner", "reason", "task")

    def __init__(self, stream_id: str, owner: str | None, task: asyncio.Task[object]):
        self.id = stream_id
        self.owner = owner
        self.task = task
        self.reason: GatewayError | None = None  # why it was stopped, if it was

    def stop(self, reason: GatewayError) -> bool:
        """Stop the stream with `reason` (its in-band error); False if it already ended."""
        if self.task.done() or self.reason is not None:
            return False
        self.reason = reason
        self.task.cancel()
        return True

    def absorb(self) -> GatewayError | None:
        """Called on `CancelledError` in the task: the stop reason if this stop caused it (the
        cancellation is then absorbed), else None (someone else's: let it propagate)."""
        if self.reason is not None and self.task.uncancel() == 0:
            return self.reason
        return None


class StreamRegistry:
    """Every stream this process is serving, by id."""

    __slots__ = ("_prefix", "_streams")

    def __init__(self) -> None:
        self._streams: dict[str, RunningStream] = {}
        self._prefix = os.urandom(4).hex()

    def __len__(self) -> int:
        return len(self._streams)

    def start(self, owner: str | None) -> RunningStream:
        """Register the current task's stream under a new id."""
        task = asyncio.current_task()
        assert task is not None
        stream = RunningStream(f"st_{self._prefix}{os.urandom(8).hex()}", owner, task)
        self._streams[stream.id] = stream
        return stream

    def end(self, stream: RunningStream) -> None:
        """The stream is over."""
        self._streams.pop(stream.id, None)

    def get(self, stream_id: str) -> RunningStream | None:
        """A stream of this process, by id."""
        return self._streams.get(stream_id)

    def stop_all(self, reason: GatewayError) -> int:
        """Stop every stream with `reason`; returns how many were stopped."""
        return sum(stream.stop(reason) for stream in list(self._streams.values()))
