"""`POST /v1/responses` through the real gateway with the official openai SDK, and the
`openai-responses` upstream behind the other endpoints.

Invariants (the SDK matrix in test_matrix.py checks text, tool calls, reasoning, finish and
usage for every pair; these are what only this API has):
- a stream is the lifecycle the SDK reads: `response.created` first, numbered events, every
  item added before its deltas and done after them, one terminal event, the same response id;
- `max_output_tokens` reached ends `incomplete`, whichever side cut the answer;
- an error before the stream is the SDK's status error; one after it is an `error` event the
  SDK raises on, then `response.failed`;
- Responses to a Responses upstream is the upstream's bytes, usage still recorded;
- a request reaches every upstream whole, and every request reaches a Responses upstream
  whole, but for what the other side cannot carry, which is named;
- a body of the wrong shape is a 400 naming the field.
"""

from __future__ import annotations

from typing import Any

import httpx2 as httpx
import openai
import orjson
import pytest

from tests.conftest import CLIENT_KEY, GatewayProcess, closed_after_test, parse_sse
from tests.fake_upstream import (
    API_KEY,
    COMPLETION_TOKENS,
    EXPECTED_TEXT,
    PROMPT_TOKENS,
    TEXT_PIECES,
    TOOL_CALLS,
    FakeUpstream,
)
from tests.test_translation import EXPECTED, IMAGE, READERS, WEATHER, send

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
UPSTREAMS = ["openai", "anthropic", "gemini", "kb", "openai-responses"]
PROMPT = "What is the weather in Paris?"
TOOLS = [
    {"type": "function", "name": "get_weather", "parameters": WEATHER},
    {"type": "function", "name": "get_time", "parameters": {"type": "object"}},
]


