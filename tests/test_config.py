"""Configuration: every bad setting names its field and the fix; the CLI exits non-zero."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from tidegate.config import load_config, read_environment
from tidegate.errors import ConfigError
from tidegate.settings import Config, HttpDeploymentSettings


def write(tmp_path: Path, config: Any) -> Path:
    path = tmp_path / "tidegate.yaml"
    path.write_text(config if isinstance(config, str) else yaml.safe_dump(config))
    return path


def load(tmp_path: Path, config: Any, env: dict[str, str] | None = None) -> Config:
    return load_config(write(tmp_path, config), env or {})


OPENAI = {"name": "m", "provider": "openai", "base_url": "https://api.example.com/v1"}


def test_env_substitution_and_defaults(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        {
            "models": [{**OPENAI, "api_key": "${KEY}", "model": "${UPSTREAM:-gpt-x}"}],
            "auth": {"api_keys": ["${CLIENT}", "${OPTIONAL:-}"]},
        },
        {"KEY": "sk-123456", "CLIENT": "c-1"},
    )
    model = config.models[0]
    assert isinstance(model, HttpDeploymentSettings)
    assert model.api_key is not None and model.api_key.get_secret_value() == "sk-123456"
    assert model.upstream_model == "gpt-x"
    assert [k.get_secret_value() for k in config.auth.api_keys if isinstance(k, SecretStr)] == [
        "c-1"
    ]
    assert model.timeouts.first_byte == 60 and model.timeouts.idle == 60


@pytest.mark.parametrize(
    ("config", "field", "needle"),
    [
        (
            {"models": [{**OPENAI, "api_key": "${NOPE}"}]},
            "models[0].api_key",
            "environment variable NOPE is not set",
        ),
        ({"models": [{**OPENAI, "api_kye": "x"}]}, "models[0].api_kye", "did you mean 'api_key'"),
        (
            {"models": [{**OPENAI, "workspace": "docs"}]},
            "models[0].workspace",
            "unknown setting for provider openai",
        ),
        (
            {"models": [{"name": "d", "provider": "demo", "base_url": "http://x"}]},
            "models[0].base_url",
            "unknown setting for provider demo",
        ),
        ({"models": [{"name": "m"}]}, "models[0].provider", "is required"),
        ({"models": ["m"]}, "models[0]", "must be a mapping"),
        (
            {"models": [{**OPENAI, "provider": "gpt"}]},
            "models[0].provider",
            "use one of: anthropic, anythingllm, demo, gemini, ollama, openai, openai-responses",
        ),
        ({"models": [{"name": "m", "provider": "openai"}]}, "models[0].base_url", "is required"),
        (
            {"models": [{**OPENAI, "base_url": "api.example.com"}]},
            "models[0].base_url",
            "http(s) URL",
        ),
        (
            {"models": [{**OPENAI, "timeouts": {"idle": -1}}]},
            "models[0].timeouts.idle",
            "greater than 0",
        ),
        (
            {"models": [{**OPENAI, "timeouts": {"idel": 5}}]},
            "models[0].timeouts.idel",
            "did you mean 'idle'",
        ),
        (
            {
                "models": [
                    {
                        "name": "kb",
                        "provider": "anythingllm",
                        "base_url": "http://h:3001",
                        "api_key": "k",
                    }
                ]
            },
            "models[0].workspace",
            "workspace slug",
        ),
        (
            {"models": [OPENAI], "stream_ask": {"model": "other"}},
            "stream_ask.model",
            "use one of: m",
        ),
        ({"models": []}, "models", "at least 1"),
        ({}, "models", "is required"),
        ("models: [\n  - name: x\n   bad", "tidegate.yaml", "invalid YAML at line"),
        ("- just a list", "tidegate.yaml", "must be a mapping"),
    ],
)
def test_bad_config_names_the_field(tmp_path: Path, config: Any, field: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, config)
    assert info.value.field.endswith(field)
    assert needle in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.yaml", {})


def test_seed_variables_define_an_anythingllm_model() -> None:
    config = load_config(
        None,
        {
            "ANYTHINGLLM_BASE_URL": "http://10.0.0.5:3001",
            "ANYTHINGLLM_API_KEY": "ALLM-KEY-1",
            "ANYTHINGLLM_WORKSPACE_SLUG": "test1",
        },
    )
    assert [m.name for m in config.models] == ["anythingllm"]
    assert getattr(config.models[0], "workspace", None) == "test1"
    assert config.stream_ask.model == "anythingllm"


def test_partial_seed_variables_are_an_error() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, {"ANYTHINGLLM_BASE_URL": "http://h:3001"})
    assert info.value.field == "ANYTHINGLLM_API_KEY"
    assert "ANYTHINGLLM_WORKSPACE_SLUG" in str(info.value)


def test_nothing_configured_means_demo() -> None:
    config = load_config(None, {})
    assert [(m.name, m.provider) for m in config.models] == [("demo", "demo")]
    assert not config.auth.api_keys


def test_tidegate_config_variable_points_at_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, {"models": [OPENAI]})
    assert load_config(None, {"TIDEGATE_CONFIG": str(path)}).models[0].name == "m"


def test_dotenv_is_read_and_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text('ANYTHINGLLM_BASE_URL = "http://from-dotenv:3001"\nONLY_IN_DOTENV=yes\n')
    monkeypatch.setenv("ANYTHINGLLM_BASE_URL", "http://from-env:3001")
    values = read_environment(env_file)
    assert values["ANYTHINGLLM_BASE_URL"] == "http://from-env:3001"
    assert values["ONLY_IN_DOTENV"] == "yes"


def run_cli(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidegate", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=30,
    )


def test_check_prints_models_and_exits_zero(tmp_path: Path) -> None:
    path = write(tmp_path, {"models": [{**OPENAI, "api_key": "sk-abcdefghijklmnop1234"}]})
    result = run_cli(tmp_path, "check", "--config", str(path))
    assert result.returncode == 0
    assert "m: provider=openai" in result.stdout and "****1234" in result.stdout


@pytest.mark.parametrize("command", ["check", "serve"])
def test_bad_config_exits_non_zero_with_the_field(tmp_path: Path, command: str) -> None:
    path = write(tmp_path, {"models": [{**OPENAI, "api_key": "${MISSING_KEY}"}]})
    result = run_cli(tmp_path, command, "--config", str(path))
    assert result.returncode == 2
    assert "models[0].api_key" in result.stderr and "MISSING_KEY" in result.stderr


def test_serve_refuses_public_address_without_client_keys(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "serve", "--host", "0.0.0.0", "--port", "0")
    assert result.returncode == 2
    assert "without client keys" in result.stderr and "--allow-unauthenticated" in result.stderr


def test_dotenv_in_working_directory_configures_serve(tmp_path: Path, start_gateway: Any) -> None:
    (tmp_path / ".env").write_text("TIDEGATE_API_KEY=from-dotenv-key-77\n")
    gw = start_gateway(None)
    import httpx2 as httpx

    assert httpx.post(f"{gw.url}/stream-ask", json={"question": "q"}).status_code == 401
    ok = httpx.post(
        f"{gw.url}/stream-ask",
        json={"question": "q"},
        headers={"Authorization": "Bearer from-dotenv-key-77"},
    )
    assert ok.status_code == 200


def test_announced_address_accepts_connections_at_once(start_gateway: Any) -> None:
    """A client that connects the moment the address is printed must not be refused."""
    import socket

    gw = start_gateway(None)
    host, port = gw.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 200")


def test_serve_with_two_workers(start_gateway: Any) -> None:
    """`--workers 2`: both processes serve from the one listening socket."""
    import httpx2 as httpx

    gw = start_gateway(None, args=["--workers", "2"])
    with httpx.Client() as client:
        answers = [
            client.post(f"{gw.url}/stream-ask", json={"question": "q"}, timeout=20)
            for _ in range(6)
        ]
    assert all(a.status_code == 200 and "final_end" in a.text for a in answers)
    import psutil

    workers = [
        p for p in psutil.Process(gw.proc.pid).children(recursive=True) if "python" in p.name()
    ]
    assert len(workers) >= 2


def run_bounded(
    tmp_path: Path, *args: str, seconds: float = 2.0, max_rss: int = 200 * 1024 * 1024
) -> tuple[int | None, str, float, int]:
    """Run `tidegate`, killing it past `seconds` or `max_rss` bytes of memory:
    (exit status or None if killed, stderr, elapsed, peak RSS)."""
    import psutil

    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tidegate", *args],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    watched = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        if time.monotonic() - start > seconds or peak > max_rss:
            proc.kill()
            proc.wait(5)
            assert proc.stderr is not None
            proc.stderr.close()
            return None, "", time.monotonic() - start, peak
        time.sleep(0.01)
    _, stderr = proc.communicate(timeout=5)
    return proc.returncode, stderr, time.monotonic() - start, peak


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """The 'billion laughs' document: each level repeats the previous one `width` times."""
    lines = ["a0: &a0 [" + ", ".join(['"x"'] * width) + "]"]
    for n in range(1, levels):
        lines.append(f"a{n}: &a{n} [" + ", ".join([f"*a{n - 1}"] * width) + "]")
    lines.append(f"models: *a{levels - 1}")
    return "\n".join(lines) + "\n"


def test_a_yaml_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    """Invariant: a small file whose aliases expand to billions of values is refused within two
    seconds and a little memory, exit 2, naming the problem."""
    text = alias_bomb()
    assert len(text) < 600
    path = write(tmp_path, text)
    status, stderr, elapsed, peak = run_bounded(tmp_path, "check", "--config", str(path))
    assert status == 2, f"killed after {elapsed:.1f}s at {peak / 1e6:.0f} MB"
    assert "aliases (*name) may repeat a block only so often" in stderr
    assert "Traceback" not in stderr


def test_alias_expansion_is_checked_before_anything_is_built(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expands to more than"):
        load(tmp_path, alias_bomb(levels=7, width=8))


def test_recursive_aliases_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="refers to itself"):
        load(tmp_path, "models: &m [*m]\n")


def test_small_anchors_and_merge_keys_keep_working(tmp_path: Path) -> None:
    text = """
