"""Benchmark plumbing: start the fake upstream and the gateway, generate load, measure CPU.

Everything runs on 127.0.0.1. The load generator is an asyncio client bounded by a request
count and a time limit. Gateway CPU comes from the gateway process's own user+system time over
the measured window (psutil), so a slow upstream or load generator does not blur it.
"""

from __future__ import annotations

import asyncio
import os
import queue
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psutil
import yaml

from tidegate.providers import provider_names

ROOT = Path(__file__).resolve().parent.parent
MESSAGES = [{"role": "user", "content": "Benchmark prompt: say something."}]
#: Seed 001's chat step (its mapping, `chunk_match` and `chunk_filter`) without the token
#: exchange, which the bench upstream does not have: a described SSE provider.
DESCRIBED_SSE: dict[str, Any] = {
    "name": "described-sse",
    "chat": {
        "url": "https://api.openai.com/v1/chat/completions",
        "method": "POST",
        "headers": [
            {"name": "Authorization", "value": "Bearer ${api_key}"},
            {"name": "Content-Type", "value": "application/json"},
        ],
        "data": [
            {"name": "model", "value": "${model}"},
            {"name": "messages", "value": "${messages}"},
            {"name": "stream", "value": "${stream}"},
        ],
        "resp": [
            {"name": "text", "value": "choices.0.delta.content"},
            {"name": "done", "value": "choices.0.finish_reason"},
        ],
        "chunk_match": "data: (.*)",
        "chunk_filter": {
            "name": "choices.0.delta.role",
            "value": "system",
            "op": "!=",
            "field": "text",
        },
    },
}


class Proc:
    """A child process that prints a line telling its port."""

    def __init__(self, cmd: Sequence[str], pattern: str, env: dict[str, str] | None = None):
        self.popen = subprocess.Popen(
            list(cmd),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **(env or {})},
            cwd=ROOT,
        )
        self.lines: queue.SimpleQueue[str] = queue.SimpleQueue()
        threading.Thread(target=self._consume, daemon=True).start()
        regex = re.compile(pattern)
        self.port = 0
        deadline = time.monotonic() + 30
        while not self.port and time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                continue
            match = regex.search(line)
            if match:
                self.port = int(match.group(1))
        if not self.port:
            self.stop()
            raise RuntimeError(f"{' '.join(cmd[:4])} did not start")
        self.ps = psutil.Process(self.popen.pid)

    def _consume(self) -> None:
        # Keep draining output so the child never blocks on a full pipe.
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            if not self.port:
                self.lines.put(line)

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process and its children (workers)."""
        total = 0.0
        for proc in [self.ps, *self.ps.children(recursive=True)]:
            try:
                t = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += t.user + t.system
        return total

    def rss_bytes(self) -> int:
        """Resident memory of the process and its children."""
        total = 0
        for proc in [self.ps, *self.ps.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        if self.popen.stdout is not None:
            self.popen.stdout.close()


def start_upstream() -> Proc:
    return Proc(
        [sys.executable, str(ROOT / "bench" / "upstream.py"), "--port", "0"], r"listening on (\d+)"
    )


def start_gateway(
    upstream_port: int,
    shapes: Sequence[tuple[int, int]],
    *,
    workers: int = 1,
    extra_args: Sequence[str] = (),
    http_client: str = "builtin",
    extra_config: dict[str, Any] | None = None,
) -> Proc:
    """tidegate with a pass-through model `oa-c<N>-d<D>`, an Anthropic-format `an-c<N>-d<D>`
    and a described one `ds-c<N>-d<D>` (seed 001's chat mapping, `DESCRIBED_SSE`, over the
    same OpenAI-format stream) for each (chunks, delay_ms) shape; `http_client` is its
    `http.client` (aiohttp or builtin); `extra_config` is merged into its config."""
    models = []
    for chunks, delay in shapes:
        base = f"http://127.0.0.1:{upstream_port}/c{chunks}/d{delay}"
        models.append(
            {
                "name": f"oa-c{chunks}-d{delay}",
                "provider": "openai",
                "base_url": base + "/v1",
                "api_key": "bench-key",
            }
        )
        models.append(
            {
                "name": f"ds-c{chunks}-d{delay}",
                "provider": DESCRIBED_SSE["name"],
                "base_url": base,
                "api_key": "bench-key",
            }
        )
        if "anthropic" in provider_names():
            models.append(
                {
                    "name": f"an-c{chunks}-d{delay}",
                    "provider": "anthropic",
                    "base_url": base,
                    "api_key": "bench-key",
                }
            )
    config = {
        "models": models,
        "providers": [DESCRIBED_SSE],
        "http": {"pool_size": 2048, "client": http_client},
        **(extra_config or {}),
    }
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        yaml.safe_dump(config, handle)
    cmd = [
        sys.executable,
        "-m",
        "tidegate",
        "serve",
        "--config",
        handle.name,
        "--port",
        "0",
        "--log-level",
        "info",
        "--workers",
        str(workers),
        *extra_args,
    ]
    return Proc(cmd, r"listening on http://\S+:(\d+)")


@dataclass
class Sample:
    """One request's timings (seconds)."""

    ttfb: float
    latency: float
    chunks: int = 0
    gaps: list[float] = field(default_factory=list)
    ok: bool = True


async def one_request(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    stream: bool,
    headers: dict[str, str] | None = None,
) -> Sample:
    start = time.perf_counter()
    sent = {"Content-Type": "application/json", **(headers or {})}
    async with session.post(url, data=body, headers=sent) as resp:
        if not stream:
            await resp.read()
            now = time.perf_counter()
            return Sample(now - start, now - start, ok=resp.status == 200)
        ttfb = 0.0
        last = 0.0
        chunks = 0
        gaps: list[float] = []
        async for chunk in resp.content.iter_any():
            now = time.perf_counter()
            if not ttfb:
                ttfb = now - start
            else:
                gaps.append(now - last)
            last = now
            chunks += chunk.count(b"data: ")
        return Sample(ttfb, time.perf_counter() - start, chunks, gaps, ok=resp.status == 200)


async def load(
    url: str,
    payload: dict[str, Any],
    *,
    concurrency: int,
    total: int,
    seconds: float = 60.0,
    headers: dict[str, str] | None = None,
) -> list[Sample]:
    """`total` requests, `concurrency` at a time, stopping early after `seconds`."""
    body = orjson.dumps(payload)
    stream = bool(payload.get("stream"))
    connector = aiohttp.TCPConnector(limit=concurrency + 8, limit_per_host=0)
    samples: list[Sample] = []
    deadline = time.monotonic() + seconds
    remaining = total
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=120)
    ) as s:

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0 and time.monotonic() < deadline:
                remaining -= 1
                try:
                    samples.append(await one_request(s, url, body, stream, headers))
                except aiohttp.ClientError:
                    samples.append(Sample(0, 0, ok=False))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return samples


def pct(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(c) for c in header]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [f"\n## {title}\n"]
    lines.append(
        "| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths, strict=True)) + " |"
    )
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells[1:]:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != value:
            return "-"
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)
