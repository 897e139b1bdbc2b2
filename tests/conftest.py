"""Shared fixtures: the fake upstream and the real gateway process in front of it."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx2 as httpx
import orjson
import pytest
import yaml
from sqlalchemy import text

from tests.fake_upstream import API_KEY, FakeUpstream
from tidegate.store import Store
from tidegate.store.engine import create_engine

CLIENT_KEY = "tg-client-key-0d6f2b9e81c4"
#: The gateway fixture defines a model `<format>-<name>` for each: name -> fake scenario path.
SCENARIOS = {
    "ok": "ok",
    "tools": "tools",
    "reasoning": "reasoning",
    "status_400": "status/400",
    "status_401": "status/401",
    "status_429": "status/429",
    "status_500": "status/500",
    "context_exceeded": "context_exceeded",
    "leaky_401": "status/401/leaky",
    "html": "html",
    "slow_headers": "slow_headers",
    "slow_first_event": "slow_first_event",
    "error_first": "error_first",
    "stall_mid": "stall_mid",
    "drop_mid": "drop_mid",
    "error_mid": "error_mid",
    "truncated": "truncated",
    "malformed_mid": "malformed_mid",
    "malformed_line": "malformed_line",
    "no_done": "no_done",
    "unterminated": "unterminated",
    "leaky_mid": "leaky_mid",
    "split_utf8": "split_utf8",
    "crlf": "crlf",
    "pings": "pings",
    "slow_stream": "slow_stream",
}
FORMATS = ["openai", "kb", "anthropic", "gemini", "ollama", "openai-responses"]
TEST_TIMEOUTS = {"connect": 2, "first_byte": 1.5, "idle": 0.6, "total": 60}
_LISTENING = re.compile(r"listening on (http://\S+?:\d+)")
#: `TIDEGATE_TEST_HTTP_CLIENT=aiohttp` runs every gateway the tests start with that upstream
#: client (`http.client`), unless a test's config names one itself.
HTTP_CLIENT = os.environ.get("TIDEGATE_TEST_HTTP_CLIENT", "")


_Closable = TypeVar("_Closable")


class GatewayProcess:
    """`tidegate serve` in a child process on an ephemeral port, its stderr collected."""

    def __init__(
        self,
        config: dict[str, Any] | None,
        workdir: Path,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
    ):
        self.workdir = workdir
        self.lines: list[str] = []
        self.url = ""
        cmd = [sys.executable, "-m", "tidegate", "serve", "--port", "0", *(args or [])]
        if config is not None:
            if HTTP_CLIENT and "client" not in config.get("http", {}):
                config = {**config, "http": {**config.get("http", {}), "client": HTTP_CLIENT}}
            path = workdir / "tidegate.yaml"
            path.write_text(yaml.safe_dump(config, sort_keys=False))
            cmd += ["--config", str(path)]
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith(("TIDEGATE_", "ANYTHINGLLM_"))
        }
        self.env.update(env or {})
        self.proc = subprocess.Popen(
            cmd,
            cwd=workdir,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + 20
        while not self.url:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("gateway did not start:\n" + self.output())
            time.sleep(0.02)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            match = _LISTENING.search(line)
            if match and not self.url:
                self.url = match.group(1)

    def output(self) -> str:
        """Everything the process has written so far."""
        return "\n".join(self.lines)

    def access_records(self) -> list[dict[str, Any]]:
        """The parsed access-log lines."""
        out = []
        for line in list(self.lines):
            if line.startswith('{"request_id"'):
                out.append(orjson.loads(line))
        return out

    def record_for(self, request_id: str, timeout: float = 5) -> dict[str, Any]:
        """The access record of one request, waiting for it to be written."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in self.access_records():
                if record["request_id"] == request_id:
                    return record
            time.sleep(0.02)
        raise AssertionError(f"no access record for {request_id}:\n{self.output()}")

    def lines_with(self, *needles: str, timeout: float = 5) -> list[str]:
        """The output lines containing every needle, waiting (bounded) until at least one is
        written: log records and access lines are written by different threads, in either order."""
        deadline = time.monotonic() + timeout
        while True:
            found = [line for line in list(self.lines) if all(n in line for n in needles)]
            if found or time.monotonic() >= deadline:
                return found
            time.sleep(0.02)

    def stop(self) -> None:
        stop_process(self.proc)
        self._reader.join(2)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def scenario_models(fake: FakeUpstream) -> list[dict[str, Any]]:
    """A model per fake-upstream scenario and wire format, named `<format>-<scenario>`."""
    models: list[dict[str, Any]] = []
    for s, path in SCENARIOS.items():
        common = {"api_key": "${FAKE_UPSTREAM_KEY}", "timeouts": TEST_TIMEOUTS}
        base = fake.base(path)
        models += [
            {
                "name": f"openai-{s}",
                "provider": "openai",
                "base_url": base + "/v1",
                "model": "fake-model",
                **common,
            },
            {
                "name": f"kb-{s}",
                "provider": "anythingllm",
                "base_url": base,
                "workspace": "docs",
                **common,
            },
            {
                "name": f"anthropic-{s}",
                "provider": "anthropic",
                "base_url": base,
                "model": "claude-fake",
                **common,
            },
            {
                "name": f"gemini-{s}",
                "provider": "gemini",
                "base_url": base,
                "model": "gemini-fake",
                **common,
            },
            {
                "name": f"ollama-{s}",
                "provider": "ollama",
                "base_url": base,
                "model": "llama-fake",
                **common,
            },
            {
                "name": f"openai-responses-{s}",
                "provider": "openai-responses",
                "base_url": base + "/v1",
                "model": "fake-model",
                **common,
            },
        ]
    models.append(
        {
            "name": "openai-refused",
            "provider": "openai",
            "base_url": "http://127.0.0.1:9/v1",
            "api_key": "${FAKE_UPSTREAM_KEY}",
        }
    )
    models.append(
        {
            "name": "openai-short-total",
            "provider": "openai",
            "base_url": fake.base("slow_headers") + "/v1",
            "api_key": "${FAKE_UPSTREAM_KEY}",
            "timeouts": {**TEST_TIMEOUTS, "total": 1},
        }
    )
    models.append(
        {
            "name": "openai-extra-headers",
            "provider": "openai",
            "base_url": fake.base("ok", "headers") + "/v1",
            "api_key": "${FAKE_UPSTREAM_KEY}",
            "headers": {"X-Team": "alpha", "OpenAI-Project": "proj_123"},
        }
    )
    models.append({"name": "demo", "provider": "demo", "pace": 0.001})
    return models


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """End a process this test run started: SIGTERM, then SIGKILL if it does not exit."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def tidegate_cli(
    workdir: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`tidegate ARGS --config tidegate.yaml` in `workdir`, without the caller's TIDEGATE_
    variables (plus `env`)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TIDEGATE_")}
    return subprocess.run(
        [sys.executable, "-m", "tidegate", *args, "--config", str(workdir / "tidegate.yaml")],
        cwd=workdir,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def stream_in_background(url: str, body: dict[str, Any], key: str) -> threading.Thread:
    """POST a streaming chat `body` to `url` from a thread that reads until the stream ends or
    the connection breaks (the gateway killed under it); returns once the first line came."""
    started = threading.Event()

    def read() -> None:
        try:
            with httpx.stream(
                "POST", url, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30
            ) as response:
                for _ in response.iter_lines():
                    started.set()
        except httpx.HTTPError:
            pass  # the gateway went away under it: what these tests do

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert started.wait(10), "the stream did not start"
    return reader


_SDK_CLIENTS: list[Any] = []


def closed_after_test(client: _Closable) -> _Closable:
    """`client` (an official SDK's), closed when the test ends: a client left to the garbage
    collector closes its sockets with a ResourceWarning in whichever test happens to run
    then, and warnings are errors here."""
    _SDK_CLIENTS.append(client)
    return client


@pytest.fixture(autouse=True)
def _close_sdk_clients() -> Iterator[None]:
    yield
    while _SDK_CLIENTS:
        _SDK_CLIENTS.pop().close()


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until `check()` holds (bounded: fails after `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


@pytest.fixture(scope="session")
def fake() -> Iterator[FakeUpstream]:
    upstream = FakeUpstream().start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="session")
def gateway(
    fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """One gateway for the whole session, with a model per scenario and a client key."""
    config = {
        "models": scenario_models(fake),
        "stream_ask": {"model": "openai-ok"},
        "auth": {"api_keys": ["${TEST_CLIENT_KEY}"]},
        "limits": {"max_body_bytes": 256 * 1024},
        # Functional tests hit failing models over and over; cooldown has tests of its own.
        "routing": {"cooldown": {"enabled": False}},
    }
    process = GatewayProcess(
        config,
        tmp_path_factory.mktemp("gateway"),
        env={"FAKE_UPSTREAM_KEY": API_KEY, "TEST_CLIENT_KEY": CLIENT_KEY},
    )
    yield process
    process.stop()


@pytest.fixture
def start_gateway(tmp_path: Path) -> Iterator[Callable[..., GatewayProcess]]:
    """Start extra gateways with their own config; all are stopped after the test."""
    started: list[GatewayProcess] = []

    def start(config: dict[str, Any] | None = None, **kwargs: Any) -> GatewayProcess:
        process = GatewayProcess(config, tmp_path, **kwargs)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


POSTGRES = os.environ.get("TIDEGATE_TEST_POSTGRES_URL")


async def drop_store_tables(url: str) -> None:
    """Drop tidegate's tables from the database at `url`."""
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            for table in ("usage", "client_keys", "instances", "alembic_version"):
                await conn.execute(text(f'DROP TABLE IF EXISTS "{table}"'))
    finally:
        await engine.dispose()


async def _upgrade_store(url: str) -> None:
    store = Store(url)
    try:
        await store.upgrade()
    finally:
        await store.aclose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL: a new SQLite file of the test (created by the first command), or the
    PostgreSQL of the environment with tidegate's tables created afresh (`tidegate db upgrade`
    does that in production) and dropped after; skipped when it is not set."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/store.db"
        return
    if not POSTGRES:
        pytest.skip("TIDEGATE_TEST_POSTGRES_URL is not set: the PostgreSQL variant is skipped")
    asyncio.run(drop_store_tables(POSTGRES))
    asyncio.run(_upgrade_store(POSTGRES))
    yield POSTGRES
    asyncio.run(drop_store_tables(POSTGRES))


def parse_sse(text: str) -> list[dict[str, str]]:
    """A deliberately simple, independent reader for the gateway's own LF-framed events."""
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        event: dict[str, str] = {}
        for line in block.split("\n"):
            if line.startswith(":"):
                continue
            name, _, value = line.partition(": ")
            event[name] = event[name] + "\n" + value if name in event else value
        if event:
            events.append(event)
    return events
