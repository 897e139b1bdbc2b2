"""The browser playground at `/`, end to end: a real gateway process, headless Chromium.

Invariants:
- the page and its assets are served publicly with a strict CSP, and run without a CSP
  violation or a script error;
- an answer is rendered while it streams (several growing states are seen), then its time to
  first token, tokens and finish reason;
- Stop ends the request: the gateway logs it as 499 `client_closed`;
- an upstream failure, before or during the stream, reads as a sentence, not as JSON;
- on a 401 the page asks for the client key, keeps it in memory only, and the answer arrives;
- the gateway's workflows are offered next to the models; a run shows a heading per step, in
  order, each step's text growing as it streams, an estimate of the time left once the steps
  have run before, and the run's status; a failing step reads as a sentence naming it; Stop
  cancels the run at the gateway (its access record says `cancelled`) and the page says so.

Chromium is Debian's (`apt-get install chromium`); without it these tests skip, saying so.
A screenshot of a finished answer is saved under tests/artifacts/ (git-ignored).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.browser import ARTIFACTS, launch_chromium, needs_chromium
from tests.conftest import CLIENT_KEY, TEST_TIMEOUTS, GatewayProcess
from tests.fake_upstream import API_KEY, FakeUpstream
from tidegate.providers.demo import DEMO_ANSWER

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is missing")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "text_to_sql"
TEXT_TO_SQL_STEPS = ["sql", "rows", "table", "analysis"]

pytestmark = needs_chromium


def _config(
    fake: FakeUpstream, keys: list[str] | None = None, database: Path | None = None
) -> dict[str, Any]:
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
    if database is not None:
        models, workflows = _workflows(database)
        config["models"] += models
        config["workflows"] = workflows
    return config


def _workflows(database: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The text-to-SQL example's model and workflow (on `database`, its demo model a little
    slower so that its steps are seen growing), a workflow whose second step raises, and one
    whose first step takes long."""
    example = yaml.safe_load((EXAMPLE / "config.yaml").read_text())
    models = example["models"]
    for model in models:
        model["pace"] = 0.03
    workflows = example["workflows"]
    for workflow in workflows:
        for step in workflow["steps"]:
            if step.get("args", {}).get("database"):
                step["args"]["database"] = str(database)
    workflows += [
        {
            "name": "function-fails",
            "description": "Count, then fail.",
            "steps": [
                {"name": "one", "kind": "function", "function": "tests.workflow_steps:count"},
                {"name": "two", "kind": "function", "function": "tests.workflow_steps:fails"},
            ],
        },
        {
            "name": "slow-draft",
            "steps": [
                {"name": "draft", "kind": "llm", "model": "demo-slow", "prompt": "{input}"},
                {"name": "after", "kind": "function", "function": "tests.workflow_steps:count"},
            ],
        },
    ]
    return models, workflows


