"""No configured key ever appears in a log line, an error body or a response."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx2 as httpx
import pytest
import yaml

from tests.conftest import CLIENT_KEY, GatewayProcess
from tests.fake_upstream import API_KEY

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
MESSAGES = [{"role": "user", "content": "q"}]


@pytest.mark.parametrize(
    "model", ["openai-leaky_401", "kb-leaky_401", "openai-leaky_mid", "kb-leaky_mid"]
)
def test_upstream_echo_of_the_key_is_redacted(gateway: GatewayProcess, model: str) -> None:
    """An upstream error that quotes the gateway's key reaches the client without it."""
    responses = [
        httpx.post(
            gateway.url + "/stream-ask", headers=AUTH, json={"question": "q", "model": model}
        ),
        httpx.post(
            gateway.url + "/v1/chat/completions",
            headers=AUTH,
            json={"model": model, "messages": MESSAGES},
        ),
        httpx.post(
            gateway.url + "/v1/chat/completions",
            headers=AUTH,
            json={"model": model, "messages": MESSAGES, "stream": True},
        ),
    ]
    if model.endswith("leaky_mid"):
        del responses[1]  # the non-streaming answer has no mid-stream error to leak
    for response in responses:
        assert API_KEY not in response.text
        assert "[REDACTED]" in response.text, response.text


def test_logs_never_contain_a_key(gateway: GatewayProcess) -> None:
    """After every kind of request the suite makes, the process output holds no key."""
    httpx.post(
        gateway.url + "/stream-ask",
        headers={"Authorization": "Bearer " + CLIENT_KEY + "x"},
        json={"question": "q"},
    )
    httpx.post(
        gateway.url + "/stream-ask", headers=AUTH, json={"question": "q", "model": "kb-leaky_401"}
    )
    output = gateway.output()
    assert output  # the log is not empty
    assert API_KEY not in output
    assert CLIENT_KEY not in output


def test_check_masks_secrets(tmp_path: Path) -> None:
    config = {
        "models": [
            {
                "name": "m",
                "provider": "openai",
                "base_url": "https://api.example.com/v1",
                "api_key": API_KEY,
                "headers": {"X-Extra": "extra-secret-value-123"},
            }
        ],
        "auth": {"api_keys": [CLIENT_KEY]},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-m", "tidegate", "check", "--config", str(path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert API_KEY not in result.stdout and CLIENT_KEY not in result.stdout
    assert "extra-secret-value-123" not in result.stdout
    assert API_KEY[-4:] in result.stdout  # enough to tell keys apart
