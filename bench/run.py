"""tidegate benchmarks: each scenario measures the gateway against the upstream directly.

    python bench/run.py nonstream     # small requests, concurrency 1 and 32
    python bench/run.py stream        # 50-chunk streams at concurrency 32
    python bench/run.py translation   # OpenAI client → Anthropic upstream, beside pass-through
    python bench/run.py all

Figures are printed as Markdown tables; docs/performance.md explains them. Keep the machine
otherwise idle; compare ratios within one run rather than absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    MESSAGES,
    Proc,
    Sample,
    load,
    median,
    pct,
    start_gateway,
    start_upstream,
    table,
)

SHAPES = [(1, 0), (50, 0), (20, 50), (2000, 100)]


class Bench:
    """One upstream and one gateway shared by the scenarios of a run."""

    def __init__(self, workers: int = 1):
        self.upstream = start_upstream()
        self.gateway = start_gateway(self.upstream.port, SHAPES, workers=workers)

    def direct_url(self, chunks: int, delay: int) -> str:
        return f"http://127.0.0.1:{self.upstream.port}/c{chunks}/d{delay}/v1/chat/completions"

    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway.port}/v1/chat/completions"

    def close(self) -> None:
        self.gateway.stop()
        self.upstream.stop()


def measure(proc: Proc, run: Callable[[], list[Sample]]) -> tuple[list[Sample], float, float]:
    """Run, returning samples, wall seconds and the process's CPU seconds over the run."""
    cpu0, t0 = proc.cpu_seconds(), time.perf_counter()
    samples = run()
    return samples, time.perf_counter() - t0, proc.cpu_seconds() - cpu0


def go(url: str, payload: dict[str, object], concurrency: int, total: int) -> list[Sample]:
    return asyncio.run(load(url, payload, concurrency=concurrency, total=total))


def runner(
    url: str, payload: dict[str, object], concurrency: int, total: int
) -> Callable[[], list[Sample]]:
    return lambda: go(url, payload, concurrency, total)


def nonstream(b: Bench) -> str:
    rows = []
    for concurrency, total in ((1, 1500), (32, 6000)):
        direct_body = {"model": "bench", "messages": MESSAGES}
        via_body = {"model": "oa-c1-d0", "messages": MESSAGES}
        go(b.direct_url(1, 0), direct_body, concurrency, 300)  # warm-up
        go(b.gateway_url(), via_body, concurrency, 300)
        direct, d_wall, _ = measure(
            b.upstream, runner(b.direct_url(1, 0), direct_body, concurrency, total)
        )
        via, v_wall, cpu = measure(b.gateway, runner(b.gateway_url(), via_body, concurrency, total))
        d_lat = [s.latency for s in direct if s.ok]
        v_lat = [s.latency for s in via if s.ok]
        rows.append(
            [
                "direct",
                concurrency,
                len(d_lat),
                len(d_lat) / d_wall,
                median(d_lat) * 1e3,
                pct(d_lat, 99) * 1e3,
                "",
                "",
            ]
        )
        rows.append(
            [
                "tidegate",
                concurrency,
                len(v_lat),
                len(v_lat) / v_wall,
                median(v_lat) * 1e3,
                pct(v_lat, 99) * 1e3,
                (median(v_lat) - median(d_lat)) * 1e3,
                cpu / max(1, len(via)) * 1e3,
            ]
        )
    return table(
        "Non-streaming small requests",
        ["target", "conc", "ok", "req/s", "p50 ms", "p99 ms", "added p50 ms", "gw CPU ms/req"],
        rows,
    )


def stream(b: Bench) -> str:
    concurrency, total = 32, 600
    direct_body = {"model": "bench", "messages": MESSAGES, "stream": True}
    via_body = {"model": "oa-c50-d0", "messages": MESSAGES, "stream": True}
    go(b.direct_url(50, 0), direct_body, concurrency, 100)
    go(b.gateway_url(), via_body, concurrency, 100)
    direct, d_wall, _ = measure(
        b.upstream, runner(b.direct_url(50, 0), direct_body, concurrency, total)
    )
    via, v_wall, cpu = measure(b.gateway, runner(b.gateway_url(), via_body, concurrency, total))
    rows = []
    for name, samples, wall in (("direct", direct, d_wall), ("tidegate", via, v_wall)):
        ttfb = [s.ttfb for s in samples if s.ok]
        chunks = sum(s.chunks for s in samples)
        rows.append([name, len(ttfb), median(ttfb) * 1e3, pct(ttfb, 99) * 1e3, chunks / wall])
    d_ttfb = median([s.ttfb for s in direct if s.ok])
    v_ttfb = median([s.ttfb for s in via if s.ok])
    # CPU per upstream text chunk (50 per stream), the same unit as the translation scenario.
    rows[1] += [(v_ttfb - d_ttfb) * 1e3, cpu / max(1, len(via) * 50) * 1e6]
    rows[0] += ["", ""]
    return table(
        f"Streaming 50-chunk responses, concurrency {concurrency}",
        [
            "target",
            "streams",
            "TTFB p50 ms",
            "TTFB p99 ms",
            "chunks/s",
            "added TTFB p50 ms",
            "gw CPU µs/chunk",
        ],
        rows,
    )


def translation(b: Bench) -> str:
    """An OpenAI client against an Anthropic-format upstream, beside OpenAI pass-through."""
    concurrency, total, chunks = 32, 600, 50
    rows = []
    for label, model in (
        ("pass-through (OpenAI → OpenAI)", "oa-c50-d0"),
        ("translation (OpenAI → Anthropic)", "an-c50-d0"),
    ):
        body = {"model": model, "messages": MESSAGES, "stream": True}
        go(b.gateway_url(), body, concurrency, 100)
        samples, wall, cpu = measure(b.gateway, runner(b.gateway_url(), body, concurrency, total))
        ok = [s for s in samples if s.ok]
        ttfb = [s.ttfb for s in ok]
        rows.append(
            [
                label,
                len(ok),
                median(ttfb) * 1e3,
                len(ok) * chunks / wall,
                cpu / max(1, len(ok) * chunks) * 1e6,
            ]
        )
    rows[1].append(rows[1][-1] / rows[0][-1])
    rows[0].append(1.0)
    return table(
        f"Translation vs pass-through, {chunks}-chunk streams, concurrency {concurrency}",
        ["path", "streams", "TTFB p50 ms", "upstream chunks/s", "gw CPU µs/chunk", "CPU ratio"],
        rows,
    )


SCENARIOS: dict[str, Callable[[Bench], str]] = {
    "nonstream": nonstream,
    "stream": stream,
    "translation": translation,
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("scenario", choices=[*SCENARIOS, "all"])
    args = parser.parse_args()
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    bench = Bench()
    try:
        for name in names:
            print(SCENARIOS[name](bench), flush=True)
    finally:
        bench.close()


if __name__ == "__main__":
    main()
