"""Details users meet first: model lookup, the 401 of each API, the demo's max_tokens, and an
upstream's own error object kept when the formats match."""

from __future__ import annotations

from typing import Any

import httpx2 as httpx
import openai
import pytest

from tests.conftest import CLIENT_KEY, GatewayProcess, closed_after_test

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}


def test_get_one_model_the_openai_way(gateway: GatewayProcess) -> None:
    client = closed_after_test(
        openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=CLIENT_KEY, max_retries=0)
    )
    model = client.models.retrieve("openai-ok")
    assert model.id == "openai-ok" and model.owned_by == "openai"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")
    listed = {m.id for m in client.models.list()}
    assert "openai-ok" in listed and "demo" in listed


@pytest.mark.parametrize(
    ("path", "body", "hint"),
    [
        ("/v1/chat/completions", {"model": "demo", "messages": []}, "Authorization: Bearer"),
        ("/v1/messages", {"model": "demo", "messages": [], "max_tokens": 5}, "x-api-key"),
        ("/v1beta/models/demo:generateContent", {"contents": []}, "x-goog-api-key"),
    ],
)
def test_a_401_names_the_header_the_apis_sdk_sends(
    gateway: GatewayProcess, path: str, body: dict[str, Any], hint: str
) -> None:
    response = httpx.post(gateway.url + path, json=body)
    assert response.status_code == 401
    assert hint in response.text


@pytest.mark.parametrize("model", [123, ["tiny"], None])
def test_a_model_of_the_wrong_type_is_named(gateway: GatewayProcess, model: Any) -> None:
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        headers=AUTH,
        json={"model": model, "messages": [{"role": "user", "content": "q"}]},
    )
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "'model'" in message
    if model is not None:
        assert "is required" not in message and "got" in message


@pytest.mark.parametrize("stream", [False, True])
def test_the_demo_model_honours_max_tokens(gateway: GatewayProcess, stream: bool) -> None:
    client = closed_after_test(
        openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=CLIENT_KEY, max_retries=0)
    )
    messages: Any = [{"role": "user", "content": "q"}]
    if stream:
        chunks = list(
            client.chat.completions.create(
                model="demo", messages=messages, max_tokens=5, stream=True
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
    else:
        completion = client.chat.completions.create(model="demo", messages=messages, max_tokens=5)
        text = completion.choices[0].message.content or ""
        finish = completion.choices[0].finish_reason
    assert len(text.split()) == 5
    assert finish == "length"


def test_a_same_format_upstream_error_keeps_its_own_fields(gateway: GatewayProcess) -> None:
    """llama.cpp's context error reaches an OpenAI client with its n_prompt_tokens and n_ctx."""
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        headers=AUTH,
        json={"model": "openai-context_exceeded", "messages": [{"role": "user", "content": "q"}]},
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "exceed_context_size_error"
    assert (error["n_prompt_tokens"], error["n_ctx"]) == (2511, 2048)
    other = httpx.post(
        f"{gateway.url}/v1/messages",
        headers=AUTH,
        json={
            "model": "openai-context_exceeded",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "q"}],
        },
    )
    assert other.status_code == 400
    assert other.json()["error"]["type"] == "invalid_request_error"
    assert "exceeds the available context size" in other.json()["error"]["message"]
