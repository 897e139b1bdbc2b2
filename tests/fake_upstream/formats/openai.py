"""The OpenAI Chat Completions format, as the fake speaks it."""

from __future__ import annotations

from typing import Any, ClassVar

import orjson

from tests.fake_upstream.content import (
    ANSWER_PIECES,
    ANSWER_TEXT,
    COMPLETION_TOKENS,
    EXPECTED_TEXT,
    FIX_PIECES,
    FIX_TEXT,
    PROMPT_TOKENS,
    R_CACHED,
    R_INPUT,
    R_OUTPUT,
    R_REASONING,
    REASONING_PIECES,
    REASONING_TEXT,
    T_INPUT,
    T_OUTPUT,
    TEXT_PIECES,
    TOOL_CALLS,
)
from tests.fake_upstream.formats.base import Format


class OpenAIFormat(Format):
    head: ClassVar[dict[str, Any]] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "fake-model",
    }

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**self.head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    def text_event(self, text: str) -> Any:
        return self._chunk({"content": text})

    @staticmethod
    def usage(kind: str) -> dict[str, Any]:
        if kind == "reasoning":
            return {
                "prompt_tokens": R_INPUT,
                "completion_tokens": R_OUTPUT,
                "total_tokens": R_INPUT + R_OUTPUT,
                "prompt_tokens_details": {"cached_tokens": R_CACHED},
                "completion_tokens_details": {"reasoning_tokens": R_REASONING},
            }
        if kind == "tools":
            return {
                "prompt_tokens": T_INPUT,
                "completion_tokens": T_OUTPUT,
                "total_tokens": T_INPUT + T_OUTPUT,
            }
        return {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
            "prompt_tokens_details": {"cached_tokens": 0},
        }

    def stream_events(self, kind: str) -> list[Any]:
        events: list[Any] = [self._chunk({"role": "assistant", "content": ""})]
        finish = "stop"
        if kind == "reasoning":
            events += [
                self._chunk({"content": None, "reasoning_content": p}) for p in REASONING_PIECES
            ]
            events += [
                self._chunk({"content": p, "reasoning_content": None}) for p in ANSWER_PIECES
            ]
        elif kind == "tools":
            finish = "tool_calls"
            for i, (cid, name, _, fragments) in enumerate(TOOL_CALLS):
                events.append(
                    self._chunk(
                        {
                            "tool_calls": [
                                {
                                    "index": i,
                                    "id": cid,
                                    "type": "function",
                                    "function": {"name": name, "arguments": ""},
                                }
                            ]
                        }
                    )
                )
                events += [
                    self._chunk({"tool_calls": [{"index": i, "function": {"arguments": f}}]})
                    for f in fragments
                ]
        elif kind == "fix":
            events += [self.text_event(p) for p in FIX_PIECES]
        else:
            events += [self.text_event(p) for p in TEXT_PIECES]
        events.append(self._chunk({}, finish))
        if (self.body.get("stream_options") or {}).get("include_usage"):
            events.append({**self.head, "choices": [], "usage": self.usage(kind)})
        events.append(b"[DONE]")
        return events

    def stream_error(self, message: str) -> Any:
        return {"error": {"message": message, "type": "server_error", "param": None, "code": None}}

    def whole(self, kind: str) -> Any:
        message: dict[str, Any] = {"role": "assistant", "content": EXPECTED_TEXT}
        finish = "stop"
        if kind == "fix":
            message = {"role": "assistant", "content": FIX_TEXT}
        if kind == "reasoning":
            message = {
                "role": "assistant",
                "content": ANSWER_TEXT,
                "reasoning_content": REASONING_TEXT,
            }
        elif kind == "tools":
            finish = "tool_calls"
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": cid,
                        "type": "function",
                        "function": {"name": n, "arguments": orjson.dumps(a).decode()},
                    }
                    for cid, n, a, _ in TOOL_CALLS
                ],
            }
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 1,
            "model": "fake-model",
            "choices": [{"index": 0, "finish_reason": finish, "message": message}],
            "usage": self.usage(kind),
        }

    def http_error(self, status: int, message: str) -> Any:
        return {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        }
