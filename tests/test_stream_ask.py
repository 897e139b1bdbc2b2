"""`/stream-ask` end to end: a real gateway process, the fake upstream, a plain HTTP client."""

from __future__ import annotations

import re
from typing import Any

import httpx2 as httpx
import orjson
import pytest

from tests.conftest import CLIENT_KEY, GatewayProcess, parse_sse
from tests.fake_upstream import (
    API_KEY,
    COMPLETION_TOKENS,
    EXPECTED_TEXT,
    PROMPT_TOKENS,
    SOURCES,
    FakeUpstream,
)
from tidegate.providers.demo import DEMO_ANSWER

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
PROVIDERS = ["openai", "kb"]


def ask(
    gateway: GatewayProcess, headers: dict[str, str] | None = None, **kwargs: Any
) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/stream-ask", headers={**AUTH, **(headers or {})}, timeout=20, **kwargs
    )


def events_of(response: httpx.Response) -> list[dict[str, Any]]:
    out = []
    for e in parse_sse(response.text):
        out.append(
            {"id": e.get("id"), "event": e.get("event", "message"), "data": orjson.loads(e["data"])}
        )
    return out


def text_of(events: list[dict[str, Any]]) -> str:
    return "".join(e["data"]["content"] for e in events if e["data"].get("type") == "chunk")


