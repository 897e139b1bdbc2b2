"""The Anthropic Messages format, as the fake speaks it."""

from __future__ import annotations

from typing import Any

import orjson

from tests.fake_upstream.content import (
    ANSWER_PIECES,
    ANSWER_TEXT,
    COMPLETION_TOKENS,
    EXPECTED_TEXT,
    PROMPT_TOKENS,
    R_CACHED,
    R_INPUT,
    R_OUTPUT,
    REASONING_PIECES,
    REASONING_TEXT,
    T_INPUT,
    T_OUTPUT,
    TEXT_PIECES,
    TOOL_CALLS,
)
from tests.fake_upstream.formats.base import Format


class AnthropicFormat(Format):
    def frame(self, payload: Any, sep: str) -> bytes:
        name: bytes = payload["type"].encode()
        return (
            b"event: "
            + name
            + sep.encode()
            + b"data: "
            + orjson.dumps(payload)
            + (sep + sep).encode()
        )

    def ping(self) -> bytes:
        return b'event: ping\ndata: {"type": "ping"}\n\n'

    def malformed(self) -> bytes:
        return b'event: content_block_delta\ndata: {"type": "content_block_delta", "ind\n\n'

    def text_event(self, text: str) -> Any:
        return {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": text},
        }

    @staticmethod
    def usage(kind: str) -> tuple[dict[str, Any], dict[str, Any]]:
        if kind == "reasoning":
            start = {
                "input_tokens": R_INPUT - R_CACHED,
                "cache_read_input_tokens": R_CACHED,
                "cache_creation_input_tokens": 0,
                "output_tokens": 1,
            }
            return start, {"output_tokens": R_OUTPUT}
        if kind == "tools":
            return {"input_tokens": T_INPUT, "output_tokens": 1}, {"output_tokens": T_OUTPUT}
        return {"input_tokens": PROMPT_TOKENS, "output_tokens": 1}, {
            "output_tokens": COMPLETION_TOKENS
        }

    def stream_events(self, kind: str) -> list[Any]:
        start_usage, end_usage = self.usage(kind)
        events: list[Any] = [
            {
                "type": "message_start",
                "message": {
                    "id": "msg_fake",
                    "type": "message",
                    "role": "assistant",
                    "model": "claude-fake",
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": start_usage,
                },
            }
        ]
        stop = "end_turn"
        if kind == "tools":
            stop = "tool_use"
            for i, (cid, name, _, fragments) in enumerate(TOOL_CALLS):
                events.append(
                    {
                        "type": "content_block_start",
                        "index": i,
                        "content_block": {"type": "tool_use", "id": cid, "name": name, "input": {}},
                    }
                )
                events += [
                    {
                        "type": "content_block_delta",
                        "index": i,
                        "delta": {"type": "input_json_delta", "partial_json": f},
                    }
                    for f in fragments
                ]
                events.append({"type": "content_block_stop", "index": i})
        else:
            index = 0
            if kind == "reasoning":
                events.append(
                    {
                        "type": "content_block_start",
                        "index": 0,
                        "content_block": {"type": "thinking", "thinking": "", "signature": ""},
                    }
                )
                events += [
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "thinking_delta", "thinking": p},
                    }
                    for p in REASONING_PIECES
                ]
                events.append(
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "signature_delta", "signature": "sig-abc"},
                    }
                )
                events.append({"type": "content_block_stop", "index": 0})
                index = 1
            pieces = ANSWER_PIECES if kind == "reasoning" else TEXT_PIECES
            events.append(
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "text", "text": ""},
                }
            )
            events += [
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "text_delta", "text": p},
                }
                for p in pieces
            ]
            events.append({"type": "content_block_stop", "index": index})
        events.append(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": end_usage,
            }
        )
        events.append({"type": "message_stop"})
        return events

    def stream_error(self, message: str) -> Any:
        return {"type": "error", "error": {"type": "overloaded_error", "message": message}}

    def whole(self, kind: str) -> Any:
        start_usage, end_usage = self.usage(kind)
        content: list[dict[str, Any]]
        stop = "end_turn"
        if kind == "tools":
            stop = "tool_use"
            content = [
                {"type": "tool_use", "id": cid, "name": n, "input": a}
                for cid, n, a, _ in TOOL_CALLS
            ]
        elif kind == "reasoning":
            content = [
                {"type": "thinking", "thinking": REASONING_TEXT, "signature": "sig-abc"},
                {"type": "text", "text": ANSWER_TEXT},
            ]
        else:
            content = [{"type": "text", "text": EXPECTED_TEXT}]
        return {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": "claude-fake",
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {**start_usage, **end_usage},
        }

    def http_error(self, status: int, message: str) -> Any:
        kind = {400: "invalid_request_error", 401: "authentication_error", 429: "rate_limit_error"}
        return {
            "type": "error",
            "error": {"type": kind.get(status, "api_error"), "message": message},
        }