def sdk(gw: GatewayProcess) -> openai.OpenAI:
    return closed_after_test(
        openai.OpenAI(base_url=f"{gw.url}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=20)
    )


def post(gw: GatewayProcess, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{gw.url}/v1/responses", headers=AUTH, json=body, timeout=20)


def wire_events(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    """The (event name, data object) pairs of a Responses stream."""
    assert response.text.endswith("\n\n"), response.text
    return [(e.get("event", ""), orjson.loads(e["data"])) for e in parse_sse(response.text)]


# -- streams --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("upstream", "case"),
    [
        (upstream, case)
        for upstream in UPSTREAMS
        for case in ("ok", "tools", "reasoning")
        if upstream != "kb" or case == "ok"  # a workspace answers text only
    ],
)
def test_a_stream_is_the_lifecycle_the_sdk_reads(
    gateway: GatewayProcess, upstream: str, case: str
) -> None:
    body: dict[str, Any] = {"model": f"{upstream}-{case}", "input": PROMPT, "stream": True}
    if case == "tools":
        body["tools"] = TOOLS
    events = wire_events(post(gateway, body))
    names = [name for name, _ in events]
    assert names == [data["type"] for _, data in events]
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    assert names[:2] == ["response.created", "response.in_progress"]
    assert names[-1] == "response.completed" and names.count("response.completed") == 1
    first, last = events[0][1]["response"], events[-1][1]["response"]
    assert first["id"] == last["id"] and last["status"] == "completed"
    open_items: set[int] = set()
    done_items: set[int] = set()
    for name, data in events[2:-1]:
        index = data["output_index"]
        if name == "response.output_item.added":
            assert index not in open_items | done_items
            open_items.add(index)
        elif name == "response.output_item.done":
            open_items.remove(index)
            done_items.add(index)
        else:
            assert index in open_items, (name, data)
    assert not open_items and done_items == set(range(len(last["output"])))
    if case == "tools":
        calls = [item for item in last["output"] if item["type"] == "function_call"]
        got = [(c["name"], orjson.loads(c["arguments"])) for c in calls]
        assert got == [(name, args) for _, name, args, _ in TOOL_CALLS]
        assert all(c["call_id"] for c in calls)  # Gemini gives none: the gateway names them
    elif case == "ok":
        deltas = [d["delta"] for n, d in events if n == "response.output_text.delta"]
        assert "".join(deltas) == EXPECTED_TEXT
    else:
        assert "response.reasoning_summary_text.delta" in names


@pytest.mark.parametrize("upstream", UPSTREAMS)
def test_the_sdk_reads_each_event_as_its_own_type(gateway: GatewayProcess, upstream: str) -> None:
    stream = sdk(gateway).responses.create(model=f"{upstream}-ok", input=PROMPT, stream=True)
    events = list(stream)
    assert isinstance(events[0], openai.types.responses.ResponseCreatedEvent)
    assert isinstance(events[-1], openai.types.responses.ResponseCompletedEvent)
    text = [e for e in events if isinstance(e, openai.types.responses.ResponseTextDeltaEvent)]
    assert "".join(e.delta for e in text) == EXPECTED_TEXT
    assert events[-1].response.output_text == EXPECTED_TEXT
    usage = events[-1].response.usage
    assert usage is not None and usage.input_tokens == PROMPT_TOKENS


# -- max_output_tokens ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "limit", "text"),
    [
        ("demo", 5, None),  # an OpenAI-format upstream stops with `length`
        ("openai-responses-ok", 2, "".join(TEXT_PIECES[:2])),  # a Responses upstream: incomplete
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_max_output_tokens_reached_ends_incomplete(
    gateway: GatewayProcess, model: str, limit: int, text: str | None, stream: bool
) -> None:
    client = sdk(gateway)
    if stream:
        events = list(
            client.responses.create(model=model, input="q", max_output_tokens=limit, stream=True)
        )
        assert events[-1].type == "response.incomplete"
        response = events[-1].response
        deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        assert deltas == response.output_text
    else:
        response = client.responses.create(model=model, input="q", max_output_tokens=limit)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    if text is None:
        assert len(response.output_text.split()) == limit
    else:
        assert response.output_text == text


def test_other_apis_read_a_responses_upstreams_cut_as_their_own_length(
    gateway: GatewayProcess,
) -> None:
    messages = [{"role": "user", "content": "q"}]
    chat = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        headers=AUTH,
        json={"model": "openai-responses-ok", "messages": messages, "max_tokens": 2},
    ).json()
    assert chat["choices"][0]["finish_reason"] == "length"
    assert chat["choices"][0]["message"]["content"] == "".join(TEXT_PIECES[:2])
    message = httpx.post(
        f"{gateway.url}/v1/messages",
        headers=AUTH,
        json={"model": "openai-responses-ok", "messages": messages, "max_tokens": 2},
    ).json()
    assert message["stop_reason"] == "max_tokens"


# -- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scenario", "error", "status"),
    [
        ("status_400", openai.BadRequestError, 400),
        ("status_429", openai.RateLimitError, 429),
        ("status_500", openai.InternalServerError, 502),
    ],
)
@pytest.mark.parametrize("upstream", UPSTREAMS)
@pytest.mark.parametrize("stream", [False, True])
def test_an_error_before_the_stream_raises_the_sdks_status_error(
    gateway: GatewayProcess,
    upstream: str,
    scenario: str,
    error: type[openai.APIStatusError],
    status: int,
    stream: bool,
) -> None:
    model = f"{upstream}-{scenario}"
    with pytest.raises(error) as info:
        if stream:
            list(sdk(gateway).responses.create(model=model, input="q", stream=True))
        else:
            sdk(gateway).responses.create(model=model, input="q")
    assert info.value.status_code == status
    assert f"fake {status if status != 502 else 500}" in info.value.message


def test_a_responses_upstreams_own_error_object_reaches_the_client(
    gateway: GatewayProcess,
) -> None:
    """Same format: the upstream's fields kept, its missing code filled with the gateway's."""
    response = post(gateway, {"model": "openai-responses-context_exceeded", "input": "q"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "exceed_context_size_error" and error["n_ctx"] == 2048


@pytest.mark.parametrize("upstream", UPSTREAMS)
def test_an_error_mid_stream_is_raised_by_the_sdk_and_ends_with_response_failed(
    gateway: GatewayProcess, upstream: str
) -> None:
    model = f"{upstream}-error_mid"
    with pytest.raises(openai.APIError) as info:
        list(sdk(gateway).responses.create(model=model, input="q", stream=True))
    assert "mid-way" in info.value.message
    events = wire_events(post(gateway, {"model": model, "input": "q", "stream": True}))
    (error_name, error), (failed_name, failed) = events[-2:]
    assert (error_name, failed_name) == ("error", "response.failed")
    assert "mid-way" in error["error"]["message"]
    assert failed["response"]["status"] == "failed"
    assert "mid-way" in failed["response"]["error"]["message"]
    assert failed["response"]["id"] == events[0][1]["response"]["id"]
    numbers = [data["sequence_number"] for _, data in events]
    assert numbers == list(range(len(events)))


@pytest.mark.parametrize("upstream", ["openai", "openai-responses"])
def test_an_upstream_that_drops_mid_stream_ends_with_an_error_event(
    gateway: GatewayProcess, upstream: str
) -> None:
    """Translated: `error` then `response.failed`. Passed through: the upstream's own events,
    then only an `error` numbered after them (no lifecycle of the gateway's inside theirs)."""
    events = wire_events(
        post(gateway, {"model": f"{upstream}-drop_mid", "input": "q", "stream": True})
    )
    names = [name for name, _ in events]
    numbers = [data["sequence_number"] for _, data in events]
    assert numbers == list(range(len(events)))
    if upstream == "openai":
        assert names[-2:] == ["error", "response.failed"]
    else:
        assert names[-1] == "error" and names.count("response.created") == 1
    assert "response.completed" not in names


# -- pass-through ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"input": "hi"},
        {"input": "hi", "stream": True},
        {"input": [{"role": "user", "content": "hi"}], "stream": True, "tools": TOOLS},
    ],
)
def test_responses_to_a_responses_upstream_is_the_upstreams_bytes(
    gateway: GatewayProcess, fake: FakeUpstream, body: dict[str, Any]
) -> None:
    direct = httpx.post(
        f"{fake.base('ok')}/v1/responses",
        json={**body, "model": "fake-model"},
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    via = post(gateway, {**body, "model": "openai-responses-ok"})
    assert direct.status_code == via.status_code == 200
    assert via.content == direct.content
    assert fake.last("ok").body == {**body, "model": "fake-model"}
    record = gateway.record_for(via.headers["x-request-id"])
    assert (record["tokens_in"], record["tokens_out"]) == (PROMPT_TOKENS, COMPLETION_TOKENS)
    assert record["finish_reason"] == "stop"


def test_a_pass_through_stream_side_parser_records_reasoning_usage(
    gateway: GatewayProcess,
) -> None:
    response = post(gateway, {"model": "openai-responses-reasoning", "input": "q", "stream": True})
    record = gateway.record_for(response.headers["x-request-id"])
    assert record["tokens_cache_read"] > 0 and record["tokens_reasoning"] > 0


# -- requests -------------------------------------------------------------------------------------

RESPONSES_BODY: dict[str, Any] = {
    "instructions": "You are terse.",
    "input": [
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "What's the weather in Paris?"},
                {"type": "input_image", "image_url": f"data:image/png;base64,{IMAGE}"},
            ],
        },
        {
            "type": "function_call",
            "call_id": "call_w1",
            "name": "get_weather",
            "arguments": '{"city": "Paris"}',
        },
        {"type": "function_call_output", "call_id": "call_w1", "output": "18C and sunny"},
        {"role": "user", "content": "And the time?"},
    ],
    "tools": [
        {"type": "function", "name": "get_weather", "parameters": WEATHER},
        {"type": "function", "name": "get_time", "parameters": {}},
    ],
    "tool_choice": "auto",
    "max_output_tokens": 300,
    "temperature": 0.5,
    "top_p": 0.9,
}
#: What the Responses format carries of test_translation's conversation: all but `stop`.
CARRIED = {**EXPECTED, "stop": None}


