"""Model groups: failover before the first byte, cooldown, concurrency limits, commit policy."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import orjson
import pytest

from tests.conftest import CLIENT_KEY, GatewayProcess, parse_sse
from tests.fake_upstream import API_KEY, EXPECTED_TEXT, FakeUpstream

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
ADMIN_KEY = "tg-admin-key-failover-3e81"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
T = {"connect": 1, "first_byte": 0.8, "idle": 0.5, "total": 30}


def dep(fake: FakeUpstream, name: str, scenario: str, **extra: Any) -> dict[str, Any]:
    base = "http://127.0.0.1:9" if scenario == "refused" else fake.base(scenario)
    provider = extra.pop("provider", "openai")
    return {
        "name": name,
        "provider": provider,
        "base_url": base + ("/v1" if provider == "openai" else ""),
        "api_key": "${K}",
        "model": "fake-model",
        "timeouts": T,
        **extra,
    }


@pytest.fixture(scope="module")
def gw(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    models = [
        dep(fake, "fo-500", "status/500/fo", priority=0),
        dep(fake, "fo-500", "ok/fo500", priority=1),
        dep(fake, "fo-429", "status/429/fo", priority=0),
        dep(fake, "fo-429", "ok/fo429", priority=1),
        dep(fake, "fo-400", "status/400/fo", priority=0),
        dep(fake, "fo-400", "ok/fo400", priority=1),
        dep(fake, "fo-401", "status/401/fo", priority=0),
        dep(fake, "fo-401", "ok/fo401", priority=1),
        dep(fake, "fo-errfirst", "error_first", priority=0),
        dep(fake, "fo-errfirst", "ok/errfirst", priority=1),
        dep(fake, "fo-html", "html", priority=0),
        dep(fake, "fo-html", "ok/html", priority=1),
        dep(fake, "fo-slow", "slow_first_event", priority=0),
        dep(fake, "fo-slow", "ok/slow", priority=1),
        dep(fake, "fo-refused", "refused", priority=0),
        dep(fake, "fo-refused", "ok/refused", priority=1),
        dep(fake, "fo-mixed", "status/503/mixed", provider="anthropic", priority=0),
        dep(fake, "fo-mixed", "ok/mixed", priority=1),
        dep(fake, "fo-allbad", "status/500/allbad"),
        dep(fake, "fo-allbad", "status/502/allbad"),
        dep(fake, "fo-mid", "error_mid", priority=0),
        dep(fake, "fo-mid", "ok/mid", priority=1),
        dep(fake, "fo-retry", "status/503/retry", retries=2),
        dep(fake, "fo-fallback", "status/500/fb", fallbacks=["fb-target"]),
        dep(fake, "fb-target", "ok/fb"),
        dep(fake, "cd", "status/500/cd", priority=0),
        dep(fake, "cd", "ok/cd", priority=1),
        dep(fake, "cd-single", "status/500/cds"),
        dep(fake, "cd-both", "status/401/both1"),
        dep(fake, "cd-both", "status/401/both2"),
        dep(fake, "wt", "ok/w1", weight=3),
        dep(fake, "wt", "ok/w2", weight=1),
        dep(fake, "lim", "slow_stream", max_in_flight=1),
        dep(fake, "lim2", "slow_stream", max_in_flight=1, priority=0),
        dep(fake, "lim2", "ok/lim2", priority=1),
        dep(fake, "late", "slow_first_event", timeouts={**T, "first_byte": 10}),
        dep(fake, "late-bad", "slow_first_event", timeouts={**T, "first_byte": 1}),
    ]
    config = {
        "models": models,
        "auth": {"api_keys": [CLIENT_KEY], "admin_keys": [ADMIN_KEY]},
        "routing": {
            "max_attempts": 4,
            "budget_seconds": 20,
            "backoff_seconds": 0.05,
            "commit_after": 0.3,
            "ping_interval": 0.5,
            "cooldown": {"failures": 3, "window": 30, "seconds": 1, "max_seconds": 4},
        },
    }
    process = GatewayProcess(config, tmp_path_factory.mktemp("failover"), env={"K": API_KEY})
    yield process
    process.stop()


CLIENT = httpx.Client()  # one client: creating one per request costs more than the request


def ask(gw: GatewayProcess, model: str, stream: bool = True, timeout: float = 20) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "q"}], "stream": stream}
    return CLIENT.post(f"{gw.url}/v1/chat/completions", headers=AUTH, json=body, timeout=timeout)


def text_of(response: httpx.Response) -> str:
    out = ""
    for event in parse_sse(response.text):
        if event["data"] != "[DONE]":
            for choice in orjson.loads(event["data"]).get("choices") or []:
                out += choice["delta"].get("content") or ""
    return out


@pytest.mark.parametrize(
    ("model", "bad"),
    [
        ("fo-500", "status/500/fo"),
        ("fo-401", "status/401/fo"),
        ("fo-errfirst", "error_first"),
        ("fo-html", "html"),
        ("fo-slow", "slow_first_event"),
        ("fo-refused", None),
        ("fo-mixed", "status/503/mixed"),
    ],
)
@pytest.mark.parametrize("stream", [True, False])
def test_failover_is_invisible_to_the_client(
    gw: GatewayProcess, fake: FakeUpstream, model: str, bad: str | None, stream: bool
) -> None:
    if model == "fo-slow" and not stream:
        pytest.skip("a non-streaming call has no first-byte deadline")
    before = fake.count(bad) if bad else 0
    response = ask(gw, model, stream)
    assert response.status_code == 200, response.text
    if stream:
        assert text_of(response) == EXPECTED_TEXT
        assert response.text.endswith("data: [DONE]\n\n")
    else:
        assert response.json()["choices"][0]["message"]["content"] == EXPECTED_TEXT
    record = gw.record_for(response.headers["x-request-id"])
    assert (record["deployment"], record["attempts"]) == (f"{model}#2", 2)
    if model == "fo-slow" and stream:
        # The slow attempt outlasted commit_after: the 200 went out (with a ping) before any
        # deployment had answered, so only the log can name the one that served.
        assert response.text.startswith(": ping\n\n")
    else:
        assert response.headers["x-tidegate-deployment"] == f"{model}#2"
        assert response.headers["x-tidegate-attempts"] == "2"
        assert float(response.headers["x-tidegate-overhead-ms"]) >= 0
    if bad:
        assert fake.count(bad) == before + 1
    if bad == "slow_first_event":
        # The abandoned attempt's connection was closed, not left to finish.
        assert fake.last(bad).closed_at is not None and not fake.last(bad).completed


def test_rate_limited_deployment_waits_out_its_retry_after(
    gw: GatewayProcess, fake: FakeUpstream
) -> None:
    before = fake.count("status/429/fo")
    first = ask(gw, "fo-429")
    assert first.status_code == 200 and first.headers["x-tidegate-attempts"] == "2"
    second = ask(gw, "fo-429", stream=False)
    assert second.status_code == 200 and second.headers["x-tidegate-attempts"] == "1"
    assert fake.count("status/429/fo") == before + 1  # Retry-After: 7 is honoured


def test_deterministic_client_error_is_not_retried(gw: GatewayProcess, fake: FakeUpstream) -> None:
    before = fake.count("ok/fo400")
    response = ask(gw, "fo-400")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "upstream_invalid_request"
    assert "fake 400" in response.json()["error"]["message"]
    assert fake.count("ok/fo400") == before


def test_all_deployments_failing_returns_the_last_error(gw: GatewayProcess) -> None:
    response = ask(gw, "fo-allbad")
    assert response.status_code == 502
    assert response.headers["x-request-id"]
    record = gw.record_for(response.headers["x-request-id"])
    assert record["attempts"] == 2 and record["error"] == "upstream_error"


def test_retries_the_same_deployment_with_backoff(gw: GatewayProcess, fake: FakeUpstream) -> None:
    before = fake.count("status/503/retry")
    response = ask(gw, "fo-retry", stream=False)
    assert response.status_code == 502
    assert fake.count("status/503/retry") == before + 3  # 1 + retries


def test_fallback_model_serves_when_the_group_fails(gw: GatewayProcess) -> None:
    response = ask(gw, "fo-fallback")
    assert response.status_code == 200
    assert text_of(response) == EXPECTED_TEXT
    assert response.headers["x-tidegate-deployment"] == "fb-target"


def test_no_failover_after_the_first_byte(gw: GatewayProcess, fake: FakeUpstream) -> None:
    before = fake.count("ok/mid")
    response = ask(gw, "fo-mid")
    assert response.status_code == 200
    assert '"error"' in response.text and response.text.endswith("data: [DONE]\n\n")
    assert fake.count("ok/mid") == before


def test_cooldown_skips_a_failing_deployment_then_probes_it_once(
    gw: GatewayProcess, fake: FakeUpstream
) -> None:
    bad = "status/500/cd"
    start = fake.count(bad)
    for _ in range(3):  # three failures trip the breaker (cooldown.failures = 3)
        assert ask(gw, "cd").status_code == 200
    assert fake.count(bad) == start + 3
    for _ in range(4):
        response = ask(gw, "cd")
        assert response.headers["x-tidegate-attempts"] == "1"
    assert fake.count(bad) == start + 3  # skipped while cooling
    health = httpx.get(f"{gw.url}/admin/deployments", headers=ADMIN).json()
    state = {d["deployment"]: d for d in health["deployments"]}
    assert state["cd#1"]["state"] == "cooling" and state["cd#1"]["trips"] == 1
    time.sleep(1.1)
    ask(gw, "cd")
    assert fake.count(bad) == start + 4  # one probe, which fails and trips again for longer
    state = {
        d["deployment"]: d
        for d in httpx.get(f"{gw.url}/admin/deployments", headers=ADMIN).json()["deployments"]
    }
    assert state["cd#1"]["trips"] == 2 and state["cd#1"]["cooldown_remaining_s"] > 1.0


def test_a_sole_deployment_is_never_cooled_down(gw: GatewayProcess, fake: FakeUpstream) -> None:
    """With nothing to fail over to, every client sees the upstream's real error."""
    before = fake.count("status/500/cds")
    for _ in range(6):
        response = ask(gw, "cd-single")
        assert response.status_code == 502
        assert response.json()["error"]["code"] == "upstream_error"
        assert "fake 500" in response.json()["error"]["message"]
    assert fake.count("status/500/cds") == before + 6


