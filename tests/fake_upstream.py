"""A fake LLM upstream on 127.0.0.1 that can be told to misbehave.

It runs an aiohttp server in a background thread (so synchronous tests and SDK clients can use
it) and speaks the OpenAI, AnythingLLM, Anthropic, Gemini and Ollama formats. The first path
segment picks the scenario, so one gateway config can point a model at each behaviour:

    /<scenario>/v1/chat/completions                        OpenAI
    /<scenario>/api/v1/workspace/<slug>/stream-chat | chat  AnythingLLM
    /<scenario>/v1/messages                                Anthropic
    /<scenario>/v1beta/models/<model>:streamGenerateContent | :generateContent   Gemini
    /<scenario>/api/chat                                   Ollama (NDJSON)

Content scenarios: `ok` (text), `tools` (two parallel tool calls), `reasoning` (visible
reasoning, then text, with cached and reasoning token counts). Every other scenario serves the
`ok` content and misbehaves as its name says. Every request is recorded, with when its
response connection closed.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson
from aiohttp import web

API_KEY = "sk-fake-upstream-SECRET-4b1d9e7a2c"
TEXT_PIECES = ["Hello", ", wor", "ld! ", "héllo ", "你好 ", "🌊"]
EXPECTED_TEXT = "".join(TEXT_PIECES)
PROMPT_TOKENS = 11
COMPLETION_TOKENS = 7
SOURCES = [{"id": "doc-1", "title": "handbook.md", "text": "Tidegate handbook", "score": 0.87}]

REASONING_PIECES = ["Let me ", "think."]
REASONING_TEXT = "".join(REASONING_PIECES)
ANSWER_PIECES = ["The answer ", "is 42."]
ANSWER_TEXT = "".join(ANSWER_PIECES)
# Reasoning scenario usage: 20 prompt tokens (8 cached); 15 output tokens (9 reasoning).
R_INPUT, R_CACHED, R_OUTPUT, R_REASONING = 20, 8, 15, 9

TOOL_CALLS = [
    ("call_w1", "get_weather", {"city": "Paris"}, ['{"ci', 'ty": "Pa', 'ris"}']),
    ("call_t2", "get_time", {"tz": "Europe/Paris"}, ['{"tz": ', '"Europe/Paris"}']),
]
T_INPUT, T_OUTPUT = 30, 12

# What a `chaos*` scenario does, drawn per request: half succeed, the rest fail in every way.
CHAOS = ["ok"] * 14 + [
    "status_500", "status_503", "status_429_bare", "reset", "error_first", "html", "slow_headers",
    "slow_first_event", "drop_mid", "stall_mid", "error_mid", "truncated", "malformed_mid",
    "split_utf8",
]  # fmt: skip

MISBEHAVIOURS = {
    "status_400",
    "status_401",
    "status_429",
    "status_500",
    "leaky_401",
    "html",
    "slow_headers",
    "slow_first_event",
    "error_first",
    "stall_mid",
    "drop_mid",
    "error_mid",
    "truncated",
    "malformed_mid",
    "leaky_mid",
    "split_utf8",
    "crlf",
    "pings",
    "slow_stream",
}


@dataclass
class Recorded:
    """One request the fake received, and when its response connection ended."""

    scenario: str
    path: str
    headers: dict[str, str]
    body: Any
    query: dict[str, str] = field(default_factory=dict)
    behaviour: str = ""
    started: float = field(default_factory=time.monotonic)
    closed_at: float | None = None
    completed: bool = False


class FakeUpstream:
    """The fake server; `base(scenario)` is the URL prefix for one behaviour."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.port = 0
        self.rng = random.Random(20261123)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    def start(self) -> FakeUpstream:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def base(self, scenario: str) -> str:
        return f"http://127.0.0.1:{self.port}/{scenario}"

    def last(self, scenario: str) -> Recorded:
        for r in reversed(self.requests):
            if r.scenario == scenario:
                return r
        raise AssertionError(f"the fake upstream received no request for {scenario!r}")

    def count(self, scenario: str) -> int:
        return sum(1 for r in self.requests if r.scenario == scenario)

    async def _start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        add = app.router.add_post
        add(
            "/{scenario}/v1/chat/completions",
            self._handler(OpenAIFormat, "Authorization", f"Bearer {API_KEY}"),
        )
        add(
            "/{scenario}/api/v1/workspace/{slug}/stream-chat",
            self._handler(AnythingLLMFormat, "Authorization", f"Bearer {API_KEY}", stream=True),
        )
        add(
            "/{scenario}/api/v1/workspace/{slug}/chat",
            self._handler(AnythingLLMFormat, "Authorization", f"Bearer {API_KEY}", stream=False),
        )
        add("/{scenario}/v1/messages", self._handler(AnthropicFormat, "x-api-key", API_KEY))
        add(
            "/{scenario}/v1beta/models/{action}",
            self._handler(GeminiFormat, "x-goog-api-key", API_KEY),
        )
        add(
            "/{scenario}/api/chat",
            self._handler(OllamaFormat, "Authorization", f"Bearer {API_KEY}"),
        )
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def _handler(
        self, fmt_class: type[Format], header: str, expected: str, stream: bool | None = None
    ) -> Any:
        async def handle(request: web.Request) -> web.StreamResponse:
            raw = await request.read()
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                body = raw
            rec = Recorded(
                request.match_info["scenario"],
                request.path,
                dict(request.headers),
                body,
                dict(request.query),
            )
            self.requests.append(rec)
            fmt = fmt_class(request, body)
            if request.headers.get(header) != expected:
                return _json(fmt.auth_status, fmt.http_error(fmt.auth_status, "invalid key"))
            is_stream = fmt.is_stream() if stream is None else stream
            if rec.scenario.startswith("chaos"):
                rec.behaviour = self.rng.choice(CHAOS)
            try:
                return await _serve(request, rec, fmt, is_stream)
            finally:
                if rec.closed_at is None and not rec.completed:
                    rec.closed_at = time.monotonic()  # cancelled: the gateway hung up

        return handle


