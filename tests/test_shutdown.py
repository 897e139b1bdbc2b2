"""SIGTERM: an idle gateway exits at once; open streams get the grace period, then end with an
in-band error and a clean end; streams that finish within the grace finish normally."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx2 as httpx

from tests.conftest import GatewayProcess, parse_sse
from tests.fake_upstream import API_KEY, FakeUpstream


def config(fake: FakeUpstream, grace: float) -> dict[str, Any]:
    return {
        "models": [
            {
                "name": "slow",
                "provider": "openai",
                "base_url": fake.base("slow_stream", "shutdown") + "/v1",
                "api_key": "${K}",
            },
            {"name": "demo", "provider": "demo", "pace": 0.02},
        ],
        "server": {"shutdown_grace": grace},
    }


def test_an_idle_gateway_exits_at_once(fake: FakeUpstream, tmp_path: Path) -> None:
    gw = GatewayProcess(config(fake, 10), tmp_path, env={"K": API_KEY})
    httpx.post(f"{gw.url}/stream-ask", json={"question": "q", "model": "demo"})
    t0 = time.monotonic()
    gw.proc.send_signal(signal.SIGTERM)
    gw.proc.wait(10)
    assert time.monotonic() - t0 < 1.0
    gw.stop()


def test_open_streams_get_the_grace_then_end_in_band(fake: FakeUpstream, tmp_path: Path) -> None:
    gw = GatewayProcess(config(fake, 1.5), tmp_path, env={"K": API_KEY})
    results: dict[str, Any] = {}

    def stream(name: str, model: str) -> None:
        with httpx.stream(
            "POST", f"{gw.url}/stream-ask", json={"question": "q", "model": model}, timeout=20
        ) as response:
            results[name] = (response.status_code, b"".join(response.iter_bytes()).decode())
        results[name + "_at"] = time.monotonic()

    slow = threading.Thread(target=stream, args=("slow", "slow"))
    quick = threading.Thread(target=stream, args=("quick", "demo"))
    slow.start()
    time.sleep(0.3)
    quick.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    gw.proc.send_signal(signal.SIGTERM)
    slow.join(15)
    quick.join(15)
    gw.proc.wait(15)
    exited = time.monotonic() - t0
    gw.stop()
    # The quick stream (about 1 s) finished normally inside the grace period.
    status, text = results["quick"]
    events = parse_sse(text)
    assert status == 200 and events[-1]["event"] == "final_end"
    assert '"finish_reason":"stop"' in events[-1]["data"]
    # The slow stream was ended at the grace, in-band, with the stream's proper end.
    status, text = results["slow"]
    events = parse_sse(text)
    assert status == 200
    assert [e.get("event") for e in events[-2:]] == ["error", "final_end"]
    assert "shutting_down" in events[-2]["data"]
    assert 1.3 <= results["slow_at"] - t0 < 3.0
    assert exited < 5.0
    assert fake.last("slow_stream/shutdown").closed_at is not None
