"""The text-to-SQL example (examples/text_to_sql/), end to end on the demo model, and the
read-only query step it is built on.

Invariants: the example runs as shipped (question → SQL → rows → table → analysis) and its
table is the real answer of the database; generated SQL can only read (writes, ATTACH, PRAGMA
and several statements are refused, the file is never changed); a query is cut at its time
limit and its row limit.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import yaml

from tests.conftest import GatewayProcess, parse_sse
from tidegate.workflows.sqlite import QueryRefused, extract_sql, markdown_table, query

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "text_to_sql"


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("shop") / "shop.db"
    done = subprocess.run(
        [sys.executable, str(EXAMPLE / "create_db.py"), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return path


@pytest.fixture(scope="module")
def gw(database: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    config = yaml.safe_load((EXAMPLE / "config.yaml").read_text())
    for workflow in config["workflows"]:
        for step in workflow["steps"]:
            if step.get("args", {}).get("database"):
                step["args"]["database"] = str(database)
    process = GatewayProcess(config, tmp_path_factory.mktemp("text-to-sql"))
    yield process
    process.stop()


def test_the_example_answers_from_the_database_on_the_demo_model(
    gw: GatewayProcess, database: Path
) -> None:
    question = "What is the revenue per product category?"
    response = httpx.post(
        f"{gw.url}/v1/workflows/text-to-sql", json={"input": question}, timeout=60
    )
    events = [(e["event"], json.loads(e["data"])) for e in parse_sse(response.text)]
    assert [d["name"] for n, d in events if n == "step_end"] == ["sql", "rows", "table", "analysis"]
    assert events[-1][0] == "final_end" and events[-1][1]["status"] == "completed"
    text: dict[str, str] = {}
    for name, data in events:
        if name == "chunk":
            text[data["step"]] = text.get(data["step"], "") + data["content"]
    sql = extract_sql(text["sql"])
    expected = sqlite3.connect(database).execute(sql).fetchall()
    assert [tuple(row) for row in json.loads(text["rows"])["rows"]] == expected
    table_rows = text["table"].strip().splitlines()[2:]
    assert [r.split("|")[1].strip() for r in table_rows] == [row[0] for row in expected]
    assert "[tidegate demo]" in text["analysis"]


def test_the_seed_front_end_runs_the_example(gw: GatewayProcess) -> None:
    response = httpx.post(
        f"{gw.url}/workflow/query", json={"message": "How many customers per city?"}, timeout=60
    )
    assert response.text.endswith('data: "[DONE]"\n\n')
    assert response.text.count('{"type":"step_start"}') == 4
    assert '"| city | customers |' in response.text


def write_db(path: Path) -> Path:
    db = sqlite3.connect(path)
    with db:
        db.execute("CREATE TABLE t (n INTEGER)")
        db.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(500)])
    db.close()
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM t",
        "INSERT INTO t VALUES (1)",
        "UPDATE t SET n = 0",
        "DROP TABLE t",
        "CREATE TABLE u (x)",
        "ATTACH DATABASE 'other.db' AS other",
        "PRAGMA journal_mode = WAL",
        "SELECT 1; DELETE FROM t",
        "WITH x AS (SELECT 1) DELETE FROM t",
    ],
)
def test_generated_sql_can_never_write(tmp_path: Path, sql: str) -> None:
    path = write_db(tmp_path / "db.sqlite")
    before = digest(path)
    with pytest.raises((QueryRefused, sqlite3.Error)):
        query("q", {"sql": f"```sql\n{sql}\n```"}, database=str(path))
    assert digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db.sqlite"]


def test_rows_are_limited_and_the_cut_is_said(tmp_path: Path) -> None:
    path = write_db(tmp_path / "db.sqlite")
    result = json.loads(query("q", {"sql": "SELECT n FROM t"}, database=str(path), max_rows=10))
    assert result["rows"] == [[i] for i in range(10)] and result["truncated"] is True
    table = markdown_table("q", {"rows": json.dumps(result)})
    assert table.splitlines()[:3] == ["| n |", "|---|", "| 0 |"]
    assert "only the first 10 rows" in table


def test_a_query_is_interrupted_at_its_time_limit(tmp_path: Path) -> None:
    path = write_db(tmp_path / "db.sqlite")
    endless = (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    )
    with pytest.raises(TimeoutError, match=r"longer than 0\.2s"):
        query("q", {"sql": endless}, database=str(path), timeout=0.2)


def test_sql_is_taken_from_a_fenced_block_or_the_text() -> None:
    assert extract_sql("Here:\n```sql\nSELECT 1;\n```\nDone.") == "SELECT 1"
    assert extract_sql("SELECT ';' AS semicolon") == "SELECT ';' AS semicolon"
    with pytest.raises(QueryRefused):
        extract_sql("")
