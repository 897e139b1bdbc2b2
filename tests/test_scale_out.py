"""Scale-out for real: two gateway processes behind nginx (the sample `deploy/nginx.conf`),
sharing one PostgreSQL database and one Redis — and the same checks on the embedded defaults,
one process on SQLite with in-memory state.

Invariants, on both topologies:
- a key with an rpm of N gets exactly N requests through in total, however they are spread
  over the instances (±1%); the rest are 429 with Retry-After and a message naming the limit;
- a key's budget is never overspent by more than one request's cost;
- the ledger holds every request exactly once (by request id), from every instance;
- SIGKILL on an instance in the middle of a stream: the other instance keeps serving behind
  nginx, and once the reaper runs the killed request's row is `interrupted`, never `pending`.

The scaled topology needs TIDEGATE_TEST_POSTGRES_URL, TIDEGATE_TEST_REDIS_URL and Debian's
nginx; without them it skips, saying which is missing. It creates a database of its own on
that server (dropped at the end) and applies the schema with `tidegate db upgrade`.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx2 as httpx
import pytest
import yaml
from sqlalchemy import text

from bench.tenancy import postgres_database
from tests.conftest import GatewayProcess, eventually, stream_in_background, tidegate_cli
from tests.nginx import NGINX, Nginx
from tidegate.store.engine import create_engine

POSTGRES = os.environ.get("TIDEGATE_TEST_POSTGRES_URL")
REDIS = os.environ.get("TIDEGATE_TEST_REDIS_URL")
ADMIN_KEY = "tg-admin-scale-" + secrets.token_hex(6)
RUN = secrets.token_hex(4)  # fresh keys each run: fresh limit counters in a shared Redis
KEYS = {name: f"sk-scale-{name}-{RUN}" for name in ("rpm", "budget", "ledger", "kill")}
RPM = 100
BUDGET = 0.5
#: Per million tokens: the demo answer (2 tokens in, 53 out) costs about $0.055.
PRICE = {"input": 1000.0, "output": 1000.0}


def _config(database: str, state: str) -> dict[str, Any]:
    return {
        "models": [
            {"name": "demo", "provider": "demo", "pace": 0},
            {"name": "slow", "provider": "demo", "pace": 0.3},
        ],
        "auth": {
            "api_keys": [
                {"key": KEYS["rpm"], "name": "rpm", "rpm": RPM},
                {"key": KEYS["budget"], "name": "budget", "budget": BUDGET, "period": "day"},
                {"key": KEYS["ledger"], "name": "ledger"},
                {"key": KEYS["kill"], "name": "kill"},
            ],
            "admin_keys": [ADMIN_KEY],
        },
        "prices": {"demo": PRICE, "slow": PRICE},
        "database": database,
        "state": state,
        "ledger": {
            "flush_seconds": 0.1,
            "heartbeat_seconds": 0.5,
            "stale_seconds": 2,
            "reap_seconds": 0.5,
        },
    }


@dataclass
class Topology:
    """The gateway as its clients see it (`front`), the instances behind it, its database."""

    name: str
    front: str
    database: str
    config: dict[str, Any]
    workdir: Path
    instances: list[GatewayProcess] = field(default_factory=list)

    def rows(self, where: str = "1=1", **params: Any) -> list[dict[str, Any]]:
        """Ledger rows, read straight from the database."""

        async def query() -> list[dict[str, Any]]:
            engine = create_engine(self.database)
            try:
                async with engine.connect() as conn:
                    result = await conn.execute(text(f"SELECT * FROM usage WHERE {where}"), params)
                    return [dict(row) for row in result.mappings()]
            finally:
                await engine.dispose()

        return asyncio.run(query())

    def start_instance(self) -> GatewayProcess:
        """One more gateway process on the topology's config."""
        workdir = self.workdir / f"instance-{len(self.instances)}"
        workdir.mkdir()
        process = GatewayProcess(self.config, workdir)
        self.instances.append(process)
        return process


def _postgres_database(name: str, action: str) -> str:
    """Create or drop the database `name` on the test server; returns its URL."""
    assert POSTGRES is not None
    return postgres_database(POSTGRES, name, action)


def _single(workdir: Path) -> Iterator[Topology]:
    config = _config(f"sqlite:///{workdir / 'tidegate.db'}", "memory")
    topology = Topology("single", "", config["database"], config, workdir)
    try:
        topology.front = topology.start_instance().url
        yield topology
    finally:
        for process in topology.instances:
            process.stop()


