"""Inbound bodies of the wrong shape are 400s that name the field, on every chat endpoint.

Each case is sent to an upstream of the endpoint's own format (pass-through) and to one of
another format (translation): validation happens before either, so both answer the same 400,
never a 500, and the message names the field path in the endpoint's own terms.
"""

from __future__ import annotations

from typing import Any

import httpx2 as httpx
import pytest

from tests.conftest import CLIENT_KEY, GatewayProcess

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
HI = [{"role": "user", "content": "hi"}]
OPENAI_BASE: dict[str, Any] = {"messages": HI}
ANTHROPIC_BASE: dict[str, Any] = {"max_tokens": 16, "messages": HI}
GEMINI_BASE: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}


def post(gw: GatewayProcess, endpoint: str, model: str, body: dict[str, Any]) -> httpx.Response:
    """Send `body` to `endpoint` ("openai", "anthropic", "gemini", "stream_ask") for `model`."""
    if endpoint == "openai":
        return httpx.post(
            f"{gw.url}/v1/chat/completions", headers=AUTH, json={"model": model, **body}
        )
    if endpoint == "anthropic":
        return httpx.post(f"{gw.url}/v1/messages", headers=AUTH, json={"model": model, **body})
    if endpoint == "gemini":
        url = f"{gw.url}/v1beta/models/{model}:generateContent"
        return httpx.post(url, headers=AUTH, json=body)
    return httpx.post(f"{gw.url}/stream-ask", headers=AUTH, json={"model": model, **body})


def error_message(endpoint: str, response: httpx.Response) -> str:
    """The error message out of each endpoint's own error shape."""
    body = response.json()
    if endpoint == "stream_ask":
        return str(body["error"])
    return str(body["error"]["message"])


def _image(source: Any) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "image", "source": source}]}


# (endpoint, body, the field path the message must name)
CASES: list[tuple[str, dict[str, Any], str]] = [
    ("anthropic", {**ANTHROPIC_BASE, "thinking": "on"}, "thinking"),
    ("anthropic", {**ANTHROPIC_BASE, "metadata": "x"}, "metadata"),
    ("anthropic", {**ANTHROPIC_BASE, "messages": [_image("x")]}, "messages[0].content[0].source"),
    ("anthropic", {**ANTHROPIC_BASE, "tool_choice": {"type": ["auto"]}}, "tool_choice.type"),
    ("anthropic", {**ANTHROPIC_BASE, "system": [5]}, "system[0]"),
    ("anthropic", {**ANTHROPIC_BASE, "max_tokens": "16"}, "max_tokens"),
    ("gemini", {"contents": ["hi"]}, "contents[0]"),
    ("gemini", {"contents": [5]}, "contents[0]"),
    ("gemini", {"contents": [{"role": "user", "parts": "hi"}]}, "contents[0].parts"),
    ("gemini", {"contents": [{"role": "user", "parts": [5]}]}, "contents[0].parts[0]"),
    ("gemini", {**GEMINI_BASE, "generationConfig": [1]}, "generationConfig"),
    (
        "gemini",
        {**GEMINI_BASE, "generationConfig": {"candidateCount": "2"}},
        "generationConfig.candidateCount",
    ),
    (
        "gemini",
        {**GEMINI_BASE, "generation_config": {"candidate_count": "2"}},
        "generation_config.candidate_count",
    ),
    ("gemini", {**GEMINI_BASE, "toolConfig": "x"}, "toolConfig"),
    ("gemini", {**GEMINI_BASE, "tools": ["x"]}, "tools[0]"),
    (
        "gemini",
        {**GEMINI_BASE, "systemInstruction": {"parts": [1]}},
        "systemInstruction.parts[0]",
    ),
    (
        "gemini",
        {"contents": [{"parts": [{"inlineData": {"mimeType": 5, "data": "x"}}]}]},
        "contents[0].parts[0].inlineData.mimeType",
    ),
    ("openai", {**OPENAI_BASE, "model": 123}, "'model' must be"),
    ("openai", {**OPENAI_BASE, "model": ["tiny"]}, "'model' must be"),
    (
        "openai",
        {"messages": [{"role": "user", "content": 5}]},
        "messages[0].content must be a string or an array of content parts",
    ),
    ("openai", {"messages": [{"role": "user", "content": [5]}]}, "messages[0].content[0]"),
    ("openai", {**OPENAI_BASE, "tool_choice": ["auto"]}, "tool_choice"),
    ("openai", {**OPENAI_BASE, "response_format": "json"}, "response_format"),
    ("openai", {**OPENAI_BASE, "stream_options": {"include_usage": "yes"}}, "include_usage"),
    ("stream_ask", {"question": "q", "session_id": 5}, "'session_id' must be"),
    ("stream_ask", {"question": "q", "mode": ["chat"]}, "'mode' must be"),
]
UPSTREAMS = {
    "openai": ["openai-ok", "anthropic-ok"],
    "anthropic": ["anthropic-ok", "openai-ok"],
    "gemini": ["gemini-ok", "openai-ok"],
    "stream_ask": ["openai-ok"],
}
PARAMS = [
    pytest.param(endpoint, model, body, needle, id=f"{endpoint}-{model}-{needle}")
    for endpoint, body, needle in CASES
    for model in UPSTREAMS[endpoint]
]


