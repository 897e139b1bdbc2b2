"""Prometheus metrics (`GET /metrics`), counted where requests end, streams open and close,
and upstream attempts finish.

Labels are chosen from what the config defines — the route's path template, a configured model
name (anything else is `other`), a deployment key, an error code — never from what a client
sent verbatim, and never a key, a user or a prompt: their number stays bounded and nothing
secret reaches a scrape.

With `--workers N` every worker counts into files under `PROMETHEUS_MULTIPROC_DIR` (set by
`tidegate serve` before the workers start), and a scrape of any worker sums them all
(prometheus-client's multiprocess mode).
"""

from __future__ import annotations

import os
from typing import Any, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess

from tidegate.events import Usage

#: Seconds: from a few milliseconds of overhead to the longest streams.
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_TTFB_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)

REQUESTS = Counter(
    "tidegate_requests",
    "Requests by route, model, HTTP status and error code (empty when none).",
    ["endpoint", "model", "status", "error"],
)
DURATION = Histogram(
    "tidegate_request_duration_seconds",
    "Whole request durations, streams included.",
    ["endpoint"],
    buckets=_DURATION_BUCKETS,
)
TTFB = Histogram(
    "tidegate_time_to_first_byte_seconds",
    "From the request to the first byte of the answer (for streams: the first event).",
    ["endpoint", "model"],
    buckets=_TTFB_BUCKETS,
)
TOKENS = Counter(
    "tidegate_tokens",
    "Tokens by model and kind (input, output, cache_read, cache_write, reasoning).",
    ["model", "kind"],
)
OPEN_STREAMS = Gauge(
    "tidegate_open_streams", "Streams being served now.", multiprocess_mode="livesum"
)
ATTEMPTS = Counter(
    "tidegate_upstream_attempts",
    "Upstream attempts by deployment and outcome (`ok` or the error code).",
    ["deployment", "outcome"],
)
COOLDOWNS = Counter(
    "tidegate_cooldowns", "Times a deployment was put into cooldown.", ["deployment"]
)


_Metric = TypeVar("_Metric", Counter, Gauge, Histogram)
_children: dict[tuple[Any, tuple[str, ...]], Any] = {}


def labelled(metric: _Metric, *values: str) -> _Metric:
    """`metric.labels(*values)`, looked up once per label set: prometheus-client checks and
    locks on every `labels()` call, which cost more than the count itself on the request path.
    Label values come from the config, so the set of children stays bounded."""
    key = (metric, values)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*values)
    return child


def count_request(
    endpoint: str,
    model: str,
    status: int,
    error: str | None,
    duration: float,
    ttfb: float | None,
    usage: Usage | None,
) -> None:
    """Count one finished request (`endpoint` a route template, `model` a configured name or
    `other`)."""
    labelled(REQUESTS, endpoint, model, str(status), error or "").inc()
    labelled(DURATION, endpoint).observe(duration)
    if ttfb is not None:
        labelled(TTFB, endpoint, model).observe(ttfb)
    if usage is not None:
        for kind, value in (
            ("input", usage.input_tokens),
            ("output", usage.output_tokens),
            ("cache_read", usage.cache_read_tokens),
            ("cache_write", usage.cache_write_tokens),
            ("reasoning", usage.reasoning_tokens),
        ):
            if value:
                labelled(TOKENS, model, kind).inc(value)


def exposition() -> tuple[bytes, str]:
    """The current metrics in Prometheus' text format, and its content type (all workers'
    when they share a multiprocess directory)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        _multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


def worker_exited(pid: int) -> None:
    """Forget the live gauges of a worker that has stopped (multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        _multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
