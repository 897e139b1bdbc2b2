"""Limits per client key: the models a key may use, requests and tokens per minute, concurrent
streams, and a budget in money per calendar period — from the key's `KeyPolicy`
(`Identity.policy`, a static key of the config or a managed key).

`Limits.admit` runs before the upstream is contacted: a model outside the key's list is a 403,
a key over a limit a 429 naming the limit, with `Retry-After`. An admitted request holds a
`Lease` until it ends, however it ends (the chat flow releases it in a `finally`):

- **requests per minute**: an exact sliding log (`State.events_take`: one timestamp per
  request of the last 60 seconds), one request taken at admission — N admitted in any minute,
  across every instance;
- **tokens per minute**: a sliding window (two fixed minute windows, the previous one weighted
  by how much of it the last 60 seconds still cover: no per-token entries), charged as the
  answer streams — input tokens when the upstream reports them (often at the start), output
  tokens estimated from the upstream's events (about one token per `data:` event) or reported
  usage, whichever is more, then set
  right from the final usage when the request ends. A key already at its limit is refused;
  one request may take it over;
- **concurrent streams** (`max_streams`, streamed or not): a slot held from admission to the
  end of the request, never released at the first byte. Slots expire `SLOT_TTL` seconds after
  their last renewal (renewed every third of that while held), so an instance that dies does
  not hold them forever;
- **budget** per `period` (day, week, month: calendar periods in UTC): what the requests cost
  at the config's `prices` (`pricing.cost`), charged as tokens stream and set right at the end;
  a request is refused while the spend is at or over the budget, so it is overspent by at most
  the requests in flight when it was reached (one, with `max_streams: 1`).

Counters live in the shared state: in the process by default, Redis with `state: redis://...`,
so every instance enforces one limit. Admission is one atomic operation (`State.admit`: one
Lua script, one round trip, whatever limits the key has); charges (`window_add`, `incr_float`)
and the slot's release (`slot_release`) follow as the request runs and ends. Time is the
injected wall clock (`Services(wall=...)`), so tests move it by hand.
A key is named by `Identity.label` (its name, or a prefix of its hash), never by the key.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import functools
import itertools
import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

from tidegate.auth import Identity
from tidegate.errors import Forbidden, GatewayError, RateLimited, StateUnavailable
from tidegate.events import Event, Usage, UsageUpdate
from tidegate.logs import log
from tidegate.pricing import cost, price_for
from tidegate.settings import KeyPolicy, Price
from tidegate.state import LimitCheck, Settlement, State

MINUTE = 60.0
#: Seconds a stream slot lives without renewal (a dead instance's slots free after this).
SLOT_TTL = 120.0
#: Tokens (estimated or reported) gathered before a charge is written mid-stream.
CHARGE_EVERY = 64
#: Retry-After of a refusal for concurrent streams: a stream may end any moment.
STREAM_RETRY = 1.0

#: How long a period's spend counter is kept after it was first charged: the longest period
#: (a month) and a day.
SPEND_TTL = 32 * 86400.0

#: Who holds a stream slot: this process (random, so instances never collide) and a counter.
_PROCESS = os.urandom(6).hex() + ":"
_holders = itertools.count()
_PREFIX = "limit:"


def period_bounds(period: str, now: float) -> tuple[str, float]:
    """The calendar period (UTC) containing `now`: its name (`2026-11-30`, `2026-W48`,
    `2026-11`) and when it ends, in wall-clock seconds."""
    return _period_of_day(period, int(now // 86400))


@functools.lru_cache(maxsize=64)
def _period_of_day(period: str, day_number: int) -> tuple[str, float]:
    day = datetime.fromtimestamp(day_number * 86400, UTC)
    if period == "day":
        return day.strftime("%Y-%m-%d"), (day + timedelta(days=1)).timestamp()
    if period == "week":
        year, week, weekday = day.isocalendar()
        end = day + timedelta(days=8 - weekday)
        return f"{year}-W{week:02d}", end.timestamp()
    days = calendar.monthrange(day.year, day.month)[1]
    end = day.replace(day=1) + timedelta(days=days)
    return day.strftime("%Y-%m"), end.timestamp()


def _money(amount: float) -> str:
    return f"{amount:.2f}" if amount >= 0.01 else f"{amount:.6f}".rstrip("0").rstrip(".")


def counted(policy: KeyPolicy) -> bool:
    """True when the policy has a limit that is counted (not only `models`)."""
    return (
        policy.rpm is not None
        or policy.tpm is not None
        or policy.max_streams is not None
        or policy.budget is not None
    )


class Limits:
    """Enforces client keys' policies on the shared state (one per process, in `Services`)."""

    __slots__ = ("_prices", "_state", "_wall")

    def __init__(
        self, state: State, prices: Mapping[str, Price], wall: Callable[[], float]
    ) -> None:
        self._state = state
        self._prices = prices
        self._wall = wall

    def check_model(self, identity: Identity, policy: KeyPolicy, model: str) -> None:
        """403 naming the model when the key's non-empty `models` list does not have it."""
        if not identity.may_use(model):
            allowed = ", ".join(policy.models)
            raise Forbidden(
                f"key {identity.label!r} may not use model {model!r}; its models: {allowed}"
            )

    async def admit(
        self, identity: Identity, policy: KeyPolicy, model: str, *, check_model: bool = True
    ) -> Lease:
        """Admit one request of `identity` for `model`, or raise 403/429 (503 when the shared
        state cannot be reached: limits fail closed). The lease must be ended (`Lease.end`)
        whatever happens next. (`check_model=False`: the caller checked the models itself — a
        workflow's steps.)"""
        if check_model:
            self.check_model(identity, policy, model)
        try:
            return await self._admit(identity, policy, model)
        except GatewayError:
            raise
        except Exception as exc:
            log.warning("key %r: its limits cannot be checked: %s", identity.label, repr(exc))
            raise StateUnavailable(
                f"the limits of key {identity.label!r} cannot be checked: the shared state "
                f"is unreachable ({type(exc).__name__}); try again shortly"
            ) from None

    async def _admit(self, identity: Identity, policy: KeyPolicy, model: str) -> Lease:
        now, label = self._wall(), identity.label
        base = _PREFIX + identity.key_id + ":"
        spend_key = ends = None
        if policy.budget is not None:
            name, ends = period_bounds(policy.period, now)
            spend_key = f"{base}spend:{name}"
        tpm_key = base + "tpm" if policy.tpm is not None else None
        slots_key = base + "streams" if policy.max_streams is not None else None
        holder = f"{_PROCESS}{next(_holders)}"
        check = LimitCheck(
            now,
            MINUTE,
            spend_key=spend_key,
            budget=policy.budget or 0.0,
            tpm_key=tpm_key,
            tpm=policy.tpm or 0,
            slots_key=slots_key,
            holder=holder,
            max_streams=policy.max_streams or 0,
            slot_ttl=SLOT_TTL,
            rpm_key=base + "rpm" if policy.rpm is not None else None,
            rpm=policy.rpm or 0,
        )
        refused, figure = await self._state.admit(check)
        if refused == "budget":
            assert policy.budget is not None and ends is not None
            raise RateLimited(
                f"key {label!r} is over its budget of {_money(policy.budget)} per "
                f"{policy.period} (spent {_money(figure)}); it renews at "
                f"{datetime.fromtimestamp(ends, UTC):%Y-%m-%dT%H:%M:%SZ}",
                retry_after=ends - now,
                code="budget_exceeded",
            )
        if refused == "tpm":
            raise RateLimited(
                f"key {label!r} is over its limit of {policy.tpm} tokens per minute",
                retry_after=figure,
            )
        if refused == "streams":
            raise RateLimited(
                f"key {label!r} is at its limit of {policy.max_streams} concurrent stream(s)",
                retry_after=STREAM_RETRY,
            )
        if refused == "rpm":
            raise RateLimited(
                f"key {label!r} is over its limit of {policy.rpm} requests per minute",
                retry_after=figure,
            )
        return Lease(self, model, label, holder, tpm_key, spend_key, slots_key)