def test_a_group_cooling_down_says_why_and_when(gw: GatewayProcess) -> None:
    """When every deployment of a group is cooling, the 503 carries the last upstream cause and
    the real time left."""
    for _ in range(3):  # each request fails at both deployments (401 moves on, no retry)
        assert ask(gw, "cd-both").status_code == 502
    response = ask(gw, "cd-both")
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "upstream_unavailable"
    assert "upstream_auth_failed" in error["message"] and "fake 401" in error["message"]
    assert response.headers["retry-after"] == "1"  # cooldown.seconds = 1, rounded up


def test_weights_share_traffic(gw: GatewayProcess, fake: FakeUpstream) -> None:
    served = Counter(
        ask(gw, "wt", stream=False).headers["x-tidegate-deployment"] for _ in range(200)
    )
    assert set(served) == {"wt#1", "wt#2"}
    assert 2.0 < served["wt#1"] / served["wt#2"] < 4.5  # weights 3:1


def test_concurrency_limit_is_held_until_the_stream_ends(gw: GatewayProcess) -> None:
    with httpx.stream(
        "POST",
        f"{gw.url}/v1/chat/completions",
        headers=AUTH,
        timeout=10,
        json={"model": "lim", "stream": True, "messages": [{"role": "user", "content": "q"}]},
    ) as r:
        assert r.status_code == 200
        chunks = r.iter_bytes()  # kept: a dropped iterator closes the connection
        next(chunks)  # the stream is open: its slot is taken
        second = ask(gw, "lim")
        assert second.status_code == 429
        assert second.headers["retry-after"] == "1"
    time.sleep(0.3)
    state = {
        d["deployment"]: d
        for d in httpx.get(f"{gw.url}/admin/deployments", headers=ADMIN).json()["deployments"]
    }
    assert state["lim"]["in_flight"] == 0


