"""Shared state kept in Redis, so that every gateway instance sees the same tokens, counters,
histories and stream buffers (`state: redis://host:6379/0`).

Counters and log appends are Lua scripts, so they are atomic across instances. A log is a
Redis Stream whose entry ids are the entry numbers (`7-0` is entry 7), so "the entries after
N" is one `XRANGE`, and following a live log is `XREAD BLOCK`. A broadcast is Redis pub/sub,
read by one background task per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub

from tidegate.state import LimitCheck, Listener, Refusal, Settlement, window_wait

_PREFIX = "tidegate:"
#: Members of request logs are unique across instances: a random prefix per process, a counter.
_PROCESS = os.urandom(6).hex()
_members = itertools.count()
_BLOCK_MS = 1000

# KEYS[1] counter; ARGV[1] amount, ARGV[2] ttl in ms (0: none). New counters get the ttl.
_INCR = """
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if value == tonumber(ARGV[1]) and tonumber(ARGV[2]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return value
"""

# KEYS[1] stream, KEYS[2] its sequence; ARGV[1] data, ARGV[2] ttl in ms (0: none).
_APPEND = """
local n = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[1], n .. '-0', 'd', ARGV[1])
if tonumber(ARGV[2]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return n
"""


# Lua functions the limit scripts share, so that each structure is read and written one way:
# - roll(key, number, fraction): a sliding window, a hash {n: fixed window number, c: its count,
#   p: the previous one's}, rolled forward to the fixed window `number`; returns n, c, p and the
#   fraction to weigh p with (0 when another instance's clock is a little ahead: its window
#   counts). Nothing is written.
# - log_take(key, now, window, limit, member): a sliding log, one member per event scored by its
#   time; records `member` when fewer than `limit` are in the window. Returns true, or false and
#   the seconds until the oldest leaves the window.
# - slot_take(key, holder, limit, now, expiry, px): slots as a sorted set of holders scored by
#   their expiry; takes (or renews) `holder`'s slot unless `limit` others hold one.
_LUA = """
local function roll(key, number, fraction)
  local h = redis.call('HMGET', key, 'n', 'c', 'p')
  local n, c, p = tonumber(h[1]), tonumber(h[2]) or 0, tonumber(h[3]) or 0
  if n == nil then
    n = number
  elseif n < number then
    if n == number - 1 then p = c else p = 0 end
    c = 0
    n = number
  elseif n > number then
    fraction = 0
  end
  return n, c, p, fraction
end

local function log_take(key, now, window, limit, member)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  if redis.call('ZCARD', key) < limit then
    redis.call('ZADD', key, now, member)
    redis.call('PEXPIRE', key, math.ceil(window * 1000))
    return true, 0
  end
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return false, tonumber(oldest[2]) + window - now
end

local function slot_take(key, holder, limit, now, expiry, px)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if redis.call('ZSCORE', key, holder) or redis.call('ZCARD', key) < limit then
    redis.call('ZADD', key, expiry, holder)
    redis.call('PEXPIRE', key, px)
    return true
  end
  return false
end
"""

# A sliding window (`roll`). KEYS[1] the hash; ARGV[1] amount, ARGV[2] limit (-1: add without a
# check), ARGV[3] the fixed window number of `now`, ARGV[4] how far it has gone (0..1), ARGV[5]
# ttl in ms. Returns {allowed, previous, current, fraction} (numbers as strings: Lua numbers are
# floats).
_WINDOW = (
    _LUA
    + """
local amount, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local n, c, p, fraction = roll(KEYS[1], tonumber(ARGV[3]), tonumber(ARGV[4]))
local used = p * (1 - fraction) + c
local allowed = 1
if limit >= 0 and not (used < limit and used + amount <= limit) then
  allowed = 0
else
  c = c + amount
end
redis.call('HSET', KEYS[1], 'n', n, 'c', tostring(c), 'p', tostring(p))
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {allowed, tostring(p), tostring(c), tostring(fraction)}
"""
)

# A sliding log (`log_take`). KEYS[1] the log; ARGV: now, window, limit, member. Returns
# {1, "0"} when recorded, else {0, seconds until the oldest event leaves the window}.
_EVENTS = (
    _LUA
    + """
local ok, wait = log_take(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4])
if ok then return {1, '0'} end
return {0, tostring(wait)}
"""
)

# A slot (`slot_take`). KEYS[1] the set; ARGV[1] holder, ARGV[2] limit, ARGV[3] now, ARGV[4]
# the holder's expiry, ARGV[5] the set's ttl in ms.
_SLOT = (
    _LUA
    + """
