"""A fake LLM upstream on 127.0.0.1 that can be told to misbehave.

It runs an aiohttp server in a background thread (so synchronous tests and SDK clients can use
it) and speaks the OpenAI and AnythingLLM formats. The first path segment picks the scenario,
so one gateway config can point a model at each behaviour:

    http://127.0.0.1:PORT/<scenario>/v1/chat/completions                 (OpenAI)
    http://127.0.0.1:PORT/<scenario>/api/v1/workspace/<slug>/stream-chat  (AnythingLLM)
    http://127.0.0.1:PORT/<scenario>/api/v1/workspace/<slug>/chat

Every request is recorded, and every streamed response records when its connection closed,
so tests can assert that the gateway released the upstream.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

API_KEY = "sk-fake-upstream-SECRET-4b1d9e7a2c"
TEXT_PIECES = ["Hello", ", wor", "ld! ", "héllo ", "你好 ", "🌊"]
EXPECTED_TEXT = "".join(TEXT_PIECES)
PROMPT_TOKENS = 11
COMPLETION_TOKENS = 7
SOURCES = [{"id": "doc-1", "title": "handbook.md", "text": "Tidegate handbook", "score": 0.87}]


@dataclass
class Recorded:
    """One request the fake received, and when its response connection ended."""

    scenario: str
    path: str
    headers: dict[str, str]
    body: Any
    started: float = field(default_factory=time.monotonic)
    closed_at: float | None = None
    completed: bool = False


class FakeUpstream:
    """The fake server; `base(scenario)` is the URL prefix for one behaviour."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.port = 0
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
        app.router.add_post("/{scenario}/v1/chat/completions", self._openai)
        app.router.add_post("/{scenario}/api/v1/workspace/{slug}/stream-chat", self._allm_stream)
        app.router.add_post("/{scenario}/api/v1/workspace/{slug}/chat", self._allm_chat)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    # -- recording ------------------------------------------------------------------------

    async def _record(self, request: web.Request) -> Recorded:
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = raw
        rec = Recorded(request.match_info["scenario"], request.path, dict(request.headers), body)
        self.requests.append(rec)
        return rec

    # -- OpenAI ---------------------------------------------------------------------------

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request)
        if request.headers.get("Authorization") != f"Bearer {API_KEY}":
            return _json(401, _openai_error("Incorrect API key provided", "invalid_api_key"))
        stream = isinstance(rec.body, dict) and rec.body.get("stream")
        usage = bool(stream and ((rec.body.get("stream_options") or {}).get("include_usage")))
        fmt = OpenAIEvents(usage=usage or not stream)
        return await self._serve(request, rec, fmt, bool(stream))

    # -- AnythingLLM ----------------------------------------------------------------------

    async def _allm_stream(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request)
        if request.headers.get("Authorization") != f"Bearer {API_KEY}":
            return _json(403, {"error": "No valid api key found."})
        return await self._serve(request, rec, AnythingLLMEvents(), True)

    async def _allm_chat(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request)
        if request.headers.get("Authorization") != f"Bearer {API_KEY}":
            return _json(403, {"error": "No valid api key found."})
        return await self._serve(request, rec, AnythingLLMEvents(), False)

    # -- behaviours -----------------------------------------------------------------------

    async def _serve(
        self, request: web.Request, rec: Recorded, fmt: Events, stream: bool
    ) -> web.StreamResponse:
        s = rec.scenario
        if s.startswith("status_") or s == "leaky_401":
            status = 401 if s == "leaky_401" else int(s.split("_")[1])
            message = (
                f"Incorrect API key provided: {API_KEY}" if s == "leaky_401" else f"fake {status}"
            )
            headers = {"Retry-After": "7"} if status == 429 else None
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
            return _json(200, fmt.whole())

        response = web.StreamResponse(status=200, headers={"Content-Type": fmt.content_type})
        response.enable_chunked_encoding()
        await response.prepare(request)
        sep = "\r\n" if s == "crlf" else "\n"
        events = fmt.stream_events()
        try:
            if s == "slow_first_event":
                await asyncio.sleep(5)
            if s == "pings":
                await response.write(b": keep-alive\n\n")
            if s == "error_first":
                await response.write(fmt.frame(fmt.stream_error("upstream model overloaded"), sep))
                await response.write_eof()
                rec.completed = True
                return response
            if s in (
                "stall_mid",
                "drop_mid",
                "error_mid",
                "truncated",
                "malformed_mid",
                "leaky_mid",
            ):
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
                    await response.write(
                        fmt.frame(fmt.stream_error("upstream failed mid-way"), sep)
                    )
                elif s == "leaky_mid":
                    leak = fmt.stream_error(f"upstream rejected key {API_KEY} mid-way")
                    await response.write(fmt.frame(leak, sep))
                elif s == "malformed_mid":
                    await response.write(b'data: {"choices": [ not json\n\n')
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
                    await response.write(fmt.frame(event, sep) + b": keep-alive\n\n")
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


def _openai_error(message: str, code: str | None = None) -> dict[str, Any]:
    return {
        "error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    }


class Events:
    """A wire format as the fake speaks it."""

    content_type = "text/event-stream"

    def frame(self, payload: Any, sep: str) -> bytes:
        data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        return b"data: " + data + (sep + sep).encode()

    def stream_events(self) -> list[Any]:
        raise NotImplementedError

    def text_event(self, text: str) -> Any:
        raise NotImplementedError

    def stream_error(self, message: str) -> Any:
        raise NotImplementedError

    def whole(self) -> Any:
        raise NotImplementedError

    def whole_error(self, message: str) -> Any:
        raise NotImplementedError

    def http_error(self, status: int, message: str) -> Any:
        raise NotImplementedError


class OpenAIEvents(Events):
    def __init__(self, usage: bool) -> None:
        self.usage = usage
        self.head = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "fake-model",
        }

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**self.head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    def text_event(self, text: str) -> Any:
        return self._chunk({"content": text})

    def stream_events(self) -> list[Any]:
        events: list[Any] = [self._chunk({"role": "assistant", "content": ""})]
        events += [self.text_event(p) for p in TEXT_PIECES]
        events.append(self._chunk({}, "stop"))
        if self.usage:
            events.append({**self.head, "choices": [], "usage": _openai_usage()})
        events.append(b"[DONE]")
        return events

    def stream_error(self, message: str) -> Any:
        return {"error": {"message": message, "type": "server_error", "param": None, "code": None}}

    def whole(self) -> Any:
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 1,
            "model": "fake-model",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": EXPECTED_TEXT},
                }
            ],
            "usage": _openai_usage(),
        }

    def whole_error(self, message: str) -> Any:
        return self.stream_error(message)

    def http_error(self, status: int, message: str) -> Any:
        return _openai_error(message)


def _openai_usage() -> dict[str, Any]:
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": COMPLETION_TOKENS,
        "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


class AnythingLLMEvents(Events):
    uuid = "9f6c1a2e-3b4d-4e5f-8a9b-0c1d2e3f4a5b"

    def text_event(self, text: str) -> Any:
        return {
            "uuid": self.uuid,
            "sources": [],
            "type": "textResponseChunk",
            "textResponse": text,
            "close": False,
            "error": False,
        }

    def stream_events(self) -> list[Any]:
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

    def whole(self) -> Any:
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
        return {
            "id": self.uuid,
            "type": "abort",
            "textResponse": None,
            "sources": [],
            "close": True,
            "error": message,
        }


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
