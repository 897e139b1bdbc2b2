"""Every stream ends exactly once, in whole events: one finish, at most one usage chunk, one
terminator — however the upstream ended (with `[DONE]` unterminated, or without it)."""

from __future__ import annotations

from typing import Any

import httpx2 as httpx
import openai
import orjson
import pytest

from tests.conftest import CLIENT_KEY, GatewayProcess, parse_sse
from tests.fake_upstream import EXPECTED_TEXT

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
MESSAGES = [{"role": "user", "content": "q"}]


def chat_events(text: str) -> list[str]:
    assert text.endswith("\n\n"), "the stream must end with a complete event"
    return [e["data"] for e in parse_sse(text)]


@pytest.mark.parametrize("scenario", ["ok", "no_done", "unterminated"])
@pytest.mark.parametrize("upstream", ["openai", "anthropic", "gemini"])
@pytest.mark.parametrize("usage", [False, True])
def test_openai_stream_ends_once(
    gateway: GatewayProcess, scenario: str, upstream: str, usage: bool
) -> None:
    body: dict[str, Any] = {"model": f"{upstream}-{scenario}", "messages": MESSAGES, "stream": True}
    if usage:
        body["stream_options"] = {"include_usage": True}
    response = httpx.post(f"{gateway.url}/v1/chat/completions", headers=AUTH, json=body)
    assert response.status_code == 200
    data = chat_events(response.text)
    assert data[-1] == "[DONE]" and data.count("[DONE]") == 1
    chunks = [orjson.loads(d) for d in data[:-1]]
    errors = [c for c in chunks if "error" in c]
    if upstream != "openai" and scenario != "ok" and errors:
        return  # Anthropic without message_stop, Gemini cut before its finish: truncated
    assert not errors, errors
    finishes = [c for c in chunks if c["choices"] and c["choices"][0].get("finish_reason")]
    assert len(finishes) == 1
    roles = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("role")]
    assert len(roles) <= 1
    usages = [c for c in chunks if c.get("usage")]
    assert len(usages) == (1 if usage else 0)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == EXPECTED_TEXT


@pytest.mark.parametrize("scenario", ["no_done", "unterminated"])
def test_the_sdk_reads_a_pass_through_stream_whose_end_was_cut(
    gateway: GatewayProcess, scenario: str
) -> None:
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=CLIENT_KEY, max_retries=0)
    stream = client.chat.completions.create(  # type: ignore[call-overload]
        model=f"openai-{scenario}",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == EXPECTED_TEXT
    assert sum(1 for c in chunks if c.usage is not None) == 1


@pytest.mark.parametrize("upstream", ["openai", "anthropic"])
@pytest.mark.parametrize("scenario", ["no_done", "unterminated"])
def test_anthropic_and_stream_ask_endings(
    gateway: GatewayProcess, upstream: str, scenario: str
) -> None:
    model = f"{upstream}-{scenario}"
    messages = httpx.post(
        f"{gateway.url}/v1/messages",
        headers=AUTH,
        json={"model": model, "max_tokens": 50, "messages": MESSAGES, "stream": True},
    )
    assert messages.text.endswith("\n\n")
    names = [e.get("event") for e in parse_sse(messages.text)]
    assert names.count("message_stop") + names.count("error") == 1
    ask = httpx.post(
        f"{gateway.url}/stream-ask", headers=AUTH, json={"question": "q", "model": model}
    )
    events = parse_sse(ask.text)
    assert [e.get("event") for e in events].count("final_end") == 1
    assert events[-1]["event"] == "final_end"