if slot_take(KEYS[1], ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]) then return 1 end
return 0
"""
)

# Every limit of one admission at once (State.admit): the budget read, the token window checked
# (amount 0, nothing written), a slot taken, the request logged, in that order. KEYS: the spend
# counter, the token window, the slot set, the request log. ARGV: now, budget, tpm, the fixed
# window number and fraction, max_streams, holder, the holder's expiry, the slot set's ttl in
# ms, rpm, the window in seconds, the log member — a limit of -1 is not checked. Returns
# {'ok'}, or the refusing limit and its figures: {'budget', spent}, {'tpm', previous, current,
# fraction}, {'streams'}, {'rpm', seconds}; a refusal takes nothing.
_ADMIT = (
    _LUA
    + """
local now = tonumber(ARGV[1])
local budget = tonumber(ARGV[2])
if budget >= 0 then
  local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
  if spent >= budget then return {'budget', tostring(spent)} end
end
local tpm = tonumber(ARGV[3])
if tpm >= 0 then
  local _, c, p, fraction = roll(KEYS[2], tonumber(ARGV[4]), tonumber(ARGV[5]))
  if not (p * (1 - fraction) + c < tpm) then
    return {'tpm', tostring(p), tostring(c), tostring(fraction)}
  end
end
local streams = tonumber(ARGV[6])
local took = false
if streams >= 0 then
  if not slot_take(KEYS[3], ARGV[7], streams, now, ARGV[8], ARGV[9]) then return {'streams'} end
  took = true
end
local rpm = tonumber(ARGV[10])
if rpm >= 0 then
  local ok, wait = log_take(KEYS[4], now, tonumber(ARGV[11]), rpm, ARGV[12])
  if not ok then
    if took then redis.call('ZREM', KEYS[3], ARGV[7]) end
    return {'rpm', tostring(wait)}
  end
end
return {'ok'}
"""
)

# What a request charges and gives back (State.settle): tokens added to the window (as
# _WINDOW with no limit), money to the counter (as _INCR_FLOAT), the slot released. KEYS: the
# token window, the spend counter, the slot set. ARGV: tokens (0: none), the fixed window
# number, the window's ttl in ms, money (0: none), the counter's ttl in ms (0: none), the
# slot's holder ('': none).
_SETTLE = (
    _LUA
    + """
local tokens = tonumber(ARGV[1])
if tokens ~= 0 then
  local n, c, p = roll(KEYS[1], tonumber(ARGV[2]), 0)
  redis.call('HSET', KEYS[1], 'n', n, 'c', tostring(c + tokens), 'p', tostring(p))
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
if tonumber(ARGV[4]) ~= 0 then
  redis.call('INCRBYFLOAT', KEYS[2], ARGV[4])
  if tonumber(ARGV[5]) > 0 and redis.call('PTTL', KEYS[2]) == -1 then
    redis.call('PEXPIRE', KEYS[2], ARGV[5])
  end
end
if ARGV[6] ~= '' then
  redis.call('ZREM', KEYS[3], ARGV[6])