def read_responses(body: dict[str, Any]) -> dict[str, Any]:
    """A Responses request body back to test_translation's summary."""
    s: dict[str, Any] = {
        "system": body.get("instructions", ""),
        "turns": [],
        "tool_calls": [],
        "tool_results": [],
        "images": 0,
    }
    for item in body["input"]:
        kind = item.get("type", "message")
        if kind == "function_call":
            s["tool_calls"].append((item["name"], orjson.loads(item["arguments"])))
        elif kind == "function_call_output":
            s["tool_results"].append(item["output"])
        elif item["role"] == "system":
            s["system"] += item["content"][0]["text"]
        else:
            content = item["content"]
            parts = (
                [{"type": "input_text", "text": content}] if isinstance(content, str) else content
            )
            text = "".join(p["text"] for p in parts if p["type"] == "input_text")
            s["images"] += sum(1 for p in parts if p["type"] == "input_image")
            if text:
                s["turns"].append((item["role"], text))
    s["tools"] = [t["name"] for t in body.get("tools", [])]
    s.update(
        max_tokens=body.get("max_output_tokens"),
        temperature=body.get("temperature"),
        top_p=body.get("top_p"),
        stop=None,
    )
    return s


@pytest.mark.parametrize("upstream", sorted(READERS))
def test_a_responses_conversation_reaches_every_upstream_whole(
    gateway: GatewayProcess, fake: FakeUpstream, upstream: str
) -> None:
    response = post(gateway, {**RESPONSES_BODY, "model": f"{upstream}-ok"})
    assert response.status_code == 200, response.text
    assert READERS[upstream](fake.last("ok").body) == CARRIED
    assert "x-tidegate-dropped-fields" not in response.headers


