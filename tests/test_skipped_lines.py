"""One unreadable upstream line is skipped, counted and logged; the rest of the answer arrives."""

from __future__ import annotations

import anthropic
import httpx2 as httpx
import orjson
import pytest

from tests.conftest import CLIENT_KEY, GatewayProcess, closed_after_test, parse_sse
from tests.fake_upstream import EXPECTED_TEXT

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}


@pytest.mark.parametrize("fmt", ["openai", "anthropic", "gemini", "ollama", "kb"])
def test_a_malformed_line_mid_stream_is_skipped(gateway: GatewayProcess, fmt: str) -> None:
    response = httpx.post(
        f"{gateway.url}/stream-ask",
        headers=AUTH,
        json={"question": "q", "model": f"{fmt}-malformed_line"},
        timeout=20,
    )
    assert response.status_code == 200
    events = parse_sse(response.text)
    text = "".join(
        orjson.loads(e["data"])["content"]
        for e in events
        if e.get("event", "message") == "message" and orjson.loads(e["data"]).get("type") == "chunk"
    )
    assert text == EXPECTED_TEXT
    assert events[-1]["event"] == "final_end"
    end = orjson.loads(events[-1]["data"])
    assert end["finish_reason"] == "stop"
    record = gateway.record_for(response.headers["x-request-id"])
    assert record["skipped_lines"] == 1
    assert "error" not in record
    warning = gateway.lines_with(response.headers["x-request-id"], "unreadable")
    assert len(warning) == 1 and "skipped 1 unreadable event" in warning[0]


def test_the_anthropic_sdk_gets_the_whole_answer(gateway: GatewayProcess) -> None:
    client = closed_after_test(
        anthropic.Anthropic(base_url=gateway.url, api_key=CLIENT_KEY, max_retries=0)
    )
    with client.messages.stream(
        model="openai-malformed_line", max_tokens=50, messages=[{"role": "user", "content": "q"}]
    ) as stream:
        text = "".join(stream.text_stream)
    assert text == EXPECTED_TEXT
