"""A client that goes away cancels the upstream call within a second and is logged as 499."""

from __future__ import annotations

import time
from typing import Any

import httpx2 as httpx
import pytest

from tests.conftest import CLIENT_KEY, GatewayProcess
from tests.fake_upstream import FakeUpstream, Recorded

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}


def wait_closed(fake: FakeUpstream, scenario: str, index: int, timeout: float = 3.0) -> Recorded:
    """The `index`-th request of a scenario, once the fake has seen its connection close."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        recorded = [r for r in fake.requests if r.scenario == scenario]
        if len(recorded) > index and recorded[index].closed_at is not None:
            return recorded[index]
        time.sleep(0.01)
    raise AssertionError(f"the upstream connection for {scenario!r} was never closed")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/stream-ask", {"question": "q", "model": "openai-slow_stream"}),
        ("/stream-ask", {"question": "q", "model": "kb-slow_stream"}),
        (
            "/v1/chat/completions",
            {
                "model": "openai-slow_stream",
                "stream": True,
                "messages": [{"role": "user", "content": "q"}],
            },
        ),
        (
            "/v1/chat/completions",
            {
                "model": "kb-slow_stream",
                "stream": True,
                "messages": [{"role": "user", "content": "q"}],
            },
        ),
    ],
)
def test_disconnect_mid_stream_closes_the_upstream(
    gateway: GatewayProcess, fake: FakeUpstream, path: str, body: dict[str, Any]
) -> None:
    """Invariant: the upstream connection closes within one second of the client's."""
    before = fake.count("slow_stream")
    with httpx.stream("POST", gateway.url + path, json=body, headers=AUTH, timeout=10) as response:
        assert response.status_code == 200
        request_id = response.headers["x-request-id"]
        received = b""
        for chunk in response.iter_bytes():
            received += chunk
            if received.count(b"tick") >= 3:
                break
        gone = time.monotonic()
    upstream = wait_closed(fake, "slow_stream", before)
    assert upstream.closed_at is not None and upstream.closed_at - gone < 1.0
    assert not upstream.completed
    record = gateway.record_for(request_id)
    assert record["status"] == 499
    assert record["error"] == "client_closed"


def test_disconnect_while_waiting_for_first_event(
    gateway: GatewayProcess, fake: FakeUpstream
) -> None:
    """Even before any byte was sent to the client, its departure cancels the upstream call."""
    before = fake.count("slow_first_event")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            gateway.url + "/stream-ask",
            headers=AUTH,
            timeout=0.4,
            json={"question": "q", "model": "kb-slow_first_event"},
        )
    gone = time.monotonic()
    upstream = wait_closed(fake, "slow_first_event", before)
    assert upstream.closed_at is not None and upstream.closed_at - gone < 1.0
    assert not upstream.completed
    records = [r for r in gateway.access_records() if r["model"] == "kb-slow_first_event"]
    deadline = time.monotonic() + 3
    while not any(r["status"] == 499 for r in records) and time.monotonic() < deadline:
        time.sleep(0.02)
        records = [r for r in gateway.access_records() if r["model"] == "kb-slow_first_event"]
    assert any(r["status"] == 499 for r in records)


def test_gateway_keeps_serving_after_disconnects(gateway: GatewayProcess) -> None:
    response = httpx.post(gateway.url + "/stream-ask", headers=AUTH, json={"question": "q"})
    assert response.status_code == 200
    assert "final_end" in response.text
