"""How the fake upstream behaves: one entry per scenario, parameters from path segments.

A request to `/<scenario>/<param>/.../<format path>` runs `SCENARIOS[scenario](exchange)`; the
parameters are `exchange.params`. Segments a scenario does not read are labels: they let a test
point several deployments at the same behaviour and count their requests apart
(`/ok/fo500/v1/...`). Every scenario serves the `ok` content unless it is a content scenario
(`tools`, `reasoning`) and misbehaves as its name says.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.fake_upstream.content import API_KEY
from tests.fake_upstream.formats.base import Format


@dataclass
class Recorded:
    """One request the fake received, and when its response connection ended."""

    scenario: str  # the scenario path: name and parameters joined by "/"
    path: str
    headers: dict[str, str]
    body: Any
    query: dict[str, str] = field(default_factory=dict)
    behaviour: str = ""  # what a `chaos` request drew
    started: float = field(default_factory=time.monotonic)
    closed_at: float | None = None
    completed: bool = False


@dataclass
class Exchange:
    """One request being served: the aiohttp request, its record, its format and parameters."""

    request: web.Request
    rec: Recorded
    fmt: Format
    stream: bool
    params: list[str]
    rng: random.Random

    def param(self, index: int, default: str = "") -> str:
        return self.params[index] if len(self.params) > index else default


Scenario = Callable[[Exchange], Awaitable[web.StreamResponse]]


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(payload), content_type="application/json", headers=headers
    )


# -- answers ------------------------------------------------------------------------------------


def content(kind: str) -> Scenario:
    """A correct answer of `kind` (ok, tools, reasoning; fix in the OpenAI format), streamed
    or whole."""

    async def serve(x: Exchange) -> web.StreamResponse:
        if not x.stream:
            return json_response(200, x.fmt.whole(kind))
        return await stream(x, kind)

    return serve


async def stream(
    x: Exchange,
    kind: str = "ok",
    *,
    sep: str | None = None,
    writes: Callable[[list[bytes]], list[bytes]] | None = None,
    pause: float = 0.0,
) -> web.StreamResponse:
    """Stream the format's events for `kind`; `writes` regroups the framed events into writes."""
    response = await begin(x)
    sep = sep or ("\r\n" if x.fmt.crlf else "\n")
    frames = [x.fmt.frame(e, sep) for e in x.fmt.stream_events(kind)]
    for data in writes(frames) if writes else [b"".join(frames)]:
        await response.write(data)
        if pause:
            await asyncio.sleep(pause)
    return await end(x, response)


async def begin(x: Exchange) -> web.StreamResponse:
    response = web.StreamResponse(status=200, headers={"Content-Type": x.fmt.content_type})
    response.enable_chunked_encoding()
    await response.prepare(x.request)
    return response


async def end(x: Exchange, response: web.StreamResponse) -> web.StreamResponse:
    await response.write_eof()
    x.rec.completed = True
    return response


# -- failures before the first byte -------------------------------------------------------------


async def status(x: Exchange) -> web.StreamResponse:
    """HTTP error `<code>`; flags: `bare` (a 429 without Retry-After), `leaky` (quotes the key)."""
    code = int(x.param(0, "500"))
    flags = set(x.params[1:])
    message = f"Incorrect API key provided: {API_KEY}" if "leaky" in flags else f"fake {code}"
    headers = {"Retry-After": "7"} if code == 429 and "bare" not in flags else None
    return json_response(code, x.fmt.http_error(code, message), headers)


async def context_exceeded(x: Exchange) -> web.StreamResponse:
    """llama.cpp's 400 for a prompt longer than its context, with its own extra fields."""
    error = {
        "code": 400,
        "message": "the request exceeds the available context size, try increasing it",
        "type": "exceed_context_size_error",
        "n_prompt_tokens": 2511,
        "n_ctx": 2048,
    }
    return json_response(400, {"error": error})


async def reset(x: Exchange) -> web.StreamResponse:
    """The connection dies before any response."""
    assert x.request.transport is not None
    x.request.transport.abort()
    x.rec.closed_at = time.monotonic()
    return web.Response()


async def html(x: Exchange) -> web.StreamResponse:
    """A 200 HTML page instead of the API format."""
    return web.Response(
        status=200, text="<html><body>Bad gateway</body></html>", content_type="text/html"
    )


async def slow_headers(x: Exchange) -> web.StreamResponse:
    """The status line comes after `<seconds>` (default 5)."""
    await asyncio.sleep(float(x.param(0, "5")))
    return await content("ok")(x)


async def error_first(x: Exchange) -> web.StreamResponse:
    """A 200 whose first event (or whole body) is an error."""
    if not x.stream:
        return json_response(200, x.fmt.whole_error("upstream model overloaded"))
    response = await begin(x)
    sep = "\r\n" if x.fmt.crlf else "\n"
    await response.write(x.fmt.stream_error_bytes("upstream model overloaded", sep))
    return await end(x, response)


async def slow_first_event(x: Exchange) -> web.StreamResponse:
    """Headers at once, the first event after five seconds."""
    if not x.stream:
        return await content("ok")(x)
    response = await begin(x)
    await asyncio.sleep(5)
    sep = "\r\n" if x.fmt.crlf else "\n"
    await response.write(b"".join(x.fmt.frame(e, sep) for e in x.fmt.stream_events("ok")))
    return await end(x, response)


# -- failures after the first byte --------------------------------------------------------------


