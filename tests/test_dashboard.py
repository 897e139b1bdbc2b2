"""The operator's dashboard at `/admin`, end to end: a real gateway with a usage ledger on
SQLite, traffic from two client keys over two models through the official OpenAI SDK, and
the page in headless Chromium.

Invariants:
- the page and its assets are public and run under the strict CSP without a script error or
  a CSP violation; it holds no data until an admin key is typed (a 401 asks for it);
- the charts draw a bar per key (and per model) for today, and the metric can be switched
  between spend, tokens and requests;
- the tables agree with the traffic sent: requests, errors, error rate per key and model,
  the spend the price table gives, every deployment's health, the recent requests;
- a client key cannot read the admin API the page uses.

A screenshot is saved under tests/artifacts/dashboard.png (git-ignored).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import openai
import pytest

from tests.browser import ARTIFACTS, launch_chromium, needs_chromium
from tests.conftest import TEST_TIMEOUTS, GatewayProcess, closed_after_test
from tests.fake_upstream import API_KEY, FakeUpstream

pytestmark = needs_chromium

ADMIN_KEY = "admin-dashboard-key-0001"
TEAM_A = "team-a-client-key-0001"
TEAM_B = "team-b-client-key-0002"
#: Per million tokens: large enough that a handful of requests cost cents.
PRICE = {"input": 1000.0, "output": 2000.0}


@pytest.fixture(scope="module")
def gateway(
    fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    workdir: Path = tmp_path_factory.mktemp("dashboard")
    config: dict[str, Any] = {
        "models": [
            {"name": "demo", "provider": "demo"},
            {
                "name": "broken",
                "provider": "openai",
                "api_key": API_KEY,
                "model": "fake-model",
                "base_url": fake.base("error_first") + "/v1",
                "timeouts": TEST_TIMEOUTS,
            },
        ],
        "auth": {
            "api_keys": [{"key": TEAM_A, "name": "team-a"}, {"key": TEAM_B, "name": "team-b"}],
            "admin_keys": [ADMIN_KEY],
        },
        "prices": {"demo": PRICE, "broken": PRICE},
        "database": f"sqlite:///{workdir / 'ledger.db'}",
    }
    process = GatewayProcess(config, workdir)
    yield process
    process.stop()


def _ask(gateway: GatewayProcess, key: str, model: str, *, fails: bool = False) -> None:
    client = closed_after_test(
        openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
    )
    messages: Any = [{"role": "user", "content": "hello there"}]
    if fails:
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(model=model, messages=messages)
    else:
        client.chat.completions.create(model=model, messages=messages)


def _usage(gateway: GatewayProcess, by: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{gateway.url}/admin/usage",
        params={"by": by},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()["rows"]
    return rows


@pytest.fixture(scope="module")
def traffic(gateway: GatewayProcess) -> dict[str, dict[str, Any]]:
    """team-a: three answers from demo; team-b: one answer and one upstream failure. Waits
    (bounded) until the ledger holds all five, and returns its rows by key."""
    for _ in range(3):
        _ask(gateway, TEAM_A, "demo")
    _ask(gateway, TEAM_B, "demo")
    _ask(gateway, TEAM_B, "broken", fails=True)
    deadline = time.monotonic() + 15
    while True:
        rows = {r["key"]: r for r in _usage(gateway, "key")}
        if sum(r["requests"] for r in rows.values()) == 5 or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from launch_chromium()


def test_a_client_key_cannot_read_the_dashboards_data(gateway: GatewayProcess) -> None:
    for path in ("/admin/usage?by=key", "/admin/usage/recent", "/admin/deployments"):
        response = httpx.get(
            gateway.url + path, headers={"Authorization": f"Bearer {TEAM_A}"}, timeout=10
        )
        assert response.status_code == 403, (path, response.text)
        assert TEAM_A not in response.text


def test_the_ledger_counts_the_traffic(traffic: dict[str, dict[str, Any]]) -> None:
    assert traffic["team-a"]["requests"] == 3 and traffic["team-a"]["errors"] == 0
    assert traffic["team-b"]["requests"] == 2 and traffic["team-b"]["errors"] == 1
    assert traffic["team-a"]["cost"] > 0
    assert traffic["team-a"]["output_tokens"] > 0


def _console_problem(message: Any, problems: list[str]) -> None:
    # An HTTP error status (the 401 that asks for the key) is reported on the console too.
    if message.type == "error" and not message.text.startswith("Failed to load resource"):
        problems.append(message.text)


def _rows(page: Any, table: str) -> list[list[str]]:
    rows: list[list[str]] = page.eval_on_selector_all(
        f"#{table} tbody tr",
        "rows => rows.map(r => [...r.cells].map(c => c.textContent))",
    )
    return rows


def _cells(page: Any, table: str) -> dict[str, list[str]]:
    return {row[0]: row[1:] for row in _rows(page, table)}


def test_the_dashboard_charts_and_tables_the_ledger(
    gateway: GatewayProcess, traffic: dict[str, dict[str, Any]], browser: Any
) -> None:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("console", lambda m: _console_problem(m, problems))
    try:
        response = page.goto(gateway.url + "/admin")
        assert response.status == 200
        assert "default-src 'none'" in response.headers["content-security-policy"]
        # No key yet: the page asks for one and shows no figure.
        page.wait_for_selector("#key-form:not([hidden])", timeout=10_000)
        assert page.text_content("#total-requests") == "\u2013"  # the page's dash: no figure
        page.fill("#key", ADMIN_KEY)
        page.click("#key-form button[type=submit]")
        page.wait_for_selector("#total-requests:text-is('5')", timeout=10_000)
        assert page.text_content("#total-error-rate") == "20.0%"

        series = set(
            page.eval_on_selector_all("#chart-key rect", "rs => rs.map(r => r.dataset.series)")
        )
        assert series == {"team-a", "team-b"}
        models = set(
            page.eval_on_selector_all("#chart-model rect", "rs => rs.map(r => r.dataset.series)")
        )
        assert "demo" in models
        # The bars show spend by default; switching to requests redraws them with counts.
        page.select_option("#key-metric", "requests")
        values = page.eval_on_selector_all(
            "#chart-key rect", "rs => rs.map(r => [r.dataset.series, Number(r.dataset.value)])"
        )
        assert sorted(values) == [["team-a", 3], ["team-b", 2]]

        keys = _cells(page, "keys-table")
        assert keys["team-a"][:3] == ["3", "0", "0.0%"]
        assert keys["team-b"][:3] == ["2", "1", "50.0%"]
        assert keys["team-a"][5] == f"${traffic['team-a']['cost']:.2f}"
        model_rows = _cells(page, "models-table")
        assert model_rows["broken"][:3] == ["1", "1", "100.0%"]
        deployments = _cells(page, "deployments-table")
        assert set(deployments) == {"demo", "broken"}
        assert deployments["demo"][2] == "healthy"
        recent = _rows(page, "recent-table")
        assert len(recent) == 5
        assert sorted(row[1] for row in recent) == [
            "team-a",
            "team-a",
            "team-a",
            "team-b",
            "team-b",
        ]
        statuses = page.eval_on_selector_all(
            "#recent-table tbody td[class^=status-]", "cs => cs.map(c => c.textContent)"
        )
        assert sorted(statuses) == ["error", "ok", "ok", "ok", "ok"]

        ARTIFACTS.mkdir(exist_ok=True)
        page.select_option("#key-metric", "cost")
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        assert problems == []
        # The key was typed into the page, never put in its URL or storage.
        assert ADMIN_KEY not in page.url
        assert (
            page.evaluate("JSON.stringify(sessionStorage) + JSON.stringify(localStorage)") == "{}{}"
        )
    finally:
        context.close()
