"""The fake upstream server: aiohttp in a background thread, every request recorded.

Synchronous tests and SDK clients use it as any HTTP server. The path is
`/<scenario>/<param>.../<format path>`, where the format path is one of

    v1/chat/completions                                   OpenAI
    api/v1/workspace/<slug>/stream-chat | chat            AnythingLLM
    v1/messages                                           Anthropic
    v1beta/models/<model>:streamGenerateContent | :generateContent   Gemini
    api/chat                                              Ollama (NDJSON)
    v1/responses                                          OpenAI Responses

and the scenario path before it picks the behaviour (scenarios.py). A request without the
format's key gets that format's authentication error.
"""

from __future__ import annotations

import random
import time

import orjson
from aiohttp import web

from tests.background import AiohttpServer
from tests.fake_upstream.content import API_KEY
from tests.fake_upstream.formats.anthropic import AnthropicFormat
from tests.fake_upstream.formats.anythingllm import AnythingLLMFormat
from tests.fake_upstream.formats.base import Format
from tests.fake_upstream.formats.gemini import GeminiFormat
from tests.fake_upstream.formats.ollama import OllamaFormat
from tests.fake_upstream.formats.openai import OpenAIFormat
from tests.fake_upstream.formats.openai_responses import ResponsesFormat
from tests.fake_upstream.scenarios import SCENARIOS, Exchange, Recorded, json_response

# (the segments that start the format's path, the format, its auth header and expected value)
_FORMATS: list[tuple[tuple[str, ...], type[Format], str, str]] = [
    (("v1", "chat", "completions"), OpenAIFormat, "Authorization", f"Bearer {API_KEY}"),
    (("v1", "messages"), AnthropicFormat, "x-api-key", API_KEY),
    (("v1beta", "models"), GeminiFormat, "x-goog-api-key", API_KEY),
    (("api", "chat"), OllamaFormat, "Authorization", f"Bearer {API_KEY}"),
    (("api", "v1", "workspace"), AnythingLLMFormat, "Authorization", f"Bearer {API_KEY}"),
    (("v1", "responses"), ResponsesFormat, "Authorization", f"Bearer {API_KEY}"),
]


class FakeUpstream(AiohttpServer):
    """The fake server; `base(scenario, *params)` is the URL prefix of one behaviour."""

    def __init__(self) -> None:
        super().__init__(handler_cancellation=True)
        self.requests: list[Recorded] = []
        self.rng = random.Random(20261123)

    def base(self, scenario: str, *params: object) -> str:
        """The URL prefix that runs `scenario` with `params` (extra params are labels)."""
        path = "/".join([scenario, *map(str, params)])
        return f"http://127.0.0.1:{self.port}/{path}"

    def last(self, scenario: str) -> Recorded:
        """The latest request for a scenario path (`name/param/...`)."""
        for r in reversed(self.requests):
            if r.scenario == scenario:
                return r
        raise AssertionError(f"the fake upstream received no request for {scenario!r}")

    def count(self, scenario: str) -> int:
        """How many requests a scenario path has received."""
        return sum(1 for r in self.requests if r.scenario == scenario)

    def make_app(self) -> web.Application:
        """Every POST, routed by the format its path names."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        segments = request.path.strip("/").split("/")
        for at in range(1, len(segments)):
            found = next(
                (f for f in _FORMATS if tuple(segments[at : at + len(f[0])]) == f[0]), None
            )
            if found is not None:
                break
        else:
            return web.Response(status=404, text=f"no format path in {request.path}")
        _, fmt_class, header, expected = found
        name, *params = segments[:at]
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = raw
        rec = Recorded("/".join(segments[:at]), request.path, dict(request.headers), body)
        rec.query = dict(request.query)
        self.requests.append(rec)
        fmt = fmt_class(request, body)
        if request.headers.get(header) != expected:
            return json_response(fmt.auth_status, fmt.http_error(fmt.auth_status, "invalid key"))
        if fmt_class is AnythingLLMFormat:
            stream = segments[-1] == "stream-chat"
        else:
            stream = fmt.is_stream()
        exchange = Exchange(request, rec, fmt, stream, params, self.rng)
        try:
            return await SCENARIOS[name](exchange)
        finally:
            # Answered, failed, or cancelled because the gateway hung up (then not `completed`).
            if rec.closed_at is None:
                rec.closed_at = time.monotonic()
