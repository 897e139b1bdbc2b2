"""The browser playground at `/`, end to end: a real gateway process, headless Chromium.

Invariants:
- the page and its assets are served publicly with a strict CSP, and run without a CSP
  violation or a script error;
- an answer is rendered while it streams (several growing states are seen), then its time to
  first token, tokens and finish reason;
- Stop ends the request: the gateway logs it as 499 `client_closed`;
- an upstream failure, before or during the stream, reads as a sentence, not as JSON;
- on a 401 the page asks for the client key, keeps it in memory only, and the answer arrives.

Chromium is Debian's (`apt-get install chromium`); without it these tests skip, saying so.
A screenshot of a finished answer is saved under tests/artifacts/ (git-ignored).
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CLIENT_KEY, TEST_TIMEOUTS, GatewayProcess
from tests.fake_upstream import API_KEY, FakeUpstream
from tidegate.providers.demo import DEMO_ANSWER

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is missing")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).parent / "artifacts"

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason="Chromium not found at /usr/bin/chromium (apt-get install chromium); playground "
    "browser tests skipped",
)


def _config(fake: FakeUpstream, keys: list[str] | None = None) -> dict[str, Any]:
    upstream = {"provider": "openai", "api_key": API_KEY, "model": "fake-model"}
    config: dict[str, Any] = {
        "models": [
            {"name": "demo", "provider": "demo", "pace": 0.03},
            {"name": "demo-slow", "provider": "demo", "pace": 0.25},
            {
                "name": "broken-mid",
                **upstream,
                "base_url": fake.base("error_mid") + "/v1",
                "timeouts": TEST_TIMEOUTS,
            },
            {
                "name": "broken-first",
                **upstream,
                "base_url": fake.base("error_first") + "/v1",
                "timeouts": TEST_TIMEOUTS,
            },
        ],
        "routing": {"cooldown": {"enabled": False}},
    }
    if keys:
        config["auth"] = {"api_keys": keys}
    return config


@pytest.fixture(scope="module")
def open_gateway(
    fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """A gateway without client keys."""
    process = GatewayProcess(_config(fake), tmp_path_factory.mktemp("playground"))
    yield process
    process.stop()


@pytest.fixture(scope="module")
def keyed_gateway(
    fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """A gateway that needs `CLIENT_KEY`."""
    process = GatewayProcess(
        _config(fake, [CLIENT_KEY]), tmp_path_factory.mktemp("playground-keyed")
    )
    yield process
    process.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Page:
    """A playground tab, with the script errors and CSP violations it reported."""

    def __init__(self, browser: Any, url: str):
        self.context = browser.new_context()
        self.page = self.context.new_page()
        self.problems: list[str] = []
        self.page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        self.page.on("console", self._console)
        self.response = self.page.goto(url + "/")

    def _console(self, message: Any) -> None:
        # An HTTP error status is reported on the console too; it is what some tests ask for.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.problems.append(f"console: {message.text}")

    def close(self) -> None:
        self.context.close()

    def ask(self, question: str, model: str = "demo") -> None:
        """Choose `model`, type `question` and send it."""
        self.page.select_option("#model", model)
        self.page.fill("#question", question)
        self.page.click("#send")

    def wait_state(self, *states: str, timeout: float = 15) -> str:
        """Wait until the output's state is one of `states`; return it."""
        wanted = " || ".join(f"s === {state!r}" for state in states)
        self.page.wait_for_function(
            f"() => {{ const s = document.querySelector('#output').dataset.state; "
            f"return {wanted}; }}",
            timeout=timeout * 1000,
        )
        state: str = self.page.get_attribute("#output", "data-state")
        return state

    def text(self, selector: str) -> str:
        return str(self.page.text_content(selector) or "")


