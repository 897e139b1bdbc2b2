"""Limits per client key through real `tidegate serve` processes: the official openai SDK sees a
`RateLimitError` naming the limit; with `state: redis://...` two gateway processes enforce one
rpm and one max_streams together (Redis db from TIDEGATE_TEST_REDIS_URL; every run uses a new
client key, so its counters have their own prefix, deleted afterwards)."""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2 as httpx
import openai
import pytest
import redis

from tests.conftest import TEST_TIMEOUTS, GatewayProcess, closed_after_test
from tests.fake_upstream import API_KEY, FakeUpstream
from tidegate.auth import key_id

REDIS_URL = os.environ.get("TIDEGATE_TEST_REDIS_URL")
needs_redis = pytest.mark.skipif(
    REDIS_URL is None, reason="set TIDEGATE_TEST_REDIS_URL to run the two-instance tests on Redis"
)
MESSAGES: list[Any] = [{"role": "user", "content": "Say hello"}]


def config(fake: FakeUpstream, key: str, state: str = "memory", **policy: Any) -> dict[str, Any]:
    common = {"provider": "openai", "api_key": API_KEY, "timeouts": TEST_TIMEOUTS}
    return {
        "models": [
            {"name": "ok", "base_url": fake.base("ok") + "/v1", **common},
            {"name": "slow", "base_url": fake.base("slow_stream") + "/v1", **common},
        ],
        "auth": {"api_keys": [{"key": key, "name": "e2e", **policy}]},
        "routing": {"cooldown": {"enabled": False}},
        "state": state,
    }


@pytest.fixture
def client_key() -> Iterator[str]:
    """A new client key per test (its counters' prefix is new), its Redis keys deleted after."""
    key = "tg-limits-" + secrets.token_hex(12)
    yield key
    if REDIS_URL is not None:
        r = redis.Redis.from_url(REDIS_URL)
        try:
            found = list(r.scan_iter(f"tidegate:*{key_id(key.encode())}*", count=1000))
            if found:
                r.delete(*found)
        finally:
            r.close()


def test_the_openai_sdk_sees_a_rate_limit_error_naming_the_limit(
    fake: FakeUpstream, tmp_path: Path, client_key: str
) -> None:
    gw = GatewayProcess(config(fake, client_key, rpm=2), tmp_path)
    client = closed_after_test(
        openai.OpenAI(base_url=f"{gw.url}/v1", api_key=client_key, max_retries=0)
    )
    try:
        for _ in range(2):
            client.chat.completions.create(model="ok", messages=MESSAGES)
        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(model="ok", messages=MESSAGES, stream=True)
        assert "key 'e2e' is over its limit of 2 requests per minute" in str(refused.value)
        assert int(refused.value.response.headers["retry-after"]) >= 1
        request_id = refused.value.response.headers["x-request-id"]
        record = gw.record_for(request_id)
        assert (record["status"], record["error"], record["key"]) == (429, "rate_limited", "e2e")
    finally:
        client.close()
        gw.stop()
    assert client_key not in gw.output()


def test_a_model_outside_the_list_is_refused_by_name(
    fake: FakeUpstream, tmp_path: Path, client_key: str
) -> None:
    gw = GatewayProcess(config(fake, client_key, models=["ok"]), tmp_path)
    client = closed_after_test(
        openai.OpenAI(base_url=f"{gw.url}/v1", api_key=client_key, max_retries=0)
    )
    try:
        with pytest.raises(openai.PermissionDeniedError) as refused:
            client.chat.completions.create(model="slow", messages=MESSAGES)
        assert "may not use model 'slow'" in str(refused.value)
        client.chat.completions.create(model="ok", messages=MESSAGES)
    finally:
        client.close()
        gw.stop()


def _two(
    fake: FakeUpstream, tmp_path: Path, key: str, **policy: Any
) -> tuple[GatewayProcess, GatewayProcess]:
    assert REDIS_URL is not None
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = GatewayProcess(config(fake, key, REDIS_URL, **policy), tmp_path / "a")
    try:
        second = GatewayProcess(config(fake, key, REDIS_URL, **policy), tmp_path / "b")
    except BaseException:
        first.stop()
        raise
    return first, second


@pytest.mark.redis
@needs_redis
def test_two_instances_on_redis_admit_exactly_rpm_requests_in_all(
    fake: FakeUpstream, tmp_path: Path, client_key: str
) -> None:
    rpm = 10
    first, second = _two(fake, tmp_path, client_key, rpm=rpm)
    try:
        urls = [first.url, second.url] * 15
        body = {"model": "ok", "messages": MESSAGES}
        headers = {"Authorization": f"Bearer {client_key}"}
        start = threading.Barrier(len(urls))

        def post(url: str) -> int:
            start.wait(10)
            return httpx.post(
                f"{url}/v1/chat/completions", json=body, headers=headers, timeout=30
            ).status_code

        with ThreadPoolExecutor(len(urls)) as pool:
            statuses = list(pool.map(post, urls))
        assert statuses.count(200) == rpm, statuses
        assert statuses.count(429) == len(urls) - rpm, statuses
    finally:
        first.stop()
        second.stop()


@pytest.mark.redis
@needs_redis
def test_two_instances_on_redis_hold_max_streams_together(
    fake: FakeUpstream, tmp_path: Path, client_key: str
) -> None:
    first, second = _two(fake, tmp_path, client_key, max_streams=2)
    headers = {"Authorization": f"Bearer {client_key}"}
    body = {"model": "slow", "messages": MESSAGES, "stream": True}
    try:
        with (
            httpx.stream(
                "POST", f"{first.url}/v1/chat/completions", json=body, headers=headers, timeout=30
            ) as a,
            httpx.stream(
                "POST", f"{second.url}/v1/chat/completions", json=body, headers=headers, timeout=30
            ) as b,
        ):
            assert (a.status_code, b.status_code) == (200, 200)
            for url in (first.url, second.url):
                refused = httpx.post(
                    f"{url}/v1/chat/completions", json=body, headers=headers, timeout=30
                )
                assert refused.status_code == 429
                assert "at its limit of 2 concurrent stream(s)" in refused.text
                assert refused.headers["retry-after"] == "1"
        # both clients left: their slots are released (not at the first byte, at the end)
        deadline = time.monotonic() + 10
        while True:
            with httpx.stream(
                "POST", f"{second.url}/v1/chat/completions", json=body, headers=headers, timeout=30
            ) as again:
                if again.status_code == 200:
                    break
            assert time.monotonic() < deadline, "the slots were not released"
            time.sleep(0.1)
    finally:
        first.stop()
        second.stop()
