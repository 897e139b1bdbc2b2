"""The Responses codec in-process: real captures read right, and what it writes it reads back.

Invariants:
- a capture of OpenAI's own stream and response object read as the text, usage and finish
  they hold; each of the three ways a stream reports a failure reads as that failure;
- canonical events written by `ResponsesEncoder` and read by `ResponsesStreamParser`, cut into
  reads anywhere, are the same events (text, reasoning, tool calls, usage, finish), and the
  side parser of a pass-through reaches the same usage and finish;
- a canonical request written by `request_to_wire` passes the inbound schema and reads back
  as the same request, for everything the format carries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidegate.errors import UpstreamStatusError
from tidegate.events import (
    ChatRequest,
    CompletionBuilder,
    Event,
    Finish,
    Message,
    Part,
    ReasoningDelta,
    StreamError,
    TextDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageUpdate,
)
from tidegate.formats import openai_responses as codec
from tidegate.formats.base import SKIPPABLE, StreamState
from tidegate.sse import SSEDecoder

FIXTURES = Path(__file__).parent / "fixtures"
# Drawing nested requests is slow on a loaded machine: the health check would fail the test.
CODEC = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def parse(body: bytes, cuts: list[int] = (), side: bool = False) -> list[Event]:  # type: ignore[assignment]
    parser = codec.stream_parser(side=side)
    events: list[Event] = []
    start = 0
    for point in [*sorted(set(cuts)), len(body)]:
        events += parser.feed(body[start:point])
        start = point
        if parser.done:
            break
    events += parser.finish()
    assert (parser.done and parser.complete) or any(isinstance(e, StreamError) for e in events)
    return events


def outcome(events: list[Event]) -> tuple[Any, ...]:
    """What a side parser must agree on: the last usage, the finish and the error."""
    usage = [e.usage for e in events if isinstance(e, UsageUpdate)]
    finish = [e.reason for e in events if isinstance(e, Finish)]
    errors = [str(e.error) for e in events if isinstance(e, StreamError)]
    return (usage[-1] if usage else None, finish, errors)


# -- captures -------------------------------------------------------------------------------------


def test_the_captured_text_stream_reads_as_its_text_usage_and_finish() -> None:
    events = parse(fixture("openai_responses_stream.sse"))
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Hello, World!"
    assert outcome(events) == (Usage(17, 5), ["stop"], [])
    assert outcome(parse(fixture("openai_responses_stream.sse"), side=True)) == outcome(events)


def test_the_captured_response_object_reads_whole() -> None:
    completion = codec.completion_from_wire(fixture("openai_responses.json"))
    assert completion.text == "Hello, World!"
    assert completion.finish_reason == "stop"
    assert completion.usage == Usage(17, 5)
    assert completion.upstream_id is not None and completion.upstream_id.startswith("resp_")


@pytest.mark.parametrize(
    ("name", "message", "status"),
    [
        ("openai_responses_stream_error_nested.sse", "Too Many Requests", 429),
        ("openai_responses_stream_error_flat_documented.sse", "Something went wrong", 502),
        ("openai_responses_stream_failed.sse", "The model failed to generate a response.", 502),
    ],
)
@pytest.mark.parametrize("side", [False, True])
def test_each_form_of_a_stream_failure_reads_as_an_error(
    name: str, message: str, status: int, side: bool
) -> None:
    events = parse(fixture(name), side=side)
    errors = [e.error for e in events if isinstance(e, StreamError)]
    assert len(errors) == 1 and isinstance(errors[0], UpstreamStatusError)
    assert errors[0].message == message and errors[0].status == status


def test_a_failed_response_body_raises_its_error() -> None:
    body: dict[str, Any] = {"id": "resp_1", "object": "response", "status": "failed", "output": []}
    body["error"] = {"code": "rate_limit_exceeded", "message": "slow down"}
    with pytest.raises(UpstreamStatusError) as info:
        codec.completion_from_wire(orjson.dumps(body))
    assert info.value.status == 429 and info.value.message == "slow down"


def test_unknown_events_are_ignored_and_whole_items_are_read_from_their_done_event() -> None:
    """A server that sends items whole (no deltas), and event types this gateway never met."""
    item = {
        "id": "fc_1",
        "type": "function_call",
        "call_id": "call_1",
        "name": "f",
        "arguments": '{"a": 1}',
    }
    message = {"id": "m", "type": "message", "content": [{"type": "output_text", "text": "hi"}]}
    done = {"status": "completed", "output": [item, message], "usage": None}
    stream: list[dict[str, Any]] = [
        {"type": "response.created", "response": {"status": "in_progress"}},
        {"type": "response.web_search_call.searching", "item_id": "ws", "output_index": 0},
        {"type": "response.output_item.done", "output_index": 1, "item": item},
        {"type": "response.output_item.done", "output_index": 2, "item": message},
        {"type": "response.completed", "response": done},
    ]
    events = parse(b"".join(sse(e) for e in stream))
    builder = CompletionBuilder()
    for e in events:
        builder.add(e)
    completion = builder.build()
    assert completion.text == "hi"
    assert completion.tool_calls == [ToolCall("call_1", "f", '{"a": 1}')]
    assert completion.finish_reason == "tool_calls"


def sse(payload: dict[str, Any]) -> bytes:
    name: str = payload["type"]
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


# -- what the encoder writes ----------------------------------------------------------------------


def test_the_encoder_writes_the_lifecycle_in_order_with_growing_sequence_numbers() -> None:
    encoder = codec.ResponsesEncoder("m", "r1")
    body = encoder.encode([TextDelta("Hel"), TextDelta("lo")])
    body += encoder.encode([Finish("stop"), UsageUpdate(Usage(3, 2))]) + encoder.end(StreamState())
    events = SSEDecoder().decode(body)
    data = [orjson.loads(e.data) for e in events]
    assert (
        [e.event for e in events]
        == [d["type"] for d in data]
        == [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    )
    assert [d["sequence_number"] for d in data] == list(range(len(data)))
    final = data[-1]["response"]
    assert final["id"] == data[0]["response"]["id"] and final["status"] == "completed"
    assert final["output"][0]["content"][0]["text"] == "Hello"
    assert final["usage"]["total_tokens"] == 5


def test_a_failure_after_the_start_is_an_error_event_then_response_failed() -> None:
    encoder = codec.ResponsesEncoder("m", "r2")
    body = encoder.encode([TextDelta("partial")])
    state = StreamState()
    state.error = UpstreamStatusError("boom", upstream_status=500)
    body += encoder.error(state.error) + encoder.end(state)
    data = [orjson.loads(e.data) for e in SSEDecoder().decode(body)]
    error, failed = data[-2], data[-1]
    # Both forms at once: documented fields, and the `error` member openai-python raises on.
    assert error["type"] == "error" and error["message"] == "boom" and error["code"]
    assert error["error"]["message"] == "boom"
    assert failed["type"] == "response.failed"
    assert failed["response"]["status"] == "failed"
    assert failed["response"]["error"] == {"code": "server_error", "message": "boom"}
    assert failed["response"]["output"][0]["status"] == "incomplete"
    assert [d["sequence_number"] for d in data] == list(range(len(data)))


def test_in_pass_through_only_an_error_event_is_added_numbered_after_the_upstream() -> None:
    encoder = codec.ResponsesEncoder("m", "r3")
    state = StreamState()
    state.passthrough = True
    state.last_sent = sse({"type": "response.output_text.delta", "sequence_number": 41})
    assert encoder.end(state) == b""  # the upstream's own end went out
    state.error = UpstreamStatusError("cut", upstream_status=502)
    body = encoder.error(state.error) + encoder.end(state)
    (event,) = SSEDecoder().decode(body)
    assert event.event == "error" and orjson.loads(event.data)["sequence_number"] == 42


# -- round trips ----------------------------------------------------------------------------------

texts = st.text(min_size=1, max_size=8)
ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=8)
counts = st.integers(min_value=0, max_value=10**6)


@st.composite
def answers(draw: st.DrawFn) -> list[Event]:
    """Canonical events of one answer: runs of text and reasoning, tool calls, usage, finish."""
    events: list[Event] = []
    calls = 0
    last = None
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["text", "reasoning", "tool"]))
        if kind == last and kind != "tool":
            continue  # one run per item: the encoder would join two adjacent runs anyway
        last = kind
        if kind == "text":
            events += [TextDelta(t) for t in draw(st.lists(texts, min_size=1, max_size=4))]
        elif kind == "reasoning":
            events += [ReasoningDelta(t) for t in draw(st.lists(texts, min_size=1, max_size=4))]
        else:
            fragments = draw(st.lists(texts, min_size=1, max_size=4))
            events.append(ToolCallDelta(calls, draw(ids), draw(ids), fragments[0]))
            events += [ToolCallDelta(calls, None, None, f) for f in fragments[1:]]
            calls += 1
    usage = Usage(*(draw(counts) for _ in range(5)))
    finishes = ["tool_calls", "length"] if calls else ["stop", "length", "content_filter"]
    return [*events, UsageUpdate(usage), Finish(draw(st.sampled_from(finishes)))]


def shape(events: list[Event]) -> tuple[Any, ...]:
    """Events as what a client could tell apart: runs of text and reasoning in order, whole
    tool calls, the last usage and the finish."""
    runs: list[tuple[str, str]] = []
    builder = CompletionBuilder()
    for e in events:
        builder.add(e)
        if isinstance(e, TextDelta | ReasoningDelta) and e.text:
            kind = "text" if isinstance(e, TextDelta) else "reasoning"
            if runs and runs[-1][0] == kind:
                runs[-1] = (kind, runs[-1][1] + e.text)
            else:
                runs.append((kind, e.text))
        elif isinstance(e, ToolCallDelta) and e.id:
            runs.append(("tool", e.id))
    c = builder.build()
    return (runs, c.tool_calls, c.usage, c.finish_reason)


@CODEC
@given(events=answers(), data=st.data())
def test_events_written_then_read_are_the_same_events(events: list[Event], data: Any) -> None:
    encoder = codec.ResponsesEncoder("model-x", "rid")
    body = encoder.encode(events) + encoder.end(StreamState())
    cuts = data.draw(st.lists(st.integers(0, len(body)), max_size=8))
    read = parse(body, cuts)
    assert shape(read) == shape(events)
    assert outcome(parse(body, cuts, side=True)) == outcome(read)


def _message(draw: st.DrawFn, role: str) -> Message:
    if role == "user":
        parts = draw(
            st.lists(
                st.one_of(
                    texts.map(lambda t: Part("text", text=t)),
                    ids.map(lambda u: Part("image", url=f"https://img.example/{u}.png")),
                    ids.map(lambda d: Part("image", media_type="image/jpeg", data=d)),
                ),
                min_size=1,
                max_size=3,
            )
        )
        return Message("user", parts)
    if role == "assistant":
        calls = draw(
            st.lists(st.builds(ToolCall, ids, ids, texts.map(orjson.dumps).map(bytes.decode)))
        )
        text = draw(texts if not calls else st.one_of(st.just(""), texts))
        return Message("assistant", [Part("text", text=text)] if text else [], tool_calls=calls)
    if role == "tool":
        return Message("tool", [Part("text", text=draw(texts))], tool_call_id=draw(ids))
    return Message("system", [Part("text", text=draw(texts))])


@st.composite
def requests(draw: st.DrawFn) -> ChatRequest:
    """Canonical requests holding only what the Responses format carries."""
    messages = [_message(draw, "system")] if draw(st.booleans()) else []
    previous = "system"
    for _ in range(draw(st.integers(1, 6))):
        # One assistant turn at a time: its tool calls and text are one turn in this format.
        roles = ["user", "tool", "system"] + ([] if previous == "assistant" else ["assistant"])
        previous = draw(st.sampled_from(roles))
        messages.append(_message(draw, previous))
    tools = draw(
        st.lists(
            st.builds(
                Tool,
                ids,
                st.text(max_size=8),
                ids.map(lambda p: {"type": "object", "properties": {p: {"type": "string"}}}),
            ),
            max_size=3,
        )
    )
    schema = {"name": "answer", "schema": {"type": "object"}, "strict": True}
    return ChatRequest(
        model="m",
        messages=messages,
        stream=draw(st.booleans()),
        max_tokens=draw(st.none() | st.integers(1, 10**6)),
        temperature=draw(st.none() | st.floats(0, 2)),
        top_p=draw(st.none() | st.floats(0, 1)),
        tools=tools,
        tool_choice=draw(
            st.none()
            | st.sampled_from(["auto", "none", "required"])
            | ids.map(lambda n: {"name": n})
        ),
        json_schema=draw(st.none() | st.just(schema)),
        reasoning_effort=draw(st.none() | st.sampled_from(["minimal", "low", "medium", "high"])),
        user=draw(st.none() | ids),
    )


def summary(request: ChatRequest) -> tuple[Any, ...]:
    """A request as what the format carries: leading system messages as one text (they are
    `instructions`), then every message's role, parts, tool calls and call id."""
    rest = request.messages
    lead: list[str] = []
    while rest and rest[0].role == "system":
        lead.append(rest[0].text())
        rest = rest[1:]
    messages = []
    for m in rest:
        parts = [
            (p.type, p.text, p.url, p.media_type, p.data)
            for p in m.content
            if p.text or p.type != "text"
        ]
        messages.append((m.role, parts, m.tool_calls, m.tool_call_id))
    return (
        "\n\n".join(lead),
        messages,
        request.stream,
        request.max_tokens,
        request.temperature,
        request.top_p,
        request.tools,
        request.tool_choice,
        request.json_mode,
        request.json_schema,
        request.reasoning_effort,
        request.user,
    )