@pytest.fixture(scope="module")
def shop_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The text-to-SQL example's database, created in a temporary directory."""
    path = tmp_path_factory.mktemp("shop") / "shop.db"
    done = subprocess.run(
        [sys.executable, str(EXAMPLE / "create_db.py"), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return path


@pytest.fixture(scope="module")
def open_gateway(
    fake: FakeUpstream, shop_db: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """A gateway without client keys, with workflows (their function steps import from
    `tests`, so the repository's root is on its path)."""
    process = GatewayProcess(
        _config(fake, database=shop_db),
        tmp_path_factory.mktemp("playground"),
        env={"PYTHONPATH": str(ROOT)},
    )
    yield process
    process.stop()


@pytest.fixture(scope="module")
def keyed_gateway(
    fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """A gateway that needs `CLIENT_KEY`, without workflows."""
    process = GatewayProcess(
        _config(fake, [CLIENT_KEY]), tmp_path_factory.mktemp("playground-keyed")
    )
    yield process
    process.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from launch_chromium()


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

    def wait_loaded(self) -> str:
        """Wait until the models and the workflows are listed; return the note saying so."""
        self.page.wait_for_function(
            "() => { const t = document.querySelector('#models-note').textContent; "
            "return t !== '' && !t.startsWith('Loading'); }",
            timeout=15_000,
        )
        return self.text("#models-note")

    def run_workflow(self, name: str, text: str) -> None:
        """Choose the workflow `name`, type its input and send it."""
        self.wait_loaded()
        self.page.select_option("#model", "workflow:" + name)
        self.page.fill("#question", text)
        self.page.click("#send")

    def record_steps(self) -> None:
        """From now on, note the steps on screen (name, length of text) and the progress line
        at every change of the output, in the page (no change is missed between polls)."""
        self.page.evaluate(
            """() => {
                window.seenSteps = [];
                const output = document.querySelector('#output');
                new MutationObserver(() => {
                    const steps = [...document.querySelectorAll('#steps .step')].map(
                        (s) => [s.dataset.step, s.querySelector('.step-body').textContent.length]);
                    const progress = document.querySelector('#progress').textContent;
                    window.seenSteps.push({ steps, progress });
                }).observe(output, { childList: true, subtree: true, characterData: true });
            }"""
        )

    def seen_steps(self) -> list[dict[str, Any]]:
        """What `record_steps` noted."""
        seen: list[dict[str, Any]] = self.page.evaluate("() => window.seenSteps")
        return seen

    def steps(self) -> list[dict[str, str]]:
        """The steps on screen: name, state, heading, text and numbers."""
        steps: list[dict[str, str]] = self.page.eval_on_selector_all(
            "#steps .step",
            """ss => ss.map(s => ({
                name: s.dataset.step, state: s.dataset.state,
                heading: s.querySelector('.step-title').textContent,
                text: s.querySelector('.step-body').textContent,
                meta: s.querySelector('.step-meta').textContent }))""",
        )
        return steps


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
    options = page.page.eval_on_selector_all("#model > option", "os => os.map(o => o.value)")
    assert options == ["", "demo", "demo-slow", "broken-mid", "broken-first", "analyst"]
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
    lists: list[tuple[str, int]] = []
    tab.page.on(
        "response",
        lambda r: lists.append((r.url, r.status)) if "/v1/workflows" in r.url else None,
    )
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
        # The workflows were listed with the key too (no second prompt); this gateway has none,
        # so the chooser offers only models.
        assert tab.wait_loaded() == "4 models"
        assert lists == [(keyed_gateway.url + "/v1/workflows", 200)]
        assert page.locator("#model optgroup").count() == 0
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


def test_workflows_are_offered_next_to_the_models(page: Page) -> None:
    """The chooser has a "Workflows" group, its values apart from the models' names; choosing
    one shows its description and steps and puts the task aside."""
    assert page.wait_loaded() == "5 models · 3 workflows"
    group = page.page.locator("#model optgroup")
    assert group.count() == 1 and group.get_attribute("label") == "Workflows"
    options = page.page.eval_on_selector_all(
        "#model optgroup option", "os => os.map(o => [o.value, o.textContent, o.dataset.kind])"
    )
    assert options == [
        ["workflow:text-to-sql", "text-to-sql", "workflow"],
        ["workflow:function-fails", "function-fails", "workflow"],
        ["workflow:slow-draft", "slow-draft", "workflow"],
    ]
    assert page.page.is_hidden("#workflow-note") and page.page.is_enabled("#task")
    page.page.select_option("#model", "workflow:text-to-sql")
    note = page.text("#workflow-note")
    assert note.startswith("A question about the shop's sales")
    assert "sql (llm) → rows (function) → table (function) → analysis (llm)" in note
    assert page.page.is_disabled("#task")
    page.page.select_option("#model", "demo")
    assert page.page.is_hidden("#workflow-note") and page.page.is_enabled("#task")


def test_a_workflow_run_shows_each_step_as_it_streams(page: Page, shop_db: Path) -> None:
    """Every step gets a heading, in order, as it starts; its text grows on screen while it
    streams (the SQL as a code block); at the end each step has its duration and the run its
    status and tokens. The second run has an estimate of the time left from the first."""
    bodies: list[str] = []
    page.page.on(
        "request",
        lambda r: bodies.append(r.post_data or "") if "/v1/workflows/" in r.url else None,
    )
    question = "What is the revenue per product category?"
    page.record_steps()
    page.run_workflow("text-to-sql", question)
    assert page.wait_state("done", "error", "cancelled", timeout=30) == "done"
    assert [json.loads(b) for b in bodies] == [{"input": question}]

    steps = page.steps()
    assert [s["name"] for s in steps] == TEXT_TO_SQL_STEPS
    for i, step in enumerate(steps, 1):
        assert step["heading"] == f"{step['name']}step {i} of 4"
        assert step["state"] == "done", step
        assert step["meta"].startswith("done in "), step
    assert page.page.locator("#steps .step h2 .step-of").count() == 4
    assert page.text("#steps .step[data-step='sql'] pre code").startswith("SELECT p.category")
    assert "[tidegate demo]" in steps[3]["text"]
    # The table step's markdown is a table, its cells the query's rows (categories by revenue).
    table = "#steps .step[data-step='table'] table"
    assert page.page.eval_on_selector_all(f"{table} th", "c => c.map(x => x.textContent)") == [
        "category",
        "revenue",
    ]
    first_column = page.page.eval_on_selector_all(
        f"{table} tbody tr td:first-child", "c => c.map(x => x.textContent)"
    )
    sql = page.text("#steps .step[data-step='sql'] pre code")
    with contextlib.closing(sqlite3.connect(shop_db)) as db:
        expected = [str(row[0]) for row in db.execute(sql)]
    assert first_column == expected and len(expected) >= 2
    assert "tokens out" in steps[0]["meta"] and "tokens out" not in steps[1]["meta"]
    stats = page.text("#stats")
    assert stats.startswith("status: completed · ") and "tokens out" in stats
    assert page.page.is_hidden("#problem") and page.page.is_hidden("#progress")

    seen = page.seen_steps()
    # The headings came one at a time, in order: each step appeared after the one before it
    # had shown its text.
    order: list[str] = []
    for snapshot in seen:
        for name, _ in snapshot["steps"]:
            if name not in order:
                order.append(name)
    assert order == TEXT_TO_SQL_STEPS
    assert any([name for name, _ in s["steps"]] == ["sql"] for s in seen)
    for name in ("sql", "analysis"):
        final = next(len(s["text"]) for s in steps if s["name"] == name)
        lengths = [n for s in seen for step, n in s["steps"] if step == name]
        partial = {n for n in lengths if 0 < n < final}
        assert len(partial) >= 3, (name, lengths)
        if name == "analysis":  # prose only grows (a code fence being closed may shrink)
            assert lengths == sorted(lengths), lengths
    progress = [s["progress"] for s in seen if s["progress"]]
    assert "Step 1 of 4: sql" in progress[0] and "elapsed" in progress[0]
    assert any(p.startswith("Step 4 of 4: analysis") for p in progress)
    assert not any("left" in p for p in progress)  # the workflow never ran: no estimate yet

    page.record_steps()
    page.page.click("#send")
    assert page.wait_state("done", "error", "cancelled", timeout=30) == "done"
    progress = [s["progress"] for s in page.seen_steps() if s["progress"]]
    assert progress and all(" left" in p for p in progress), progress
    assert "about " in progress[0]
    ARTIFACTS.mkdir(exist_ok=True)
    page.page.screenshot(path=str(ARTIFACTS / "playground-workflow.png"), full_page=True)


def test_a_failing_step_reads_as_a_sentence_naming_it(page: Page) -> None:
    """A function step that raises: the steps before it stay done, the failing one is marked,
    and the problem names the step in a sentence, with the exception's message."""
    page.run_workflow("function-fails", "anything")
    assert page.wait_state("error", "done", "cancelled") == "error"
    steps = page.steps()
    assert [(s["name"], s["state"]) for s in steps] == [("one", "done"), ("two", "error")]
    assert steps[0]["text"] == "0 earlier step(s)"
    assert page.page.is_visible("#problem")
    assert page.text("#problem-title") == "The step “two” failed. Its code raised an error."
    detail = page.text("#problem-detail")
    assert detail == "ValueError: the warehouse is closed (step_failed)"
    assert page.text("#stats").startswith("status: error · ")


def test_stop_cancels_a_workflow_run(page: Page, open_gateway: GatewayProcess) -> None:
    """Stop cancels the run at the gateway (`POST /v1/streams/{id}/cancel`, the id of the run),
    then ends the request: the page says cancelled, the step stops where it was, the next step
    never starts, and the gateway's access record of the run says `cancelled`."""
    runs: list[tuple[str, str]] = []
    cancels: list[tuple[str, int]] = []

    def on_response(response: Any) -> None:
        if "/v1/workflows/" in response.url:
            headers = response.headers
            runs.append((headers["x-request-id"], headers["x-tidegate-stream-id"]))
        elif response.url.endswith("/cancel"):
            cancels.append((response.url, response.status))

    page.page.on("response", on_response)
    page.run_workflow("slow-draft", "Take your time")
    page.page.wait_for_function(
        "() => (document.querySelector(\"#steps .step[data-step='draft'] .step-body\")"
        "?.textContent.length || 0) > 0",
        timeout=15_000,
    )
    page.page.click("#stop")
    assert page.wait_state("cancelled", "stopped", "done", "error") == "cancelled"
    assert page.text("#stats").startswith("status: cancelled · ")
    steps = page.steps()
    assert [(s["name"], s["state"], s["meta"]) for s in steps] == [
        ("draft", "cancelled", "cancelled")
    ]
    partial = steps[0]["text"]
    assert partial and DEMO_ANSWER.startswith(partial) and partial != DEMO_ANSWER
    assert page.page.is_hidden("#problem")
    assert len(runs) == 1
    request_id, stream_id = runs[0]
    assert cancels == [(f"{open_gateway.url}/v1/streams/{stream_id}/cancel", 200)]
    record = open_gateway.record_for(request_id)
    assert record["error"] == "cancelled"
    assert record["model"] == "workflow:slow-draft"
    assert record["stream_id"] == stream_id
