"""Ollama's native NDJSON chat format, as the fake speaks it."""

from __future__ import annotations

from typing import Any

import orjson

from tests.fake_upstream.content import (
    ANSWER_PIECES,
    ANSWER_TEXT,
    COMPLETION_TOKENS,
    EXPECTED_TEXT,
    PROMPT_TOKENS,
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


class OllamaFormat(Format):
    content_type = "application/x-ndjson"

    def is_stream(self) -> bool:
        return self.body.get("stream", True) is not False

    def frame(self, payload: Any, sep: str) -> bytes:
        return orjson.dumps(payload) + sep.encode()

    def ping(self) -> bytes:
        return b"\n"

    def malformed(self) -> bytes:
        return b'{"model": "llama", "message": {\n'

    def _line(self, message: dict[str, Any], done: bool = False, **extra: Any) -> dict[str, Any]:
        return {
            "model": "llama-fake",
            "created_at": "2026-11-22T05:52:00.1Z",
            "message": {"role": "assistant", "content": "", **message},
            "done": done,
            **extra,
        }

    def text_event(self, text: str) -> Any:
        return self._line({"content": text})

    @staticmethod
    def counts(kind: str) -> dict[str, int]:
        if kind == "reasoning":
            return {"prompt_eval_count": R_INPUT, "eval_count": R_OUTPUT}
        if kind == "tools":
            return {"prompt_eval_count": T_INPUT, "eval_count": T_OUTPUT}
        return {"prompt_eval_count": PROMPT_TOKENS, "eval_count": COMPLETION_TOKENS}

    def stream_events(self, kind: str) -> list[Any]:
        if kind == "tools":
            calls = [
                {"id": cid, "function": {"index": i, "name": n, "arguments": a}}
                for i, (cid, n, a, _) in enumerate(TOOL_CALLS)
            ]
            events = [self._line({"tool_calls": calls})]
        elif kind == "reasoning":
            events = [self._line({"thinking": p}) for p in REASONING_PIECES]
            events += [self._line({"content": p}) for p in ANSWER_PIECES]
        else:
            events = [self.text_event(p) for p in TEXT_PIECES]
        events.append(self._line({}, True, done_reason="stop", **self.counts(kind)))
        return events

    def stream_error(self, message: str) -> Any:
        return {"error": message}

    def whole(self, kind: str) -> Any:
        if kind == "tools":
            calls = [{"function": {"name": n, "arguments": a}} for _, n, a, _ in TOOL_CALLS]
            message: dict[str, Any] = {"tool_calls": calls}
        elif kind == "reasoning":
            message = {"thinking": REASONING_TEXT, "content": ANSWER_TEXT}
        else:
            message = {"content": EXPECTED_TEXT}
        return self._line(message, True, done_reason="stop", **self.counts(kind))

    def http_error(self, status: int, message: str) -> Any:
        return {"error": message}