@CODEC
@given(request=requests())
def test_requests_written_then_read_keep_what_the_format_carries(request: ChatRequest) -> None:
    body, dropped = codec.request_to_wire(request, "m")
    assert dropped == []
    body = orjson.loads(orjson.dumps(body))  # as an upstream (or this gateway) would read it
    codec.validate_request(body)
    back = codec.request_from_wire(body)
    assert back.dropped == []
    assert summary(back) == summary(request)


def test_what_the_format_cannot_carry_is_named() -> None:
    request = ChatRequest(
        model="m",
        messages=[
            Message("user", [Part("text", text="q")]),
            Message("assistant", [Part("text", text="a")], reasoning="because"),
        ],
        stop=["END"],
        top_k=5,
    )
    assert sorted(codec.request_to_wire(request, "m")[1]) == [
        "messages[].reasoning",
        "stop",
        "top_k",
    ]


# -- type-confused upstream data ------------------------------------------------------------------

json_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=5,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    items = value.items() if isinstance(value, dict) else enumerate(value)
    out = []
    for key, sub in items:
        out.append((*prefix, key))
        if isinstance(sub, dict | list) and sub:
            out += _paths(sub, (*prefix, key))
    return out


def _confuse(draw: st.DrawFn, value: Any) -> Any:
    """`value` with one sub-value replaced by a JSON value of another kind."""
    paths = _paths(value)
    if not paths:
        return draw(json_values)
    path = draw(st.sampled_from(paths))
    node = value
    for key in path[:-1]:
        node = node[key]
    old = type(node[path[-1]])
    node[path[-1]] = draw(json_values.filter(lambda v: type(v) is not old))
    return value