end
return 1
"""
)

# KEYS[1] counter; ARGV[1] amount, ARGV[2] ttl in ms (0: none). New counters get the ttl.
_INCR_FLOAT = """
local value = redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])
if tonumber(ARGV[2]) > 0 and redis.call('PTTL', KEYS[1]) == -1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return value
"""


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


class RedisState:
    """`State` in Redis."""

    def __init__(self, url: str, max_connections: int = 64):
        # A blocking pool: under load a command waits for a free connection instead of failing.
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=10
        )
        self._redis = aioredis.Redis(connection_pool=pool)
        self._incr = self._redis.register_script(_INCR)
        self._append = self._redis.register_script(_APPEND)
        self._window = self._redis.register_script(_WINDOW)
        self._slot = self._redis.register_script(_SLOT)
        self._events = self._redis.register_script(_EVENTS)
        self._admit = self._redis.register_script(_ADMIT)
        self._settle = self._redis.register_script(_SETTLE)
        self._incr_float = self._redis.register_script(_INCR_FLOAT)
        self._listeners: dict[str, list[Listener]] = {}
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None

    async def get(self, key: str) -> bytes | None:
        """The value under `key`, or None."""
        value: Any = await self._redis.get(_PREFIX + key)
        return _bytes(value) if value is not None else None

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Store `value` under `key` for `ttl` seconds."""
        px = max(1, int(ttl * 1000)) if ttl is not None else None
        await self._redis.set(_PREFIX + key, value, px=px)

    async def delete(self, key: str) -> None:
        """Forget `key`."""
        await self._redis.delete(_PREFIX + key)

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        """Add to a counter atomically; a new one expires after `ttl`."""
        px = max(1, int(ttl * 1000)) if ttl is not None else 0
        return int(await self._incr(keys=[_PREFIX + key], args=[amount, px]))

    @asynccontextmanager
    async def lock(self, key: str, ttl: float) -> AsyncIterator[None]:
        """Hold the lock `key` across instances for the block (released after `ttl` at most)."""
        lock = self._redis.lock(_PREFIX + "lock:" + key, timeout=ttl, blocking_timeout=ttl)
        if not await lock.acquire():
            raise TimeoutError(f"could not take the lock {key!r} within {ttl:g}s")
        try:
            yield
        finally:
            with contextlib.suppress(Exception):  # expired meanwhile: nothing to release
                await lock.release()

    async def append(self, log: str, data: bytes, ttl: float | None = None) -> int:
        """Append an entry to `log`; returns its number."""
        px = max(1, int(ttl * 1000)) if ttl is not None else 0
        keys = [_PREFIX + "log:" + log, _PREFIX + "log:" + log + ":n"]
        return int(await self._append(keys=keys, args=[data, px]))

    async def close_log(self, log: str, ttl: float) -> None:
        """Mark `log` ended (an entry readers recognise), to be forgotten `ttl` seconds later."""
        key = _PREFIX + "log:" + log
        px = max(1, int(ttl * 1000))
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xadd(key, {"end": b"1"}, id="*")
            pipe.pexpire(key, px)
            pipe.pexpire(key + ":n", px)
            await pipe.execute()

    async def read_log(self, log: str, after: int = 0) -> AsyncIterator[tuple[int, bytes]]:
        """Entries after `after`, then new ones (blocking reads), until the log ends."""
        key = _PREFIX + "log:" + log
        if not await self._redis.exists(key):
            return
        last = f"{max(0, after)}-0"
        while True:
            batch: Any = await self._redis.xread({key: last}, block=_BLOCK_MS, count=512)
            if not batch:
                if not await self._redis.exists(key):
                    return  # expired while we waited
                continue
            for entry_id, fields in batch[0][1]:
                last = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
                if b"end" in fields:
                    return
                yield int(last.split("-", 1)[0]), _bytes(fields[b"d"])

    async def log_exists(self, log: str) -> bool:
        """True while the log exists in Redis."""
        return bool(await self._redis.exists(_PREFIX + "log:" + log))

    async def publish(self, channel: str, message: bytes) -> None:
        """Send `message` to every instance's subscribers of `channel`."""
        await self._redis.publish(_PREFIX + channel, message)

    async def subscribe(self, channel: str, listener: Listener) -> Callable[[], Awaitable[None]]:
        """Listen on `channel` (one pub/sub connection and reader task per process)."""
        if self._pubsub is None:
            self._pubsub = self._redis.pubsub()
        if channel not in self._listeners:
            await self._pubsub.subscribe(_PREFIX + channel)
        self._listeners.setdefault(channel, []).append(listener)
        if self._reader is None:
            self._reader = asyncio.get_running_loop().create_task(self._read())

        async def unsubscribe() -> None:
            listeners = self._listeners.get(channel, [])
            if listener in listeners:
                listeners.remove(listener)
            if not listeners and channel in self._listeners:
                del self._listeners[channel]
                if self._pubsub is not None:
                    await self._pubsub.unsubscribe(_PREFIX + channel)

        return unsubscribe

    async def _read(self) -> None:
        assert self._pubsub is not None
        while True:
            if not self._listeners:
                await asyncio.sleep(0.05)
                continue
            message: Any = await self._pubsub.get_message(
                ignore_subscribe_messages=True, timeout=1.0
            )
            if message is None:
                continue
            channel = message["channel"].decode()[len(_PREFIX) :]
            for listener in list(self._listeners.get(channel, ())):
                result = listener(_bytes(message["data"]))
                if result is not None:
                    await result

    async def _window_call(
        self, key: str, amount: float, limit: float, window: float, now: float
    ) -> tuple[bool, float, float, float]:
        number = now // window
        fraction = (now - number * window) / window
        px = max(1, int(window * 2000))
        reply: Any = await self._window(
            keys=[_PREFIX + "window:" + key],
            args=[repr(float(amount)), repr(float(limit)), int(number), repr(fraction), px],
        )
        allowed, previous, current, fraction = reply
        return bool(int(allowed)), float(previous), float(current), float(fraction)

    async def window_take(
        self, key: str, amount: float, limit: float, window: float, now: float
    ) -> tuple[bool, float]:
        """Take `amount` from the sliding window `key` if it fits, in one script."""
        allowed, previous, current, fraction = await self._window_call(
            key, amount, limit, window, now
        )
        if allowed:
            return True, 0.0
        return False, window_wait(previous, current, fraction, amount, limit, window)

    async def events_take(
        self, key: str, limit: int, window: float, now: float
    ) -> tuple[bool, float]:
        """Record one event in the sliding log `key` if it fits, in one script."""
        member = _member(now)
        reply: Any = await self._events(
            keys=[_PREFIX + "events:" + key], args=[repr(float(now)), repr(window), limit, member]
        )
        return bool(int(reply[0])), float(reply[1])

    async def admit(self, check: LimitCheck) -> tuple[Refusal | None, float]:
        """Every limit of `check` in one script (see `State.admit`)."""
        c, window = check, check.window
        number = c.now // window
        fraction = (c.now - number * window) / window
        # Unused keys still name a key of their own: the script never touches them.
        keys = [
            _PREFIX + (c.spend_key or "unused"),
            _PREFIX + "window:" + (c.tpm_key or "unused"),
            _PREFIX + "slots:" + (c.slots_key or "unused"),
            _PREFIX + "events:" + (c.rpm_key or "unused"),
        ]
        args: list[str | int] = [
            repr(float(c.now)),
            repr(float(c.budget)) if c.spend_key is not None else "-1",
            repr(float(c.tpm)) if c.tpm_key is not None else "-1",
            int(number),
            repr(fraction),
            c.max_streams if c.slots_key is not None else -1,
            c.holder,
            repr(float(c.now + c.slot_ttl)),
            max(1, int(c.slot_ttl * 1000)),
            c.rpm if c.rpm_key is not None else -1,
            repr(float(window)),
            _member(c.now),
        ]
        reply: Any = await self._admit(keys=keys, args=args)
        verdict = _text(reply[0])
        if verdict == "ok":
            return None, 0.0
        if verdict == "budget":
            return "budget", float(reply[1])
        if verdict == "tpm":
            previous, current, fraction = (float(v) for v in reply[1:4])
            return "tpm", window_wait(previous, current, fraction, 0, c.tpm, window)
        if verdict == "streams":
            return "streams", 0.0
        return "rpm", float(reply[1])

    async def settle(self, settlement: Settlement) -> None:
        """Charge and release in one script (see `State.settle`)."""
        s = settlement
        tokens = s.tokens if s.tpm_key is not None else 0.0
        money = s.money if s.spend_key is not None else 0.0
        holder = s.holder if s.slots_key is not None else ""
        if not tokens and not money and not holder:
            return
        keys = [
            _PREFIX + "window:" + (s.tpm_key or "unused"),
            _PREFIX + (s.spend_key or "unused"),
            _PREFIX + "slots:" + (s.slots_key or "unused"),
        ]
        args: list[str | int] = [
            repr(float(tokens)),
            int(s.now // s.window),
            max(1, int(s.window * 2000)),
            repr(float(money)),
            max(1, int(s.spend_ttl * 1000)) if s.spend_ttl is not None else 0,
            holder,
        ]
        await self._settle(keys=keys, args=args)

    async def window_add(self, key: str, amount: float, window: float, now: float) -> None:
        """Add `amount` to the window `key`."""
        await self._window_call(key, amount, -1.0, window, now)

    async def slot_acquire(self, key: str, holder: str, limit: int, ttl: float, now: float) -> bool:
        """Hold one of `key`'s slots as `holder` (renewed if held), in one script."""
        px = max(1, int(ttl * 1000))
        args: list[str | int] = [holder, limit, repr(float(now)), repr(float(now + ttl)), px]
        return bool(int(await self._slot(keys=[_PREFIX + "slots:" + key], args=args)))

    async def slot_release(self, key: str, holder: str) -> None:
        """Give back `holder`'s slot of `key`."""
        await self._redis.zrem(_PREFIX + "slots:" + key, holder)

    async def incr_float(self, key: str, amount: float, ttl: float | None = None) -> float:
        """Add to a float counter atomically; a new one expires after `ttl`."""
        px = max(1, int(ttl * 1000)) if ttl is not None else 0
        value: Any = await self._incr_float(keys=[_PREFIX + key], args=[repr(float(amount)), px])
        return float(value)

    async def aclose(self) -> None:
        """Stop the reader task and close the connections."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._pubsub is not None:
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        await self._redis.aclose(close_connection_pool=True)


def _text(value: bytes | str) -> str:
    """A Redis reply element as text (the client may or may not decode replies)."""
    return value.decode() if isinstance(value, bytes) else value


def _member(now: float) -> str:
    """A request log's new member: its time, then what makes it unique."""
    return f"{now!r}:{_PROCESS}:{next(_members)}"
