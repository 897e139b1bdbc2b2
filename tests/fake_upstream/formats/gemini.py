"""The Gemini generateContent format, as the fake speaks it."""

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
    R_REASONING,
    REASONING_PIECES,
    REASONING_TEXT,
    T_INPUT,
    T_OUTPUT,
    TEXT_PIECES,
    TOOL_CALLS,
)
from tests.fake_upstream.formats.base import Format


class GeminiFormat(Format):
    crlf = True

    def is_stream(self) -> bool:
        return self.request.path.endswith(":streamGenerateContent")

    def ping(self) -> bytes:
        return b""  # Google sends none

    def malformed(self) -> bytes:
        return b'data: {"candidates": [ not json\r\n\r\n'

    def stream_error_bytes(self, message: str, sep: str) -> bytes:
        # Google appends the failure as a bare, pretty-printed JSON object without `data:`.
        error = {"error": {"code": 503, "message": message, "status": "UNAVAILABLE"}}
        return orjson.dumps(error, option=orjson.OPT_INDENT_2) + b"\n"

    def _chunk(
        self,
        parts: list[dict[str, Any]],
        finish: str | None = None,
        usage: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
        if finish:
            candidate["finishReason"] = finish
        out: dict[str, Any] = {"candidates": [candidate]}
        if usage:
            out["usageMetadata"] = usage
        out["modelVersion"] = "gemini-fake"
        return out

    def text_event(self, text: str) -> Any:
        return self._chunk([{"text": text}])

    @staticmethod
    def usage(kind: str) -> dict[str, Any]:
        if kind == "reasoning":
            return {
                "promptTokenCount": R_INPUT,
                "cachedContentTokenCount": R_CACHED,
                "candidatesTokenCount": R_OUTPUT - R_REASONING,
                "thoughtsTokenCount": R_REASONING,
                "totalTokenCount": R_INPUT + R_OUTPUT,
            }
        if kind == "tools":
            return {
                "promptTokenCount": T_INPUT,
                "candidatesTokenCount": T_OUTPUT,
                "totalTokenCount": T_INPUT + T_OUTPUT,
            }
        return {
            "promptTokenCount": PROMPT_TOKENS,
            "candidatesTokenCount": COMPLETION_TOKENS,
            "totalTokenCount": PROMPT_TOKENS + COMPLETION_TOKENS,
        }

    def stream_events(self, kind: str) -> list[Any]:
        usage = self.usage(kind)
        if kind == "tools":
            parts = [{"functionCall": {"name": n, "args": a}} for _, n, a, _ in TOOL_CALLS]
            return [self._chunk(parts, "STOP", usage)]
        if kind == "reasoning":
            events = [
                self._chunk([{"text": p, "thought": True}], usage=usage) for p in REASONING_PIECES
            ]
            events += [self._chunk([{"text": p}], usage=usage) for p in ANSWER_PIECES[:-1]]
            events.append(self._chunk([{"text": ANSWER_PIECES[-1]}], "STOP", usage))
            return events
        events = [self._chunk([{"text": p}], usage=usage) for p in TEXT_PIECES[:-1]]
        events.append(self._chunk([{"text": TEXT_PIECES[-1]}], "STOP", usage))
        return events

    def stream_error(self, message: str) -> Any:
        return {"error": {"code": 503, "message": message, "status": "UNAVAILABLE"}}

    def whole(self, kind: str) -> Any:
        parts: list[dict[str, Any]]
        if kind == "tools":
            parts = [{"functionCall": {"name": n, "args": a}} for _, n, a, _ in TOOL_CALLS]
        elif kind == "reasoning":
            parts = [{"text": REASONING_TEXT, "thought": True}, {"text": ANSWER_TEXT}]
        else:
            parts = [{"text": EXPECTED_TEXT}]
        return self._chunk(parts, "STOP", self.usage(kind))

    def http_error(self, status: int, message: str) -> Any:
        names = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 429: "RESOURCE_EXHAUSTED"}
        return {
            "error": {"code": status, "message": message, "status": names.get(status, "INTERNAL")}
        }
