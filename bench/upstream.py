"""A fast fake OpenAI-compatible (and Anthropic-format) upstream for benchmarks.

The response shape comes from the URL, so one gateway config can name every shape:

    POST /c<chunks>/d<delay_ms>/v1/chat/completions     OpenAI format
    POST /c<chunks>/d<delay_ms>/v1/messages             Anthropic format

Streaming responses send `chunks` text events `delay_ms` apart, each written as its own read;
non-streaming responses return a small completion at once. Run it as a process:

    python bench/upstream.py --port 0      # prints "listening on PORT"
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import orjson
from aiohttp import web

WORD = "token "


def _shape(request: web.Request) -> tuple[int, float]:
    chunks = int(request.match_info["chunks"])
    delay = int(request.match_info["delay"]) / 1000
    return chunks, delay


def _openai_chunk(delta: dict[str, object], finish: str | None = None) -> bytes:
    body = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "bench-model",
        "system_fingerprint": "fp_bench",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(body) + b"\n\n"


_TEXT_CHUNK = _openai_chunk({"content": WORD})
_USAGE = {"prompt_tokens": 12, "completion_tokens": 50, "total_tokens": 62}


async def openai(request: web.Request) -> web.StreamResponse:
    chunks, delay = _shape(request)
    body = orjson.loads(await request.read())
    if not body.get("stream"):
        payload = {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 1700000000,
            "model": "bench-model",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": WORD * chunks},
                }
            ],
            "usage": _USAGE,
        }
        return web.Response(body=orjson.dumps(payload), content_type="application/json")
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    await response.write(_openai_chunk({"role": "assistant", "content": ""}))
    for _ in range(chunks):
        if delay:
            await asyncio.sleep(delay)
        await response.write(_TEXT_CHUNK)
    tail = _openai_chunk({}, "stop")
    if (body.get("stream_options") or {}).get("include_usage"):
        usage = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": "bench-model",
            "choices": [],
            "usage": _USAGE,
        }
        tail += b"data: " + orjson.dumps(usage) + b"\n\n"
    await response.write(tail + b"data: [DONE]\n\n")
    await response.write_eof()
    return response


def _anthropic_event(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


_A_DELTA = _anthropic_event(
    "content_block_delta",
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": WORD}},
)


async def anthropic(request: web.Request) -> web.StreamResponse:
    chunks, delay = _shape(request)
    body = orjson.loads(await request.read())
    usage = {"input_tokens": 12, "output_tokens": chunks}
    if not body.get("stream"):
        payload = {
            "id": "msg_bench",
            "type": "message",
            "role": "assistant",
            "model": "bench",
            "content": [{"type": "text", "text": WORD * chunks}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": usage,
        }
        return web.Response(body=orjson.dumps(payload), content_type="application/json")
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    start = {
        "type": "message_start",
        "message": {
            "id": "msg_bench",
            "type": "message",
            "role": "assistant",
            "model": "bench",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 12, "output_tokens": 1},
        },
    }
    await response.write(
        _anthropic_event("message_start", start)
        + _anthropic_event(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        )
    )
    for _ in range(chunks):
        if delay:
            await asyncio.sleep(delay)
        await response.write(_A_DELTA)
    await response.write(
        _anthropic_event("content_block_stop", {"type": "content_block_stop", "index": 0})
        + _anthropic_event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": chunks},
            },
        )
        + _anthropic_event("message_stop", {"type": "message_stop"})
    )
    await response.write_eof()
    return response


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_post(r"/c{chunks:\d+}/d{delay:\d+}/v1/chat/completions", openai)
    app.router.add_post(r"/c{chunks:\d+}/d{delay:\d+}/v1/messages", anthropic)

    async def start() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", args.port, backlog=4096)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(f"listening on {port}", flush=True)
        await asyncio.Event().wait()

    try:
        import uvloop

        uvloop.run(start())
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
