"""A hostile upstream cannot make the gateway leak its key, crash, stall or hold on.

Invariants, each checked against a real gateway process in front of `HostileUpstream`:
- no 8-character window of the upstream key reaches a client (body or headers) or a log line,
  however the upstream splits, cuts, breaks or misplaces it;
- upstream data of any shape is a 502 or an in-band error, never a 500 or a traceback;
- the event loop never lags more than 50 ms (the gateway's own measurement, /admin/runtime);
- memory stays bounded and every deadline holds, including against a client that stops reading.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import orjson
import psutil
import pytest

from tests.conftest import GatewayProcess
from tests.hostile.hostile_upstream import (
    CONFUSED,
    FORMATS,
    NUMBERED,
    PADDING,
    SECRET,
    HostileUpstream,
    bomb,
    error_event,
    leaky_message,
)
from tests.rawhttp import parse_responses

TIMEOUTS = {"connect": 2, "first_byte": 2, "idle": 2, "total": 8}
LAG_LIMIT_MS = 50
WINDOWS = [SECRET[i : i + 8] for i in range(len(SECRET) - 7)]


def leaked(text: str) -> list[str]:
    """The 8-character windows of the key found in `text`."""
    return [w for w in WINDOWS if w in text]


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileUpstream]:
    bomb()  # built once, before any request waits for it
    upstream = HostileUpstream().start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def hgw(hostile: HostileUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    base = hostile.url
    models: list[dict[str, Any]] = [
        {"name": "openai-h", "provider": "openai", "base_url": base + "/v1"},
        {"name": "anthropic-h", "provider": "anthropic", "base_url": base},
        {"name": "gemini-h", "provider": "gemini", "base_url": base, "model": "g"},
        {"name": "ollama-h", "provider": "ollama", "base_url": base, "model": "o"},
    ]
    for m in models:
        m.update(api_key="${HOSTILE_KEY}", timeouts=TIMEOUTS)
    models.append(
        {
            "name": "openai-short",
            "provider": "openai",
            "base_url": base + "/v1",
            "api_key": "${HOSTILE_KEY}",
            "timeouts": {**TIMEOUTS, "total": 2},
        }
    )
    config = {
        "models": models,
        "routing": {"cooldown": {"enabled": False}},
        "limits": {"write_timeout": 2},
    }
    gw = GatewayProcess(config, tmp_path_factory.mktemp("hostile"), env={"HOSTILE_KEY": SECRET})
    yield gw
    gw.stop()


@pytest.fixture(autouse=True)
def no_key_in_the_log(hgw: GatewayProcess) -> Iterator[None]:
    """After every test: the gateway's whole output holds no window of the key."""
    yield
    time.sleep(0.1)  # let the access-log thread write the last lines
    output = hgw.output()
    assert not leaked(output), output[-3000:]
    assert "Traceback" not in output, output[output.find("Traceback") - 300 :][:4000]


def lag_ms(gw: GatewayProcess) -> float:
    """The event loop's longest lag since the previous call, measured inside the gateway."""
    return float(httpx.get(gw.url + "/admin/runtime").json()["loop_lag_max_ms"])


def runtime(gw: GatewayProcess) -> dict[str, Any]:
    return dict(httpx.get(gw.url + "/admin/runtime").json())