async def _serve(
    request: web.Request, rec: Recorded, fmt: Format, stream: bool
) -> web.StreamResponse:
    s = rec.behaviour or rec.scenario
    if s == "reset":  # the connection dies before any response
        assert request.transport is not None
        request.transport.abort()
        rec.closed_at = time.monotonic()
        return web.Response()
    kind = s if s in ("tools", "reasoning") else "ok"
    if s.startswith("status_") or s == "leaky_401":
        status = 401 if s == "leaky_401" else int(s.split("_")[1])
        message = f"Incorrect API key provided: {API_KEY}" if s == "leaky_401" else f"fake {status}"
        headers = {"Retry-After": "7"} if status == 429 and not s.endswith("_bare") else None
        return _json(status, fmt.http_error(status, message), headers)
    if s == "html":
        return web.Response(
            status=200, text="<html><body>Bad gateway</body></html>", content_type="text/html"
        )
    if s == "slow_headers":
        await asyncio.sleep(5)
    if not stream:
        if s == "error_first":
            return _json(200, fmt.whole_error("upstream model overloaded"))
        return _json(200, fmt.whole(kind))

    response = web.StreamResponse(status=200, headers={"Content-Type": fmt.content_type})
    response.enable_chunked_encoding()
    await response.prepare(request)
    sep = "\r\n" if s == "crlf" or fmt.crlf else "\n"
    events = fmt.stream_events(kind)
    try:
        if s == "slow_first_event":
            await asyncio.sleep(5)
        if s == "pings":
            await response.write(fmt.ping())
        if s == "error_first":
            await response.write(fmt.stream_error_bytes("upstream model overloaded", sep))
            await response.write_eof()
            rec.completed = True
            return response
        if s in ("stall_mid", "drop_mid", "error_mid", "truncated", "malformed_mid", "leaky_mid"):
            for event in events[:3]:
                await response.write(fmt.frame(event, sep))
            await asyncio.sleep(0.05)
            if s == "stall_mid":
                await asyncio.sleep(30)
            elif s == "drop_mid":
                assert request.transport is not None
                request.transport.abort()
                return response
            elif s == "error_mid":
                await response.write(fmt.stream_error_bytes("upstream failed mid-way", sep))
            elif s == "leaky_mid":
                await response.write(
                    fmt.stream_error_bytes(f"upstream rejected key {API_KEY}", sep)
                )
            elif s == "malformed_mid":
                await response.write(fmt.malformed())
            await response.write_eof()
            rec.completed = True
            return response
        body = b"".join(fmt.frame(e, sep) for e in events)
        if s == "split_utf8":
            # Cut everywhere, including inside multi-byte characters and between CR and LF.
            for i in range(0, len(body), 3):
                await response.write(body[i : i + 3])
                await asyncio.sleep(0.001)
        elif s == "slow_stream":
            for _ in range(600):
                await response.write(fmt.frame(fmt.text_event("tick "), sep))
                await asyncio.sleep(0.05)
            await response.write(body)
        elif s == "pings":
            for event in events:
                await response.write(fmt.frame(event, sep) + fmt.ping())
        else:
            await response.write(body)
        await response.write_eof()
        rec.completed = True
    finally:
        rec.closed_at = time.monotonic()
    return response


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(payload), content_type="application/json", headers=headers
    )


class Format:
    """A wire format as the fake speaks it."""

    content_type = "text/event-stream"
    crlf = False
    auth_status = 401

    def __init__(self, request: web.Request, body: Any):
        self.request = request
        self.body = body if isinstance(body, dict) else {}

    def is_stream(self) -> bool:
        return bool(self.body.get("stream"))

    def frame(self, payload: Any, sep: str) -> bytes:
        data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        return b"data: " + data + (sep + sep).encode()

    def ping(self) -> bytes:
        return b": keep-alive\n\n"

    def malformed(self) -> bytes:
        return b'data: {"choices": [ not json\n\n'

    def stream_error_bytes(self, message: str, sep: str) -> bytes:
        return self.frame(self.stream_error(message), sep)

    def stream_events(self, kind: str) -> list[Any]:
        raise NotImplementedError

    def text_event(self, text: str) -> Any:
        raise NotImplementedError

    def stream_error(self, message: str) -> Any:
        raise NotImplementedError

    def whole(self, kind: str) -> Any:
        raise NotImplementedError

    def whole_error(self, message: str) -> Any:
        return self.stream_error(message)

    def http_error(self, status: int, message: str) -> Any:
        raise NotImplementedError


# -- OpenAI -------------------------------------------------------------------------------------


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


# -- AnythingLLM --------------------------------------------------------------------------------


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


# -- Anthropic ----------------------------------------------------------------------------------


class AnthropicFormat(Format):
    def frame(self, payload: Any, sep: str) -> bytes:
        name = payload["type"].encode()
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


# -- Gemini -------------------------------------------------------------------------------------


class GeminiFormat(Format):
    crlf = True

    def is_stream(self) -> bool:
        return self.request.match_info["action"].endswith(":streamGenerateContent")

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


# -- Ollama -------------------------------------------------------------------------------------


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
