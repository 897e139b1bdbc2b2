"""The built-in `demo` model: a fixed, labelled sample answer, streamed at a steady pace.

It needs no network and no key, so `tidegate serve` on a fresh machine answers at once. It acts
as an in-process upstream that speaks the OpenAI format, so every endpoint treats it exactly
as it treats a real OpenAI-compatible server (pass-through on `/v1/chat/completions`,
translation elsewhere).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal, NamedTuple

import orjson
from pydantic import Field

from tidegate.events import Usage
from tidegate.providers.http import UpstreamCall, UpstreamClient, UpstreamResponse
from tidegate.providers.openai import OpenAIProvider
from tidegate.settings import DeploymentSettings
from tidegate.sse import encode_event

DEMO_ANSWER = (
    "[tidegate demo] This is a fixed sample answer from tidegate's built-in demo model; "
    "no language model was called. It streams word by word so that you can check your front "
    "end's handling of Server-Sent Events. To get real answers, add a models: entry for "
    "AnythingLLM or any OpenAI-compatible API to your config file."
)


class DemoSettings(DeploymentSettings):
    """The demo model needs nothing; `pace` is the seconds between its chunks."""

    provider: Literal["demo"]
    pace: float = Field(default=0.04, ge=0, le=10)


class DemoProvider(OpenAIProvider):
    """The demo model: an in-process OpenAI-format upstream."""

    name = "demo"
    wire_format = "openai"
    settings = DemoSettings
    config: DemoSettings

    def __init__(self, config: DeploymentSettings):
        super().__init__(config)
        self.pace = self.config.pace
        self.pieces = [w + " " for w in DEMO_ANSWER.split(" ")]
        self.pieces[-1] = self.pieces[-1].rstrip()

    @property
    def label(self) -> str:
        return f"{self.config.name}@demo"

    async def open(self, client: UpstreamClient, call: UpstreamCall) -> UpstreamResponse:
        request = orjson.loads(call.body)
        prompt_words = sum(len(str(m.get("content") or "").split()) for m in request["messages"])
        limit = request.get("max_completion_tokens") or request.get("max_tokens")
        pieces = self.pieces[:limit] if isinstance(limit, int) and limit > 0 else self.pieces
        finish = "length" if len(pieces) < len(self.pieces) else "stop"
        usage = Usage(input_tokens=prompt_words, output_tokens=len(pieces))
        answer = _Answer(request["model"], pieces, finish, usage)
        if call.stream:
            include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
            return _DemoStream(self.pace, _frames(answer, include_usage))
        return _DemoBody(_completion(answer))


class _Answer(NamedTuple):
    model: str
    pieces: list[str]
    finish: str
    usage: Usage


def _completion(answer: _Answer) -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-demo",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": answer.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(answer.pieces)},
                    "finish_reason": answer.finish,
                }
            ],
            "usage": _usage_json(answer.usage),
        }
    )


def _usage_json(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


class _DemoBody(UpstreamResponse):
    def __init__(self, body: bytes):
        self.status = 200
        self.content_type = "application/json"
        self._body = body

    async def read_chunk(self) -> bytes:
        body, self._body = self._body, b""
        return body

    async def read_body(self, limit: int) -> bytes:
        return await self.read_chunk()

    def close(self) -> None:
        pass


class _DemoStream(UpstreamResponse):
    def __init__(self, pace: float, frames: list[bytes]):
        self.status = 200
        self.content_type = "text/event-stream"
        self._pace = pace
        self._frames = frames
        self._next = 0

    async def read_chunk(self) -> bytes:
        if self._next >= len(self._frames):
            return b""
        if self._next > 0 and self._pace:
            await asyncio.sleep(self._pace)
        frame = self._frames[self._next]
        self._next += 1
        return frame

    async def read_body(self, limit: int) -> bytes:
        parts = []
        while chunk := await self.read_chunk():
            parts.append(chunk)
        return b"".join(parts)[:limit]

    def close(self) -> None:
        self._next = len(self._frames)


def _frames(answer: _Answer, include_usage: bool) -> list[bytes]:
    head: dict[str, Any] = {
        "id": "chatcmpl-demo",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": answer.model,
    }

    def frame(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return encode_event(orjson.dumps({**head, "choices": choices, **extra}))

    frames = [
        frame([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
    ]
    frames += [
        frame([{"index": 0, "delta": {"content": p}, "finish_reason": None}]) for p in answer.pieces
    ]
    frames.append(frame([{"index": 0, "delta": {}, "finish_reason": answer.finish}]))
    if include_usage:
        frames.append(frame([], usage=_usage_json(answer.usage)))
    frames.append(encode_event(b"[DONE]"))
    return frames