@pytest.fixture
def page(browser: Any, open_gateway: GatewayProcess) -> Iterator[Page]:
    tab = Page(browser, open_gateway.url)
    tab.page.wait_for_selector("#model option[value='demo']", state="attached")
    yield tab
    tab.close()
    assert not tab.problems, tab.problems


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_page_and_assets_are_served_with_a_strict_policy(open_gateway: GatewayProcess) -> None:
    """`/` and its assets are public, typed correctly and under a CSP without 'unsafe-*'."""
    expected = {
        "/": "text/html; charset=utf-8",
        "/static/playground.js": "text/javascript; charset=utf-8",
        "/static/playground.css": "text/css; charset=utf-8",
    }
    for path, content_type in expected.items():
        status, headers, body = _get(open_gateway.url + path)
        assert status == 200, path
        assert headers["content-type"] == content_type
        policy = headers["content-security-policy"]
        assert "default-src 'none'" in policy and "script-src 'self'" in policy
        assert "unsafe" not in policy
        assert headers["x-content-type-options"] == "nosniff"
        assert body
    for path in ("/static/", "/static/../pyproject.toml", "/static/playground.py", "/index.html"):
        assert _get(open_gateway.url + path)[0] == 404, path


def test_page_renders_and_lists_the_models(page: Page) -> None:
    """The page loads without script errors or CSP violations and offers every model."""
    assert page.response is not None and page.response.status == 200
    assert page.page.title() == "tidegate playground"
    options = page.page.eval_on_selector_all("#model option", "os => os.map(o => o.value)")
    assert options == ["", "demo", "demo-slow", "broken-mid", "broken-first"]
    assert page.page.is_hidden("#key-form")
    assert page.page.is_hidden("#code") and page.page.is_hidden("#error")  # the ask task


def test_answer_streams_in_and_shows_its_numbers(page: Page) -> None:
    """The answer grows on screen chunk by chunk; at the end the stats name the time to first
    token, the tokens and the finish reason. A screenshot of it is kept."""
    page.ask("Hello from the playground test")
    seen: list[str] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        state = page.page.get_attribute("#output", "data-state")
        text = page.text("#answer")
        if not seen or seen[-1] != text:
            seen.append(text)
        if state == "done":
            break
        time.sleep(0.02)
    final = page.text("#answer")
    assert final == DEMO_ANSWER
    partial = [t for t in seen if t and t != final]
    assert len(partial) >= 3, seen
    assert all(final.startswith(t) for t in partial), partial
    stats = page.text("#stats")
    assert "first token" in stats and " ms" in stats
    assert "tokens out" in stats and "finish: stop" in stats
    assert page.page.is_hidden("#problem")
    ARTIFACTS.mkdir(exist_ok=True)
    page.page.screenshot(path=str(ARTIFACTS / "playground-answer.png"), full_page=True)


def test_markdown_is_rendered_from_text_nodes(page: Page) -> None:
    """Code fences become highlighted blocks, and markup in an answer stays text."""
    answer = (
        "Use **this**:\n\n```python\ndef f(x):\n    return x + 1  # add\n```\n\n"
        "<img src=x onerror=alert(1)> and [bad](javascript:alert(1))"
    )
    # The renderer is private to the page's script: drive it through a canned stream (CR line
    # ends in the last event, to exercise the reader too).
    page.page.route(
        "**/stream-ask",
        lambda route: route.fulfill(
            status=200,
            content_type="text/event-stream",
            body=_sse_body(answer),
        ),
    )
    page.ask("markdown please")
    assert page.wait_state("done", "error") == "done"
    assert page.text("#answer pre code").startswith("def f(x):")
    assert page.page.locator("#answer pre code span.tok-kw").first.text_content() == "def"
    assert page.page.locator("#answer pre code span.tok-com").first.text_content() == "# add"
    assert page.page.locator("#answer strong").first.text_content() == "this"
    assert page.page.locator("#answer img").count() == 0
    assert page.page.locator("#answer a").count() == 0
    assert "<img src=x onerror=alert(1)>" in page.text("#answer")
    ARTIFACTS.mkdir(exist_ok=True)
    page.page.screenshot(path=str(ARTIFACTS / "playground-markdown.png"), full_page=True)


