"""The benchmark scripts run (with tiny loads); their figures come from running them for real."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "scenario", ["nonstream", "stream", "translation", "memory", "concurrent", "described"]
)
def test_bench_scenario_runs(scenario: str) -> None:
    result = subprocess.run(
        [sys.executable, "bench/run.py", scenario, "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [
        line
        for line in result.stdout.splitlines()
        if line.startswith("| tidegate") or "pass-through" in line or "described SSE" in line
    ]
    assert rows, result.stdout
