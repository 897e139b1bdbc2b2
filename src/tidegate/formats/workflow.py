"""The two workflow protocols, both ways a run is told to a client (docs/protocol.md).

**Native** (`POST /v1/workflows/{name}`): SSE where every event has an `id:` (1, 2, 3, … within
the run) and an `event:` name; data is JSON. `run_start` `{run_id, workflow, total_steps,
stream_id, resume_token}`, `step_start` `{index, total, name}`, `progress` `{step, index, total,
elapsed_ms, eta_ms}`, `chunk` `{step, content}`, `step_end` `{index, name, usage, duration_ms,
skipped}`, `error` `{message, code, step}`, and always last `final_end` `{status, run_id, usage}`
with status `completed`, `error` or `cancelled`. Without streaming: one JSON object (`run_to_json`).

**Seed** (`POST /workflow/query`, the front end of the tutorial this project grew from):
`data: {"type":"step_start"}`, each piece of output as a JSON string (`data: "text"`),
`data: {"type":"step_end"}`, `data: "[DONE]"` last; a failure is `data: Error: <message>` and
the end. Its sync twin answers `{success, content, workflow_id, run_id}`.
"""

from __future__ import annotations

from typing import Any

import orjson

from tidegate.errors import GatewayError
from tidegate.events import (
    Chunk,
    Progress,
    RunEnd,
    RunError,
    RunStart,
    StepEnd,
    StepStart,
    Usage,
    WorkflowEvent,
)
from tidegate.sse import encode_comment, encode_event

CONTENT_TYPE = b"text/event-stream; charset=utf-8"


def _usage(usage: Usage | None) -> dict[str, int] | None:
    return usage.as_dict() if usage is not None else None


class NativeEncoder:
    """Workflow events to the native SSE protocol, numbered from 1."""

    ping = encode_comment(b"ping")
    __slots__ = ("_seq", "resume_token", "stream_id")

    def __init__(self, stream_id: str | None = None):
        self._seq = 0
        self.stream_id = stream_id
        self.resume_token: str | None = None

    def _frame(self, name: bytes, payload: dict[str, Any]) -> bytes:
        self._seq += 1
        return encode_event(orjson.dumps(payload), name, str(self._seq).encode())

    def encode(self, event: WorkflowEvent) -> bytes:
        """One event as one SSE frame."""
        if isinstance(event, Chunk):
            return self._frame(b"chunk", {"step": event.step, "content": event.content})
        if isinstance(event, RunStart):
            payload: dict[str, Any] = {
                "run_id": event.run_id,
                "workflow": event.workflow,
                "total_steps": event.total_steps,
            }
            if self.stream_id is not None:
                payload["stream_id"] = self.stream_id
            if self.resume_token is not None:
                payload["resume_token"] = self.resume_token
            return self._frame(b"run_start", payload)
        if isinstance(event, StepStart):
            data = {"index": event.index, "total": event.total, "name": event.name}
            return self._frame(b"step_start", data)
        if isinstance(event, Progress):
            return self._frame(
                b"progress",
                {
                    "step": event.step,
                    "index": event.index,
                    "total": event.total,
                    "elapsed_ms": event.elapsed_ms,
                    "eta_ms": event.eta_ms,
                },
            )
        if isinstance(event, StepEnd):
            return self._frame(
                b"step_end",
                {
                    "index": event.index,
                    "name": event.name,
                    "usage": _usage(event.usage),
                    "duration_ms": event.duration_ms,
                    "skipped": event.skipped,
                },
            )
        if isinstance(event, RunError):
            data = {"message": event.message, "code": event.code, "step": event.step}
            return self._frame(b"error", data)
        return self.end(event.status, event.run_id, event.usage)

    def end(self, status: str, run_id: str, usage: Usage | None) -> bytes:
        """The `final_end` event (also written when the run was cancelled)."""
        data = {"status": status, "run_id": run_id, "usage": _usage(usage)}
        return self._frame(b"final_end", data)


class SeedEncoder:
    """Workflow events to the seed's front-end protocol."""

    ping = encode_comment(b"ping")
    __slots__ = ()

    def encode(self, event: WorkflowEvent) -> bytes:
        """One event as the seed writes it (nothing for progress and the run's start)."""
        if isinstance(event, Chunk):
            return encode_event(orjson.dumps(event.content))
        if isinstance(event, StepStart):
            return encode_event(b'{"type":"step_start"}')
        if isinstance(event, StepEnd):
            return encode_event(b'{"type":"step_end"}')
        if isinstance(event, RunError):
            return self.error(event.message)
        if isinstance(event, RunEnd) and event.status == "completed":
            return encode_event(b'"[DONE]"')
        return b""

    def error(self, message: str) -> bytes:
        """The seed's failure line: `data: Error: <message>` (not JSON, as the seed writes it)."""
        return encode_event(("Error: " + message).encode())


def run_to_json(events: list[WorkflowEvent], workflow: str) -> dict[str, Any]:
    """A whole run as the native protocol's JSON answer."""
    steps: list[dict[str, Any]] = []
    content: dict[str, list[str]] = {}
    end = next(e for e in reversed(events) if isinstance(e, RunEnd))
    error = next((e for e in events if isinstance(e, RunError)), None)
    for event in events:
        if isinstance(event, Chunk):
            content.setdefault(event.step, []).append(event.content)
        elif isinstance(event, StepEnd):
            steps.append(
                {
                    "name": event.name,
                    "content": "".join(content.get(event.name, [])),
                    "usage": _usage(event.usage),
                    "duration_ms": event.duration_ms,
                    "skipped": event.skipped,
                }
            )
    last = next((s["content"] for s in reversed(steps) if not s["skipped"]), "")
    out: dict[str, Any] = {
        "success": end.status == "completed",
        "run_id": end.run_id,
        "workflow": workflow,
        "content": last,
        "steps": steps,
        "usage": _usage(end.usage),
    }
    if error is not None:
        out["error"] = {"message": error.message, "code": error.code, "step": error.step}
    return out


def error_body(err: GatewayError) -> bytes:
    """The native protocol's error before a run began: `{"error": {message, code}}`."""
    return orjson.dumps({"error": {"message": err.message, "code": err.code}})


def seed_error_body(err: GatewayError) -> bytes:
    """The seed's error before a run began, as FastAPI writes it: `{"detail": message}`."""
    return orjson.dumps({"detail": err.message})