@pytest.mark.parametrize("inbound", ["openai", "anthropic", "gemini"])
def test_every_conversation_reaches_a_responses_upstream_whole(
    gateway: GatewayProcess, fake: FakeUpstream, inbound: str
) -> None:
    response = send(gateway, inbound, "openai-responses-ok")
    assert response.status_code == 200, response.text
    body = fake.last("ok").body
    assert read_responses(body) == CARRIED
    assert response.headers["x-tidegate-dropped-fields"] == "stop"  # no stop sequences here
    assert body["store"] is False
    assert all(tool["strict"] is False for tool in body["tools"])


def test_fields_a_translation_cannot_carry_are_named(
    gateway: GatewayProcess, fake: FakeUpstream
) -> None:
    extra = {
        "previous_response_id": "resp_earlier",
        "store": True,
        "metadata": {"team": "a"},
        "include": ["reasoning.encrypted_content"],
        "text": {"verbosity": "low"},
        "tools": [{"type": "web_search"}, *TOOLS],
    }
    body = {"model": "anthropic-ok", "input": "q", **extra}
    response = post(gateway, body)
    assert response.status_code == 200, response.text
    assert sorted(response.headers["x-tidegate-dropped-fields"].split(", ")) == [
        "include",
        "metadata",
        "previous_response_id",
        "store",
        "text.verbosity",
        "tools[web_search]",
    ]
    # The same body passes through to a Responses upstream as it came.
    same = post(gateway, {**body, "model": "openai-responses-ok"})
    assert same.status_code == 200 and "x-tidegate-dropped-fields" not in same.headers
    assert fake.last("ok").body == {**body, "model": "fake-model"}


def test_settings_that_change_nothing_are_not_named(gateway: GatewayProcess) -> None:
    body = {"model": "openai-ok", "input": "q", "store": False, "parallel_tool_calls": True}
    response = post(gateway, body)
    assert response.status_code == 200 and "x-tidegate-dropped-fields" not in response.headers