def _events_of(name: str) -> list[dict[str, Any]]:
    return [orjson.loads(e.data) for e in SSEDecoder().decode(fixture(name))]


STREAMS = [
    _events_of("openai_responses_stream.sse"),
    _events_of("openai_responses_stream_failed.sse"),
    _events_of("openai_responses_stream_error_nested.sse"),
]


@CODEC
@given(data=st.data())
def test_type_confused_events_are_skipped_or_refused_never_a_crash(data: Any) -> None:
    """Whatever an event holds, reading it either works, skips it (counted), or raises the
    protocol error the relay turns into a 502: nothing else escapes."""
    events = [dict(e) for e in data.draw(st.sampled_from(STREAMS))]
    at = data.draw(st.integers(0, len(events) - 1))
    events[at] = _confuse(data.draw, orjson.loads(orjson.dumps(events[at])))
    body = b"".join(
        b"event: "
        + str(e.get("type") if isinstance(e, dict) else "x").encode()
        + b"\ndata: "
        + orjson.dumps(e)
        + b"\n\n"
        for e in events
    )
    for side in (False, True):
        parser = codec.stream_parser(side=side)
        parser.feed(body)
        parser.finish()
    whole = orjson.loads(fixture("openai_responses.json"))
    try:
        codec.completion_from_wire(orjson.dumps(_confuse(data.draw, whole)))
    except (UpstreamStatusError, *SKIPPABLE):
        pass  # an error body, or data of the wrong shape: the relay's 502