def _scaled(workdir: Path) -> Iterator[Topology]:
    missing = [
        what
        for what, present in (
            ("TIDEGATE_TEST_POSTGRES_URL", POSTGRES),
            ("TIDEGATE_TEST_REDIS_URL", REDIS),
            ("nginx (apt-get install nginx)", NGINX is not None),
        )
        if not present
    ]
    if missing:
        pytest.skip("the scale-out topology needs " + ", ".join(missing))
    assert REDIS is not None
    name = f"tidegate_scale_{RUN}"
    database = _postgres_database(name, "create")
    config = _config(database, REDIS)
    (workdir / "tidegate.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    upgraded = tidegate_cli(workdir, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    topology = Topology("scaled", "", database, config, workdir)
    nginx: Nginx | None = None
    try:
        ports = [urlsplit(topology.start_instance().url).port for _ in range(2)]
        nginx = Nginx([p for p in ports if p is not None], workdir / "nginx")
        topology.front = nginx.url
        yield topology
    finally:
        if nginx is not None:
            nginx.stop()
        for process in topology.instances:
            process.stop()
        _postgres_database(name, "drop")


@pytest.fixture(scope="module", params=["single", "scaled"])
def topology(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Topology]:
    workdir = tmp_path_factory.mktemp(f"scale-{request.param}")
    yield from (_single if request.param == "single" else _scaled)(workdir)


def _chat(front: str, key: str, model: str = "demo", stream: bool = False) -> httpx.Response:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        body["stream"] = True
    return httpx.post(
        front + "/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


def test_an_rpm_limit_holds_across_instances(topology: Topology) -> None:
    sent = int(RPM * 1.5)
    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda _: _chat(topology.front, KEYS["rpm"]), range(sent)))
    statuses = [r.status_code for r in responses]
    admitted = statuses.count(200)
    assert statuses.count(429) == sent - admitted, set(statuses)
    assert abs(admitted - RPM) <= RPM // 100, admitted
    refused = next(r for r in responses if r.status_code == 429)
    assert int(refused.headers["retry-after"]) >= 1
    assert f"{RPM} requests per minute" in refused.json()["error"]["message"]
    assert KEYS["rpm"] not in refused.text
    # Both instances served some of them (nginx spread the load).
    if topology.name == "scaled":
        served = {r["instance_id"] for r in topology.rows("key_name = 'rpm'")}
        assert len(served) == 2


def test_a_budget_is_never_overspent_by_more_than_one_request(topology: Topology) -> None:
    sent = 0
    for _ in range(40):
        response = _chat(topology.front, KEYS["budget"])
        sent += 1
        if response.status_code == 429:
            assert "budget of 0.50 per day" in response.json()["error"]["message"]
            break
        assert response.status_code == 200, response.text
    else:
        pytest.fail("the budget never ran out")

    def settled() -> bool:
        rows = topology.rows("key_name = 'budget'")
        return len(rows) == sent and all(r["status"] != "pending" for r in rows)

    eventually(settled, 10)
    costs = [r["cost"] for r in topology.rows("key_name = 'budget'")]
    assert max(costs) > 0
    assert BUDGET <= sum(costs) <= BUDGET + max(costs)


def test_the_ledger_holds_every_request_exactly_once(topology: Topology) -> None:
    def one(i: int) -> str:
        response = _chat(topology.front, KEYS["ledger"], stream=i % 2 == 0)
        assert response.status_code == 200
        return response.headers["x-request-id"]

    with ThreadPoolExecutor(8) as pool:
        sent = list(pool.map(one, range(60)))
    assert len(set(sent)) == len(sent)

    def all_written() -> bool:
        rows = topology.rows("key_name = 'ledger'")
        return len(rows) >= len(sent) and all(r["status"] == "ok" for r in rows)

    eventually(all_written, 15)
    rows = topology.rows("key_name = 'ledger'")
    assert sorted(r["request_id"] for r in rows) == sorted(sent)
    assert all(r["output_tokens"] > 0 and r["cost"] > 0 for r in rows)
    if topology.name == "scaled":
        assert len({r["instance_id"] for r in rows}) == 2


def test_a_killed_instance_leaves_interrupted_rows_and_the_rest_keeps_serving(
    topology: Topology,
) -> None:
    victim = topology.instances[0]
    body = {"model": "slow", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    reader = stream_in_background(victim.url + "/v1/chat/completions", body, KEYS["kill"])
    eventually(lambda: [r["status"] for r in topology.rows("key_name = 'kill'")] == ["pending"], 5)
    victim.proc.kill()
    victim.proc.wait(5)
    reader.join(10)

    if topology.name == "single":
        topology.front = topology.start_instance().url  # a restart on the same database
    for _ in range(10):  # nginx sends these to the survivor
        assert _chat(topology.front, KEYS["ledger"]).status_code == 200

    def interrupted() -> bool:
        return [r["status"] for r in topology.rows("key_name = 'kill'")] == ["interrupted"]

    eventually(interrupted, 15)
    [row] = topology.rows("key_name = 'kill'")
    assert row["ended_at"] is not None and row["model"] == "slow"