def test_reasoning_and_json_requests_map_both_ways(
    gateway: GatewayProcess, fake: FakeUpstream
) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    text = {"format": {"type": "json_schema", "name": "place", "schema": schema, "strict": True}}
    post(
        gateway, {"model": "openai-ok", "input": "q", "reasoning": {"effort": "low"}, "text": text}
    )
    upstream = fake.last("ok").body
    assert upstream["reasoning_effort"] == "low"
    assert upstream["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "place", "schema": schema, "strict": True},
    }
    post(gateway, {"model": "anthropic-ok", "input": "q", "reasoning": {"effort": "low"}})
    assert fake.last("ok").body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    httpx.post(
        f"{gateway.url}/v1/chat/completions",
        headers=AUTH,
        json={
            "model": "openai-responses-ok",
            "messages": [{"role": "user", "content": "q"}],
            "reasoning_effort": "high",
            "response_format": {"type": "json_object"},
        },
    )
    upstream = fake.last("ok").body
    assert upstream["reasoning"] == {"effort": "high", "summary": "auto"}
    assert upstream["text"] == {"format": {"type": "json_object"}}


def test_the_response_object_echoes_the_request(gateway: GatewayProcess) -> None:
    response = sdk(gateway).responses.create(
        model="anthropic-tools",
        input="q",
        instructions="Be brief.",
        tools=TOOLS,  # type: ignore[arg-type]
        temperature=0.3,
        metadata={"team": "a"},
    )
    assert response.instructions == "Be brief."
    assert [t.name for t in response.tools] == ["get_weather", "get_time"]  # type: ignore[union-attr]
    assert response.temperature == 0.3 and response.metadata == {"team": "a"}
    assert response.to_dict()["store"] is False and response.model == "anthropic-tools"
    calls = [item for item in response.output if item.type == "function_call"]
    assert [c.call_id for c in calls] == [cid for cid, *_ in TOOL_CALLS]


# -- bodies of the wrong shape --------------------------------------------------------------------

HI = [{"role": "user", "content": "hi"}]
# (body without model, the field path the message must start with)
BAD: list[tuple[dict[str, Any], str]] = [
    ({}, "'input' is required"),
    ({"input": 5}, "'input' must be a string or a non-empty array"),
    ({"input": []}, "'input' must be"),
    ({"input": [5]}, "input[0] must be an input item object"),
    ({"input": [{"role": "user", "content": 5}]}, "input[0].content must be"),
    ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
    (
        {"input": [{"role": "user", "content": [{"type": "input_text"}]}]},
        "input[0].content[0].text",
    ),
    ({"input": [{"type": "function_call", "name": "f"}]}, "input[0].call_id is required"),
    ({"input": [{"type": "function_call_output", "call_id": "c", "output": 1}]}, "input[0].output"),
    ({"input": HI, "tools": [{"type": "function"}]}, "tools[0].name is required"),
    ({"input": HI, "tools": "all"}, "'tools' must be an array"),
    ({"input": HI, "tool_choice": "sometimes"}, "'tool_choice' must be"),
    ({"input": HI, "reasoning": "high"}, "'reasoning' must be an object"),
    ({"input": HI, "text": {"format": {"type": "xml"}}}, "text.format.type must be"),
    ({"input": HI, "max_output_tokens": "5"}, "'max_output_tokens' must be a positive integer"),
    ({"input": HI, "temperature": 3}, "'temperature' must be a number from 0 to 2"),
    ({"input": HI, "metadata": ["team"]}, "'metadata' must be an object"),
    ({"input": HI, "stream": "yes"}, "'stream' must be true or false"),
]


@pytest.mark.parametrize("model", ["openai-responses-ok", "openai-ok"])
@pytest.mark.parametrize(("body", "start"), BAD)
def test_a_body_of_the_wrong_shape_is_a_400_naming_the_field(
    gateway: GatewayProcess, model: str, body: dict[str, Any], start: str
) -> None:
    response = post(gateway, {"model": model, **body})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["message"].startswith(start), error["message"]
    assert error["type"] == "invalid_request_error"


def test_the_sdk_raises_its_bad_request_error_and_a_401_names_the_header(
    gateway: GatewayProcess,
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        sdk(gateway).responses.create(model="openai-ok", input=[], stream=True)
    assert "'input'" in info.value.message
    response = httpx.post(f"{gateway.url}/v1/responses", json={"model": "demo", "input": "q"})
    assert response.status_code == 401 and "Authorization: Bearer" in response.text
