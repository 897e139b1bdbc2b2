"""Resumable streams and cancel, end to end through real gateway processes.

Invariants:
- a stream of `/stream-ask` or of a workflow can be resumed from any event: the events after
  `Last-Event-ID` (or `?last_event_id=`), then the live ones — nothing lost, nothing twice;
- a request that asked to be `resumable` keeps generating after its client leaves, and a
  reconnect continues the same generation; without it, the stream stops at once and its kept
  events end with the reason (never silently cut);
- `POST /v1/streams/{id}/cancel` stops any stream at once (the upstream connection closes within
  a second) and ends it in-band as cancelled; a stream that has ended cannot be cancelled;
- only the key that started a stream (or, for reading, its resume token) reaches it: anyone
  else gets 404;
- with `state: redis://...`, a stream started on one instance is resumed and cancelled through
  another;
- a browser `EventSource` whose connection breaks resumes by itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from tests.background import BackgroundServer
from tests.conftest import GatewayProcess, parse_sse
from tests.fake_upstream import API_KEY, FakeUpstream, Recorded
from tests.test_workflows import ROOT
from tidegate.providers.demo import DEMO_ANSWER

KEY_A = "tg-resume-key-a-51c0de"
KEY_B = "tg-resume-key-b-8e22fa"
AUTH_A = {"Authorization": f"Bearer {KEY_A}"}
AUTH_B = {"Authorization": f"Bearer {KEY_B}"}
REDIS_URL = os.environ.get("TIDEGATE_TEST_REDIS_URL")


def config(fake: FakeUpstream, **extra: Any) -> dict[str, Any]:
    slow = {
        "name": "endless",
        "provider": "openai",
        "base_url": fake.base("slow_stream", "resume") + "/v1",
        "model": "fake-model",
        "api_key": API_KEY,
    }
    return {
        "models": [{"name": "demo", "provider": "demo", "pace": 0.02}, slow],
        "auth": {"api_keys": [KEY_A, KEY_B]},
        "stream_ask": {"model": "demo"},
        "workflows": [
            {
                "name": "paced",
                "steps": [
                    {"name": "first", "kind": "llm", "model": "demo", "prompt": "{input}"},
                    {"name": "count", "kind": "function", "function": "tests.workflow_steps:count"},
                    {"name": "second", "kind": "llm", "model": "demo", "prompt": "{input}"},
                ],
            },
            {
                "name": "slow",
                "steps": [
                    {"name": "first", "kind": "function", "function": "tests.workflow_steps:count"},
                    {"name": "long", "kind": "llm", "model": "endless", "prompt": "{input}"},
                ],
            },
        ],
        **extra,
    }


@pytest.fixture(scope="module")
def gw(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    process = GatewayProcess(
        config(fake), tmp_path_factory.mktemp("resume"), env={"PYTHONPATH": str(ROOT)}
    )
    yield process
    process.stop()


STREAMS = {
    "stream-ask": ("/stream-ask", {"question": "tides"}),
    "workflow": ("/v1/workflows/paced", {"input": "tides"}),
}


def blocks(raw: str) -> list[str]:
    """The events of a raw stream, each as its text (comments and `retry:` lines left out)."""
    out = []
    for block in raw.split("\n\n"):
        lines = [line for line in block.split("\n") if line and not line.startswith(":")]
        lines = [line for line in lines if not line.startswith("retry:")]
        if lines:
            out.append("\n".join(lines))
    return out


def ids(events: list[str]) -> list[int]:
    return [int(parse_sse(e)[0]["id"]) for e in events]


def resume(
    gw: GatewayProcess,
    stream_id: str,
    after: int | None = None,
    *,
    auth: dict[str, str] | None = None,
    query: bool = False,
    token: str | None = None,
) -> httpx.Response:
    headers = dict(AUTH_A if auth is None else auth)
    params: dict[str, str] = {}
    if after is not None:
        if query:
            params["last_event_id"] = str(after)
        else:
            headers["Last-Event-ID"] = str(after)
    if token is not None:
        params["token"] = token
    return httpx.get(f"{gw.url}/v1/streams/{stream_id}", headers=headers, params=params, timeout=30)


def first_data(events: list[str]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(parse_sse(events[0])[0]["data"])
    return data


@pytest.mark.parametrize("kind", list(STREAMS))
def test_a_resume_from_every_event_gives_exactly_the_rest(gw: GatewayProcess, kind: str) -> None:
    path, body = STREAMS[kind]
    response = httpx.post(gw.url + path, json=body, headers=AUTH_A, timeout=30)
    stream_id = response.headers["x-tidegate-stream-id"]
    whole = blocks(response.text)
    assert ids(whole) == list(range(1, len(whole) + 1))
    assert first_data(whole)["stream_id"] == stream_id
    assert parse_sse(whole[-1])[0]["event"] == "final_end"
    for cut in range(len(whole)):
        rest = resume(gw, stream_id, cut, query=cut % 2 == 1)
        assert rest.status_code == 200, rest.text
        assert rest.headers["content-type"].startswith("text/event-stream")
        assert whole[:cut] + blocks(rest.text) == whole, f"cut after event {cut}"
    # Past the last event there is nothing left: 204, which also stops an EventSource.
    assert resume(gw, stream_id, len(whole)).status_code == 204


def read_events(response: httpx.Response, count: int) -> list[str]:
    """Read `count` events of a live response (then the caller closes it: a disconnect)."""
    got: list[str] = []
    buffer = ""
    for text in response.iter_text():
        buffer += text
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            got += blocks(block + "\n\n")
            if len(got) >= count:
                return got[:count]
    return got


def text_of(events: list[str], kind: str) -> str:
    out = ""
    for event in events:
        parsed = parse_sse(event)[0]
        data = json.loads(parsed["data"])
        if kind == "stream-ask" and data.get("type") == "chunk":
            out += data["content"]
        if kind == "workflow" and parsed.get("event") == "chunk":
            out += data["content"]
    return out


@pytest.mark.parametrize("kind", list(STREAMS))
@pytest.mark.parametrize("cut", [1, 3, 8])
def test_a_resumable_stream_goes_on_without_its_client_and_a_reconnect_continues_it(
    gw: GatewayProcess, kind: str, cut: int
) -> None:
    path, body = STREAMS[kind]
    with httpx.stream(
        "POST", gw.url + path, json={**body, "resumable": True}, headers=AUTH_A, timeout=30
    ) as live:
        stream_id = live.headers["x-tidegate-stream-id"]
        seen = read_events(live, cut)
    time.sleep(0.2)  # the client is gone; generation goes on meanwhile
    rest = blocks(resume(gw, stream_id, cut).text)
    events = seen + rest
    assert ids(events) == list(range(1, len(events) + 1))
    end = json.loads(parse_sse(events[-1])[0]["data"])
    if kind == "stream-ask":
        assert end["finish_reason"] == "stop"
        assert text_of(events, kind) == DEMO_ANSWER
    else:
        assert end["status"] == "completed"
        assert text_of(events, kind) == DEMO_ANSWER + "1 earlier step(s)" + DEMO_ANSWER


@pytest.mark.parametrize("kind", list(STREAMS))
def test_without_resumable_a_cut_stops_the_stream_and_its_log_says_why(
    gw: GatewayProcess, kind: str
) -> None:
    path, body = STREAMS[kind]
    with httpx.stream("POST", gw.url + path, json=body, headers=AUTH_A, timeout=30) as live:
        stream_id = live.headers["x-tidegate-stream-id"]
        seen = read_events(live, 3)
    rest = blocks(resume(gw, stream_id, 3).text)
    events = seen + rest
    assert ids(events) == list(range(1, len(events) + 1))
    names = [parse_sse(e)[0].get("event") for e in events]
    assert names[-2:] == ["error", "final_end"]
    assert json.loads(parse_sse(events[-2])[0]["data"])["code"] == "client_closed"
    assert len(text_of(events, kind)) < len(DEMO_ANSWER)  # it did stop


def test_only_the_key_that_started_a_stream_reaches_it(gw: GatewayProcess) -> None:
    response = httpx.post(gw.url + "/stream-ask", json={"question": "q"}, headers=AUTH_A)
    stream_id = response.headers["x-tidegate-stream-id"]
    token = first_data(blocks(response.text))["resume_token"]
    other = resume(gw, stream_id, 0, auth=AUTH_B)
    assert (other.status_code, other.json()["error"]["code"]) == (404, "stream_not_found")
    cancel = httpx.post(f"{gw.url}/v1/streams/{stream_id}/cancel", headers=AUTH_B)
    assert cancel.status_code == 404
    unknown = resume(gw, "st_" + "0" * 24, 0)
    assert unknown.status_code == 404
    assert resume(gw, stream_id, 0, auth={}).status_code == 401  # no key, no token
    # The resume token opens this stream for reading, without a key (a browser EventSource).
    by_token = resume(gw, stream_id, 0, auth={}, token=token)
    assert by_token.status_code == 200
    assert blocks(by_token.text) == blocks(response.text)
    assert resume(gw, stream_id, 0, auth={}, token=token[:-1] + "x").status_code == 404
    other_stream = httpx.post(gw.url + "/stream-ask", json={"question": "q"}, headers=AUTH_B)
    other_id = other_stream.headers["x-tidegate-stream-id"]
    assert resume(gw, other_id, 0, auth={}, token=token).status_code == 404
    assert (
        httpx.post(f"{gw.url}/v1/streams/{stream_id}/cancel", params={"token": token}).status_code
        == 401
    )


def test_resume_validates_last_event_id(gw: GatewayProcess) -> None:
    response = httpx.post(gw.url + "/stream-ask", json={"question": "q"}, headers=AUTH_A)
    stream_id = response.headers["x-tidegate-stream-id"]
    for bad in ("x", "-1", "1.5"):
        answer = resume(gw, stream_id, None, auth={**AUTH_A, "Last-Event-ID": bad})
        assert answer.status_code == 400
        assert "Last-Event-ID" in answer.json()["error"]["message"]


def wait_closed(fake: FakeUpstream, label: str, since: float, timeout: float = 5.0) -> Recorded:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for r in fake.requests:
            if r.scenario.endswith(label) and r.started >= since and r.closed_at is not None:
                return r
        time.sleep(0.01)
    raise AssertionError(f"no closed upstream request for {label}")


def until_chunk(live: httpx.Response) -> None:
    for line in live.iter_lines():
        if '"content"' in line and "data:" in line:
            return
    raise AssertionError("no chunk arrived")


def test_cancelling_a_workflow_mid_step_closes_the_upstream_and_ends_cancelled(
    gw: GatewayProcess, fake: FakeUpstream
) -> None:
    since = time.monotonic()
    with httpx.stream(
        "POST", gw.url + "/v1/workflows/slow", json={"input": "q"}, headers=AUTH_A, timeout=30
    ) as live:
        stream_id = live.headers["x-tidegate-stream-id"]
        lines = live.iter_lines()
        for line in lines:
            if line.startswith("data:") and '"step":"long"' in line and "content" in line:
                break
        cancelled_at = time.monotonic()
        answer = httpx.post(f"{gw.url}/v1/streams/{stream_id}/cancel", headers=AUTH_A)
        assert (answer.status_code, answer.json()) == (
            200,
            {"stream_id": stream_id, "status": "cancelled"},
        )
        rest = "\n".join(lines)
    upstream = wait_closed(fake, "slow_stream/resume", since)
    assert upstream.closed_at is not None and upstream.closed_at - cancelled_at < 1.0
    final = parse_sse(rest + "\n\n")[-1]
    assert final["event"] == "final_end"
    assert json.loads(final["data"])["status"] == "cancelled"
    again = httpx.post(f"{gw.url}/v1/streams/{stream_id}/cancel", headers=AUTH_A)
    assert (again.status_code, again.json()["error"]["code"]) == (409, "stream_ended")


@pytest.mark.parametrize(
    ("path", "body", "ends"),
    [
        ("/stream-ask", {"question": "q", "model": "endless"}, '"finish_reason":"cancelled"'),
        (
            "/v1/chat/completions",
            {"model": "endless", "messages": [{"role": "user", "content": "q"}], "stream": True},
            '"code":"cancelled"',
        ),
        (
            "/v1/messages",
            {
                "model": "endless",
                "max_tokens": 10,
                "messages": [{"role": "user", "content": "q"}],
                "stream": True,
            },
            "cancelled by its client",  # Anthropic's error event has no code to carry
        ),
    ],
)
def test_every_streaming_endpoint_can_be_cancelled(
    gw: GatewayProcess, fake: FakeUpstream, path: str, body: dict[str, Any], ends: str
) -> None:
    since = time.monotonic()
    with httpx.stream("POST", gw.url + path, json=body, headers=AUTH_A, timeout=30) as live:
        stream_id = live.headers["x-tidegate-stream-id"]
        lines = live.iter_lines()
        for line in lines:
            if line.startswith("data:") and ("content" in line or "text" in line):
                break
        cancelled_at = time.monotonic()
        answer = httpx.post(f"{gw.url}/v1/streams/{stream_id}/cancel", headers=AUTH_A)
        assert answer.status_code == 200
        rest = "\n".join(lines)
    assert ends in rest, rest[-500:]
    upstream = wait_closed(fake, "slow_stream/resume", since)
    assert upstream.closed_at is not None and upstream.closed_at - cancelled_at < 1.0


# -- two instances on Redis ----------------------------------------------------------------

needs_redis = pytest.mark.skipif(
    REDIS_URL is None, reason="set TIDEGATE_TEST_REDIS_URL to run the two-instance tests on Redis"
)


@needs_redis
def test_a_stream_started_on_one_instance_resumes_and_cancels_through_another(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    assert REDIS_URL is not None
    env = {"PYTHONPATH": str(ROOT)}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = GatewayProcess(config(fake, state=REDIS_URL), tmp_path / "a", env=env)
    second = GatewayProcess(config(fake, state=REDIS_URL), tmp_path / "b", env=env)
    try:
        with httpx.stream(
            "POST",
            first.url + "/stream-ask",
            json={"question": "q", "resumable": True},
            headers=AUTH_A,
            timeout=30,
        ) as live:
            stream_id = live.headers["x-tidegate-stream-id"]
            seen = read_events(live, 3)
        rest = blocks(resume(second, stream_id, 3).text)
        events = seen + rest
        assert ids(events) == list(range(1, len(events) + 1))
        assert text_of(events, "stream-ask") == DEMO_ANSWER
        # Another key cannot reach it through the second instance either.
        assert resume(second, stream_id, 0, auth=AUTH_B).status_code == 404

        since = time.monotonic()
        with httpx.stream(
            "POST",
            first.url + "/stream-ask",
            json={"question": "q", "model": "endless"},
            headers=AUTH_A,
            timeout=30,
        ) as live:
            stream_id = live.headers["x-tidegate-stream-id"]
            lines = live.iter_lines()
            for line in lines:
                if '"type":"chunk"' in line:
                    break
            cancelled_at = time.monotonic()
            answer = httpx.post(f"{second.url}/v1/streams/{stream_id}/cancel", headers=AUTH_A)
            assert (answer.status_code, answer.json()["status"]) == (202, "cancelling")
            rest_text = "\n".join(lines)
        assert '"finish_reason":"cancelled"' in rest_text
        upstream = wait_closed(fake, "slow_stream/resume", since)
        assert upstream.closed_at is not None and upstream.closed_at - cancelled_at < 1.0
    finally:
        first.stop()
        second.stop()


# -- a browser EventSource -----------------------------------------------------------------


class CuttingProxy(BackgroundServer):
    """A TCP proxy in front of the gateway that breaks the first resume connection after
    `cut_after` bytes of its response (what a flaky network does), and passes the rest."""

    def __init__(self, target_port: int, cut_after: int):
        super().__init__()
        self.target_port = target_port
        self.cut_after = cut_after
        self.cuts = 0
        self.resume_requests: list[str] = []

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        cutting = False  # this connection carries the resume request to break

        async def upward() -> None:
            nonlocal cutting
            while data := await reader.read(65536):
                if b"GET /v1/streams/" in data:
                    self.resume_requests.append(data.decode("latin-1"))
                    if self.cuts == 0:
                        self.cuts, cutting = 1, True
                up_writer.write(data)
                await up_writer.drain()

        pump = asyncio.create_task(upward())
        sent = 0
        try:
            while data := await up_reader.read(65536):
                if cutting:
                    if sent + len(data) > self.cut_after:
                        writer.write(data[: self.cut_after - sent])
                        await writer.drain()
                        writer.transport.abort()
                        return
                    sent += len(data)
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
            up_writer.close()
            writer.close()

    async def _stop(self) -> None:
        self._server.close()
        await self._server.wait_closed()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0.05)  # let closing transports finish closing


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

EVENTSOURCE_PAGE_SCRIPT = """
async ({key}) => {
  // Start a resumable answer, keep only its first event (the stream id and resume token),
  // and drop the connection, as a page being reloaded would.
  const controller = new AbortController();
  const response = await fetch("/stream-ask", {
    method: "POST",
    headers: {"Content-Type": "application/json", "Authorization": "Bearer " + key},
    body: JSON.stringify({question: "tides", resumable: true}),
    signal: controller.signal,
  });
  const reader = response.body.getReader();
  let text = "";
  while (!text.includes("\\n\\n")) text += new TextDecoder().decode((await reader.read()).value);
  controller.abort();
  const start = JSON.parse(text.split("\\n").find((l) => l.startsWith("data: ")).slice(6));
  // Follow it with an EventSource: when its connection breaks, it reconnects by itself with
  // Last-Event-ID, and the gateway continues from there.
  return await new Promise((resolve, reject) => {
    const url = `/v1/streams/${start.stream_id}?token=${start.resume_token}&last_event_id=1`;
    const source = new EventSource(url);
    const seen = [];
    let errors = 0;
    source.onmessage = (e) => seen.push([Number(e.lastEventId), JSON.parse(e.data)]);
    source.addEventListener("final_end", (e) => {
      seen.push([Number(e.lastEventId), "final_end"]);
      source.close();
      resolve({seen, errors});
    });
    source.onerror = () => {
      errors += 1;
      if (errors > 5) { source.close(); reject("too many errors"); }
    };
    setTimeout(() => { source.close(); reject("timeout"); }, 20000);
  });
}
"""


@pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Chromium not found (apt-get install chromium)"
)
def test_a_browser_eventsource_resumes_by_itself_after_a_broken_connection(
    gw: GatewayProcess,
) -> None:
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the playwright package is missing"
    )
    port = int(gw.url.rsplit(":", 1)[1])
    proxy = CuttingProxy(port, cut_after=700).start()
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
            )
            try:
                page = browser.new_page()
                page.goto(f"http://127.0.0.1:{proxy.port}/healthz")
                result = page.evaluate(EVENTSOURCE_PAGE_SCRIPT, {"key": KEY_A})
            finally:
                browser.close()
    finally:
        proxy.stop()
    seen = result["seen"]
    assert proxy.cuts == 1 and result["errors"] >= 1  # the connection did break
    assert len(proxy.resume_requests) >= 2
    assert "last-event-id:" in proxy.resume_requests[1].lower()  # the browser resumed by itself
    numbers = [n for n, _ in seen]
    assert numbers == list(range(2, len(numbers) + 2))  # every event after the first, once
    text = "".join(
        d["content"] for _, d in seen if isinstance(d, dict) and d.get("type") == "chunk"
    )
    assert text == DEMO_ANSWER
    assert seen[-1][1] == "final_end"
