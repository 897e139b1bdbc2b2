"""Chaos: 200 concurrent streams against a group whose deployments fail at random in every way.

Invariants: every client stream ends with complete content or an explicit error (an HTTP error
before the first byte, or an in-band error event and the endpoint's end after it); none hangs;
no upstream slot, task or socket leaks; every request reaches one recorded outcome.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import aiohttp
import httpx2 as httpx
import orjson
import psutil
import pytest

from tests.conftest import CLIENT_KEY, GatewayProcess, parse_sse
from tests.fake_upstream import API_KEY, EXPECTED_TEXT, FakeUpstream

STREAMS = 200
AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
ADMIN_KEY = "tg-admin-key-chaos-70c2"
ADMIN = {"x-api-key": ADMIN_KEY}


@pytest.fixture(scope="module")
def gw(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    timeouts = {"connect": 1, "first_byte": 0.5, "idle": 0.5, "total": 15}
    models = [
        {
            "name": "chaos",
            "provider": provider,
            "base_url": fake.base("chaos", i) + suffix,
            "api_key": "${K}",
            "model": "fake-model",
            "timeouts": timeouts,
        }
        for i, (provider, suffix) in enumerate(
            [("openai", "/v1"), ("openai", "/v1"), ("anthropic", ""), ("gemini", "")]
        )
    ]
    config = {
        "models": models,
        "auth": {"api_keys": [CLIENT_KEY], "admin_keys": [ADMIN_KEY]},
        "routing": {
            "max_attempts": 4,
            "budget_seconds": 10,
            "backoff_seconds": 0.02,
            "cooldown": {"failures": 5, "window": 5, "seconds": 0.5, "max_seconds": 2},
        },
    }
    process = GatewayProcess(config, tmp_path_factory.mktemp("chaos"), env={"K": API_KEY})
    yield process
    process.stop()


def classify(endpoint: str, status: int, body: bytes) -> str:
    """complete | error_before | error_in_band | broken (a stream that just stopped)."""
    text = body.decode("utf-8", "replace")
    if status != 200:
        return "error_before" if orjson.loads(body) else "broken"
    if endpoint == "openai":
        data = [e["data"] for e in parse_sse(text)]
        if not data or data[-1] != "[DONE]":
            return "broken"
        if any('"error"' in e for e in data[:-1]):
            return "error_in_band"
        content = "".join(
            c["delta"].get("content") or ""
            for e in data[:-1]
            for c in orjson.loads(e).get("choices") or []
        )
        return "complete" if content == EXPECTED_TEXT else "broken"
    events = parse_sse(text)
    if not events or events[-1].get("event") != "final_end":
        return "broken"
    if any(e.get("event") == "error" for e in events):
        return "error_in_band"
    content = "".join(
        orjson.loads(e["data"]).get("content", "") for e in events if "event" not in e
    )
    return "complete" if content == EXPECTED_TEXT else "broken"


async def one(session: aiohttp.ClientSession, url: str, endpoint: str, i: int) -> tuple[str, str]:
    if endpoint == "openai":
        path, body = (
            "/v1/chat/completions",
            {"model": "chaos", "stream": True, "messages": [{"role": "user", "content": f"q{i}"}]},
        )
    else:
        path, body = "/stream-ask", {"model": "chaos", "question": f"q{i}"}
    try:
        async with session.post(url + path, json=body, headers=AUTH) as response:
            data = await response.read()
            return classify(endpoint, response.status, data), response.headers.get(
                "x-request-id", ""
            )
    except TimeoutError:
        return "hung", ""


async def storm(url: str) -> list[tuple[str, str]]:
    timeout = aiohttp.ClientTimeout(total=40)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as s:
        return await asyncio.gather(
            *(one(s, url, "openai" if i % 2 else "stream_ask", i) for i in range(STREAMS))
        )


def admin(gw: GatewayProcess) -> dict[str, Any]:
    return httpx.get(f"{gw.url}/admin/deployments", headers=ADMIN).json()  # type: ignore[no-any-return]


def test_chaos(gw: GatewayProcess, fake: FakeUpstream, capsys: pytest.CaptureFixture[str]) -> None:
    baseline_tasks = admin(gw)["tasks"]
    before = len(fake.requests)
    started = time.monotonic()
    results = asyncio.run(storm(gw.url))
    elapsed = time.monotonic() - started

    outcomes = Counter(outcome for outcome, _ in results)
    injected = Counter(
        r.behaviour for r in fake.requests[before:] if r.scenario.startswith("chaos")
    )
    with capsys.disabled():
        failures = sum(n for b, n in injected.items() if b not in ("ok", "split_utf8"))
        print(
            f"\nchaos: {STREAMS} streams in {elapsed:.1f}s; upstream attempts "
            f"{sum(injected.values())}, failures injected {failures}: {dict(injected)}; "
            f"client outcomes {dict(outcomes)}"
        )

    assert outcomes["hung"] == 0
    assert outcomes["broken"] == 0
    assert outcomes["complete"] > 0
    assert sum(outcomes.values()) == STREAMS

    # Every request reached one recorded outcome.
    ids = [request_id for _, request_id in results]
    records = {r["request_id"]: r for r in gw.access_records() if r["model"] == "chaos"}
    deadline = time.monotonic() + 5
    while not set(ids) <= set(records) and time.monotonic() < deadline:
        time.sleep(0.05)
        records = {r["request_id"]: r for r in gw.access_records() if r["model"] == "chaos"}
    assert set(ids) <= set(records)
    assert all(records[i]["status"] in (200, 429, 502, 503, 504) for i in ids)
    # Failed attempts were retried elsewhere (the gateway's count: the fake records a request
    # only once it has read its body, which a cancelled attempt may never send).
    assert sum(records[i].get("attempts", 0) for i in ids) > STREAMS

    # No leaks: slots, tasks and sockets return to where they were.
    deadline = time.monotonic() + 5
    state = admin(gw)
    while time.monotonic() < deadline and (
        state["tasks"] > baseline_tasks or any(d["in_flight"] for d in state["deployments"])
    ):
        time.sleep(0.1)
        state = admin(gw)
    assert all(d["in_flight"] == 0 for d in state["deployments"])
    assert state["tasks"] <= baseline_tasks
    gateway_port = int(gw.url.rsplit(":", 1)[1])

    def leftovers() -> tuple[list[Any], list[Any], list[Any]]:
        connections = psutil.Process(gw.proc.pid).net_connections(kind="tcp")
        stuck = [c for c in connections if c.status == psutil.CONN_CLOSE_WAIT]
        clients = [
            c
            for c in connections
            if c.laddr.port == gateway_port and c.status == psutil.CONN_ESTABLISHED
        ]
        return connections, stuck, clients

    # A socket the peer has just closed passes through CLOSE_WAIT for a moment; one that
    # stays there is a leak.
    connections, stuck, clients = leftovers()
    deadline = time.monotonic() + 5
    while (stuck or len(clients) > 1) and time.monotonic() < deadline:
        time.sleep(0.1)
        connections, stuck, clients = leftovers()
    assert not stuck, stuck
    assert len(clients) <= 1  # at most the admin request's own connection
    upstream = [c for c in connections if c.raddr and c.raddr.port == fake.port]
    assert len(upstream) <= STREAMS  # idle keep-alive connections only, bounded by the pool
    # Every upstream connection the gateway gave up on was closed on its side too.
    for r in fake.requests[before:]:
        if r.scenario.startswith("chaos") and r.behaviour in (
            "stall_mid",
            "slow_first_event",
            "slow_headers",
        ):
            assert r.closed_at is not None, r
