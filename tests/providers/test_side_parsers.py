"""Side parsers (pass-through) skip text events but must reach the full parser's verdict."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from tidegate.events import Finish, StreamError, UsageUpdate
from tidegate.formats.anthropic import AnthropicStreamParser
from tidegate.formats.openai_chat import OpenAIStreamParser


def sse(obj: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + orjson.dumps(obj) + b"\n\n"


def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    return sse({"id": "c", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


OPENAI = (
    chunk({"role": "assistant", "content": ""})
    + b"".join(chunk({"content": f"word {i} usage error"}) for i in range(20))
    + chunk({}, "stop")
    + sse({"id": "c", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 20}})
    + b"data: [DONE]\n\n"
)
OPENAI_ERROR = (
    chunk({"role": "assistant"}) + chunk({"content": "a"}) + sse({"error": {"message": "boom"}})
)

ANTHROPIC = (
    sse(
        {"type": "message_start", "message": {"usage": {"input_tokens": 7, "output_tokens": 1}}},
        "message_start",
    )
    + sse(
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        "content_block_start",
    )
    + b"".join(
        sse(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": f"t{i}"},
            },
            "content_block_delta",
        )
        for i in range(20)
    )
    + sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
    + sse(
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 21},
        },
        "message_delta",
    )
    + sse({"type": "message_stop"}, "message_stop")
)


def verdict(parser: Any, body: bytes, cuts: list[int]) -> tuple[Any, ...]:
    events = []
    start = 0
    for point in [*sorted(set(cuts)), len(body)]:
        events += parser.feed(body[start:point])
        start = point
        if parser.done:
            break
    events += parser.finish()
    usage = [e.usage.as_dict() for e in events if isinstance(e, UsageUpdate)]
    return (
        usage[-1] if usage else None,
        [e.reason for e in events if isinstance(e, Finish)],
        [str(e.error) for e in events if isinstance(e, StreamError)],
        parser.done,
        parser.complete,
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, len(OPENAI)), max_size=10))
def test_openai_side_parser_agrees_with_the_full_parser(cuts: list[int]) -> None:
    want = verdict(OpenAIStreamParser(), OPENAI, [])
    assert want[0] == {
        "input_tokens": 5,
        "output_tokens": 20,
        "total_tokens": 25,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "reasoning_tokens": 0,
    }
    assert verdict(OpenAIStreamParser(side=True), OPENAI, cuts) == want


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, len(OPENAI_ERROR)), max_size=5))
def test_openai_side_parser_sees_errors(cuts: list[int]) -> None:
    assert verdict(OpenAIStreamParser(side=True), OPENAI_ERROR, cuts)[2] == ["boom"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, len(ANTHROPIC)), max_size=10))
def test_anthropic_side_parser_agrees_with_the_full_parser(cuts: list[int]) -> None:
    want = verdict(AnthropicStreamParser(), ANTHROPIC, [])
    assert want[1] == ["stop"] and want[3]
    assert verdict(AnthropicStreamParser(side=True), ANTHROPIC, cuts) == want


def test_openai_side_parser_reads_spaced_json() -> None:
    """Python servers write `": "`; the side parser must still see the finish and the usage."""
    import json

    def spaced(obj: Any) -> bytes:
        return b"data: " + json.dumps(obj).encode() + b"\n\n"

    body = (
        spaced({"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]})
        + spaced({"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]})
        + spaced({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}})
        + b"data: [DONE]\n\n"
    )
    side = verdict(OpenAIStreamParser(side=True), body, [len(body) // 3])
    assert side == verdict(OpenAIStreamParser(), body, [])
    assert side[1] == ["length"]
