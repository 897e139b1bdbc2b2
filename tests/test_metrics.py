"""`GET /metrics` through real gateway processes: Prometheus' format, what is counted, who may
scrape, and nothing secret in it.

Invariants: requests are counted by route template, configured model (`other` for anything
else), status and error code; tokens, time to first byte and durations are recorded; open
streams go up and back down; upstream attempts and cooldowns are counted per deployment; no
key, prompt or client-chosen text reaches a label; with `--workers 2` every scrape sums both
workers; the route needs an admin key unless `metrics.public`, and is gone when disabled.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from tests.conftest import GatewayProcess
from tests.fake_upstream import API_KEY, FakeUpstream

CLIENT = "tg-metrics-client-4f1a2b"
ADMIN = "tg-metrics-admin-9c3d7e"
PROMPT = "a private question about payroll 7731"


def config(fake: FakeUpstream, **extra: Any) -> dict[str, Any]:
    upstream = {"provider": "openai", "api_key": API_KEY, "model": "fake-model"}
    return {
        "models": [
            {"name": "demo", "provider": "demo", "pace": 0.001},
            {"name": "slow", "provider": "demo", "pace": 0.05},
            {"name": "flaky", **upstream, "base_url": fake.base("status/500", "metrics") + "/v1"},
            {"name": "flaky", **upstream, "base_url": fake.base("ok", "metrics") + "/v1"},
        ],
        "auth": {"api_keys": [CLIENT], "admin_keys": [ADMIN]},
        "routing": {"cooldown": {"enabled": True, "failures": 1, "seconds": 30}},
        **extra,
    }


def scrape(gw: GatewayProcess, key: str | None = ADMIN) -> str:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = httpx.get(gw.url + "/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def value(text: str, name: str, **labels: str) -> float:
    """The sample `name` whose labels include `labels` (0 when there is none)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        sample, number = line.rsplit(" ", 1)
        sample_labels = dict(re.findall(r'(\w+)="([^"]*)"', sample))
        if all(sample_labels.get(k) == v for k, v in labels.items()):
            total += float(number)
    return total


def ask(gw: GatewayProcess, model: str, question: str = PROMPT) -> httpx.Response:
    return httpx.post(
        gw.url + "/stream-ask",
        json={"question": question, "model": model},
        headers={"Authorization": f"Bearer {CLIENT}"},
        timeout=30,
    )


@pytest.fixture(scope="module")
def gw(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Any:
    process = GatewayProcess(config(fake), tmp_path_factory.mktemp("metrics"))
    yield process
    process.stop()


def test_requests_tokens_and_timings_are_counted_by_route_and_model(gw: GatewayProcess) -> None:
    before = scrape(gw)
    assert ask(gw, "demo").status_code == 200
    assert ask(gw, "sk-looks-like-a-key-0000").status_code == 404
    after = scrape(gw)
    ok = {"endpoint": "/stream-ask", "model": "demo", "status": "200", "error": ""}
    assert (
        value(after, "tidegate_requests_total", **ok)
        == value(before, "tidegate_requests_total", **ok) + 1
    )
    missing = {"endpoint": "/stream-ask", "model": "other", "status": "404"}
    assert value(after, "tidegate_requests_total", **missing) >= 1
    assert value(after, "tidegate_tokens_total", model="demo", kind="output") > value(
        before, "tidegate_tokens_total", model="demo", kind="output"
    )
    assert value(after, "tidegate_time_to_first_byte_seconds_count", model="demo") >= 1
    assert value(after, "tidegate_request_duration_seconds_count", endpoint="/stream-ask") >= 2
    assert value(after, "tidegate_upstream_attempts_total", deployment="demo", outcome="ok") >= 1
    # Nothing a client sent verbatim, and no key, appears anywhere.
    for secret in (CLIENT, ADMIN, PROMPT, "sk-looks-like-a-key", API_KEY):
        assert secret not in after


def test_routes_with_parameters_are_counted_by_their_template(gw: GatewayProcess) -> None:
    httpx.get(gw.url + "/v1/streams/st_0123456789", headers={"Authorization": f"Bearer {CLIENT}"})
    text = scrape(gw)
    assert value(text, "tidegate_requests_total", endpoint="/v1/streams/{id}", status="404") >= 1
    assert "st_0123456789" not in text
    httpx.get(gw.url + "/no/such/path")
    assert value(scrape(gw), "tidegate_requests_total", endpoint="unmatched") >= 1


def test_failed_attempts_and_cooldowns_are_counted_per_deployment(gw: GatewayProcess) -> None:
    assert ask(gw, "flaky").status_code == 200  # the first deployment fails, the second serves
    text = scrape(gw)
    failed = value(text, "tidegate_upstream_attempts_total", deployment="flaky#1")
    assert failed >= 1
    assert value(text, "tidegate_upstream_attempts_total", deployment="flaky#2", outcome="ok") >= 1
    assert value(text, "tidegate_cooldowns_total", deployment="flaky#1") >= 1


def test_open_streams_go_up_while_streaming_and_back_down(gw: GatewayProcess) -> None:
    assert value(scrape(gw), "tidegate_open_streams") == 0
    answer: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: answer.append(ask(gw, "slow")))
    thread.start()
    deadline = time.monotonic() + 10
    seen = 0.0
    while time.monotonic() < deadline and not seen:
        seen = value(scrape(gw), "tidegate_open_streams")
        time.sleep(0.05)
    thread.join(30)
    assert seen == 1
    assert answer[0].status_code == 200
    assert value(scrape(gw), "tidegate_open_streams") == 0


def test_only_an_admin_key_scrapes_by_default(gw: GatewayProcess) -> None:
    assert httpx.get(gw.url + "/metrics").status_code == 401
    client = httpx.get(gw.url + "/metrics", headers={"Authorization": f"Bearer {CLIENT}"})
    assert client.status_code == 403


def test_public_and_disabled_metrics(fake: FakeUpstream, tmp_path: Path) -> None:
    (tmp_path / "public").mkdir()
    (tmp_path / "off").mkdir()
    public = GatewayProcess(config(fake, metrics={"public": True}), tmp_path / "public")
    off = GatewayProcess(config(fake, metrics={"enabled": False}), tmp_path / "off")
    try:
        assert "tidegate_requests_total" in scrape(public, key=None)
        assert (
            httpx.get(
                off.url + "/metrics", headers={"Authorization": f"Bearer {ADMIN}"}
            ).status_code
            == 404
        )
    finally:
        public.stop()
        off.stop()


def test_with_two_workers_every_scrape_counts_both(fake: FakeUpstream, tmp_path: Path) -> None:
    gw = GatewayProcess(config(fake), tmp_path, args=["--workers", "2"])
    try:
        sent = 40
        with httpx.Client(timeout=30) as client:  # fresh connections spread over the workers
            for _ in range(sent):
                response = client.post(
                    gw.url + "/stream-ask",
                    json={"question": "q", "model": "demo"},
                    headers={"Authorization": f"Bearer {CLIENT}", "Connection": "close"},
                )
                assert response.status_code == 200
        totals = set()
        for _ in range(6):
            text = scrape(gw)
            totals.add(value(text, "tidegate_requests_total", endpoint="/stream-ask", model="demo"))
        assert totals == {float(sent)}
    finally:
        gw.stop()
