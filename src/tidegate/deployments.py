"""Deployments and model groups: which deployment to try next, and whether it may be tried.

Several `models:` entries with one name are deployments of one model. A request's plan lists
them by `priority` (lower first), in weighted random order within a priority, followed by the
plans of the group's `fallbacks`. A deployment is skipped while it cools down after repeated
failures, or while it has `max_in_flight` streams open.

Cooldown is a small circuit breaker per deployment: `failures` failures within `window` seconds
trip it for `seconds`, doubling on each further trip up to `max_seconds`; when the time is up
exactly one request probes it (half-open); success closes it, failure trips it again. A 429 with
`Retry-After` cools the deployment for that long without counting as a trip.

The only deployment of a group never cools down: there is nothing to fail over to, and hiding
its real error (a bad key, a 500) behind "cooling down" would help no one. Each deployment keeps
its last failure, so that when a whole group is cooling the client learns why.
"""

from __future__ import annotations

import random
import time
from collections import deque
from typing import Any

from tidegate.errors import GatewayError, UnknownModel
from tidegate.providers import Provider, described_providers, provider_class
from tidegate.providers.credentials import ProviderRuntime
from tidegate.settings import Config, CooldownConfig, DeploymentSettings, LimitsConfig


class Health:
    """The cooldown state of one deployment; `solo` (alone in its group) never cools down."""

    __slots__ = (
        "_cfg",
        "_failures",
        "last_error",
        "probing",
        "rate_limited",
        "solo",
        "trips",
        "until",
    )

    def __init__(self, cfg: CooldownConfig, *, solo: bool = False):
        self._cfg = cfg
        self._failures: deque[float] = deque()
        self.trips = 0
        self.until = 0.0
        self.probing = False
        self.rate_limited = False  # the current cooldown is an upstream's Retry-After
        self.solo = solo
        self.last_error: GatewayError | None = None

    def state(self, now: float) -> str:
        """`healthy`, `cooling` (skipped) or `half_open` (one probe allowed or under way)."""
        if now < self.until:
            return "cooling"
        if self.trips or self.probing:
            return "half_open"
        return "healthy"

    def available(self, now: float) -> bool:
        """May a request be sent now? A half-open deployment takes one probe at a time."""
        if now < self.until:
            return False
        return not (self.trips and self.probing)

    def attempt(self, now: float) -> None:
        """A request is being sent; after a trip it is the probe."""
        if self.trips and now >= self.until:
            self.probing = True

    def success(self) -> None:
        """The deployment answered well: forget past failures."""
        self._failures.clear()
        self.trips = 0
        self.probing = False

    def failure(
        self, now: float, retry_after: float | None = None, error: GatewayError | None = None
    ) -> None:
        """The deployment failed; trip the breaker if it has failed often enough."""
        if error is not None:
            self.last_error = error
        if not self._cfg.enabled or self.solo:
            return
        if retry_after and now + retry_after > self.until:
            self.until = now + min(retry_after, self._cfg.max_seconds)
            self.rate_limited = True
        if self.probing:
            self.probing = False
            self._trip(now)
            return
        self._failures.append(now)
        while self._failures and self._failures[0] < now - self._cfg.window:
            self._failures.popleft()
        if len(self._failures) >= self._cfg.failures:
            self._failures.clear()
            self._trip(now)

    def _trip(self, now: float) -> None:
        self.trips += 1
        seconds = min(self._cfg.max_seconds, self._cfg.seconds * 2.0 ** (self.trips - 1))
        if now + seconds > self.until:
            self.until = now + seconds
            self.rate_limited = False


class Deployment:
    """One `models:` entry at run time: its provider, health and open streams."""

    __slots__ = ("config", "health", "in_flight", "key", "provider")

    def __init__(
        self,
        key: str,
        config: DeploymentSettings,
        cooldown: CooldownConfig,
        limits: LimitsConfig,
        provider: type[Provider] | None = None,
    ):
        self.key = key
        self.config = config
        self.provider: Provider = (provider or provider_class(config.provider))(config)
        self.provider.max_event_bytes = limits.max_event_bytes
        self.provider.max_response_bytes = limits.max_response_bytes
        self.health = Health(cooldown)
        self.in_flight = 0

    @property
    def saturated(self) -> bool:
        """True when `max_in_flight` streams are open."""
        limit = self.config.max_in_flight
        return limit is not None and self.in_flight >= limit

    def snapshot(self, now: float) -> dict[str, Any]:
        """The deployment's state for the admin endpoint."""
        return {
            "deployment": self.key,
            "model": self.config.name,
            "upstream": self.provider.label,
            "priority": self.config.priority,
            "weight": self.config.weight,
            "state": self.health.state(now),
            "cooldown_remaining_s": round(max(0.0, self.health.until - now), 3),
            "trips": self.health.trips,
            "in_flight": self.in_flight,
            "max_in_flight": self.config.max_in_flight,
        }


class Router:
    """All deployments, grouped by model name."""

    def __init__(self, config: Config):
        self.groups: dict[str, list[Deployment]] = {}
        self.fallbacks: dict[str, list[str]] = {}
        cooldown = config.routing.cooldown
        described = described_providers(config)
        for model in config.models:
            group = self.groups.setdefault(model.name, [])
            key = model.name if not group else f"{model.name}#{len(group) + 1}"
            if len(group) == 1 and group[0].key == model.name:
                group[0].key = f"{model.name}#1"
            provider = described.get(model.provider)
            group.append(Deployment(key, model, cooldown, config.limits, provider))
            fallbacks = self.fallbacks.setdefault(model.name, [])
            fallbacks += [f for f in model.fallbacks if f not in fallbacks]
        for group in self.groups.values():
            group[0].health.solo = len(group) == 1

    def bind(self, runtime: ProviderRuntime) -> None:
        """Lend every provider the process's runtime (state, per-user keys, tokens)."""
        for group in self.groups.values():
            for deployment in group:
                deployment.provider.runtime = runtime

    def names(self) -> list[str]:
        """Model names in configuration order."""
        return list(self.groups)

    def group(self, model: str) -> list[Deployment]:
        """The deployments of a model; 404 if there are none."""
        found = self.groups.get(model)
        if not found:
            raise UnknownModel(model, list(self.groups))
        return found

    def plan(self, model: str) -> list[Deployment]:
        """Every deployment to consider for a request, in the order to try them."""
        order: list[Deployment] = []
        seen: set[str] = set()
        pending = [model]
        while pending:
            name = pending.pop(0)
            if name in seen:
                continue
            seen.add(name)
            order += _ordered(self.group(name))
            pending += self.fallbacks.get(name, [])
        return order

    def snapshot(self) -> list[dict[str, Any]]:
        """Every deployment's state."""
        now = time.monotonic()
        return [d.snapshot(now) for group in self.groups.values() for d in group]


def _ordered(group: list[Deployment]) -> list[Deployment]:
    if len(group) == 1:
        return list(group)
    out: list[Deployment] = []
    for priority in sorted({d.config.priority for d in group}):
        tier = [d for d in group if d.config.priority == priority]
        while tier:  # weighted random order without replacement
            pick = random.choices(tier, weights=[d.config.weight for d in tier])[0]
            out.append(pick)
            tier.remove(pick)
    return out
