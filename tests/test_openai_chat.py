"""`/v1/chat/completions` end to end, driven by the official openai SDK and a plain client."""

from __future__ import annotations

from typing import Any

import httpx2 as httpx
import openai
import pytest

from tests.conftest import CLIENT_KEY, GatewayProcess
from tests.fake_upstream import (
    API_KEY,
    COMPLETION_TOKENS,
    EXPECTED_TEXT,
    PROMPT_TOKENS,
    FakeUpstream,
)
from tidegate.providers.demo import DEMO_ANSWER

MESSAGES: list[Any] = [{"role": "user", "content": "Say hello"}]


@pytest.fixture
def client(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{gateway.url}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=20
    )


@pytest.mark.parametrize("model", ["openai-ok", "kb-ok"])
def test_non_streaming(client: openai.OpenAI, model: str) -> None:
    completion = client.chat.completions.create(model=model, messages=MESSAGES)
    assert completion.choices[0].message.content == EXPECTED_TEXT
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (
        PROMPT_TOKENS,
        COMPLETION_TOKENS,
    )


@pytest.mark.parametrize(
    "model", ["openai-ok", "kb-ok", "openai-split_utf8", "kb-crlf", "openai-pings"]
)
def test_streaming_with_usage(client: openai.OpenAI, model: str) -> None:
    stream = client.chat.completions.create(
        model=model, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == EXPECTED_TEXT
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == ["stop"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == PROMPT_TOKENS
    assert chunks[-1].usage.completion_tokens == COMPLETION_TOKENS


@pytest.mark.parametrize("model", ["openai-ok", "kb-ok"])
def test_streaming_without_usage_sends_no_usage_chunk(client: openai.OpenAI, model: str) -> None:
    chunks = list(client.chat.completions.create(model=model, messages=MESSAGES, stream=True))
    assert all(c.usage is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == EXPECTED_TEXT


def test_demo_through_the_sdk(start_gateway: Any) -> None:
    gw = start_gateway(None)
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0)
    stream = client.chat.completions.create(model="demo", messages=MESSAGES, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == DEMO_ANSWER


def test_same_format_passes_bytes_through_untouched(
    gateway: GatewayProcess, fake: FakeUpstream
) -> None:
    """OpenAI to OpenAI: the client receives exactly the upstream's bytes."""
    body = {
        "model": "fake-model",
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    direct = httpx.post(
        f"{fake.base('ok')}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    via = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={**body, "model": "openai-ok"},
        headers={"Authorization": f"Bearer {CLIENT_KEY}"},
    )
    assert via.status_code == 200
    assert via.content == direct.content
    forwarded = fake.last("ok").body
    assert forwarded == body  # only `model` was replaced
    record = gateway.record_for(via.headers["x-request-id"])
    assert (record["tokens_in"], record["tokens_out"]) == (PROMPT_TOKENS, COMPLETION_TOKENS)


def test_translated_stream_uses_only_data_lines(gateway: GatewayProcess) -> None:
    """The openai SDK breaks on `event:` and `id:` lines; the stream must end with [DONE]."""
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "kb-ok", "messages": MESSAGES, "stream": True},
        headers={"Authorization": f"Bearer {CLIENT_KEY}"},
    )
    lines = [line for line in response.text.split("\n") if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"


def test_dropped_fields_are_named(gateway: GatewayProcess) -> None:
    """AnythingLLM cannot take history, a system prompt or sampling settings: say so."""
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={
            "model": "kb-ok",
            "temperature": 0.3,
            "logprobs": True,
            "messages": [
                {"role": "system", "content": "Be terse."},
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b"},
                {"role": "user", "content": "c"},
            ],
        },
        headers={"Authorization": f"Bearer {CLIENT_KEY}"},
    )
    assert response.status_code == 200
    dropped = response.headers["x-tidegate-dropped-fields"]
    for name in ("logprobs", "system", "history", "temperature"):
        assert name in dropped
    assert gateway.record_for(response.headers["x-request-id"])["dropped"]


@pytest.mark.parametrize(
    ("model", "error", "status"),
    [
        ("missing-model", openai.NotFoundError, 404),
        ("openai-status_400", openai.BadRequestError, 400),
        ("openai-status_429", openai.RateLimitError, 429),
        ("openai-status_500", openai.InternalServerError, 502),
        ("kb-status_401", openai.InternalServerError, 502),
        ("openai-error_first", openai.InternalServerError, 502),
        ("openai-short-total", openai.InternalServerError, 504),
        ("kb-html", openai.InternalServerError, 502),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_errors_before_first_byte_raise_the_right_sdk_error(
    client: openai.OpenAI, model: str, error: type[Exception], status: int, stream: bool
) -> None:
    """Non-streaming calls are bounded by the total timeout, streaming ones also by first byte."""
    with pytest.raises(error) as info:
        result = client.chat.completions.create(model=model, messages=MESSAGES, stream=stream)
        if stream:
            list(result)
    assert getattr(info.value, "status_code", None) == status
    body = getattr(info.value, "body", None)
    assert isinstance(body, dict) and body["message"] and body["type"]


def test_wrong_client_key_is_authentication_error(gateway: GatewayProcess) -> None:
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="openai-ok", messages=MESSAGES)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"messages": MESSAGES}, "'model' is required"),
        ({"model": "openai-ok"}, "'messages' is required"),
        ({"model": "openai-ok", "messages": [{"role": "wizard", "content": "x"}]}, "role must be"),
        ({"model": "openai-ok", "messages": MESSAGES, "stream": "yes"}, "'stream' must be"),
        ({"model": "openai-ok", "messages": MESSAGES, "temperature": 9}, "'temperature' must be"),
        ({"model": "openai-ok", "messages": MESSAGES, "max_tokens": 0}, "'max_tokens' must be"),
    ],
)
def test_invalid_bodies_are_400_in_openai_shape(
    gateway: GatewayProcess, body: dict[str, Any], needle: str
) -> None:
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {CLIENT_KEY}"},
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert needle in error["message"]
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    "model",
    [
        "openai-error_mid",
        "kb-error_mid",
        "openai-stall_mid",
        "kb-drop_mid",
        "openai-truncated",
        "kb-malformed_mid",
    ],
)
def test_errors_after_first_byte_raise_mid_stream(client: openai.OpenAI, model: str) -> None:
    """The SDK sees the text so far, then an APIError from the in-band error event."""
    received = []
    with pytest.raises(openai.APIError) as info:
        for chunk in client.chat.completions.create(model=model, messages=MESSAGES, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
    assert received and EXPECTED_TEXT.startswith("".join(received))
    assert info.value.message


def test_streaming_first_event_timeout_is_504(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        list(
            client.chat.completions.create(
                model="openai-slow_first_event", messages=MESSAGES, stream=True
            )
        )
    assert info.value.status_code == 504
    assert "first byte" in info.value.message


def test_models_list(client: openai.OpenAI) -> None:
    names = [m.id for m in client.models.list()]
    assert "openai-ok" in names and "kb-ok" in names and "demo" in names
    assert len(names) == len(set(names))
