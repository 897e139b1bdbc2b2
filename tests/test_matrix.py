"""Every inbound API x every upstream format, through the real server, with the official SDKs.

For each pair the client must get the same text, reasoning, tool calls, finish and normalized
usage as the upstream sent (as far as the client's own format can carry them), and a failure
mid-stream must raise the SDK's own error type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import anthropic
import httpx2 as httpx
import openai
import orjson
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as gtypes

from tests.conftest import CLIENT_KEY, GatewayProcess, closed_after_test, parse_sse
from tests.fake_upstream import (
    ANSWER_TEXT,
    COMPLETION_TOKENS,
    EXPECTED_TEXT,
    PROMPT_TOKENS,
    R_CACHED,
    R_INPUT,
    R_OUTPUT,
    R_REASONING,
    REASONING_TEXT,
    T_INPUT,
    T_OUTPUT,
    TOOL_CALLS,
)

UPSTREAMS = ["openai", "anthropic", "gemini", "ollama", "kb", "openai-responses"]
CLIENTS = ["openai", "anthropic", "gemini", "stream_ask", "responses"]
PROMPT = "What is the weather in Paris?"
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}
TIME_SCHEMA = {"type": "object", "properties": {"tz": {"type": "string"}}}


@dataclass
class Result:
    """What a client made of an answer, in canonical terms."""

    text: str = ""
    reasoning: str = ""
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    finish: str | None = None
    usage: dict[str, int] = field(default_factory=dict)


# -- clients ------------------------------------------------------------------------------------


def via_openai(gw: GatewayProcess, model: str, stream: bool, tools: bool) -> Result:
    client = closed_after_test(
        openai.OpenAI(base_url=f"{gw.url}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=20)
    )
    kwargs: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": PROMPT}]}
    if tools:
        kwargs["tools"] = [
            {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}},
            {"type": "function", "function": {"name": "get_time", "parameters": TIME_SCHEMA}},
        ]
    if stream:
        reasoning = []
        with client.chat.completions.stream(**kwargs, stream_options={"include_usage": True}) as s:
            for event in s:
                if event.type == "chunk" and event.chunk.choices:
                    extra = event.chunk.choices[0].delta.model_extra or {}
                    reasoning.append(extra.get("reasoning_content") or "")
            completion = s.get_final_completion()
        message = completion.choices[0].message
        reasoning_text = "".join(reasoning)
    else:
        completion = client.chat.completions.create(**kwargs)
        message = completion.choices[0].message
        reasoning_text = (message.model_extra or {}).get("reasoning_content") or ""
    usage = completion.usage
    assert usage is not None
    return Result(
        text=message.content or "",
        reasoning=reasoning_text,
        tool_calls=[
            (c.function.name, orjson.loads(c.function.arguments)) for c in message.tool_calls or []
        ],
        finish=completion.choices[0].finish_reason,
        usage={
            "input": usage.prompt_tokens,
            "output": usage.completion_tokens,
            "cache_read": (usage.prompt_tokens_details.cached_tokens or 0)
            if usage.prompt_tokens_details
            else 0,
            "reasoning": (usage.completion_tokens_details.reasoning_tokens or 0)
            if usage.completion_tokens_details
            else 0,
        },
    )


RESPONSES_FINISH = {"completed": "stop", "incomplete": "length"}


def via_responses(gw: GatewayProcess, model: str, stream: bool, tools: bool) -> Result:
    client = closed_after_test(
        openai.OpenAI(base_url=f"{gw.url}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=20)
    )
    kwargs: dict[str, Any] = {"model": model, "input": PROMPT}
    if tools:
        kwargs["tools"] = [
            {"type": "function", "name": "get_weather", "parameters": WEATHER_SCHEMA},
            {"type": "function", "name": "get_time", "parameters": TIME_SCHEMA},
        ]
    if stream:
        with client.responses.stream(**kwargs) as s:
            streamed = "".join(e.delta for e in s if e.type == "response.output_text.delta")
            response = s.get_final_response()
        assert streamed == response.output_text
    else:
        response = client.responses.create(**kwargs)
    calls = [
        (item.name, orjson.loads(item.arguments))
        for item in response.output
        if item.type == "function_call"
    ]
    reasoning = "".join(
        s.text for item in response.output if item.type == "reasoning" for s in item.summary
    )
    finish = RESPONSES_FINISH.get(response.status or "", response.status)
    u = response.usage
    assert u is not None
    return Result(
        text=response.output_text,
        reasoning=reasoning,
        tool_calls=calls,
        finish="tool_calls" if finish == "stop" and calls else finish,
        usage={
            "input": u.input_tokens,
            "output": u.output_tokens,
            "cache_read": u.input_tokens_details.cached_tokens,
            "reasoning": u.output_tokens_details.reasoning_tokens,
        },
    )


ANTHROPIC_STOP = {"end_turn": "stop", "tool_use": "tool_calls", "max_tokens": "length"}


def via_anthropic(gw: GatewayProcess, model: str, stream: bool, tools: bool) -> Result:
    client = closed_after_test(
        anthropic.Anthropic(base_url=gw.url, api_key=CLIENT_KEY, max_retries=0, timeout=20)
    )
    kwargs: dict[str, Any] = {
        "model": model,
        "max_tokens": 512,
        "messages": [{"role": "user", "content": PROMPT}],
    }
    if tools:
        kwargs["tools"] = [
            {"name": "get_weather", "input_schema": WEATHER_SCHEMA},
            {"name": "get_time", "input_schema": TIME_SCHEMA},
        ]
    if stream:
        with client.messages.stream(**kwargs) as s:
            streamed = "".join(s.text_stream)
            message = s.get_final_message()
        text = "".join(b.text for b in message.content if b.type == "text")
        assert streamed == text
    else:
        message = client.messages.create(**kwargs)
    u = message.usage
    cache_read = u.cache_read_input_tokens or 0
    return Result(
        text="".join(b.text for b in message.content if b.type == "text"),
        reasoning="".join(b.thinking for b in message.content if b.type == "thinking"),
        tool_calls=[(b.name, dict(b.input)) for b in message.content if b.type == "tool_use"],
        finish=ANTHROPIC_STOP.get(message.stop_reason or "", message.stop_reason),
        usage={
            "input": u.input_tokens + cache_read + (u.cache_creation_input_tokens or 0),
            "output": u.output_tokens,
            "cache_read": cache_read,
        },
    )


def via_gemini(gw: GatewayProcess, model: str, stream: bool, tools: bool) -> Result:
    client = closed_after_test(
        genai.Client(api_key=CLIENT_KEY, http_options=gtypes.HttpOptions(base_url=gw.url))
    )
    config = gtypes.GenerateContentConfig()
    if tools:
        config.tools = [
            gtypes.Tool(
                function_declarations=[
                    gtypes.FunctionDeclaration(
                        name="get_weather", parameters_json_schema=WEATHER_SCHEMA
                    ),
                    gtypes.FunctionDeclaration(name="get_time", parameters_json_schema=TIME_SCHEMA),
                ]
            )
        ]
        config.automatic_function_calling = gtypes.AutomaticFunctionCallingConfig(disable=True)
    if stream:
        responses = list(
            client.models.generate_content_stream(model=model, contents=PROMPT, config=config)
        )
    else:
        responses = [client.models.generate_content(model=model, contents=PROMPT, config=config)]
    result = Result()
    for r in responses:
        for candidate in r.candidates or []:
            for part in (candidate.content.parts if candidate.content else None) or []:
                if part.function_call is not None:
                    result.tool_calls.append(
                        (part.function_call.name or "", dict(part.function_call.args or {}))
                    )
                elif part.thought:
                    result.reasoning += part.text or ""
                elif part.text:
                    result.text += part.text
            if candidate.finish_reason:
                result.finish = candidate.finish_reason.value
        if r.usage_metadata:
            u = r.usage_metadata
            thoughts = u.thoughts_token_count or 0
            result.usage = {
                "input": u.prompt_token_count or 0,
                "output": (u.candidates_token_count or 0) + thoughts,
                "cache_read": u.cached_content_token_count or 0,
                "reasoning": thoughts,
            }
    if result.finish == "STOP":
        result.finish = "tool_calls" if result.tool_calls else "stop"
    return result


def via_stream_ask(gw: GatewayProcess, model: str, stream: bool, tools: bool) -> Result:
    response = httpx.post(
        f"{gw.url}/stream-ask",
        json={"question": PROMPT, "model": model},
        headers={"Authorization": f"Bearer {CLIENT_KEY}"},
        timeout=20,
    )
    assert response.status_code == 200, response.text
    result = Result()
    for event in parse_sse(response.text):
        data = orjson.loads(event["data"])
        name = event.get("event", "message")
        if name == "error":
            raise StreamAskError(data["message"])
        if name == "final_end":
            result.finish = data["finish_reason"]
            u = data["usage"] or {}
            result.usage = {
                "input": u.get("input_tokens", 0),
                "output": u.get("output_tokens", 0),
                "cache_read": u.get("cache_read_tokens", 0),
                "reasoning": u.get("reasoning_tokens", 0),
            }
        elif data.get("type") == "chunk":
            result.text += data["content"]
        elif data.get("type") == "reasoning":
            result.reasoning += data["content"]
    return result


class StreamAskError(Exception):
    pass


CLIENT_FUNCS = {
    "openai": via_openai,
    "anthropic": via_anthropic,
    "gemini": via_gemini,
    "stream_ask": via_stream_ask,
    "responses": via_responses,
}


# -- expectations -------------------------------------------------------------------------------


def expected(upstream: str, case: str) -> Result:
    if case == "tools":
        return Result(
            tool_calls=[(n, a) for _, n, a, _ in TOOL_CALLS],
            finish="tool_calls",
            usage={"input": T_INPUT, "output": T_OUTPUT, "cache_read": 0, "reasoning": 0},
        )
    if case == "reasoning":
        # What each upstream format reports: Anthropic and Ollama give no reasoning token count,
        # Ollama no cache count either.
        return Result(
            text=ANSWER_TEXT,
            reasoning=REASONING_TEXT,
            finish="stop",
            usage={
                "input": R_INPUT,
                "output": R_OUTPUT,
                "cache_read": 0 if upstream == "ollama" else R_CACHED,
                "reasoning": R_REASONING
                if upstream in ("openai", "gemini", "openai-responses")
                else 0,
            },
        )
    return Result(
        text=EXPECTED_TEXT,
        finish="stop",
        usage={
            "input": PROMPT_TOKENS,
            "output": COMPLETION_TOKENS,
            "cache_read": 0,
            "reasoning": 0,
        },
    )


CASES = [
    (client, upstream, case, stream)
    for client in CLIENTS
    for upstream in UPSTREAMS
    for case in ("ok", "tools", "reasoning")
    for stream in (True, False)
    if not (upstream == "kb" and case != "ok")  # a workspace answers text only
    if not (client == "stream_ask" and (case == "tools" or not stream))
]


@pytest.mark.parametrize(("client", "upstream", "case", "stream"), CASES)
def test_matrix(
    gateway: GatewayProcess, client: str, upstream: str, case: str, stream: bool
) -> None:
    got = CLIENT_FUNCS[client](gateway, f"{upstream}-{case}", stream, case == "tools")
    want = expected(upstream, case)
    assert got.text == want.text
    assert got.tool_calls == want.tool_calls
    assert got.finish == want.finish
    if client != "openai" or upstream != "openai" or stream:
        # (the OpenAI SDK keeps unknown fields; the reasoning text reaches every client)
        assert got.reasoning == want.reasoning
    for key, value in got.usage.items():
        assert value == want.usage[key], (key, got.usage, want.usage)
    assert set(got.usage) >= {"input", "output"}


ERRORS: dict[str, type[Exception]] = {
    "openai": openai.APIError,
    "anthropic": anthropic.APIStatusError,
    "gemini": genai_errors.APIError,
    "stream_ask": StreamAskError,
    "responses": openai.APIError,
}


@pytest.mark.parametrize("upstream", UPSTREAMS)
@pytest.mark.parametrize("client", CLIENTS)
def test_mid_stream_error_raises_the_sdk_error(
    gateway: GatewayProcess, client: str, upstream: str
) -> None:
    with pytest.raises(ERRORS[client]) as info:
        CLIENT_FUNCS[client](gateway, f"{upstream}-error_mid", True, False)
    assert "mid-way" in str(info.value)


@pytest.mark.parametrize("upstream", UPSTREAMS)
@pytest.mark.parametrize("client", ["openai", "anthropic", "gemini", "responses"])
def test_error_before_first_byte_raises_the_sdk_status_error(
    gateway: GatewayProcess, client: str, upstream: str
) -> None:
    expected_errors = {
        "openai": openai.RateLimitError,
        "anthropic": anthropic.RateLimitError,
        "gemini": genai_errors.ClientError,
        "responses": openai.RateLimitError,
    }
    with pytest.raises(expected_errors[client]) as info:
        CLIENT_FUNCS[client](gateway, f"{upstream}-status_429", True, False)
    assert "429" in str(info.value)
