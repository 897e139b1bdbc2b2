"""Workflow step functions for questions over a SQLite database (the text-to-SQL example).

`query` runs the SQL an earlier step wrote, on a database opened **read-only** (the file is
opened with `mode=ro` and `PRAGMA query_only`), so that generated SQL can never write; one
statement, at most `max_rows` rows, at most `timeout` seconds (SQLite is interrupted, so the
worker thread stops too). `markdown_table` turns its result into a table for the next step.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

_FENCE = re.compile(r"```[A-Za-z]*\s*\n(.*?)```", re.DOTALL)


class QueryRefused(ValueError):
    """The SQL is not one read-only statement the step may run."""


def extract_sql(text: str) -> str:
    """The SQL in a model's answer: the first fenced block if there is one, else the text;
    exactly one statement (a trailing `;` allowed)."""
    found = _FENCE.search(text)
    sql = (found.group(1) if found else text).strip().rstrip(";").strip()
    if not sql:
        raise QueryRefused("the SQL step produced no query")
    if not sqlite3.complete_statement(sql + ";") or ";" in _without_strings(sql):
        raise QueryRefused("the query must be exactly one SQL statement")
    return sql


def _without_strings(sql: str) -> str:
    return re.sub(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"", "", sql)


_READS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION}
_READS.add(getattr(sqlite3, "SQLITE_RECURSIVE", 33))


def _only_reads(action: int, *_: object) -> int:
    """SQLite's authorizer: reading is all a generated query may do (no ATTACH, no PRAGMA)."""
    return sqlite3.SQLITE_OK if action in _READS else sqlite3.SQLITE_DENY


def query(
    question: str,
    outputs: dict[str, str],
    *,
    database: str,
    sql_step: str = "sql",
    max_rows: int = 200,
    timeout: float = 5.0,
) -> str:
    """Run the SQL of step `sql_step` on `database`, read-only; the result as JSON text:
    `{"sql", "columns", "rows", "truncated"}`."""
    sql = extract_sql(outputs.get(sql_step, ""))
    path = Path(database)
    if not path.is_file():
        raise FileNotFoundError(f"no database at {database!r}")
    deadline = time.monotonic() + timeout
    connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        connection.execute("PRAGMA query_only = ON")
        connection.set_authorizer(_only_reads)
        connection.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
        try:
            cursor = connection.execute(sql)
            rows = cursor.fetchmany(max_rows + 1)
        except sqlite3.OperationalError as exc:
            if str(exc) == "interrupted":
                raise TimeoutError(f"the query ran longer than {timeout:g}s") from None
            raise
        except sqlite3.DatabaseError as exc:
            if "not authorized" in str(exc):
                raise QueryRefused("the query may only read (SELECT)") from None
            raise
        columns = [d[0] for d in cursor.description or ()]
    finally:
        connection.close()
    result: dict[str, Any] = {
        "sql": sql,
        "columns": columns,
        "rows": [list(r) for r in rows[:max_rows]],
        "truncated": len(rows) > max_rows,
    }
    return json.dumps(result, ensure_ascii=False, default=str)


def markdown_table(question: str, outputs: dict[str, str], *, rows_step: str = "rows") -> str:
    """The result of a `query` step as a markdown table (and a note when it was cut)."""
    result = json.loads(outputs[rows_step])
    columns: list[str] = result["columns"]
    if not columns:
        return "(the query returned no columns)"

    def cell(value: object) -> str:
        return ("" if value is None else str(value)).replace("|", "\\|").replace("\n", " ")

    lines = [
        "| " + " | ".join(cell(c) for c in columns) + " |",
        "|" + "---|" * len(columns),
    ]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in result["rows"]]
    if not result["rows"]:
        lines.append("| " + " | ".join("" for _ in columns) + " |")
    if result["truncated"]:
        lines.append(f"\n(only the first {len(result['rows'])} rows)")
    return "\n".join(lines) + "\n"