def after_three(then: str) -> Scenario:
    """Three good events, then `then`: stall, drop, error, truncated, malformed or leaky."""

    async def serve(x: Exchange) -> web.StreamResponse:
        if not x.stream:
            return await content("ok")(x)
        response = await begin(x)
        sep = "\r\n" if x.fmt.crlf else "\n"
        for event in x.fmt.stream_events("ok")[:3]:
            await response.write(x.fmt.frame(event, sep))
        await asyncio.sleep(0.05)
        if then == "stall":
            await asyncio.sleep(30)
        elif then == "drop":
            assert x.request.transport is not None
            x.request.transport.abort()
            return response
        elif then == "error":
            await response.write(x.fmt.stream_error_bytes("upstream failed mid-way", sep))
        elif then == "leaky":
            await response.write(x.fmt.stream_error_bytes(f"upstream rejected key {API_KEY}", sep))
        elif then == "malformed":
            await response.write(x.fmt.malformed())
        return await end(x, response)

    return serve


async def malformed_line(x: Exchange) -> web.StreamResponse:
    """A complete answer with one line of broken JSON in the middle of it."""
    if not x.stream:
        return await content("ok")(x)
    response = await begin(x)
    sep = "\r\n" if x.fmt.crlf else "\n"
    events = x.fmt.stream_events("ok")
    for event in events[:3]:
        await response.write(x.fmt.frame(event, sep))
    await response.write(x.fmt.malformed())
    for event in events[3:]:
        await response.write(x.fmt.frame(event, sep))
    return await end(x, response)


def cut_end(how: str) -> Scenario:
    """A complete answer whose end is cut: `no_done` drops the last event (OpenAI's `[DONE]`),
    `unterminated` sends it without its blank line; then the connection closes."""

    async def serve(x: Exchange) -> web.StreamResponse:
        if not x.stream:
            return await content("ok")(x)
        response = await begin(x)
        sep = "\r\n" if x.fmt.crlf else "\n"
        frames = [x.fmt.frame(e, sep) for e in x.fmt.stream_events("ok")]
        last = frames.pop()
        await response.write(b"".join(frames))
        if how == "unterminated":
            await response.write(last[: -len(sep)])
        return await end(x, response)

    return serve


# -- odd but valid streams ----------------------------------------------------------------------


async def split_utf8(x: Exchange) -> web.StreamResponse:
    """Cut everywhere, inside multi-byte characters and between CR and LF included."""
    if not x.stream:
        return await content("ok")(x)
    return await stream(x, writes=_in_threes, pause=0.001)


def _in_threes(frames: list[bytes]) -> list[bytes]:
    body = b"".join(frames)
    return [body[i : i + 3] for i in range(0, len(body), 3)]


async def crlf(x: Exchange) -> web.StreamResponse:
    """Events framed with CRLF."""
    if not x.stream:
        return await content("ok")(x)
    return await stream(x, sep="\r\n")


async def pings(x: Exchange) -> web.StreamResponse:
    """A keep-alive before the first event and after each one."""
    if not x.stream:
        return await content("ok")(x)
    response = await begin(x)
    await response.write(x.fmt.ping())
    sep = "\r\n" if x.fmt.crlf else "\n"
    for event in x.fmt.stream_events("ok"):
        await response.write(x.fmt.frame(event, sep) + x.fmt.ping())
    return await end(x, response)


async def slow_stream(x: Exchange) -> web.StreamResponse:
    """A tick every 50 ms for 30 s, then the answer."""
    if not x.stream:
        return await content("ok")(x)
    response = await begin(x)
    sep = "\r\n" if x.fmt.crlf else "\n"
    for _ in range(600):
        await response.write(x.fmt.frame(x.fmt.text_event("tick "), sep))
        await asyncio.sleep(0.05)
    await response.write(b"".join(x.fmt.frame(e, sep) for e in x.fmt.stream_events("ok")))
    return await end(x, response)


# -- chaos --------------------------------------------------------------------------------------

#: What a `chaos` request does, drawn per request: half succeed, the rest fail in every way.
CHAOS = ["ok"] * 14 + [
    "status/500", "status/503", "status/429/bare", "reset", "error_first", "html",
    "slow_headers", "slow_first_event", "drop_mid", "stall_mid", "error_mid", "truncated",
    "malformed_mid", "split_utf8",
]  # fmt: skip


async def chaos(x: Exchange) -> web.StreamResponse:
    """Any behaviour of `CHAOS`, drawn from the fake's seeded generator."""
    drawn = x.rng.choice(CHAOS)
    x.rec.behaviour = drawn
    name, *params = drawn.split("/")
    x.params = params
    return await SCENARIOS[name](x)


SCENARIOS: dict[str, Scenario] = {
    "ok": content("ok"),
    "tools": content("tools"),
    "reasoning": content("reasoning"),
    "fix": content("fix"),
    "status": status,
    "context_exceeded": context_exceeded,
    "reset": reset,
    "html": html,
    "slow_headers": slow_headers,
    "slow_first_event": slow_first_event,
    "error_first": error_first,
    "stall_mid": after_three("stall"),
    "drop_mid": after_three("drop"),
    "error_mid": after_three("error"),
    "truncated": after_three("truncated"),
    "malformed_mid": after_three("malformed"),
    "leaky_mid": after_three("leaky"),
    "malformed_line": malformed_line,
    "no_done": cut_end("no_done"),
    "unterminated": cut_end("unterminated"),
    "split_utf8": split_utf8,
    "crlf": crlf,
    "pings": pings,
    "slow_stream": slow_stream,
    "chaos": chaos,
}
