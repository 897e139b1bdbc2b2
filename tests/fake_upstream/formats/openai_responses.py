"""The OpenAI Responses format, as the fake speaks it.

Every event is named and numbered in the order it is framed, so the numbers keep growing
whatever a scenario writes (three events, then an error). A request whose `max_output_tokens`
is below the answer's length gets that many pieces and ends `incomplete`, the way a real
server cuts an answer short. A failure inside a stream is the `error` event in the nested form
OpenAI was seen to send, followed by `response.failed`.
"""

from __future__ import annotations

from typing import Any

import orjson

from tests.fake_upstream.content import (
    ANSWER_PIECES,
    COMPLETION_TOKENS,
    PROMPT_TOKENS,
    R_CACHED,
    R_INPUT,
    R_OUTPUT,
    R_REASONING,
    REASONING_PIECES,
    T_INPUT,
    T_OUTPUT,
    TEXT_PIECES,
    TOOL_CALLS,
)
from tests.fake_upstream.formats.base import Format

RESPONSE_ID = "resp_fake"


class ResponsesFormat(Format):
    """The Responses format: named, numbered events; response objects; OpenAI's errors."""

    def __init__(self, request: Any, body: Any):
        super().__init__(request, body)
        self.sequence = 0

    def frame(self, payload: Any, sep: str) -> bytes:
        numbered = {**payload, "sequence_number": self.sequence}
        self.sequence += 1
        name: str = payload["type"]
        return (
            b"event: "
            + name.encode()
            + sep.encode()
            + b"data: "
            + orjson.dumps(numbered)
            + (sep + sep).encode()
        )

    def malformed(self) -> bytes:
        return b'event: response.output_text.delta\ndata: {"type": "response.output_text.de\n\n'

    def text_event(self, text: str) -> Any:
        return {
            "type": "response.output_text.delta",
            "item_id": "msg_fake",
            "output_index": 0,
            "content_index": 0,
            "delta": text,
        }

    # -- answers ----------------------------------------------------------------------------

    def pieces(self, kind: str) -> tuple[list[str], bool]:
        """The answer's text pieces, and whether `max_output_tokens` cut them short."""
        pieces = ANSWER_PIECES if kind == "reasoning" else TEXT_PIECES
        limit = self.body.get("max_output_tokens")
        if isinstance(limit, int) and 0 < limit < len(pieces):
            return pieces[:limit], True
        return pieces, False

    @staticmethod
    def usage(kind: str, cut: int | None = None) -> dict[str, Any]:
        """The usage of an answer of `kind` (`cut`: the output tokens of a cut answer)."""
        if kind == "reasoning":
            counts = (R_INPUT, R_CACHED, R_OUTPUT, R_REASONING)
        elif kind == "tools":
            counts = (T_INPUT, 0, T_OUTPUT, 0)
        else:
            counts = (PROMPT_TOKENS, 0, COMPLETION_TOKENS if cut is None else cut, 0)
        input_tokens, cached, output_tokens, reasoning = counts
        return {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": input_tokens + output_tokens,
        }

    def response(self, status: str, output: list[Any], usage: Any, **extra: Any) -> Any:
        """A response object with the fields a client reads."""
        return {
            "id": RESPONSE_ID,
            "object": "response",
            "created_at": 1,
            "status": status,
            "error": None,
            "incomplete_details": None,
            "model": "fake-model",
            "output": output,
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "usage": usage,
            **extra,
        }

    def items(self, kind: str) -> tuple[list[Any], bool]:
        """The finished output items of an answer, and whether it was cut short."""
        items: list[Any] = []
        if kind == "tools":
            for i, (cid, name, args, _) in enumerate(TOOL_CALLS):
                items.append(
                    {
                        "id": f"fc_{i}",
                        "type": "function_call",
                        "status": "completed",
                        "call_id": cid,
                        "name": name,
                        "arguments": orjson.dumps(args).decode(),
                    }
                )
            return items, False
        if kind == "reasoning":
            summary = [{"type": "summary_text", "text": "".join(REASONING_PIECES)}]
            items.append({"id": "rs_fake", "type": "reasoning", "summary": summary})
        pieces, cut = self.pieces(kind)
        items.append(
            {
                "id": "msg_fake",
                "type": "message",
                "status": "incomplete" if cut else "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "annotations": [], "text": "".join(pieces)}],
            }
        )
        return items, cut

    def ending(self, kind: str) -> tuple[str, dict[str, Any]]:
        """The terminal event's type and its response: completed, or incomplete if cut."""
        items, cut = self.items(kind)
        usage = self.usage(kind, len(self.pieces(kind)[0]) if cut else None)
        if cut:
            details = {"reason": "max_output_tokens"}
            return "response.incomplete", self.response(
                "incomplete", items, usage, incomplete_details=details
            )
        return "response.completed", self.response("completed", items, usage)

    def stream_events(self, kind: str) -> list[Any]:
        started = self.response("in_progress", [], None)
        events: list[Any] = [
            {"type": "response.created", "response": started},
            {"type": "response.in_progress", "response": started},
        ]
        for index, item in enumerate(self.items(kind)[0]):
            events += self.item_events(index, item, kind)
        name, response = self.ending(kind)
        events.append({"type": name, "response": response})
        return events

    def item_events(self, index: int, item: dict[str, Any], kind: str) -> list[Any]:
        """An output item as the stream writes it: added, its deltas, done."""
        where = {"item_id": item["id"], "output_index": index}
        empty = {**item, "status": "in_progress"}
        events: list[Any] = []
        if item["type"] == "function_call":
            fragments = next(f for cid, _, _, f in TOOL_CALLS if cid == item["call_id"])
            events.append(
                {
                    "type": "response.output_item.added",
                    "output_index": index,
                    "item": {**empty, "arguments": ""},
                }
            )
            events += [
                {"type": "response.function_call_arguments.delta", **where, "delta": f}
                for f in fragments
            ]
            events.append(
                {
                    "type": "response.function_call_arguments.done",
                    **where,
                    "arguments": item["arguments"],
                }
            )
        elif item["type"] == "reasoning":
            part = {**where, "summary_index": 0}
            events.append(
                {"type": "response.output_item.added", "output_index": index, "item": {**empty}}
            )
            events.append(
                {
                    "type": "response.reasoning_summary_part.added",
                    **part,
                    "part": {"type": "summary_text", "text": ""},
                }
            )
            events += [
                {"type": "response.reasoning_summary_text.delta", **part, "delta": p}
                for p in REASONING_PIECES
            ]
            events.append(
                {
                    "type": "response.reasoning_summary_text.done",
                    **part,
                    "text": item["summary"][0]["text"],
                }
            )
        else:
            part = {**where, "content_index": 0}
            text = item["content"][0]["text"]
            events.append(
                {
                    "type": "response.output_item.added",
                    "output_index": index,
                    "item": {**empty, "content": []},
                }
            )
            events.append(
                {
                    "type": "response.content_part.added",
                    **part,
                    "part": {"type": "output_text", "annotations": [], "text": ""},
                }
            )
            events += [{**self.text_event(p), **part} for p in self.pieces(kind)[0]]
            events.append({"type": "response.output_text.done", **part, "text": text})
        events.append({"type": "response.output_item.done", "output_index": index, "item": item})
        return events

    def whole(self, kind: str) -> Any:
        return self.ending(kind)[1]

    # -- failures ---------------------------------------------------------------------------

    def stream_error(self, message: str) -> Any:
        error = {"type": "server_error", "code": "server_error", "message": message, "param": None}
        return {"type": "error", "error": error}

    def stream_error_bytes(self, message: str, sep: str) -> bytes:
        failed = self.response("failed", [], None)
        failed["error"] = {"code": "server_error", "message": message}
        return self.frame(self.stream_error(message), sep) + self.frame(
            {"type": "response.failed", "response": failed}, sep
        )

    def whole_error(self, message: str) -> Any:
        failed = self.response("failed", [], None)
        failed["error"] = {"code": "server_error", "message": message}
        return failed

    def http_error(self, status: int, message: str) -> Any:
        kind = {401: "invalid_request_error", 429: "rate_limit_exceeded"}.get(
            status, "server_error"
        )
        return {"error": {"message": message, "type": kind, "param": None, "code": None}}