class Lease:
    """What an admitted request holds: its stream slot, and the tokens and money charged so
    far. `observe` is called with what streams by (cheap, synchronous: charges are written by
    a task); `end` charges the rest from the final usage and releases the slot."""

    __slots__ = (
        "_charged_cost",
        "_charged_tokens",
        "_estimated_out",
        "_input",
        "_limits",
        "_output",
        "_pending",
        "_renewal",
        "_task",
        "holder",
        "label",
        "model",
        "slots_key",
        "spend_key",
        "tpm_key",
    )

    def __init__(
        self,
        limits: Limits,
        model: str,
        label: str,
        holder: str,
        tpm_key: str | None,
        spend_key: str | None,
        slots_key: str | None,
    ) -> None:
        self._limits = limits
        self.model = model
        self.label = label
        self.holder = holder
        self.tpm_key = tpm_key
        self.spend_key = spend_key
        self.slots_key = slots_key
        self._input = 0  # input tokens reported so far
        self._output = 0  # output tokens reported so far
        self._estimated_out = 0  # output tokens estimated from the events seen
        self._charged_tokens = 0
        self._charged_cost = 0.0
        self._pending: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._renewal: asyncio.TimerHandle | None = None
        if slots_key is not None:
            self._renewal = asyncio.get_running_loop().call_later(SLOT_TTL / 3, self._renew)

    @property
    def charges(self) -> bool:
        """True when the lease counts tokens or money (a tpm or a budget)."""
        return self.tpm_key is not None or self.spend_key is not None

    def observe(self, events: list[Event], data: bytes = b"") -> None:
        """Count what streamed by: reported usage in `events`, and about one output token
        per `data:` event in the upstream's bytes `data`."""
        if data:
            self._estimated_out += data.count(b"data:")
        for event in events:
            if isinstance(event, UsageUpdate):
                self._input = max(self._input, event.usage.input_tokens)
                self._output = max(self._output, event.usage.output_tokens)
        output = max(self._output, self._estimated_out)
        if self._input + output - self._charged_tokens >= CHARGE_EVERY:
            self._charge(Usage(input_tokens=self._input, output_tokens=output))

    def charge_step(self, usage: Usage, model: str, deployment: str | None) -> None:
        """Charge a finished part of the request on its own (a workflow's llm step: its
        usage at its model's price)."""
        tokens = usage.input_tokens + usage.output_tokens
        money = cost(price_for(self._limits._prices, model, deployment), usage)
        self._spawn(tokens, money)

    def _spawn(self, tokens: int, money: float) -> None:
        if not (tokens and self.tpm_key) and not (money and self.spend_key):
            return
        task = asyncio.get_running_loop().create_task(self._write(tokens, money))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def _charge(self, usage: Usage, deployment: str | None = None) -> None:
        """Charge the difference between `usage` and what was charged (a task)."""
        self._spawn(*self._delta(usage, deployment))

    def _delta(self, usage: Usage, deployment: str | None) -> tuple[int, float]:
        """The tokens and money of `usage` not charged yet, now counted as charged."""
        tokens = usage.input_tokens + usage.output_tokens
        money = cost(price_for(self._limits._prices, self.model, deployment), usage)
        delta_tokens, self._charged_tokens = tokens - self._charged_tokens, tokens
        delta_money, self._charged_cost = money - self._charged_cost, money
        return delta_tokens, delta_money

    async def _write(self, tokens: int, money: float) -> None:
        try:
            await self._limits._state.settle(self._settlement(tokens, money, release=False))
        except Exception as exc:
            log.warning("key %r: could not charge its usage: %s", self.label, type(exc).__name__)

    def _settlement(self, tokens: float, money: float, *, release: bool) -> Settlement:
        return Settlement(
            self._limits._wall(),
            MINUTE,
            tpm_key=self.tpm_key,
            tokens=tokens,
            spend_key=self.spend_key,
            money=money,
            spend_ttl=SPEND_TTL,  # the period's counter outlives its period, then expires
            slots_key=self.slots_key if release else None,
            holder=self.holder,
        )

    def _renew(self) -> None:
        self._renewal = asyncio.get_running_loop().call_later(SLOT_TTL / 3, self._renew)
        task = asyncio.get_running_loop().create_task(self._renew_slot())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _renew_slot(self) -> None:
        limits, key = self._limits, self.slots_key
        assert key is not None
        with contextlib.suppress(Exception):
            # the limit does not matter for a holder that has the slot: it is renewed
            await limits._state.slot_acquire(key, self.holder, 1 << 30, SLOT_TTL, limits._wall())

    async def end(self, usage: Usage | None, deployment: str | None) -> None:
        """The request is over: charge the rest (the final usage, or what was estimated;
        nothing when neither is known) and release the slot. Runs to its end even if the
        request's task is cancelled again."""
        if self._task is None:
            if self._renewal is not None:
                self._renewal.cancel()
            seen = self._input or self._output or self._estimated_out
            tokens, money = 0, 0.0
            if self.charges and (usage is not None or seen):
                if usage is None:
                    out = max(self._output, self._estimated_out)
                    usage = Usage(input_tokens=self._input, output_tokens=out)
                tokens, money = self._delta(usage, deployment)
            if not (tokens or money or self._pending) and self.slots_key is None:
                return  # nothing to write or release (a models-only policy)
            self._task = asyncio.get_running_loop().create_task(self._finish(tokens, money))
        await asyncio.shield(self._task)

    async def _finish(self, tokens: int, money: float) -> None:
        """The last charges and the slot's release, in one state operation."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        try:
            await self._limits._state.settle(self._settlement(tokens, money, release=True))
        except Exception as exc:
            log.warning(
                "key %r: could not settle its usage and stream slot (the slot expires): %s",
                self.label,
                type(exc).__name__,
            )
