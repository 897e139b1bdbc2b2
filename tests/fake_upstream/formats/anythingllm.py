"""The AnythingLLM workspace chat format, as the fake speaks it."""

from __future__ import annotations

from typing import Any

from tests.fake_upstream.content import (
    COMPLETION_TOKENS,
    EXPECTED_TEXT,
    PROMPT_TOKENS,
    SOURCES,
    TEXT_PIECES,
)
from tests.fake_upstream.formats.base import Format


class AnythingLLMFormat(Format):
    uuid = "9f6c1a2e-3b4d-4e5f-8a9b-0c1d2e3f4a5b"
    auth_status = 403

    def text_event(self, text: str) -> Any:
        return {
            "uuid": self.uuid,
            "sources": [],
            "type": "textResponseChunk",
            "textResponse": text,
            "close": False,
            "error": False,
        }

    def stream_events(self, kind: str) -> list[Any]:
        events = [self.text_event(p) for p in TEXT_PIECES]
        events.append(
            {
                "uuid": self.uuid,
                "sources": [],
                "type": "textResponseChunk",
                "textResponse": "",
                "close": True,
                "error": False,
            }
        )
        events.append(
            {
                "uuid": self.uuid,
                "type": "finalizeResponseStream",
                "close": True,
                "error": False,
                "chatId": 42,
                "metrics": _allm_metrics(),
                "sources": SOURCES,
            }
        )
        return events

    def stream_error(self, message: str) -> Any:
        return {
            "uuid": self.uuid,
            "type": "abort",
            "textResponse": None,
            "sources": [],
            "close": True,
            "error": message,
        }

    def whole(self, kind: str) -> Any:
        return {
            "id": self.uuid,
            "type": "textResponse",
            "close": True,
            "error": None,
            "chatId": 42,
            "textResponse": EXPECTED_TEXT,
            "sources": SOURCES,
            "metrics": _allm_metrics(),
        }

    def whole_error(self, message: str) -> Any:
        return {
            "id": self.uuid,
            "type": "abort",
            "textResponse": None,
            "sources": [],
            "close": True,
            "error": message,
        }

    def http_error(self, status: int, message: str) -> Any:
        if status == 403:
            return {"error": "No valid api key found."}
        return self.whole_error(message)


def _allm_metrics() -> dict[str, Any]:
    return {
        "completion_tokens": COMPLETION_TOKENS,
        "prompt_tokens": PROMPT_TOKENS,
        "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
        "outputTps": 14.5,
        "duration": 0.48,
        "model": "llama3.2",
        "provider": "GenericOpenAiLLM",
        "timestamp": "2026-11-22T05:52:00.123Z",
    }
