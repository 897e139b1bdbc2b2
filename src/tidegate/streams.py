"""Streams being served: each has an id (`X-Tidegate-Stream-Id`), an owner, and can be stopped.

The relay registers every stream it serves with the process's `StreamRegistry`. Stopping one
(a cancel request, or the end of the shutdown grace period) cancels the task serving it with a
reason; the relay recognises its own stop (`RunningStream.absorb`), ends the stream in-band in
the endpoint's format with that reason, and releases the upstream like after any other end.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import secrets
from collections.abc import Awaitable, Callable

import orjson

from tidegate import metrics
from tidegate.asgi import Send, SendMessage
from tidegate.errors import ClientDisconnected, GatewayError, StreamCancelled
from tidegate.state import State

Unsubscribe = Callable[[], Awaitable[None]]


class RunningStream:
    """One stream being served, by this process's task `task`."""

    __slots__ = ("id", "owner", "reason", "task")

    def __init__(self, stream_id: str, owner: str, task: asyncio.Task[object]):
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
    """Every stream this process is serving, by id; who started each is also recorded in the
    shared state, so that a cancel or a resume arriving at another instance can be checked."""

    __slots__ = ("_prefix", "_state", "_streams")

    def __init__(self, state: State) -> None:
        self._streams: dict[str, RunningStream] = {}
        self._prefix = os.urandom(4).hex()
        self._state = state

    def __len__(self) -> int:
        return len(self._streams)

    async def start(self, owner: str) -> RunningStream:
        """Register the current task's stream under a new id, owned by `owner`."""
        task = asyncio.current_task()
        assert task is not None
        stream = RunningStream(f"st_{self._prefix}{os.urandom(8).hex()}", owner, task)
        self._streams[stream.id] = stream
        metrics.OPEN_STREAMS.inc()
        await self._state.set(OWNER_KEY + stream.id, owner.encode(), OWNER_TTL)
        return stream

    async def end(self, stream: RunningStream, keep: float = 0) -> None:
        """The stream is over; its owner is remembered `keep` more seconds (for a resume)."""
        if self._streams.pop(stream.id, None) is not None:
            metrics.OPEN_STREAMS.dec()
        if keep:
            await self._state.set(OWNER_KEY + stream.id, stream.owner.encode() + _ENDED, keep)
        else:
            await self._state.delete(OWNER_KEY + stream.id)

    def get(self, stream_id: str) -> RunningStream | None:
        """A stream of this process, by id."""
        return self._streams.get(stream_id)

    def stop_all(self, reason: GatewayError) -> int:
        """Stop every stream with `reason`; returns how many were stopped."""
        return sum(stream.stop(reason) for stream in list(self._streams.values()))


#: How long a stream whose request asked to be `resumable` goes on without its client, when
#: `streams.resume_grace` is 0.
DEFAULT_RESUME_GRACE = 30.0
OWNER_KEY = "stream-owner:"
RESUMED_KEY = "stream-resumed:"
LOG_PREFIX = "stream:"
TOKEN_KEY = "stream-token:"
#: How long a stream's owner is remembered while it runs (its end shortens this).
OWNER_TTL = 6 * 3600.0
CANCEL_CHANNEL = "stream-cancel"


class StreamLog:
    """A stream's events kept in the shared state, so that a client can resume it (through any
    instance) from the last event it saw: one log entry per event, numbered like the events'
    `id:` lines (comments such as pings are not events and are not kept), kept `retention`
    seconds after the stream ends."""

    __slots__ = ("_partial", "_state", "_token_key", "_ttl", "name")

    def __init__(self, state: State, stream_id: str, retention: float):
        self._state = state
        self._ttl = retention
        self._partial = b""
        self.name = LOG_PREFIX + stream_id
        self._token_key = TOKEN_KEY + stream_id

    async def begin(self) -> str:
        """A new resume token for the stream: it lets a client that has no key to send (a
        browser `EventSource`) read this stream, and only this one."""
        token = secrets.token_urlsafe(18)
        await self._state.set(self._token_key, token.encode(), OWNER_TTL)
        return token

    async def append(self, data: bytes) -> None:
        """Keep the whole events in `data`; a trailing part of an event waits for the rest."""
        frames = (self._partial + data).split(b"\n\n")
        self._partial = frames.pop()
        for frame in frames:
            if frame and not frame.startswith(b":"):
                await self._state.append(self.name, frame + b"\n\n", ttl=self._ttl + 3600)

    def tee(self, send: Send) -> Send:
        """`send`, keeping every body it carries in this log first (so the log is complete
        even when the client is gone)."""

        async def send_and_keep(message: SendMessage) -> None:
            body = message.get("body")
            if isinstance(body, bytes) and body:
                await self.append(body)
            await send(message)

        return send_and_keep

    async def close(self) -> None:
        """The stream ended: readers stop at its end; it is forgotten `retention` later."""
        await self._state.close_log(self.name, self._ttl)
        token = await self._state.get(self._token_key)
        if token is not None:
            await self._state.set(self._token_key, token, self._ttl)


async def token_matches(state: State, stream_id: str, token: str) -> bool:
    """Whether `token` is the stream's resume token."""
    expected = await state.get(TOKEN_KEY + stream_id)
    return expected is not None and hmac.compare_digest(expected, token.encode())


def keep_for_resume(state: State, running: RunningStream, grace: float) -> Callable[[], bool]:
    """A disconnect hook (`DisconnectWatcher.on_disconnect`) for a resumable stream: keep
    generating when the client leaves; after `grace` seconds, stop unless a client has resumed
    the stream meanwhile."""

    def on_disconnect() -> bool:
        async def later() -> None:
            await asyncio.sleep(grace)
            if await state.get(RESUMED_KEY + running.id) is None:
                running.stop(ClientDisconnected("the client left and did not resume"))

        task = asyncio.get_running_loop().create_task(later())
        _pending.add(task)
        task.add_done_callback(_pending.discard)
        return True

    return on_disconnect


_pending: set[asyncio.Task[None]] = set()  # timers of keep_for_resume, referenced until done


_ENDED = b"\x00ended"


async def owner_of(state: State, stream_id: str) -> tuple[str | None, bool]:
    """Who started the stream (None: unknown or expired), and whether it has ended."""
    raw = await state.get(OWNER_KEY + stream_id)
    if raw is None:
        return None, False
    if raw.endswith(_ENDED):
        return raw[: -len(_ENDED)].decode(), True
    return raw.decode(), False


async def request_cancel(state: State, stream_id: str, owner: str) -> None:
    """Ask every instance to cancel the stream if `owner` started it there."""
    await state.publish(CANCEL_CHANNEL, orjson.dumps({"id": stream_id, "owner": owner}))


async def listen_for_cancels(registry: StreamRegistry, state: State) -> Unsubscribe:
    """Stop this process's streams that another instance was asked to cancel."""

    def on_message(message: bytes) -> None:
        try:
            request = orjson.loads(message)
            stream = registry.get(request["id"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return
        if stream is not None and stream.owner == request.get("owner"):
            stream.stop(StreamCancelled("the stream was cancelled by its client"))

    return await state.subscribe(CANCEL_CHANNEL, on_message)
