"""Request translation: a rich conversation in each inbound format reaches each upstream whole.

The fake upstream records what it received; a small reader per upstream format (written here,
independently of the gateway's code) turns it back into a summary that must match.
"""

from __future__ import annotations

from typing import Any

import httpx2 as httpx
import orjson
import pytest

from tests.conftest import CLIENT_KEY, GatewayProcess
from tests.fake_upstream import FakeUpstream

IMAGE = "iVBORw0KGgoAAAANSUhEUg=="
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}}
AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}

EXPECTED = {
    "system": "You are terse.",
    "turns": [("user", "What's the weather in Paris?"), ("user", "And the time?")],
    "tool_calls": [("get_weather", {"city": "Paris"})],
    "tool_results": ["18C and sunny"],
    "images": 1,
    "tools": ["get_weather", "get_time"],
    "max_tokens": 300,
    "temperature": 0.5,
    "top_p": 0.9,
    "stop": ["END"],
}

OPENAI_BODY = {
    "messages": [
        {"role": "system", "content": "You are terse."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What's the weather in Paris?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{IMAGE}"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_w1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_w1", "content": "18C and sunny"},
        {"role": "user", "content": "And the time?"},
    ],
    "tools": [
        {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
        {"type": "function", "function": {"name": "get_time", "parameters": {}}},
    ],
    "tool_choice": "auto",
    "max_tokens": 300,
    "temperature": 0.5,
    "top_p": 0.9,
    "stop": ["END"],
}

ANTHROPIC_BODY = {
    "system": "You are terse.",
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What's the weather in Paris?"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": IMAGE},
                },
            ],
        },
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "call_w1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                }
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_w1", "content": "18C and sunny"},
                {"type": "text", "text": "And the time?"},
            ],
        },
    ],
    "tools": [
        {"name": "get_weather", "input_schema": WEATHER},
        {"name": "get_time", "input_schema": {"type": "object"}},
    ],
    "tool_choice": {"type": "auto"},
    "max_tokens": 300,
    "temperature": 0.5,
    "top_p": 0.9,
    "stop_sequences": ["END"],
}

GEMINI_BODY = {
    "systemInstruction": {"parts": [{"text": "You are terse."}]},
    "contents": [
        {
            "role": "user",
            "parts": [
                {"text": "What's the weather in Paris?"},
                {"inlineData": {"mimeType": "image/png", "data": IMAGE}},
            ],
        },
        {
            "role": "model",
            "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}],
        },
        {
            "role": "user",
            "parts": [
                {
                    "functionResponse": {
                        "name": "get_weather",
                        "response": {"result": "18C and sunny"},
                    }
                }
            ],
        },
        {"role": "user", "parts": [{"text": "And the time?"}]},
    ],
    "tools": [
        {
            "functionDeclarations": [
                {"name": "get_weather", "parameters": WEATHER},
                {"name": "get_time"},
            ]
        }
    ],
    "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}},
    "generationConfig": {
        "maxOutputTokens": 300,
        "temperature": 0.5,
        "topP": 0.9,
        "stopSequences": ["END"],
    },
}


def send(
    gw: GatewayProcess, inbound: str, model: str, extra: dict[str, Any] | None = None
) -> httpx.Response:
    if inbound == "openai":
        return httpx.post(
            f"{gw.url}/v1/chat/completions",
            headers=AUTH,
            json={**OPENAI_BODY, "model": model, **(extra or {})},
        )
    if inbound == "anthropic":
        return httpx.post(
            f"{gw.url}/v1/messages",
            headers=AUTH,
            json={**ANTHROPIC_BODY, "model": model, **(extra or {})},
        )
    return httpx.post(
        f"{gw.url}/v1beta/models/{model}:generateContent",
        headers=AUTH,
        json={**GEMINI_BODY, **(extra or {})},
    )


# -- readers: an upstream request body back to the summary ---------------------------------------


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(
            _text(v.get("text", ""))
            for v in value
            if isinstance(v, dict) and v.get("type") == "text"
        )
    if isinstance(value, dict):
        return str(value.get("result") or value.get("content") or orjson.dumps(value).decode())
    return ""