def test_saturation_spills_to_the_next_deployment(gw: GatewayProcess) -> None:
    results: list[str] = []

    def hold() -> None:
        with httpx.stream(
            "POST",
            f"{gw.url}/v1/chat/completions",
            headers=AUTH,
            timeout=10,
            json={"model": "lim2", "stream": True, "messages": [{"role": "user", "content": "q"}]},
        ) as r:
            results.append(r.headers["x-tidegate-deployment"])
            chunks = r.iter_bytes()
            next(chunks)
            time.sleep(0.5)

    holder = threading.Thread(target=hold)
    holder.start()
    time.sleep(0.2)
    assert ask(gw, "lim2").headers["x-tidegate-deployment"] == "lim2#2"
    holder.join()
    assert results == ["lim2#1"]


def test_long_silent_wait_commits_with_pings_then_streams(gw: GatewayProcess) -> None:
    """After commit_after the 200 is sent and pings keep proxies from cutting the connection."""
    start = time.monotonic()
    arrivals: list[tuple[float, bytes]] = []
    with httpx.stream(
        "POST",
        f"{gw.url}/v1/chat/completions",
        headers=AUTH,
        timeout=20,
        json={"model": "late", "stream": True, "messages": [{"role": "user", "content": "q"}]},
    ) as r:
        headers_at = time.monotonic() - start
        assert r.status_code == 200
        for chunk in r.iter_bytes():
            arrivals.append((time.monotonic() - start, chunk))
    body = b"".join(c for _, c in arrivals)
    assert headers_at < 2.0  # committed long before the upstream's 5 s first event
    assert body.startswith(b": ping\n\n")
    assert body.count(b": ping") >= 3
    assert body.endswith(b"data: [DONE]\n\n")
    text = "".join(
        c["delta"].get("content") or ""
        for e in parse_sse(body.decode())
        if e.get("data", "[DONE]") != "[DONE]"
        for c in orjson.loads(e["data"]).get("choices") or []
    )
    assert text == EXPECTED_TEXT


def test_failure_after_early_commit_is_in_band(gw: GatewayProcess) -> None:
    response = ask(gw, "late-bad")
    assert response.status_code == 200
    events = [e["data"] for e in parse_sse(response.text)]
    assert events[-1] == "[DONE]"
    assert orjson.loads(events[-2])["error"]["code"] == "upstream_timeout"


def test_admin_endpoint_needs_a_key(gw: GatewayProcess) -> None:
    assert httpx.get(f"{gw.url}/admin/deployments").status_code == 401
    body = httpx.get(f"{gw.url}/admin/deployments", headers=ADMIN).json()
    assert body["tasks"] >= 1
    assert {"deployment", "state", "in_flight", "trips"} <= set(body["deployments"][0])


def test_attempts_header_on_errors_too(gw: GatewayProcess) -> None:
    response = ask(gw, "fo-allbad")
    assert response.headers["x-tidegate-attempts"] == "2"
    assert "x-tidegate-deployment" not in response.headers  # none served
