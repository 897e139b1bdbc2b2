"""The built-in `demo` model: a fixed, labelled sample answer, streamed at a steady pace.

It needs no network and no key, so `tidegate serve` on a fresh machine answers at once. It acts
as an in-process upstream that speaks the OpenAI format, so every endpoint treats it exactly
as it treats a real OpenAI-compatible server (pass-through on `/v1/chat/completions`,
translation elsewhere).

A /stream-ask coding task gets a labelled canned answer of its kind instead (`task_answer`),
read from the rendered user turn as a model would read it: for `fix`, a canned diagnosis
quoting the traceback's last line, and the code it was given, back in a fenced block with a
visible fix comment.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any, Literal, NamedTuple

import orjson
from pydantic import Field, field_validator

from tidegate.events import ChatRequest, Usage
from tidegate.providers.http import UpstreamCall, UpstreamClient, UpstreamResponse
from tidegate.providers.openai import OpenAIProvider
from tidegate.settings import DeploymentSettings, Frozen
from tidegate.sse import encode_event

DEMO_ANSWER = (
    "[tidegate demo] This is a fixed sample answer from tidegate's built-in demo model; "
    "no language model was called. It streams word by word so that you can check your front "
    "end's handling of Server-Sent Events. To get real answers, add a models: entry for "
    "AnythingLLM or any OpenAI-compatible API to your config file."
)
#: How the task reaches the in-process upstream (this header never leaves the process).
_TASK_HEADER = "X-Tidegate-Demo-Task"
_FENCED = re.compile(r"^(`{3,})([^\n`]*)\n(.*?)\n\1[ \t]*$", re.MULTILINE | re.DOTALL)
#: Languages whose line comments start with `//` (the rest get `#`).
_SLASH_COMMENTS = frozenset(
    {"javascript", "jsx", "typescript", "tsx", "java", "kotlin", "go", "rust", "c", "cpp"}
    | {"csharp", "swift", "php"}
)
_NOUNS = {"generate": "piece of code", "explain": "explanation", "review": "code review"}
_SAMPLE_CODE = '```python\ndef greet(name: str) -> str:\n    return f"Hello, {name}!"\n```'


class CannedAnswer(Frozen):
    """One canned answer of the demo model: `answer` when `match` is found in the question."""

    match: str
    answer: str

    @field_validator("match")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression ({exc})") from None
        return value


class DemoSettings(DeploymentSettings):
    """The demo model needs nothing; `pace` is the seconds between its chunks."""

    provider: Literal["demo"]
    pace: float = Field(default=0.04, ge=0, le=10)
    #: Canned answers: the first whose `match` (a regular expression) is found in the last user
    #: turn is the answer, instead of the sample one (for examples and front-end tests).
    answers: tuple[CannedAnswer, ...] = ()


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

    def build_call(self, request: ChatRequest) -> UpstreamCall:
        call = super().build_call(request)
        if request.task:
            call.headers = {**call.headers, _TASK_HEADER: request.task}
        return call

    async def open(self, client: UpstreamClient, call: UpstreamCall) -> UpstreamResponse:
        request = orjson.loads(call.body)
        prompt_words = sum(len(_text_of(m).split()) for m in request["messages"])
        answer_text = task_answer(call.headers.get(_TASK_HEADER), request["messages"])
        if answer_text is None and self.config.answers:
            answer_text = self._canned(request["messages"])
        whole = self.pieces if answer_text is None else re.findall(r"\S+\s*|\s+", answer_text)
        limit = request.get("max_completion_tokens") or request.get("max_tokens")
        pieces = whole[:limit] if isinstance(limit, int) and limit > 0 else whole
        finish = "length" if len(pieces) < len(whole) else "stop"
        usage = Usage(input_tokens=prompt_words, output_tokens=len(pieces))
        answer = _Answer(request["model"], pieces, finish, usage)
        if call.stream:
            include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
            return _DemoStream(self.pace, _frames(answer, include_usage))
        return _DemoBody(_completion(answer))

    def _canned(self, messages: list[dict[str, Any]]) -> str | None:
        turn = next((_text_of(m) for m in reversed(messages) if m.get("role") == "user"), "")
        for canned in self.config.answers:
            if re.search(canned.match, turn):
                return canned.answer
        return None


def _text_of(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return "\n".join(str(p.get("text") or "") for p in content if isinstance(p, dict))
    return str(content or "")


def task_answer(task: str | None, messages: list[dict[str, Any]]) -> str | None:
    """The demo's canned answer to a /stream-ask task, from the last user turn (None: the
    plain sample answer)."""
    if task not in ("fix", "generate", "explain", "review"):
        return None
    label = f"[tidegate demo: {task}]"
    if task != "fix":
        noun = _NOUNS[task]
        text = (
            f"{label} This is a canned {noun} from tidegate's built-in demo model; no language "
            f"model was called. Configure a real model in the models: section of your config "
            f"file to get a real {noun}."
        )
        return f"{text}\n\n{_SAMPLE_CODE}\n" if task == "generate" else text
    turn = next((_text_of(m) for m in reversed(messages) if m.get("role") == "user"), "")
    blocks = [(m.group(1), m.group(2).strip(), m.group(3)) for m in _FENCED.finditer(turn)]
    fence, language, code = blocks[0] if blocks else ("```", "", "")
    traceback = blocks[1][2].strip().splitlines() if len(blocks) > 1 else []
    diagnosis = (
        f"the traceback ends in `{traceback[-1].strip()}`, so that is the line to look at"
        if traceback
        else "no traceback was given"
    )
    comment = "//" if language in _SLASH_COMMENTS else "#"
    return (
        f"{label} A canned diagnosis; no language model was called: {diagnosis}. A real model "
        "would name the cause and change the code; the demo gives your code back with the "
        "place of the fix marked.\n\n"
        f"{fence}{language}\n{comment} FIX (tidegate demo): the corrected line goes here\n"
        f"{code}\n{fence}\n"
    )


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
