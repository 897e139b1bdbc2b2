"""Every log line, a traceback's included, goes through the redactor."""

from __future__ import annotations

import logging
import re

import httpx2 as httpx
import orjson
import pytest

from tests.conftest import CLIENT_KEY, GatewayProcess
from tests.fake_upstream import R_CACHED, R_INPUT, R_OUTPUT, R_REASONING
from tidegate.logs import setup_logging
from tidegate.redact import Redactor

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")

KEY = "sk-log-SECRET-7f3a9c2e"


def test_a_traceback_quoting_a_key_is_redacted(capfd: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    listener = setup_logging("info", Redactor([KEY]), json=False)
    try:
        try:
            int(KEY)
        except ValueError:
            logging.getLogger("tidegate").exception("parsing %s failed", KEY)
    finally:
        listener.stop()
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    err = capfd.readouterr().err
    assert "Traceback" in err and "ValueError" in err
    assert KEY not in err
    assert KEY[:8] not in err
    assert err.count("[REDACTED]") == 2


def test_every_line_is_json_with_a_time(gateway: GatewayProcess) -> None:
    """With JSON logging (the default), uvicorn's lines and the start-up line are JSON too."""
    httpx.post(f"{gateway.url}/stream-ask", headers=AUTH, json={"question": "q"}, timeout=20)
    # Split on LF only: `splitlines` also splits on U+2028 and U+0085, which JSON leaves
    # unescaped (a client's field name quoted in a line may hold them).
    lines = [line for line in gateway.output().split("\n") if line.strip()]
    assert len(lines) >= 4
    for line in lines:
        record = orjson.loads(line)
        assert TIME.fullmatch(record["time"]), line
    assert any("Application startup complete" in orjson.loads(x).get("message", "") for x in lines)


def test_access_record_fields(gateway: GatewayProcess) -> None:
    """Tokens (cache and reasoning too), the client key's id (never the key), a timestamp."""
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        headers=AUTH,
        json={"model": "openai-reasoning", "messages": [{"role": "user", "content": "q"}]},
        timeout=20,
    )
    record = gateway.record_for(response.headers["x-request-id"])
    assert (record["tokens_in"], record["tokens_out"]) == (R_INPUT, R_OUTPUT)
    assert (record["tokens_cache_read"], record["tokens_reasoning"]) == (R_CACHED, R_REASONING)
    assert record["tokens_cache_write"] == 0
    assert record["key"].startswith("key-") and CLIENT_KEY not in record["key"]
    assert TIME.fullmatch(record["time"])


def test_overhead_is_the_gateways_own_time(gateway: GatewayProcess) -> None:
    """A stream the upstream trickles out over half a second: the log's overhead is what the
    gateway spent, not the upstream's streaming time (as the response header says)."""
    response = httpx.post(
        f"{gateway.url}/stream-ask",
        headers=AUTH,
        json={"question": "q", "model": "openai-split_utf8"},
        timeout=20,
    )
    record = gateway.record_for(response.headers["x-request-id"])
    assert record["duration_ms"] > 200
    assert record["overhead_ms"] < record["duration_ms"] / 3, record


def test_a_failed_attempt_names_its_deployment_and_upstream(gateway: GatewayProcess) -> None:
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        headers=AUTH,
        json={"model": "openai-status_500", "messages": [{"role": "user", "content": "q"}]},
        timeout=20,
    )
    assert response.status_code == 502
    assert "x-tidegate-deployment" not in response.headers  # none served
    record = gateway.record_for(response.headers["x-request-id"])
    assert record["deployment"] == "openai-status_500"
    assert record["upstream"] == "openai-status_500@openai"