def read_openai(body: dict[str, Any]) -> dict[str, Any]:
    s: dict[str, Any] = {
        "system": "",
        "turns": [],
        "tool_calls": [],
        "tool_results": [],
        "images": 0,
    }
    for m in body["messages"]:
        if m["role"] == "system":
            s["system"] += m["content"]
        elif m["role"] == "tool":
            s["tool_results"].append(m["content"])
        else:
            content = m.get("content")
            if isinstance(content, list):
                s["images"] += sum(1 for p in content if p.get("type") == "image_url")
            if _text(content):
                s["turns"].append((m["role"], _text(content)))
            s["tool_calls"] += [
                (c["function"]["name"], orjson.loads(c["function"]["arguments"]))
                for c in m.get("tool_calls") or []
            ]
    s["tools"] = [t["function"]["name"] for t in body.get("tools", [])]
    s.update(
        max_tokens=body.get("max_tokens"),
        temperature=body.get("temperature"),
        top_p=body.get("top_p"),
        stop=body.get("stop"),
    )
    return s


def read_anthropic(body: dict[str, Any]) -> dict[str, Any]:
    s: dict[str, Any] = {
        "system": _text(body.get("system", "")),
        "turns": [],
        "tool_calls": [],
        "tool_results": [],
        "images": 0,
    }
    for m in body["messages"]:
        blocks = (
            m["content"]
            if isinstance(m["content"], list)
            else [{"type": "text", "text": m["content"]}]
        )
        text = "".join(b["text"] for b in blocks if b["type"] == "text")
        if text:
            s["turns"].append((m["role"], text))
        s["images"] += sum(1 for b in blocks if b["type"] == "image")
        s["tool_calls"] += [(b["name"], b["input"]) for b in blocks if b["type"] == "tool_use"]
        s["tool_results"] += [_text(b["content"]) for b in blocks if b["type"] == "tool_result"]
    s["tools"] = [t["name"] for t in body.get("tools", [])]
    s.update(
        max_tokens=body.get("max_tokens"),
        temperature=body.get("temperature"),
        top_p=body.get("top_p"),
        stop=body.get("stop_sequences"),
    )
    return s


def read_gemini(body: dict[str, Any]) -> dict[str, Any]:
    system = "".join(
        p.get("text", "") for p in (body.get("systemInstruction") or {}).get("parts", [])
    )
    s: dict[str, Any] = {
        "system": system,
        "turns": [],
        "tool_calls": [],
        "tool_results": [],
        "images": 0,
    }
    for c in body["contents"]:
        role = "assistant" if c["role"] == "model" else "user"
        text = "".join(p.get("text", "") for p in c["parts"])
        if text:
            s["turns"].append((role, text))
        s["images"] += sum(1 for p in c["parts"] if "inlineData" in p)
        s["tool_calls"] += [
            (p["functionCall"]["name"], p["functionCall"]["args"])
            for p in c["parts"]
            if "functionCall" in p
        ]
        s["tool_results"] += [
            _text(p["functionResponse"]["response"]) for p in c["parts"] if "functionResponse" in p
        ]
    s["tools"] = [d["name"] for t in body.get("tools", []) for d in t["functionDeclarations"]]
    g = body.get("generationConfig", {})
    s.update(
        max_tokens=g.get("maxOutputTokens"),
        temperature=g.get("temperature"),
        top_p=g.get("topP"),
        stop=g.get("stopSequences"),
    )
    return s


def read_ollama(body: dict[str, Any]) -> dict[str, Any]:
    s: dict[str, Any] = {
        "system": "",
        "turns": [],
        "tool_calls": [],
        "tool_results": [],
        "images": 0,
    }
    for m in body["messages"]:
        if m["role"] == "system":
            s["system"] += m["content"]
        elif m["role"] == "tool":
            s["tool_results"].append(m["content"])
        else:
            if m.get("content"):
                s["turns"].append((m["role"], m["content"]))
            s["images"] += len(m.get("images") or [])
            s["tool_calls"] += [
                (c["function"]["name"], c["function"]["arguments"])
                for c in m.get("tool_calls") or []
            ]
    s["tools"] = [t["function"]["name"] for t in body.get("tools", [])]
    o = body.get("options", {})
    s.update(
        max_tokens=o.get("num_predict"),
        temperature=o.get("temperature"),
        top_p=o.get("top_p"),
        stop=o.get("stop"),
    )
    return s


READERS = {
    "openai": read_openai,
    "anthropic": read_anthropic,
    "gemini": read_gemini,
    "ollama": read_ollama,
}
PAIRS = [(i, u) for i in ("openai", "anthropic", "gemini") for u in READERS if i != u]