@pytest.mark.parametrize(("endpoint", "model", "body", "needle"), PARAMS)
def test_wrong_shape_is_400_naming_the_field(
    gateway: GatewayProcess, endpoint: str, model: str, body: dict[str, Any], needle: str
) -> None:
    """A body of the wrong shape never reaches an upstream and never costs a 500."""
    response = post(gateway, endpoint, model, body)  # a `model` in `body` wins
    assert response.status_code == 400, response.text
    assert needle in error_message(endpoint, response)


def test_model_of_the_wrong_type_says_so(gateway: GatewayProcess) -> None:
    """`"model": 123` is a wrong type, not a missing field."""
    response = post(gateway, "openai", "x", {**OPENAI_BASE, "model": 123})
    message = error_message("openai", response)
    assert "is required" not in message
    assert "string" in message


# Valid bodies of every shape the schemas allow: they must still be served.
VALID: list[tuple[str, dict[str, Any]]] = [
    (
        "openai",
        {
            "messages": [
                {"role": "developer", "content": [{"type": "text", "text": "Be terse."}]},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "hi"},
                        {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                        {"type": "input_audio", "input_audio": {"data": "AA==", "format": "wav"}},
                    ],
                    "name": "ann",
                },
                {"role": "assistant", "content": None, "refusal": None},
                {"role": "user", "content": "again"},
            ],
            "stream": None,
            "temperature": 1,
            "top_p": 0.5,
            "n": 1,
            "stop": "END",
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "r", "schema": {"type": "object"}, "strict": True},
            },
            "tool_choice": {"type": "function", "function": {"name": "f"}},
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
            "parallel_tool_calls": False,
            "reasoning_effort": "low",
            "user": "u-1",
            "seed": 7,
            "logit_bias": {"50256": -100},
        },
    ),
    (
        "anthropic",
        {
            "max_tokens": 2048,
            "system": [
                {"type": "text", "text": "Be terse.", "cache_control": {"type": "ephemeral"}}
            ],
            "messages": [
                {"role": "user", "content": "hi"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "hm", "signature": "sig"},
                        {"type": "redacted_thinking", "data": "xyz"},
                        {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t1",
                            "content": [{"type": "text", "text": "42"}],
                            "is_error": False,
                        },
                        {
                            "type": "image",
                            "source": {"type": "url", "url": "https://x/y.png"},
                        },
                        {"type": "document", "source": {"type": "text", "data": "doc"}},
                    ],
                },
            ],
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "metadata": {"user_id": "u-1"},
            "tools": [
                {"name": "f", "description": "d", "input_schema": {"type": "object"}},
                {"type": "web_search_20250305", "name": "web_search", "max_uses": 1},
            ],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
            "stop_sequences": ["END"],
            "top_k": 5,
            "service_tier": "auto",
        },
    ),
    (
        "gemini",
        {
            "system_instruction": {"parts": [{"text": "Be terse."}]},
            "contents": [
                {"role": "user", "parts": [{"text": "hi"}]},
                {
                    "role": "model",
                    "parts": [
                        {"text": "thinking", "thought": True},
                        {"function_call": {"name": "f", "args": {"a": 1}}},
                    ],
                },
                {
                    "role": "user",
                    "parts": [
                        {"function_response": {"name": "f", "response": {"result": 42}}},
                        {"inline_data": {"mime_type": "image/png", "data": "AA=="}},
                        {"file_data": {"file_uri": "gs://b/o.png", "mime_type": "image/png"}},
                    ],
                },
            ],
            "tools": [
                {"function_declarations": [{"name": "f", "parameters": {"type": "OBJECT"}}]},
                {"googleSearch": {}},
            ],
            "tool_config": {
                "function_calling_config": {"mode": "ANY", "allowed_function_names": ["f"]}
            },
            "generation_config": {
                "temperature": 0.2,
                "top_k": 40.0,
                "max_output_tokens": 64,
                "candidate_count": 1,
                "stop_sequences": ["END"],
                "response_mime_type": "application/json",
                "thinking_config": {"thinking_budget": 1024, "include_thoughts": True},
                "seed": 3,
            },
            "safetySettings": [{"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "OFF"}],
        },
    ),
]


@pytest.mark.parametrize(
    ("endpoint", "model", "body"),
    [
        pytest.param(endpoint, model, body, id=f"{endpoint}-{model}")
        for endpoint, body in VALID
        for model in ("openai-ok", "anthropic-ok", "gemini-ok", "ollama-ok", "kb-ok")
    ],
)
def test_valid_bodies_of_every_shape_are_served(
    gateway: GatewayProcess, endpoint: str, model: str, body: dict[str, Any]
) -> None:
    response = post(gateway, endpoint, model, body)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("path", "body", "needle"),
    [
        (
            "/v1/chat/completions",
            {"model": "openai-ok", "messages": [{"role": "user", "content": "x"}] * 5000},
            "'messages' must have at most 4096 items",
        ),
        (
            "/v1/messages",
            {
                "model": "openai-ok",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": "x"}] * 5000,
            },
            "messages: must have at most 4096 items",
        ),
        (
            "/v1beta/models/openai-ok:generateContent",
            {"contents": [{"role": "user", "parts": [{"text": "x"}]}] * 5000},
            "contents: must have at most 4096 items",
        ),
    ],
)
def test_arrays_are_bounded_so_validation_stays_cheap(
    gateway: GatewayProcess, path: str, body: dict[str, Any], needle: str
) -> None:
    """A body of hundreds of thousands of tiny items would cost the loop seconds to validate:
    arrays have bounds far above what a conversation needs."""
    response = httpx.post(gateway.url + path, headers=AUTH, json=body, timeout=20)
    assert response.status_code == 400
    assert needle in response.text, response.text
