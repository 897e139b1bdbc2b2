"""The fault matrix: failure kind, before or after the first byte, streaming or not, endpoint.

Each case asserts exactly what the client sees (status, error shape and code, or the in-band
error and the endpoint's clean end) and, for failures in the middle of a stream, that the
gateway closed the upstream connection.
"""

from __future__ import annotations

import time
from typing import Any

import httpx2 as httpx
import orjson
import pytest

from tests.conftest import CLIENT_KEY, GatewayProcess, parse_sse
from tests.fake_upstream import FakeUpstream

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
ENDPOINTS = ["stream_ask", "openai", "anthropic", "gemini"]


def call(gw: GatewayProcess, endpoint: str, model: str, stream: bool) -> httpx.Response:
    messages = [{"role": "user", "content": "q"}]
    if endpoint == "stream_ask":
        return httpx.post(
            f"{gw.url}/stream-ask", headers=AUTH, json={"question": "q", "model": model}, timeout=20
        )
    if endpoint == "openai":
        body = {"model": model, "messages": messages, "stream": stream}
        return httpx.post(f"{gw.url}/v1/chat/completions", headers=AUTH, json=body, timeout=20)
    if endpoint == "anthropic":
        body = {"model": model, "messages": messages, "max_tokens": 10, "stream": stream}
        return httpx.post(f"{gw.url}/v1/messages", headers=AUTH, json=body, timeout=20)
    action = "streamGenerateContent?alt=sse" if stream else "generateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": "q"}]}]}
    return httpx.post(
        f"{gw.url}/v1beta/models/{model}:{action}", headers=AUTH, json=body, timeout=20
    )


def error_code(endpoint: str, body: Any) -> str:
    """The error code or type in each endpoint's own error shape."""
    if endpoint == "stream_ask":
        return str(body["code"])
    if endpoint == "openai":
        return str(body["error"]["code"])
    if endpoint == "anthropic":
        assert body["type"] == "error"
        return str(body["error"]["type"])
    return str(body["error"]["status"])


# kind -> (model, status, stream_ask/openai code, anthropic error type, gemini error status)
BEFORE = {
    "connect refused": ("openai-refused", 502, "upstream_unreachable", "api_error", "UNAVAILABLE"),
    "HTTP 500": ("openai-status_500", 502, "upstream_error", "api_error", "UNAVAILABLE"),
    "HTTP 429": (
        "openai-status_429",
        429,
        "upstream_rate_limited",
        "rate_limit_error",
        "RESOURCE_EXHAUSTED",
    ),
    "HTTP 400": (
        "openai-status_400",
        400,
        "upstream_invalid_request",
        "invalid_request_error",
        "INVALID_ARGUMENT",
    ),
    "error in a 200": ("openai-error_first", 502, "upstream_error", "api_error", "UNAVAILABLE"),
    "HTML body": ("openai-html", 502, "upstream_protocol_error", "api_error", "UNAVAILABLE"),
    "first-byte timeout": (
        "openai-slow_first_event",
        504,
        "upstream_timeout",
        "timeout_error",
        "DEADLINE_EXCEEDED",
    ),
    "total timeout": (
        "openai-short-total",
        504,
        "upstream_timeout",
        "timeout_error",
        "DEADLINE_EXCEEDED",
    ),
}


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("kind", list(BEFORE))
def test_failure_before_first_byte(
    gateway: GatewayProcess, kind: str, endpoint: str, stream: bool
) -> None:
    model, status, code, anthropic_type, gemini_status = BEFORE[kind]
    if endpoint == "stream_ask" and not stream:
        pytest.skip("/stream-ask always streams")
    if kind == "first-byte timeout" and not stream:
        pytest.skip("non-streaming calls are bounded by the total timeout (next case)")
    response = call(gateway, endpoint, model, stream)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    want = {"anthropic": anthropic_type, "gemini": gemini_status}.get(endpoint, code)
    assert error_code(endpoint, response.json()) == want
    record = gateway.record_for(response.headers["x-request-id"])
    assert (record["status"], record["error"]) == (status, code)


AFTER = {
    "connection drop": ("drop_mid", "upstream_disconnected"),
    "idle timeout": ("stall_mid", "upstream_timeout"),
    "upstream error event": ("error_mid", "upstream_error"),
    "stream stops without its end": ("truncated", "upstream_protocol_error"),
    "malformed data": ("malformed_mid", "upstream_protocol_error"),
}


def in_band_error(endpoint: str, response: httpx.Response) -> str:
    """The in-band error's code, after checking the endpoint's clean end follows it."""
    text = response.text
    if endpoint == "stream_ask":
        events = parse_sse(text)
        assert [e.get("event") for e in events[-2:]] == ["error", "final_end"]
        return str(orjson.loads(events[-2]["data"])["code"])
    if endpoint == "openai":
        data = [e["data"] for e in parse_sse(text)]
        assert data[-1] == "[DONE]"
        return str(orjson.loads(data[-2])["error"]["code"])
    if endpoint == "anthropic":
        events = parse_sse(text)
        assert events[-1]["event"] == "error" and "message_stop" not in text
        return str(orjson.loads(events[-1]["data"])["error"]["type"])
    lines = [line for line in text.split("\r\n") if line.strip()]
    assert not lines[-1].startswith("data:")
    return str(orjson.loads(lines[-1])["error"]["status"])


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("kind", list(AFTER))
def test_failure_after_first_byte(
    gateway: GatewayProcess, fake: FakeUpstream, kind: str, endpoint: str
) -> None:
    scenario, code = AFTER[kind]
    before = fake.count(scenario)
    response = call(
        gateway,
        endpoint,
        f"anthropic-{scenario}" if endpoint == "openai" else f"openai-{scenario}",
        True,
    )
    assert response.status_code == 200
    got = in_band_error(endpoint, response)
    if endpoint in ("stream_ask", "openai"):
        assert got == code
    else:
        assert got in ("api_error", "timeout_error", "UNAVAILABLE", "DEADLINE_EXCEEDED", "INTERNAL")
    record = gateway.record_for(response.headers["x-request-id"])
    assert (record["status"], record["error"]) == (200, code)
    # Invariant: the upstream connection of a failed stream is closed, not left hanging.
    upstream = [r for r in fake.requests if r.scenario == scenario][before]
    deadline = time.monotonic() + 3
    while upstream.closed_at is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert upstream.closed_at is not None
