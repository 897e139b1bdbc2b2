"""Same format on both sides: the client gets the upstream's bytes, and usage is still recorded."""

from __future__ import annotations

from typing import Any

import httpx2 as httpx
import pytest

from tests.conftest import CLIENT_KEY, GatewayProcess
from tests.fake_upstream import API_KEY, COMPLETION_TOKENS, PROMPT_TOKENS, FakeUpstream

MESSAGES = [{"role": "user", "content": "hi"}]
GEMINI_BODY = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}


def direct_and_via(
    gw: GatewayProcess, fake: FakeUpstream, fmt: str, stream: bool, body: dict[str, Any]
) -> tuple[httpx.Response, httpx.Response]:
    if fmt == "openai":
        direct = httpx.post(
            f"{fake.base('ok')}/v1/chat/completions",
            json={**body, "model": "fake-model"},
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
        via = httpx.post(
            f"{gw.url}/v1/chat/completions",
            json={**body, "model": "openai-ok"},
            headers={"Authorization": f"Bearer {CLIENT_KEY}"},
        )
    elif fmt == "anthropic":
        direct = httpx.post(
            f"{fake.base('ok')}/v1/messages",
            json={**body, "model": "claude-fake"},
            headers={"x-api-key": API_KEY},
        )
        via = httpx.post(
            f"{gw.url}/v1/messages",
            json={**body, "model": "anthropic-ok"},
            headers={"x-api-key": CLIENT_KEY},
        )
    else:
        action = "streamGenerateContent?alt=sse" if stream else "generateContent"
        direct = httpx.post(
            f"{fake.base('ok')}/v1beta/models/gemini-fake:{action}",
            json=body,
            headers={"x-goog-api-key": API_KEY},
        )
        via = httpx.post(
            f"{gw.url}/v1beta/models/gemini-ok:{action}",
            json=body,
            headers={"x-goog-api-key": CLIENT_KEY},
        )
    return direct, via


@pytest.mark.parametrize(
    ("fmt", "stream", "body"),
    [
        (
            "openai",
            True,
            {"messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}},
        ),
        ("openai", True, {"messages": MESSAGES, "stream": True}),
        ("openai", False, {"messages": MESSAGES}),
        ("anthropic", True, {"messages": MESSAGES, "max_tokens": 50, "stream": True}),
        ("anthropic", False, {"messages": MESSAGES, "max_tokens": 50}),
        ("gemini", True, GEMINI_BODY),
        ("gemini", False, GEMINI_BODY),
    ],
)
def test_bytes_pass_through_and_usage_is_recorded(
    gateway: GatewayProcess, fake: FakeUpstream, fmt: str, stream: bool, body: dict[str, Any]
) -> None:
    """Invariant: same format → identical bytes; the access log still has the token counts."""
    direct, via = direct_and_via(gateway, fake, fmt, stream, body)
    assert direct.status_code == via.status_code == 200
    assert via.content == direct.content
    record = gateway.record_for(via.headers["x-request-id"])
    assert (record["tokens_in"], record["tokens_out"]) == (PROMPT_TOKENS, COMPLETION_TOKENS)
    assert record["finish_reason"] == "stop"


def test_openai_stream_usage_is_requested_even_when_the_client_does_not(
    gateway: GatewayProcess, fake: FakeUpstream
) -> None:
    """No stream goes unaccounted, and the client gets no usage chunk it did not ask for."""
    via = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {CLIENT_KEY}"},
        json={"model": "openai-ok", "messages": MESSAGES, "stream": True},
    )
    assert fake.last("ok").body["stream_options"] == {"include_usage": True}
    assert b'"usage"' not in via.content
    assert via.content.endswith(b"data: [DONE]\n\n")


def test_upstream_error_event_passes_through_redacted(gateway: GatewayProcess) -> None:
    via = httpx.post(
        f"{gateway.url}/v1/messages",
        headers={"x-api-key": CLIENT_KEY},
        json={
            "model": "anthropic-leaky_mid",
            "max_tokens": 9,
            "stream": True,
            "messages": MESSAGES,
        },
    )
    assert b"event: error" in via.content and API_KEY.encode() not in via.content
    assert b"message_stop" not in via.content
