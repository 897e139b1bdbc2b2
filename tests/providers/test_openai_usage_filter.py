"""The pass-through filter that removes the usage chunk the gateway requested on its own."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tidegate.formats.openai_chat import UsageChunkFilter


def event(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


TEXT = event({"choices": [{"index": 0, "delta": {"content": 'say "usage"'}}]})
FINISH = event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
USAGE = event({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}})
DONE = b"data: [DONE]\n\n"


def run(chunks: list[bytes]) -> bytes:
    f = UsageChunkFilter()
    return b"".join(f.feed(c) for c in chunks) + f.flush()


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
def test_removes_the_usage_only_chunk_however_the_stream_is_cut(newline: bytes) -> None:
    whole = (TEXT * 3 + FINISH + USAGE + DONE).replace(b"\n", newline)
    want = (TEXT * 3 + FINISH + DONE).replace(b"\n", newline)
    for cut in range(len(whole) + 1):
        assert run([whole[:cut], whole[cut:]]) == want, cut
    assert run([whole[i : i + 7] for i in range(0, len(whole), 7)]) == want


def test_keeps_usage_that_rides_on_a_finish_chunk() -> None:
    """DeepSeek puts usage on the finish chunk: that chunk carries the finish, so it stays."""
    finish_with_usage = event(
        {
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1},
        }
    )
    assert run([TEXT + finish_with_usage + DONE]) == TEXT + finish_with_usage + DONE


def test_holds_back_a_partial_event_until_it_completes() -> None:
    f = UsageChunkFilter()
    assert f.feed(TEXT[:10]) == b""
    assert f.feed(TEXT[10:]) == TEXT