def requests_for(model: str, prompt: str) -> list[tuple[str, dict[str, Any]]]:
    """(path, body) of every endpoint asking `model` the `prompt`, streamed and not."""
    messages = [{"role": "user", "content": prompt}]
    gemini = {"contents": [{"role": "user", "parts": [{"text": prompt}]}]}
    return [
        ("/v1/chat/completions", {"model": model, "messages": messages, "stream": True}),
        (
            "/v1/chat/completions",
            {
                "model": model,
                "messages": messages,
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        ),
        ("/v1/chat/completions", {"model": model, "messages": messages}),
        ("/v1/messages", {"model": model, "messages": messages, "max_tokens": 50, "stream": True}),
        ("/v1/messages", {"model": model, "messages": messages, "max_tokens": 50}),
        (f"/v1beta/models/{model}:streamGenerateContent?alt=sse", gemini),
        (f"/v1beta/models/{model}:streamGenerateContent", gemini),
        (f"/v1beta/models/{model}:generateContent", gemini),
        ("/stream-ask", {"question": prompt, "model": model}),
    ]


def is_stream(request: tuple[str, dict[str, Any]]) -> bool:
    path, body = request
    return bool(body.get("stream")) or "stream" in path.lower()


def same_format_path(wire: str) -> str:
    return {
        "openai": "/v1/chat/completions",
        "anthropic": "/v1/messages",
        "gemini": ":streamGenerateContent?alt=sse",
        "ollama": "/stream-ask",
    }[wire]


async def send_all(
    gw: GatewayProcess, requests: list[tuple[str, dict[str, Any]]], concurrency: int = 24
) -> list[httpx.Response]:
    """Send every request, `concurrency` at a time; each response is read whole."""
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as client:

        async def one(path: str, body: dict[str, Any]) -> httpx.Response:
            async with limit:
                return await client.post(path, json=body)

        return await asyncio.gather(*(one(p, b) for p, b in requests))


def check(responses: list[httpx.Response]) -> None:
    """No leak and no 5xx of the gateway's own (502/504 are upstream failures, expected)."""
    for r in responses:
        shown = r.text + "".join(f"{k}: {v}\n" for k, v in r.headers.items())
        assert not leaked(shown), (r.request.url, shown)
        assert r.status_code not in (500, 501, 503), (r.request.url, r.status_code, r.text)


# -- keys --------------------------------------


@pytest.mark.parametrize("where", ["mid", "first"])
@pytest.mark.parametrize("wire", FORMATS)
def test_a_key_split_at_any_byte_never_reaches_the_client(
    hgw: GatewayProcess, wire: str, where: str
) -> None:
    """An error event quoting the key, cut into two reads at every offset: through the endpoint
    of the same format (byte pass-through) and through a translating one."""
    size = len(error_event(wire, leaky_message()))
    model = f"{wire}-h"
    requests = []
    for n in range(size + 1):
        prompt = f"HOSTILE:split_error:{n}:{where}"
        every = requests_for(model, prompt)
        same = [r for r in every if r[0].endswith(same_format_path(wire)) and is_stream(r)]
        requests += [*same[:2], every[n % len(every)]]
    responses = asyncio.run(send_all(hgw, requests))
    check(responses)
    assert all(r.status_code in (200, 400, 502) for r in responses), {
        r.status_code for r in responses
    }


def test_a_key_in_a_whole_pass_through_answer_is_redacted(hgw: GatewayProcess) -> None:
    size = 300
    requests = [
        (
            "/v1/chat/completions",
            {
                "model": "openai-h",
                "messages": [{"role": "user", "content": f"HOSTILE:split_body:{n}"}],
            },
        )
        for n in range(0, size, 3)
    ]
    responses = asyncio.run(send_all(hgw, requests))
    check(responses)
    assert all(r.status_code == 200 for r in responses)
    assert all("[REDACTED]" in r.text for r in responses)


@pytest.mark.parametrize("at", [280, 285, 290, 293, 295, 297, 300, 310, 990, 1995])
def test_a_key_at_a_cut_of_an_error_page_is_redacted(hgw: GatewayProcess, at: int) -> None:
    """A non-JSON 401 page with the key near where messages are shortened."""
    requests = []
    for wire in FORMATS:
        requests += requests_for(f"{wire}-h", f"HOSTILE:status_text:401:{at}")
    responses = asyncio.run(send_all(hgw, requests))
    check(responses)
    assert all(r.status_code == 502 for r in responses), [r.text for r in responses]


@pytest.mark.parametrize("wire", FORMATS)
def test_a_malformed_line_quoting_the_key_is_not_forwarded_raw(
    hgw: GatewayProcess, wire: str
) -> None:
    responses = asyncio.run(send_all(hgw, requests_for(f"{wire}-h", "HOSTILE:malformed_line")))
    check(responses)


def test_a_key_where_a_number_belongs_is_a_protocol_error_not_a_500(
    hgw: GatewayProcess,
) -> None:
    responses = asyncio.run(send_all(hgw, requests_for("openai-h", "HOSTILE:usage_is_the_key")))
    check(responses)
    whole = [r for r in responses if r.status_code != 200]
    assert whole and all(r.status_code == 502 for r in whole)
    assert all("wrong shape or type" in r.text for r in whole)


# -- shapes --------------------------------------


@pytest.mark.parametrize("where", ["first", "mid"])
def test_type_confused_upstream_data_is_never_a_500(hgw: GatewayProcess, where: str) -> None:
    requests = []
    for i in range(len(CONFUSED)):
        requests += requests_for("openai-h", f"HOSTILE:confused:{i}:{where}")
    responses = asyncio.run(send_all(hgw, requests))
    check(responses)
    assert {r.status_code for r in responses} <= {200, 502}


# -- bounds --------------------------------------


def rss_mb(gw: GatewayProcess) -> float:
    return float(psutil.Process(gw.proc.pid).memory_info().rss / 2**20)


@pytest.mark.parametrize("wire", ["openai", "anthropic", "ollama"])
def test_a_line_that_never_ends_is_cut_off_quickly(hgw: GatewayProcess, wire: str) -> None:
    """The decoder refuses a line past `limits.max_event_bytes` (1 MiB) instead of growing."""
    lag_ms(hgw)
    before = rss_mb(hgw)
    model = f"{wire}-h"
    requests = [
        r
        for r in requests_for(model, "HOSTILE:endless_line")
        if "stream" in str(r[1]) or r[0] == "/stream-ask"
    ]
    t0 = time.monotonic()
    responses = asyncio.run(send_all(hgw, requests))
    took = time.monotonic() - t0
    check(responses)
    assert took < 5, took
    for r in responses:
        assert r.status_code in (200, 502)
        assert "longer than" in r.text or "larger than" in r.text, r.text[-500:]
    assert rss_mb(hgw) - before < 60
    assert lag_ms(hgw) < LAG_LIMIT_MS


def test_a_gzip_bomb_is_refused_without_stalling_the_loop(hgw: GatewayProcess) -> None:
    lag_ms(hgw)
    before = rss_mb(hgw)
    t0 = time.monotonic()
    responses = asyncio.run(
        send_all(hgw, requests_for("openai-h", "HOSTILE:gzip_bomb"), concurrency=3)
    )
    took = time.monotonic() - t0
    check(responses)
    assert took < TIMEOUTS["total"], took
    for r in responses:
        assert r.status_code in (200, 502), r.text
        assert "larger than" in r.text or "longer than" in r.text, r.text[-300:]
    assert lag_ms(hgw) < LAG_LIMIT_MS
    assert rss_mb(hgw) - before < 100


def test_a_flood_of_tiny_events_does_not_stall_the_loop(hgw: GatewayProcess) -> None:
    lag_ms(hgw)
    streams = [r for r in requests_for("openai-h", "HOSTILE:flood") if is_stream(r)]
    responses = asyncio.run(send_all(hgw, streams, 4))
    check(responses)
    assert all(r.status_code == 200 for r in responses)
    assert lag_ms(hgw) < LAG_LIMIT_MS


def test_a_trickling_upstream_meets_the_total_deadline(hgw: GatewayProcess) -> None:
    """One byte every 50 ms never trips the idle timeout; `total` (2 s) ends it in time."""
    t0 = time.monotonic()
    r = httpx.post(
        hgw.url + "/v1/chat/completions",
        json={
            "model": "openai-short",
            "stream": True,
            "messages": [{"role": "user", "content": "HOSTILE:trickle"}],
        },
        timeout=10,
    )
    took = time.monotonic() - t0
    assert r.status_code in (200, 504)
    assert "total timeout" in r.text
    assert 2 <= took < 2.1 + 0.5, took


def _stream_on_a_small_window(hgw: GatewayProcess, model: str, scenario: str) -> socket.socket:
    """A raw connection with a fixed 64 KiB receive buffer that has sent a streaming request
    for `scenario` of the hostile upstream, and read nothing yet."""
    host, port = hgw.url.removeprefix("http://").rsplit(":", 1)
    body = orjson.dumps(
        {
            "model": model,
            "stream": True,
            "messages": [{"role": "user", "content": f"HOSTILE:{scenario}"}],
        }
    )
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    return sock


def test_a_client_that_stops_reading_frees_the_upstream_at_the_deadline(
    hgw: GatewayProcess, hostile: HostileUpstream
) -> None:
    """The relay's writes to a stalled client are bounded too: the upstream connection and
    the deployment's slot are released when `timeouts.total` (2 s) passes."""
    sock = _stream_on_a_small_window(hgw, "openai-short", "big_events")
    sock.recv(1024)  # the headers have come: from now on this client reads nothing
    try:
        deadline = time.monotonic() + 10
        seen = None
        while time.monotonic() < deadline:
            seen = hostile.last("big_events")
            if seen.closed_at is not None:
                break
            time.sleep(0.05)
        assert seen is not None and seen.closed_at is not None, "upstream never released"
        assert seen.closed_at - seen.started < 2 + 1
        assert runtime(hgw)["in_flight"] == 0
    finally:
        sock.close()


def test_a_slow_reader_gets_every_event_once_and_in_order(hgw: GatewayProcess) -> None:
    """Backpressure loses nothing: a client with a small, fixed receive buffer that reads
    nothing for a second makes the gateway's writes pile up past what the kernel holds (12 MB
    of events), so the relay stops forwarding from the upstream's callback, waits for it to
    drain, and the upstream is paused; then every event arrives, once and in order, followed
    by the stream's end."""
    sock = _stream_on_a_small_window(hgw, "openai-h", "numbered")
    sock.settimeout(5)
    try:
        time.sleep(1)  # reading nothing: the gateway must hold back
        received = bytearray()
        deadline = time.monotonic() + 20
        while not received.endswith(b"\r\n0\r\n\r\n") and time.monotonic() < deadline:
            data = sock.recv(1 << 20)
            if not data:
                break
            received += data
    finally:
        sock.close()
    (response,) = parse_responses(bytes(received))
    assert response.status == 200
    numbers = [int(n) for n in re.findall(rb"<(\d{5})>", response.body)]
    assert numbers == list(range(NUMBERED))
    assert response.body.count(PADDING.encode()) == NUMBERED
    assert response.body.rstrip().endswith(b"data: [DONE]")


def test_the_gateway_still_answers_after_all_of_it(hgw: GatewayProcess) -> None:
    r = httpx.post(
        hgw.url + "/v1/chat/completions",
        json={"model": "openai-h", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["content"] == "fine"
    assert runtime(hgw)["in_flight"] == 0