def _sse_body(answer: str) -> str:
    pieces = [answer[i : i + 7] for i in range(0, len(answer), 7)]
    frames = [
        f"id: {n}\r\ndata: {json.dumps({'type': 'chunk', 'content': p})}\r\n\r\n"
        for n, p in enumerate(pieces, 1)
    ]
    end: dict[str, Any] = {"finish_reason": "stop", "usage": None, "sources": []}
    frames.append(f"id: {len(pieces) + 1}\revent: final_end\rdata: {json.dumps(end)}\r\r")
    return "".join(frames)


def test_stop_ends_the_request(page: Page, open_gateway: GatewayProcess) -> None:
    """Stop aborts the fetch: the page says stopped and the gateway logs 499 client_closed."""
    request_ids: list[str] = []
    page.page.on(
        "response",
        lambda r: request_ids.append(r.headers["x-request-id"]) if "/stream-ask" in r.url else None,
    )
    page.ask("Stop me", model="demo-slow")
    page.page.wait_for_function("() => document.querySelector('#answer').textContent.length > 0")
    page.page.click("#stop")
    assert page.wait_state("stopped", "done", "error") == "stopped"
    assert "stopped" in page.text("#stats")
    assert len(request_ids) == 1
    record = open_gateway.record_for(request_ids[0])
    assert record["status"] == 499
    assert record["error"] == "client_closed"
    partial = page.text("#answer")
    assert partial and DEMO_ANSWER.startswith(partial) and partial != DEMO_ANSWER


@pytest.mark.parametrize(
    ("model", "title"),
    [
        ("broken-mid", "The model's service failed while answering."),
        ("broken-first", "The model's service failed while answering."),
    ],
)
def test_upstream_errors_read_as_sentences(page: Page, model: str, title: str) -> None:
    """A failure after the first chunk (in-band) and one before the stream (HTTP 502) both show
    a sentence and the gateway's message, never a JSON body."""
    page.ask("This will fail", model=model)
    assert page.wait_state("error", "done") == "error"
    assert page.page.is_visible("#problem")
    assert page.text("#problem-title") == title
    detail = page.text("#problem-detail")
    assert "upstream_error" in detail
    assert "{" not in detail and "{" not in page.text("#problem-title")
    if model == "broken-mid":
        assert page.text("#answer")  # the text before the failure stays
        assert "finish: error" in page.text("#stats")


def test_fix_task_sends_the_code_and_the_traceback(page: Page) -> None:
    """The fix task sends `task`, `code` and `error` with a default question."""
    bodies: list[str] = []
    page.page.on(
        "request",
        lambda r: bodies.append(r.post_data or "") if r.url.endswith("/stream-ask") else None,
    )
    page.page.select_option("#task", "fix")
    assert page.page.is_visible("#code") and page.page.is_visible("#error")
    page.page.fill("#code", "print(1/0)")
    page.page.fill(
        "#error", "Traceback (most recent call last):\nZeroDivisionError: division by zero"
    )
    page.page.select_option("#model", "demo")
    page.page.click("#send")
    assert page.wait_state("done", "error") == "done"
    sent = json.loads(bodies[0])
    assert sent["task"] == "fix"
    assert sent["question"] == "Fix this error."
    assert sent["code"] == "print(1/0)"
    assert sent["error"].endswith("division by zero")


def test_key_prompt_on_401(browser: Any, keyed_gateway: GatewayProcess) -> None:
    """With client keys configured the page asks for one; a wrong key asks again; with the
    right one the models are listed and an answer arrives. The key is never stored."""
    tab = Page(browser, keyed_gateway.url)
    try:
        page = tab.page
        page.wait_for_selector("#key-form", state="visible")
        page.fill("#key", "not-the-key")
        page.click("#key-submit")
        page.wait_for_selector("#key-form", state="visible")
        page.fill("#key", CLIENT_KEY)
        page.click("#key-submit")
        page.wait_for_selector("#model option[value='demo']", state="attached")
        assert page.is_hidden("#key-form")
        tab.ask("Hello with a key")
        assert tab.wait_state("done", "error") == "done"
        assert tab.text("#answer") == DEMO_ANSWER
        stored = page.evaluate(
            "() => localStorage.length + sessionStorage.length + document.cookie.length"
        )
        assert stored == 0
    finally:
        tab.close()
    assert not tab.problems, tab.problems