@pytest.mark.parametrize(("inbound", "upstream"), PAIRS)
def test_conversation_reaches_the_upstream_whole(
    gateway: GatewayProcess, fake: FakeUpstream, inbound: str, upstream: str
) -> None:
    before = fake.count("ok")
    response = send(gateway, inbound, f"{upstream}-ok")
    assert response.status_code == 200, response.text
    assert fake.count("ok") == before + 1
    summary = READERS[upstream](fake.last("ok").body)
    assert summary == EXPECTED
    assert "x-tidegate-dropped-fields" not in response.headers


@pytest.mark.parametrize(
    ("inbound", "upstream", "extra", "dropped"),
    [
        ("openai", "anthropic", {"logprobs": True, "seed": 7}, ["logprobs", "seed"]),
        ("openai", "gemini", {"response_format": {"type": "json_object"}, "user": "u-1"}, ["user"]),
        ("anthropic", "openai", {"top_k": 5}, ["top_k"]),
        ("gemini", "openai", {"safetySettings": [{"category": "x"}]}, ["safetySettings"]),
        ("openai", "anthropic", {"response_format": {"type": "json_object"}}, ["response_format"]),
    ],
)
def test_fields_that_cannot_be_carried_are_named(
    gateway: GatewayProcess, inbound: str, upstream: str, extra: dict[str, Any], dropped: list[str]
) -> None:
    response = send(gateway, inbound, f"{upstream}-ok", extra)
    assert response.status_code == 200, response.text
    header = response.headers["x-tidegate-dropped-fields"]
    assert sorted(header.split(", ")) == sorted(dropped)
    assert gateway.record_for(response.headers["x-request-id"])["dropped"] == header.split(", ")


def test_json_mode_reaches_gemini_and_ollama(gateway: GatewayProcess, fake: FakeUpstream) -> None:
    for upstream in ("gemini", "ollama"):
        response = send(
            gateway, "openai", f"{upstream}-ok", {"response_format": {"type": "json_object"}}
        )
        assert response.status_code == 200
        body = fake.last("ok").body
        if upstream == "gemini":
            assert body["generationConfig"]["responseMimeType"] == "application/json"
        else:
            assert body["format"] == "json"


def test_reasoning_request_maps_to_each_upstream(
    gateway: GatewayProcess, fake: FakeUpstream
) -> None:
    send(gateway, "openai", "anthropic-ok", {"reasoning_effort": "low"})
    assert fake.last("ok").body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    send(
        gateway, "anthropic", "gemini-ok", {"thinking": {"type": "enabled", "budget_tokens": 3000}}
    )
    assert fake.last("ok").body["generationConfig"]["thinkingConfig"] == {
        "thinkingBudget": 3000,
        "includeThoughts": True,
    }
    send(
        gateway,
        "gemini",
        "openai-ok",
        {"generationConfig": {"thinkingConfig": {"thinkingBudget": 20000}}},
    )
    assert fake.last("ok").body["reasoning_effort"] == "high"


def test_configured_extra_headers_reach_the_upstream(
    gateway: GatewayProcess, fake: FakeUpstream
) -> None:
    response = send(gateway, "openai", "openai-extra-headers")
    assert response.status_code == 200
    received = fake.last("ok/headers").headers
    assert received["X-Team"] == "alpha" and received["OpenAI-Project"] == "proj_123"
    assert received["Authorization"].startswith("Bearer ")


@pytest.mark.parametrize("upstream", ["gemini", "openai"])
def test_gemini_stream_without_alt_sse_is_a_json_array(
    gateway: GatewayProcess, upstream: str
) -> None:
    """Without `alt=sse` Gemini streams one JSON array, written element by element."""
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    response = httpx.post(
        f"{gateway.url}/v1beta/models/{upstream}-ok:streamGenerateContent", json=body, headers=AUTH
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    chunks = orjson.loads(response.content)
    assert isinstance(chunks, list) and len(chunks) > 1
    text = "".join(
        p.get("text", "") for c in chunks for p in c["candidates"][0]["content"]["parts"]
    )
    from tests.fake_upstream import EXPECTED_TEXT

    assert text == EXPECTED_TEXT
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert chunks[-1]["usageMetadata"]["promptTokenCount"] == 11