models:
  - &base
    name: a
    provider: openai
    base_url: https://api.example.com/v1
    api_key: ${KEY}
    timeouts: &fast {connect: 1, first_byte: 2}
  - <<: *base
    name: b
    timeouts: *fast
"""
    config = load(tmp_path, text, {"KEY": "sk-anchor-1234"})
    assert [m.name for m in config.models] == ["a", "b"]
    assert config.models[1].timeouts.first_byte == 2
    second = config.models[1]
    assert isinstance(second, HttpDeploymentSettings) and second.api_key is not None
    assert second.api_key.get_secret_value() == "sk-anchor-1234"


def test_deeply_nested_yaml_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load(tmp_path, "models: " + "[" * 5000 + "]" * 5000 + "\n")


def test_invalid_utf8_is_a_config_error_and_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "tidegate.yaml"
    path.write_bytes(b"models:\n  - name: caf\xe9\n    provider: demo\n")
    result = run_cli(tmp_path, "check", "--config", str(path))
    assert result.returncode == 2, result.stderr
    assert "UTF-8" in result.stderr and "line 2" in result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_utf8_in_dotenv_is_a_config_error_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / ".env").write_bytes(b"TIDEGATE_API_KEY=caf\xe9\n")
    result = run_cli(tmp_path, "check")
    assert result.returncode == 2, result.stderr
    assert ".env" in result.stderr and "UTF-8" in result.stderr
    assert "Traceback" not in result.stderr


def test_limits_and_admin_keys(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        {
            "models": [OPENAI],
            "auth": {"admin_keys": ["${ADMIN}", "${UNSET_ADMIN:-}"]},
            "limits": {"header_timeout": 2.5, "max_headers": 50},
        },
        {"ADMIN": "admin-key-1"},
    )
    assert [k.get_secret_value() for k in config.auth.admin_keys] == ["admin-key-1"]
    assert "admin-key-1" in config.secrets()
    limits = config.limits
    assert (limits.header_timeout, limits.max_headers) == (2.5, 50)
    assert (limits.max_header_bytes, limits.body_timeout) == (64 * 1024, 30)
    assert limits.max_connections == 10_000
