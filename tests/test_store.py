"""The store end to end, through real gateway processes and the CLI: managed keys (CLI and
admin API), the usage ledger (ok, error, client closed mid-stream), the reaper after a
SIGKILL, the schema check at start-up — on SQLite and, with TIDEGATE_TEST_POSTGRES_URL set, on
PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx2 as httpx
import openai
import pytest
import yaml

from tests.conftest import (
    TEST_TIMEOUTS,
    GatewayProcess,
    drop_store_tables,
    eventually,
    stream_in_background,
    tidegate_cli,
)
from tests.fake_upstream import API_KEY, FakeUpstream

ADMIN_KEY = "tg-admin-key-store-71c2e0"
POSTGRES = os.environ.get("TIDEGATE_TEST_POSTGRES_URL")
USAGE_ROW_FIELDS = {"requests", "errors", "input_tokens", "output_tokens", "cost"}


def models(fake: FakeUpstream) -> list[dict[str, Any]]:
    """A few OpenAI-compatible models of the fake upstream."""
    return [
        {
            "name": f"openai-{scenario.replace('/', '_')}",
            "provider": "openai",
            "base_url": fake.base(scenario) + "/v1",
            "model": "fake-model",
            "api_key": "${FAKE_UPSTREAM_KEY}",
            "timeouts": TEST_TIMEOUTS,
        }
        for scenario in ("ok", "tools", "status/500", "slow_stream")
    ] + [
        {
            "name": "openai-slow_cancel",
            "provider": "openai",
            "base_url": fake.base("slow_stream", "cancel") + "/v1",
            "model": "fake-model",
            "api_key": "${FAKE_UPSTREAM_KEY}",
            "timeouts": TEST_TIMEOUTS,
        }
    ]


def config_for(fake: FakeUpstream, database: str, **extra: Any) -> dict[str, Any]:
    """No static client keys (managed keys only), an admin key, a quick ledger and cache."""
    return {
        "models": models(fake),
        "database": database,
        "auth": {"admin_keys": [ADMIN_KEY], "managed_cache_seconds": 0.2},
        "routing": {"cooldown": {"enabled": False}},
        "prices": {"openai-ok": {"input": 1.0, "output": 2.0}},
        "ledger": {
            "flush_seconds": 0.1,
            "heartbeat_seconds": 0.5,
            "stale_seconds": 2,
            "reap_seconds": 0.5,
        },
        **extra,
    }


ENV = {"FAKE_UPSTREAM_KEY": API_KEY}


def write_config(workdir: Path, config: dict[str, Any]) -> Path:
    """The config where `GatewayProcess` writes it too, for the CLI to read the same."""
    path = workdir / "tidegate.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def cli(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`tidegate ARGS --config tidegate.yaml` in `workdir`, with the fake upstream's key."""
    return tidegate_cli(workdir, *args, env=ENV)


def admin(gw: GatewayProcess, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """A call of the admin API with the admin key."""
    headers = {"Authorization": f"Bearer {ADMIN_KEY}", **kwargs.pop("headers", {})}
    return httpx.request(method, gw.url + path, headers=headers, timeout=10, **kwargs)


def chat(gw: GatewayProcess, key: str, model: str = "openai-ok") -> httpx.Response:
    """One whole chat completion with `key`."""
    return httpx.post(
        gw.url + "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {key}"} if key else {},
        timeout=20,
    )


def sdk(gw: GatewayProcess, key: str) -> openai.OpenAI:
    """The official OpenAI client on the gateway, with `key`."""
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=20)


# -- managed keys from the CLI ------------------------------------------------------------------


