"""No configured key ever appears in a log line, an error body or a response."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import yaml

from tests.conftest import CLIENT_KEY, GatewayProcess
from tests.fake_upstream import API_KEY
from tidegate.config import parse_config

ADMIN_KEY = "tg-admin-key-9e0d41c7aa52"

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
        "auth": {"api_keys": [CLIENT_KEY], "admin_keys": [ADMIN_KEY]},
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
    assert ADMIN_KEY not in result.stdout
    assert "extra-secret-value-123" not in result.stdout
    assert API_KEY[-4:] in result.stdout  # enough to tell keys apart
    assert "admin keys: 1" in result.stdout


def run_check(tmp_path: Path, config: Any, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run(
        [sys.executable, "-m", "tidegate", "check", "--config", str(path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, **env},
        timeout=30,
    )


def test_check_masks_a_password_in_base_url(tmp_path: Path) -> None:
    """A password in a URL's userinfo is a secret: masked by `check`, redacted at runtime."""
    password = "hunter2-url-pass%2Fx"
    url = f"https://svc-user:{password}@llm.internal.example/v1"
    config = {"models": [{"name": "m", "provider": "openai", "base_url": url, "api_key": "k"}]}
    result = run_check(tmp_path, config, {})
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout + result.stderr
    assert "https://svc-user:****@llm.internal.example/v1" in result.stdout
    secrets = parse_config(config).secrets()
    assert password in secrets and "hunter2-url-pass/x" in secrets


SECRET = "sk-live-7f3a9c2e51d84b60"


@pytest.mark.parametrize(
    ("field", "model", "value"),
    [
        ("models[0].base_url", {"base_url": "${UPSTREAM_KEY}"}, SECRET),
        ("models[0].base_url", {"base_url": "api.example.com/${UPSTREAM_KEY}"}, SECRET),
        ("models[0].base_url", {"base_url": "${UPSTREAM_KEY}"}, "sk-live\\7f3a9c2e51d84b60"),
        ("models[0].provider", {"provider": "${UPSTREAM_KEY}"}, SECRET),
        ("models[0].mode", {"mode": "${UPSTREAM_KEY}"}, SECRET),
        ("models[0].fallbacks", {"fallbacks": ["${UPSTREAM_KEY}"]}, SECRET),
    ],
)
def test_config_errors_never_print_a_value_from_the_environment(
    tmp_path: Path, field: str, model: dict[str, Any], value: str
) -> None:
    """Invariant: whatever field a `${VAR}` value lands in by mistake, the error names the
    field and never prints the value (not even escaped, as `repr` would show it)."""
    entry = {"name": "m", "provider": "openai", "base_url": "https://h/v1", "api_key": "k"}
    result = run_check(tmp_path, {"models": [{**entry, **model}]}, {"UPSTREAM_KEY": value})
    assert result.returncode == 2, result.stdout + result.stderr
    assert field in result.stderr
    assert "7f3a9c2e51d84b60" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