def assert_well_formed(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Ids count up from 1, final_end comes exactly once and last; returns its data."""
    assert [e["id"] for e in events] == [str(i) for i in range(1, len(events) + 1)]
    assert [e["event"] for e in events].count("final_end") == 1
    assert events[-1]["event"] == "final_end"
    data: dict[str, Any] = events[-1]["data"]
    return data


def test_demo_answers_with_the_documented_stream(start_gateway: Any) -> None:
    """With nothing configured, the built-in demo model streams a labelled sample answer."""
    gw = start_gateway(None)
    response = httpx.post(f"{gw.url}/stream-ask", json={"question": "hello?"}, timeout=20)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert response.headers["x-request-id"]
    events = events_of(response)
    final = assert_well_formed(events)
    assert text_of(events) == DEMO_ANSWER
    assert "demo" in DEMO_ANSWER
    assert final["finish_reason"] == "stop"
    assert final["usage"]["output_tokens"] > 0


@pytest.mark.parametrize("provider", PROVIDERS)
def test_streams_the_upstream_answer(
    gateway: GatewayProcess, fake: FakeUpstream, provider: str
) -> None:
    response = ask(
        gateway,
        json={"question": "What is tidegate?", "model": f"{provider}-ok", "session_id": "user-42"},
    )
    assert response.status_code == 200, response.text
    events = events_of(response)
    final = assert_well_formed(events)
    assert text_of(events) == EXPECTED_TEXT
    assert final["finish_reason"] == "stop"
    assert final["usage"]["input_tokens"] == PROMPT_TOKENS
    assert final["usage"]["output_tokens"] == COMPLETION_TOKENS
    upstream = fake.last("ok")
    assert upstream.headers["Authorization"] == f"Bearer {API_KEY}"
    if provider == "kb":
        assert upstream.path == "/ok/api/v1/workspace/docs/stream-chat"
        session = upstream.body["sessionId"]  # scoped to the client key: tg-<tag>-user-42
        assert re.fullmatch(r"tg-[0-9a-f]{12}-user-42", session)
        assert upstream.body == {
            "message": "What is tidegate?",
            "mode": "chat",
            "sessionId": session,
        }
        assert [e["data"]["sources"] for e in events if e["event"] == "sources"] == [SOURCES]
        assert final["sources"] == SOURCES
    else:
        assert upstream.body["messages"] == [{"role": "user", "content": "What is tidegate?"}]
        assert upstream.body["stream"] is True
        assert upstream.body["model"] == "fake-model"


def test_default_model_comes_from_config(gateway: GatewayProcess, fake: FakeUpstream) -> None:
    before = fake.count("ok")
    response = ask(gateway, json={"question": "hi"})
    assert text_of(events_of(response)) == EXPECTED_TEXT
    assert fake.count("ok") == before + 1


@pytest.mark.parametrize("encoding", ["form", "multipart"])
def test_accepts_form_bodies(gateway: GatewayProcess, fake: FakeUpstream, encoding: str) -> None:
    fields = {"question": "日本語 question", "model": "kb-ok", "mode": "query"}
    if encoding == "form":
        response = ask(gateway, data=fields)
    else:
        response = ask(gateway, files={k: (None, v) for k, v in fields.items()})
    assert response.status_code == 200, response.text
    assert text_of(events_of(response)) == EXPECTED_TEXT
    assert fake.last("ok").body == {"message": "日本語 question", "mode": "query"}


@pytest.mark.parametrize(
    ("kwargs", "status", "needle"),
    [
        ({"json": {}}, 400, "'question' is required"),
        ({"json": {"question": "   "}}, 400, "'question' is required"),
        ({"json": {"question": 5}}, 400, "'question' is required"),
        ({"json": ["question"]}, 400, "must be a JSON object"),
        (
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
            400,
            "not valid JSON",
        ),
        ({"json": {"question": "q", "mode": "wild"}}, 400, "'mode' must be one of"),
        ({"json": {"question": "q", "model": 3}}, 400, "'model' must be a string"),
        (
            {"content": b"question=x", "headers": {"content-type": "image/png"}},
            400,
            "unsupported content type",
        ),
        ({"json": {"question": "q", "model": "nope"}}, 404, "unknown model 'nope'"),
        ({"json": {"question": "x" * 300_000}}, 413, "exceeds the limit"),
    ],
)
def test_bad_input_gets_a_precise_error(
    gateway: GatewayProcess, kwargs: dict[str, Any], status: int, needle: str
) -> None:
    response = ask(gateway, **kwargs)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert needle in body["error"]
    assert isinstance(body["code"], str)


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong-key"}, {"Authorization": f"Basic {CLIENT_KEY}"}]
)
def test_client_key_is_required(gateway: GatewayProcess, headers: dict[str, str]) -> None:
    response = httpx.post(f"{gateway.url}/stream-ask", json={"question": "q"}, headers=headers)
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"


def test_health_needs_no_key(gateway: GatewayProcess) -> None:
    assert httpx.get(f"{gateway.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{gateway.url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"


def test_unknown_route_and_method(gateway: GatewayProcess) -> None:
    assert httpx.get(f"{gateway.url}/nope", headers=AUTH).status_code == 404
    assert httpx.get(f"{gateway.url}/stream-ask", headers=AUTH).status_code == 405


# Failures before the first byte: a proper HTTP status and a JSON body.
BEFORE_FIRST_BYTE = {
    "status_400": (400, "upstream_invalid_request"),
    "status_401": (502, "upstream_auth_failed"),
    "status_429": (429, "upstream_rate_limited"),
    "status_500": (502, "upstream_error"),
    "slow_headers": (504, "upstream_timeout"),
    "slow_first_event": (504, "upstream_timeout"),
    "error_first": (502, "upstream_error"),
    "html": (502, "upstream_protocol_error"),
}


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("scenario", list(BEFORE_FIRST_BYTE))
def test_upstream_failure_before_first_byte_is_an_http_error(
    gateway: GatewayProcess, provider: str, scenario: str
) -> None:
    status, code = BEFORE_FIRST_BYTE[scenario]
    response = ask(gateway, json={"question": "q", "model": f"{provider}-{scenario}"})
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["code"] == code
    if scenario == "status_429":
        assert response.headers["retry-after"] == "7"
    if scenario.startswith("status_"):
        assert scenario.split("_")[1] in response.json()["error"]
    record = gateway.record_for(response.headers["x-request-id"])
    assert record["status"] == status
    assert record["error"] == code


def test_unreachable_upstream_is_502(gateway: GatewayProcess) -> None:
    response = ask(gateway, json={"question": "q", "model": "openai-refused"})
    assert response.status_code == 502
    assert response.json()["code"] == "upstream_unreachable"


# Failures after the first byte: an in-band error event, then final_end.
AFTER_FIRST_BYTE = {
    "stall_mid": "upstream_timeout",
    "drop_mid": "upstream_disconnected",
    "error_mid": "upstream_error",
    "truncated": "upstream_protocol_error",
    "malformed_mid": "upstream_protocol_error",
}


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("scenario", list(AFTER_FIRST_BYTE))
def test_upstream_failure_after_first_byte_is_an_error_event_then_final_end(
    gateway: GatewayProcess, provider: str, scenario: str
) -> None:
    response = ask(gateway, json={"question": "q", "model": f"{provider}-{scenario}"})
    assert response.status_code == 200
    events = events_of(response)
    final = assert_well_formed(events)
    errors = [e for e in events if e["event"] == "error"]
    assert len(errors) == 1
    assert errors[0]["data"]["code"] == AFTER_FIRST_BYTE[scenario]
    assert errors[0]["data"]["message"]
    assert events[-2]["event"] == "error"
    assert final["finish_reason"] == "error"
    assert EXPECTED_TEXT.startswith(text_of(events)) and text_of(events)
    record = gateway.record_for(response.headers["x-request-id"])
    assert record["status"] == 200 and record["error"] == AFTER_FIRST_BYTE[scenario]


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("scenario", ["split_utf8", "crlf", "pings"])
def test_awkward_but_valid_upstream_framing(
    gateway: GatewayProcess, provider: str, scenario: str
) -> None:
    """Characters cut across TCP writes, CRLF line ends and comment pings lose nothing."""
    response = ask(gateway, json={"question": "q", "model": f"{provider}-{scenario}"})
    events = events_of(response)
    assert text_of(events) == EXPECTED_TEXT
    assert assert_well_formed(events)["finish_reason"] == "stop"