def test_managed_keys_from_the_cli(
    fake: FakeUpstream, database: str, tmp_path: Path, start_gateway: Any
) -> None:
    """`keys create` prints a key once that the OpenAI SDK can use, for its models only;
    `keys list` never shows it; `rotate` retires the old key, `disable` the key; an expired
    key and no key are 401s."""
    write_config(tmp_path, config_for(fake, database))
    flags = "--name alice --user u1 --models openai-ok --rpm 60 --budget 5 --period day"
    created = cli(tmp_path, "keys", "create", *flags.split())
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("tg-") and len(key) > 30
    expired = cli(tmp_path, "keys", "create", "--name", "old", "--expires", "2020-01-01")
    assert expired.returncode == 0, expired.stderr
    old_key = expired.stdout.strip()
    bad = cli(tmp_path, "keys", "create", "--name", "x", "--expires", "soon")
    assert bad.returncode == 2 and "--expires" in bad.stderr

    gw: GatewayProcess = start_gateway(config_for(fake, database), env=ENV)
    with sdk(gw, key) as client:
        stream = client.chat.completions.create(
            model="openai-ok", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        chunks = list(stream)
        text_out = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text_out
        # The usage chunk the gateway asked for itself does not reach a client that did not
        # ask for it.
        assert all(c.usage is None for c in chunks)
        with pytest.raises(openai.PermissionDeniedError) as denied:
            client.chat.completions.create(
                model="openai-tools", messages=[{"role": "user", "content": "hi"}]
            )
        assert "openai-tools" in str(denied.value)
    with sdk(gw, old_key) as client, pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(
            model="openai-ok", messages=[{"role": "user", "content": "hi"}]
        )
    assert chat(gw, "").status_code == 401
    # Anthropic's SDK sends x-api-key: a managed key works there too.
    messages = httpx.post(
        gw.url + "/v1/messages",
        json={
            "model": "openai-ok",
            "max_tokens": 20,
            "messages": [{"role": "user", "content": "q"}],
        },
        headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
        timeout=20,
    )
    assert messages.status_code == 200, messages.text
    # Gemini's SDK sends x-goog-api-key (or ?key=).
    gemini = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    path = gw.url + "/v1beta/models/openai-ok:generateContent"
    for extra in ({"headers": {"x-goog-api-key": key}}, {"params": {"key": key}}):
        answer = httpx.post(path, json=gemini, timeout=20, **extra)  # type: ignore[arg-type]
        assert answer.status_code == 200, answer.text

    listing = cli(tmp_path, "keys", "list")
    assert listing.returncode == 0, listing.stderr
    assert "alice" in listing.stdout and "models=openai-ok" in listing.stdout
    assert "budget=5/day" in listing.stdout and "(expired)" in listing.stdout
    assert key not in listing.stdout and old_key not in listing.stdout

    rotated = cli(tmp_path, "keys", "rotate", "alice")
    assert rotated.returncode == 0, rotated.stderr
    new_key = rotated.stdout.strip()
    assert new_key.startswith("tg-") and new_key != key
    eventually(lambda: chat(gw, key).status_code == 401)
    assert chat(gw, new_key).status_code == 200

    disabled = cli(tmp_path, "keys", "disable", "alice")
    assert disabled.returncode == 0, disabled.stderr
    eventually(lambda: chat(gw, new_key).status_code == 401)
    assert cli(tmp_path, "keys", "disable", "nobody").returncode == 1
    for secret in (key, new_key, old_key):
        assert secret not in gw.output()


# -- the admin API ------------------------------------------------------------------------------


def test_admin_api_for_managed_keys(
    fake: FakeUpstream, database: str, tmp_path: Path, start_gateway: Any
) -> None:
    """POST creates (the key in that answer only), bad fields are 400s naming them, GET
    lists without keys, rotate and disable take effect at once; client keys are refused."""
    gw: GatewayProcess = start_gateway(config_for(fake, database), env=ENV)
    for body, field in (
        ({"name": "svc", "rpm": -1}, "rpm"),
        ({"name": ""}, "name"),
        ({"name": "svc", "period": "year"}, "period"),
        ({"name": "svc", "expires": "tomorrow"}, "expires"),
        ({"name": "svc", "models": "a"}, None),  # a comma list is accepted too
        ({"name": "svc2", "colour": "red"}, "colour"),
    ):
        answer = admin(gw, "POST", "/admin/keys", json=body)
        if field is None:
            assert answer.status_code == 201, answer.text
            continue
        assert answer.status_code == 400, answer.text
        assert field in answer.json()["error"]["message"]
    created = admin(gw, "POST", "/admin/keys", json={"name": "web", "models": ["openai-ok"]})
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    key_id = created.json()["id"]
    assert chat(gw, key).status_code == 200
    assert chat(gw, key, "openai-tools").status_code == 403

    listing = admin(gw, "GET", "/admin/keys")
    assert listing.status_code == 200
    names = {k["name"]: k for k in listing.json()["keys"]}
    assert names["web"]["models"] == ["openai-ok"] and names["web"]["disabled"] is False
    assert key not in listing.text and "digest" not in listing.text
    assert all("key" not in k for k in listing.json()["keys"])
    # A managed client key is no admin key.
    refused = httpx.get(gw.url + "/admin/keys", headers={"Authorization": f"Bearer {key}"})
    assert refused.status_code == 403

    rotated = admin(gw, "POST", f"/admin/keys/{key_id}/rotate")
    assert rotated.status_code == 200, rotated.text
    new_key = rotated.json()["key"]
    assert chat(gw, key).status_code == 401  # at once: this process forgot its cache
    assert chat(gw, new_key).status_code == 200
    disabled = admin(gw, "POST", "/admin/keys/web/disable")
    assert disabled.status_code == 200 and disabled.json()["disabled"] is True
    assert chat(gw, new_key).status_code == 401
    assert admin(gw, "POST", "/admin/keys/nope/rotate").status_code == 404
    assert key not in gw.output() and new_key not in gw.output()


# -- the ledger ---------------------------------------------------------------------------------


def _recent(gw: GatewayProcess) -> list[dict[str, Any]]:
    answer = admin(gw, "GET", "/admin/usage/recent?limit=50")
    assert answer.status_code == 200, answer.text
    rows: list[dict[str, Any]] = answer.json()["rows"]
    return rows


def test_ledger_rows_for_ok_error_and_a_client_that_left(
    fake: FakeUpstream, database: str, tmp_path: Path, start_gateway: Any
) -> None:
    """One row per chat request: ok with the upstream's usage and its cost, an upstream error,
    and a stream whose client closed mid-way — completed, with an estimate of what was
    generated. `/admin/usage` sums them in the agreed shape; `tidegate usage` prints them."""
    write_config(tmp_path, config_for(fake, database))
    gw: GatewayProcess = start_gateway(config_for(fake, database), env=ENV)
    key = admin(gw, "POST", "/admin/keys", json={"name": "led", "user": "ann"}).json()["key"]
    headers = {"Authorization": f"Bearer {key}"}
    with sdk(gw, key) as client:
        ok = client.chat.completions.create(
            model="openai-ok", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        assert list(ok)
    failed = chat(gw, key, "openai-status_500")
    assert failed.status_code >= 500
    body = {"model": "openai-slow_stream", "stream": True,
            "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip
    with httpx.stream(
        "POST", gw.url + "/v1/chat/completions", json=body, headers=headers, timeout=20
    ) as response:
        seen = 0
        for line in response.iter_lines():
            seen += line.startswith("data:")
            if seen >= 5:
                break
    # A stream its client cancels through /v1/streams/{id}/cancel.
    cancelled_body = {**body, "model": "openai-slow_cancel"}
    with httpx.stream(
        "POST", gw.url + "/v1/chat/completions", json=cancelled_body, headers=headers, timeout=20
    ) as response:
        stream_id = response.headers["x-tidegate-stream-id"]
        lines = response.iter_lines()
        next(lines)
        cancel = httpx.post(f"{gw.url}/v1/streams/{stream_id}/cancel", headers=headers)
        assert cancel.status_code == 200, cancel.text
        assert any("cancelled" in line for line in lines)
    assert admin(gw, "GET", "/healthz").status_code == 200  # not ledgered

    def finished() -> bool:
        rows = _recent(gw)
        return len(rows) == 4 and all(r["status"] != "pending" for r in rows)

    eventually(finished, timeout=10)
    rows = {r["model"]: r for r in _recent(gw)}
    good = rows["openai-ok"]
    assert good["status"] == "ok" and good["http_status"] == 200
    assert good["input_tokens"] > 0 and good["output_tokens"] > 0 and not good["estimated"]
    expected_cost = (good["input_tokens"] * 1.0 + good["output_tokens"] * 2.0) / 1e6
    assert good["cost"] == pytest.approx(expected_cost)
    assert good["key_name"] == "led" and good["user"] == "ann"
    assert good["deployment"] == "openai-ok" and good["attempts"] == 1
    assert good["stream_id"] and good["ttfb_ms"] is not None and good["duration_ms"] > 0
    assert good["endpoint"] == "/v1/chat/completions" and good["instance_id"]
    assert rows["openai-status_500"]["status"] == "error"
    left = rows["openai-slow_stream"]
    assert left["status"] == "client_closed"
    assert left["output_tokens"] > 0 and left["estimated"] is True
    assert rows["openai-slow_cancel"]["status"] == "cancelled"
    assert key not in str(rows)

    summary = admin(gw, "GET", "/admin/usage?by=day,key").json()
    assert summary["by"] == ["day", "key"] and summary["since"] is None
    [row] = summary["rows"]
    assert set(row) == {"day", "key"} | USAGE_ROW_FIELDS
    assert row["key"] == "led" and row["requests"] == 4 and row["errors"] == 3
    assert row["cost"] == pytest.approx(expected_cost)
    by_model = admin(gw, "GET", "/admin/usage?by=model").json()["rows"]
    assert {r["model"] for r in by_model} == set(rows)
    assert all(set(r) == {"model"} | USAGE_ROW_FIELDS for r in by_model)
    later = admin(gw, "GET", "/admin/usage?by=key&since=2999-01-01").json()
    assert later == {"by": ["key"], "since": "2999-01-01", "rows": []}
    for query, field in (("by=colour", "by"), ("since=yesterday", "since")):
        bad = admin(gw, "GET", "/admin/usage?" + query)
        assert bad.status_code == 400 and field in bad.json()["error"]["message"]

    printed = cli(tmp_path, "usage", "--by", "model")
    assert printed.returncode == 0, printed.stderr
    header, *table = printed.stdout.splitlines()
    assert header.split() == ["MODEL", "REQUESTS", "ERRORS", "INPUT_TOKENS", "OUTPUT_TOKENS",
                              "COST"]  # fmt: skip
    assert any(line.split()[:3] == ["openai-ok", "1", "0"] for line in table)
    assert cli(tmp_path, "usage", "--since", "2999-01-01").stdout.startswith("no usage")


def test_the_reaper_marks_a_killed_instances_requests_interrupted(
    fake: FakeUpstream, database: str, tmp_path: Path, start_gateway: Any
) -> None:
    """A request pending in an instance that is SIGKILLed becomes `interrupted` once another
    instance on the same database sees its heartbeat go stale."""
    config = config_for(fake, database)
    first: GatewayProcess = start_gateway(config, env=ENV)
    key = admin(first, "POST", "/admin/keys", json={"name": "r"}).json()["key"]
    body = {"model": "openai-slow_stream", "stream": True,
            "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip
    reader = stream_in_background(first.url + "/v1/chat/completions", body, key)
    eventually(lambda: [r["status"] for r in _recent(first)] == ["pending"])
    first.proc.kill()
    first.proc.wait(5)
    reader.join(10)

    second: GatewayProcess = start_gateway(config, env=ENV)

    def interrupted() -> bool:
        return [r["status"] for r in _recent(second)] == ["interrupted"]

    eventually(interrupted, timeout=10)
    [row] = _recent(second)
    assert row["ended_at"] is not None and row["model"] == "openai-slow_stream"


# -- start-up -----------------------------------------------------------------------------------


def _serve(workdir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEGATE_")}
    env.update(ENV)
    return subprocess.run(
        [sys.executable, "-m", "tidegate", "serve", "--port", "0", "--config", "tidegate.yaml"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_schema_behind_stops_serve_until_db_upgrade(
    fake: FakeUpstream, database: str, tmp_path: Path, start_gateway: Any
) -> None:
    """An existing database without tidegate's schema (behind): `serve` exits 2 naming
    `tidegate db upgrade`; after it, `serve` starts."""
    if database.startswith("sqlite"):
        (tmp_path / "store.db").write_bytes(b"")  # exists, no tables
    else:
        asyncio.run(drop_store_tables(database))
    config = config_for(fake, database)
    write_config(tmp_path, config)
    refused = _serve(tmp_path)
    assert refused.returncode == 2
    assert "tidegate db upgrade" in refused.stderr and "database" in refused.stderr
    assert "behind" in cli(tmp_path, "db", "current").stdout
    upgraded = cli(tmp_path, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert "upgraded" in upgraded.stdout
    assert "already at revision" in cli(tmp_path, "db", "upgrade").stdout
    assert "up to date" in cli(tmp_path, "db", "current").stdout
    gw: GatewayProcess = start_gateway(config, env=ENV)
    assert admin(gw, "GET", "/admin/keys").json() == {"keys": []}


def test_an_unreachable_database_is_a_config_error(fake: FakeUpstream, tmp_path: Path) -> None:
    """A database that cannot be reached: exit 2, the message names the `database` field and
    not its password."""
    url = "postgresql://postgres:hunter2secret@127.0.0.1:1/nothing"
    write_config(tmp_path, config_for(fake, url))
    refused = _serve(tmp_path)
    assert refused.returncode == 2
    assert "database: cannot connect" in refused.stderr
    assert "hunter2secret" not in refused.stderr


def test_the_default_database_is_created_in_the_working_directory(
    fake: FakeUpstream, tmp_path: Path, start_gateway: Any
) -> None:
    """No `database:`: `serve` creates ./tidegate.db and serves; with no managed key and no
    static key, the gateway stays open as before."""
    config = config_for(fake, "unused")
    del config["database"]
    config["auth"] = {}
    gw: GatewayProcess = start_gateway(config, env=ENV)
    assert (tmp_path / "tidegate.db").exists()
    assert chat(gw, "").status_code == 200


def test_database_off_serves_without_a_database(
    fake: FakeUpstream, tmp_path: Path, start_gateway: Any
) -> None:
    """`database: off`: no file is created, static keys work, the admin API has no usage, and
    the database commands say why they cannot run."""
    config = config_for(fake, "off")
    config["auth"] = {"api_keys": ["sk-static-key-0001"], "admin_keys": [ADMIN_KEY]}
    gw: GatewayProcess = start_gateway(config, env=ENV)
    assert chat(gw, "sk-static-key-0001").status_code == 200
    assert chat(gw, "sk-unknown-key-0002").status_code == 401
    assert admin(gw, "GET", "/admin/usage?by=key").status_code == 404
    assert not list(tmp_path.glob("*.db"))
    write_config(tmp_path, config)
    for command in (["usage"], ["keys", "list"], ["db", "upgrade"]):
        done = cli(tmp_path, *command)
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert "database: off" in done.stderr
