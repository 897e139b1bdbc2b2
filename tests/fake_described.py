"""A fake upstream for described providers: APIs no built-in provider speaks.

aiohttp in a background thread, like tests/fake_upstream, with its own routes. Every path
starts with a namespace (`/<ns>/...`, a test's own random id) whose counters and tokens are
its own, so tests sharing the session's server never see each other's state.

- `POST /<ns>/v1/token` (seed 001's auth step): `Authorization: Bearer <key>` with a known
  upstream key gets `{"token": ..., "expires_in": ...}`; every fetch is counted.
- `POST /<ns>/v1/chat/completions` (seed 001's chat step): only `Bearer <a valid token>` gets
  an OpenAI-style SSE stream (a role chunk, text chunks, a finish chunk, `[DONE]`); the text
  names whose key the token came from. Anything else is a 401.
- `POST /<ns>/ndjson/generate`: an NDJSON API (`X-Api-Key`), `{"response": ...}` lines and a
  last `{"done": true, ...}` line with token counts.
- `POST /<ns>/lines/chat`: a line-based API: `DATA <json>`, `STATUS <json>`, `: ping` and
  `DATA [END]` lines.
- `POST /<ns>/json/complete`: a whole JSON answer, signed requests only (`X-Signature`, the
  HMAC-SHA256 of the prompt, and a current `X-Timestamp` in Unix seconds);
  `{"status": 1001, "msg": ...}` when the prompt asks for an error.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.background import AiohttpServer

#: The model's upstream key, and a user's own one.
MODEL_KEY = "upstream-model-key-4b1d9e07"
ALICE_KEY = "upstream-alice-key-77c2a0f3"
KEY_OWNERS = {MODEL_KEY: "model", ALICE_KEY: "alice"}
SIGNING_KEY = "signing-key-5e8f21aa"
SEED_WORDS = ["Hello", " from", " the", " seed"]


@dataclass
class Namespace:
    """One test's view of the fake: its tokens, counters and requests."""

    valid: dict[str, str] = field(default_factory=dict)  # token -> key owner
    fetches: list[str] = field(default_factory=list)  # key owner per token fetch
    chats: list[dict[str, Any]] = field(default_factory=list)  # chat requests seen
    refused: int = 0  # chat requests refused with a 401
    expires_in: int | None = 3600
    token_delay: float = 0.0
    echo_token: bool = False  # the chat's error body quotes the token it refused
    auth_status: int = 200  # the token endpoint's status

    def revoke(self) -> None:
        """Every token issued so far stops working (the upstream rotated them)."""
        self.valid.clear()


class DescribedFake(AiohttpServer):
    """The fake server; `ns(name)` is one test's state, `base(name)` its URL prefix."""

    def __init__(self) -> None:
        super().__init__()
        self.spaces: dict[str, Namespace] = {}
        self._serial = itertools.count(1)

    def ns(self, name: str) -> Namespace:
        return self.spaces.setdefault(name, Namespace())

    def base(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def make_app(self) -> web.Application:
        """The seed's token exchange and chat, and the other framings."""
        app = web.Application()
        app.router.add_post("/{ns}/v1/token", self._token)
        app.router.add_post("/{ns}/v1/chat/completions", self._chat)
        app.router.add_post("/{ns}/ndjson/generate", self._ndjson)
        app.router.add_post("/{ns}/lines/chat", self._lines)
        app.router.add_post("/{ns}/json/complete", self._json)
        return app

    # -- seed 001: token exchange, then OpenAI-style SSE ------------------------------------

    async def _token(self, request: web.Request) -> web.Response:
        space = self.ns(request.match_info["ns"])
        given = request.headers.get("Authorization", "").removeprefix("Bearer ")
        owner = KEY_OWNERS.get(given)
        if owner is None:
            return web.json_response({"error": "unknown key"}, status=401)
        if space.token_delay:
            await asyncio.sleep(space.token_delay)
        if space.auth_status != 200:
            return web.json_response({"error": "token service down"}, status=space.auth_status)
        space.fetches.append(owner)
        token = f"tok-{owner}-{next(self._serial)}-{time.monotonic_ns()}"
        space.valid[token] = owner
        body: dict[str, Any] = {"token": token}
        if space.expires_in is not None:
            body["expires_in"] = space.expires_in
        return web.json_response(body)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        space = self.ns(request.match_info["ns"])
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        body = await request.json()
        space.chats.append({"headers": dict(request.headers), "body": body})
        owner = space.valid.get(token)
        if owner is None:
            space.refused += 1
            quoted = f" {token}" if space.echo_token else ""
            return web.json_response({"error": {"message": f"invalid token{quoted}"}}, status=401)
        if body.get("stream") is not True or not body.get("messages"):
            return web.json_response({"error": {"message": "bad request"}}, status=400)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        async def event(delta: dict[str, Any], finish: str | None = None) -> None:
            chunk = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")

        await event({"role": "assistant", "content": ""})
        for word in SEED_WORDS:
            await event({"content": word})
        await event({"content": f" (key: {owner})"})
        await event({}, "stop")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    # -- NDJSON -------------------------------------------------------------------------------

    async def _ndjson(self, request: web.Request) -> web.StreamResponse:
        space = self.ns(request.match_info["ns"])
        body = await request.json()
        space.chats.append({"headers": dict(request.headers), "body": body})
        if request.headers.get("X-Api-Key") != MODEL_KEY:
            return web.json_response({"error": "bad key"}, status=401)
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        for word in ["Lines", " of", " JSON"]:
            await response.write(orjson.dumps({"response": word, "done": False}) + b"\n")
        last = {"done": True, "done_reason": "stop", "prompt_eval_count": 7, "eval_count": 3}
        await response.write(orjson.dumps(last) + b"\n")
        await response.write_eof()
        return response

    # -- lines ------------------------------------------------------------------------------------

    async def _lines(self, request: web.Request) -> web.StreamResponse:
        space = self.ns(request.match_info["ns"])
        body = await request.json()
        space.chats.append({"headers": dict(request.headers), "body": body})
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        await response.write(b": ping\r\n")
        for piece in ["Plain", " old", " lines"]:
            await response.write(b"DATA " + orjson.dumps({"t": piece}) + b"\r\n")
        await response.write(b'STATUS {"finished": "stop", "used": {"in": 4, "out": 3}}\r\n')
        await response.write(b"DATA [END]\r\n")
        await response.write_eof()
        return response

    # -- a whole JSON answer, signed requests -----------------------------------------------

    async def _json(self, request: web.Request) -> web.Response:
        space = self.ns(request.match_info["ns"])
        body = await request.json()
        space.chats.append({"headers": dict(request.headers), "body": body})
        stamp = request.headers.get("X-Timestamp", "")
        prompt = str(body.get("prompt", ""))
        expected = hmac.new(SIGNING_KEY.encode(), prompt.encode(), hashlib.sha256).hexdigest()
        fresh = stamp.isdigit() and abs(int(stamp) - time.time()) < 300
        if not fresh or request.headers.get("X-Signature") != expected:
            return web.json_response({"status": 4001, "msg": "bad signature"}, status=403)
        if "error please" in prompt:
            return web.json_response({"status": 1001, "msg": "quota exhausted"})
        answer = {
            "status": 0,
            "result": {"answer": f"Whole answer to: {prompt}"},
            "usage": {"in": 5, "out": 4},
        }
        return web.json_response(answer)
