"""tidegate benchmarks: each scenario measures the gateway beside baselines in the same run.

    python bench/run.py nonstream     # small requests at concurrency 1 and 32
    python bench/run.py stream        # 50-chunk streams at concurrency 32
    python bench/run.py concurrent    # 200 streams of 20 chunks 50 ms apart: TTFB and jitter
    python bench/run.py memory        # 1,000 open slow streams: memory per stream
    python bench/run.py translation   # OpenAI client → Anthropic upstream, beside pass-through
    python bench/run.py described     # a described SSE provider beside the built-in OpenAI parser
    python bench/run.py workers       # --workers 2 against --workers 1
    python bench/run.py servers       # uvicorn against granian (if installed), same app
    python bench/run.py tenancy       # managed keys, limits and the ledger on vs off
    python bench/run.py pipeline      # the request pipeline's own CPU, in-process (no sockets)
    python bench/run.py soak --seconds 600   # mixed traffic: memory after warm-up and at the end
    python bench/run.py all           # everything but soak
    python bench/run.py nonstream stream   # several scenarios in one run (same processes)

Baselines: `direct` is the fake upstream itself; `floor` is bench/floor.py, the same proxying
done by a bare uvicorn + aiohttp app with no gateway logic (the cost of the stack alone);
`relay` is bench/relay.py, a bare relay on asyncio protocols (the least a Python proxy costs);
`nginx` is bench/nginx.py, Debian's nginx as a plain streaming reverse proxy (skipped, and
said so, when nginx is not installed). `nonstream` and `stream` also run `tidegate-aiohttp`, the
gateway with `http.client: aiohttp` (the default is tidegate's own client), and give every
proxy's CPU as a ratio to nginx's; their targets take turns within each repeat, so that load on
the machine falls on all of them alike.
CPU figures are the process's own user+system time over the measured window, the median of
`--repeat` runs. Figures are Markdown tables; docs/performance.md explains them. Compare
ratios within one run: absolute numbers move with the machine's load.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    DESCRIBED_SSE,
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
from bench.nginx import find_nginx

SHAPES = [(1, 0), (50, 0), (20, 50), (2000, 100)]
REPEAT = 3
SCALE = 1.0  # --quick shrinks every load (for the smoke test)


def n(count: int) -> int:
    """A request or stream count, scaled."""
    return max(4, int(count * SCALE))


class Bench:
    """One upstream, one gateway, and floor proxies started on demand, shared by scenarios."""

    def __init__(self, workers: int = 1):
        self.upstream = start_upstream()
        self.gateway = start_gateway(self.upstream.port, SHAPES, workers=workers)
        self._floors: dict[tuple[int, int], Proc] = {}
        self._aiohttp: Proc | None = None
        self._nginx: Proc | None = None
        self._relay: Proc | None = None
        self.nginx_missing = find_nginx() is None

    def proxies(self) -> list[str]:
        """The targets `nonstream` and `stream` compare: the baselines and both clients."""
        nginx = [] if self.nginx_missing else ["nginx"]
        return ["direct", "floor", "relay", *nginx, "tidegate", "tidegate-aiohttp"]

    def url(self, target: str, chunks: int, delay: int) -> tuple[str, str, Proc]:
        """(URL, model name, process) of a target for a response shape."""
        if target == "direct":
            return self._shape_url(chunks, delay), "bench", self.upstream
        if target == "floor":
            floor = self._floor(chunks, delay)
            return f"http://127.0.0.1:{floor.port}/", "bench", floor
        if target in ("nginx", "relay"):
            proxy = self.nginx() if target == "nginx" else self.relay()
            return (
                f"http://127.0.0.1:{proxy.port}/c{chunks}/d{delay}/v1/chat/completions",
                "bench",
                proxy,
            )
        gateway = self.aiohttp() if target == "tidegate-aiohttp" else self.gateway
        return (
            f"http://127.0.0.1:{gateway.port}/v1/chat/completions",
            f"oa-c{chunks}-d{delay}",
            gateway,
        )

    def aiohttp(self) -> Proc:
        """The gateway with `http.client: aiohttp`, started on first use."""
        if self._aiohttp is None:
            self._aiohttp = start_gateway(self.upstream.port, SHAPES, http_client="aiohttp")
        return self._aiohttp

    def nginx(self) -> Proc:
        """nginx in front of the upstream (bench/nginx.py), started on first use."""
        if self._nginx is None:
            self._nginx = self._in_front("nginx.py")
        return self._nginx

    def relay(self) -> Proc:
        """The bare relay in front of the upstream (bench/relay.py), started on first use."""
        if self._relay is None:
            self._relay = self._in_front("relay.py")
        return self._relay

    def _in_front(self, script: str) -> Proc:
        """A baseline proxy script of bench/ started in front of the upstream."""
        path = str(Path(__file__).parent / script)
        return Proc(
            [sys.executable, path, "--upstream-port", str(self.upstream.port)],
            r"listening on (\d+)",
        )

    def _shape_url(self, chunks: int, delay: int) -> str:
        return f"http://127.0.0.1:{self.upstream.port}/c{chunks}/d{delay}/v1/chat/completions"

    def _floor(self, chunks: int, delay: int) -> Proc:
        if (chunks, delay) not in self._floors:
            cmd = [
                sys.executable,
                str(Path(__file__).parent / "floor.py"),
                "--upstream",
                self._shape_url(chunks, delay),
            ]
            self._floors[(chunks, delay)] = Proc(cmd, r"listening on (\d+)")
        return self._floors[(chunks, delay)]

    def close(self) -> None:
        extra = [p for p in (self._aiohttp, self._nginx, self._relay) if p is not None]
        for proc in [self.gateway, *extra, self.upstream, *self._floors.values()]:
            proc.stop()


def go(url: str, payload: dict[str, Any], concurrency: int, total: int) -> list[Sample]:
    return asyncio.run(load(url, payload, concurrency=concurrency, total=total))


def measure(
    proc: Proc,
    url: str,
    payload: dict[str, Any],
    concurrency: int,
    total: int,
    repeat: int = REPEAT,
) -> tuple[list[Sample], float, float]:
    """Samples and wall time of the last run, and the median over `repeat` runs of the
    process's CPU seconds per successful request."""
    go(url, payload, concurrency, max(n(100), total // 10))  # warm-up
    cpus = []
    samples: list[Sample] = []
    wall = 0.0
    for _ in range(repeat):
        cpu0, t0 = proc.cpu_seconds(), time.perf_counter()
        samples = go(url, payload, concurrency, total)
        wall = time.perf_counter() - t0
        cpus.append((proc.cpu_seconds() - cpu0) / max(1, sum(s.ok for s in samples)))
    return samples, wall, statistics.median(cpus)


def measure_interleaved(
    b: Bench,
    targets: list[str],
    chunks: int,
    stream: bool,
    concurrency: int,
    total: int,
) -> dict[str, tuple[list[Sample], float, float]]:
    """`measure` for several targets, taking turns within each repeat: per target the samples
    and wall time of its last run and the median of its CPU seconds per successful request."""
    runs: dict[str, tuple[Proc, str, dict[str, Any]]] = {}
    for target in targets:
        url, model, proc = b.url(target, chunks, 0)
        body: dict[str, Any] = {"model": model, "messages": MESSAGES}
        if stream:
            body["stream"] = True
        runs[target] = (proc, url, body)
        go(url, body, concurrency, max(n(100), total // 10))  # warm-up
    cpus: dict[str, list[float]] = {t: [] for t in targets}
    last: dict[str, tuple[list[Sample], float]] = {}
    for _ in range(REPEAT):
        for target, (proc, url, body) in runs.items():
            cpu0, t0 = proc.cpu_seconds(), time.perf_counter()
            samples = go(url, body, concurrency, total)
            last[target] = (samples, time.perf_counter() - t0)
            ok = max(1, sum(s.ok for s in samples))
            cpus[target].append((proc.cpu_seconds() - cpu0) / ok)
    return {t: (*last[t], statistics.median(cpus[t])) for t in targets}


def _ratio(cpu: float, base: float | None) -> object:
    """`cpu` as a multiple of `base`, or "-" when the base measured nothing (a --quick run's
    load can take less CPU than the clock's resolution)."""
    return cpu / base if base else "-"


def _nginx_note(b: Bench) -> str:
    if b.nginx_missing:
        return "\n\nnginx is not installed (`apt-get install nginx`): its baseline is skipped."
    return ""


def nonstream(b: Bench) -> str:
    rows = []
    targets = b.proxies()
    for concurrency, total in ((1, n(1500)), (32, n(6000))):
        results = measure_interleaved(b, targets, 1, False, concurrency, total)
        base = median([s.latency for s in results["direct"][0] if s.ok])
        nginx = results["nginx"][2] if "nginx" in results else None
        for target in targets:
            samples, wall, cpu = results[target]
            lat = [s.latency for s in samples if s.ok]
            rows.append(
                [
                    target,
                    concurrency,
                    len(lat),
                    len(lat) / wall,
                    median(lat) * 1e3,
                    pct(lat, 99) * 1e3,
                    "" if target == "direct" else (median(lat) - base) * 1e3,
                    "" if target == "direct" else cpu * 1e3,
                    "" if target == "direct" else _ratio(cpu, nginx),
                ]
            )
    return table(
        "Non-streaming small requests",
        [
            "target",
            "conc",
            "ok",
            "req/s",
            "p50 ms",
            "p99 ms",
            "added p50 ms",
            "CPU ms/req",
            "CPU vs nginx",
        ],
        rows,
    ) + _nginx_note(b)


def stream(b: Bench) -> str:
    concurrency, total, chunks = 32, n(600), 50
    rows = []
    base = 0.0
    targets = b.proxies()
    results = measure_interleaved(b, targets, chunks, True, concurrency, total)
    nginx = results["nginx"][2] if "nginx" in results else None
    for target in targets:
        samples, wall, cpu = results[target]
        ok = [s for s in samples if s.ok]
        ttfb = [s.ttfb for s in ok]
        if target == "direct":
            base = median(ttfb)
        rows.append(
            [
                target,
                len(ok),
                median(ttfb) * 1e3,
                pct(ttfb, 99) * 1e3,
                len(ok) * chunks / wall,
                "" if target == "direct" else (median(ttfb) - base) * 1e3,
                "" if target == "direct" else cpu / chunks * 1e6,
                "" if target == "direct" else _ratio(cpu, nginx),
            ]
        )
    return table(
        f"Streaming {chunks}-chunk responses, concurrency {concurrency}",
        [
            "target",
            "streams",
            "TTFB p50 ms",
            "TTFB p99 ms",
            "chunks/s",
            "added TTFB p50 ms",
            "CPU µs/chunk",
            "CPU vs nginx",
        ],
        rows,
    ) + _nginx_note(b)


def concurrent(b: Bench) -> str:
    streams, chunks, delay = n(200), 20, 50
    rows = []
    base: dict[str, float] = {}
    for target in ("direct", "floor", "tidegate"):
        url, model, _ = b.url(target, chunks, delay)
        body = {"model": model, "messages": MESSAGES, "stream": True}
        go(url, body, streams, streams)  # warm-up: connections and pools
        runs = []  # a burst's figures move a lot between runs: report the median of REPEAT
        for _ in range(REPEAT):
            ok = [s for s in go(url, body, streams, streams) if s.ok]
            ttfb = [s.ttfb for s in ok]
            gaps = [g for s in ok for g in s.gaps]
            runs.append(
                (len(ok), median(ttfb), pct(ttfb, 99), median(gaps), pct(gaps, 99), max(gaps))
            )
        count, p50, p99, gap50, gap99, gapmax = (
            statistics.median(col) for col in zip(*runs, strict=True)
        )
        if target == "direct":
            base = {"p50": p50, "p99": p99}
        rows.append(
            [
                target,
                count,
                p50 * 1e3,
                p99 * 1e3,
                "" if target == "direct" else (p99 - base["p99"]) * 1e3,
                gap50 * 1e3,
                gap99 * 1e3,
                gapmax * 1e3,
            ]
        )
    return table(
        f"{streams} concurrent streams of {chunks} chunks {delay} ms apart",
        [
            "target",
            "streams",
            "TTFB p50 ms",
            "TTFB p99 ms",
            "added TTFB p99 ms",
            "gap p50 ms",
            "gap p99 ms",
            "gap max ms",
        ],
        rows,
    )


class Held:
    """What holding many paced streams showed: streams open, peak RSS, and, over a steady
    window once all were open, the chunks clients received and the process's CPU seconds."""

    def __init__(self) -> None:
        self.opened = 0
        self.peak_rss = 0
        self.chunks = 0
        self.window_chunks = 0
        self.window_cpu = 0.0


async def _hold_streams(url: str, body: dict[str, Any], count: int, proc: Proc) -> Held:
    """Open `count` paced streams and keep reading them, as clients do, then measure."""
    held = Held()
    ready = asyncio.Event()
    stop = asyncio.Event()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=None)
    ) as s:

        async def one() -> None:
            async with s.post(url, json=body) as response:
                await response.content.readany()
                held.opened += 1
                if held.opened == count:
                    ready.set()
                # Unread data would pile up in buffers and count as the proxy's memory.
                async for chunk in response.content.iter_any():
                    held.chunks += chunk.count(b"data: ")
                    if stop.is_set():
                        break

        tasks = [asyncio.create_task(one()) for _ in range(count)]
        try:
            await asyncio.wait_for(ready.wait(), 60)
            await asyncio.sleep(1.0)
            chunks0, cpu0 = held.chunks, proc.cpu_seconds()
            for _ in range(6 if SCALE == 1.0 else 1):
                await asyncio.sleep(0.5)
                held.peak_rss = max(held.peak_rss, proc.rss_bytes())
            held.window_chunks, held.window_cpu = held.chunks - chunks0, proc.cpu_seconds() - cpu0
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return held


def memory(b: Bench) -> str:
    """Open paced streams: memory per stream, and CPU per chunk with one event per read."""
    count = n(1000)
    rows = []
    nginx = [] if b.nginx_missing else ["nginx"]
    for target in ("floor", "relay", *nginx, "tidegate"):
        url, model, proc = b.url(target, 2000, 100)
        body = {"model": model, "messages": MESSAGES, "stream": True}
        warm_url, warm_model, _ = b.url(target, 1, 0)
        go(warm_url, {"model": warm_model, "messages": MESSAGES}, 32, n(2000))  # settle the heap
        before = proc.rss_bytes()
        held = asyncio.run(_hold_streams(url, body, count, proc))
        rows.append(
            [
                target,
                held.opened,
                before / 2**20,
                held.peak_rss / 2**20,
                (held.peak_rss - before) / max(1, held.opened) / 1024,
                held.window_chunks / 3.0 if SCALE == 1.0 else held.window_chunks / 0.5,
                held.window_cpu / max(1, held.window_chunks) * 1e6,
            ]
        )
    if nginx:
        base = next(row for row in rows if row[0] == "nginx")
        for row in rows:
            row += [
                _ratio(float(row[4]), float(base[4])),  # type: ignore[arg-type]
                _ratio(float(row[6]), float(base[6])),  # type: ignore[arg-type]
            ]
    return table(
        f"{count} open streams, one chunk per stream every 100 ms" + _nginx_note(b),
        [
            "target",
            "streams open",
            "RSS before MiB",
            "RSS with streams MiB",
            "KiB per stream",
            "chunks/s",
            "CPU µs/chunk",
            *(["memory vs nginx", "CPU vs nginx"] if nginx else []),
        ],
        rows,
    )


def translation(b: Bench) -> str:
    concurrency, total, chunks = 32, n(600), 50
    rows = []
    for label, model in (
        ("pass-through (OpenAI → OpenAI)", "oa-c50-d0"),
        ("translation (OpenAI → Anthropic)", "an-c50-d0"),
    ):
        url = f"http://127.0.0.1:{b.gateway.port}/v1/chat/completions"
        body = {"model": model, "messages": MESSAGES, "stream": True}
        samples, wall, cpu = measure(b.gateway, url, body, concurrency, total)
        ok = [s for s in samples if s.ok]
        rows.append(
            [
                label,
                len(ok),
                median([s.ttfb for s in ok]) * 1e3,
                len(ok) * chunks / wall,
                cpu / chunks * 1e6,
            ]
        )
    rows[1].append(_ratio(float(rows[1][-1]), float(rows[0][-1])))  # type: ignore[arg-type]
    rows[0].append(1.0)
    return table(
        f"Translation vs pass-through, {chunks}-chunk streams, concurrency {concurrency}",
        ["path", "streams", "TTFB p50 ms", "upstream chunks/s", "CPU µs/chunk", "CPU ratio"],
        rows,
    )


def _parser_cpu(make: Callable[[], Any], reads: list[bytes], repeat: int) -> float:
    """CPU seconds per read to parse `reads` with fresh parsers from `make`, best of `repeat`."""
    best = float("inf")
    for _ in range(repeat):
        parser = make()
        t0 = time.process_time()
        for chunk in reads:
            parser.feed(chunk)
        parser.finish()
        best = min(best, (time.process_time() - t0) / len(reads))
    return best


def described(b: Bench) -> str:
    """Per-chunk CPU of a described SSE provider (seed 001's mapping) against the built-in
    OpenAI parser on the same stream: the parsers alone, then the whole gateway translating
    both to an Anthropic client."""
    from bench.upstream import _TEXT_CHUNK, _openai_chunk
    from tidegate.config import parse_config
    from tidegate.formats import openai_chat
    from tidegate.providers import described_providers

    config = parse_config(
        {
            "providers": [DESCRIBED_SSE],
            "models": [{"name": "d", "provider": "described-sse", "api_key": "k"}],
        }
    )
    provider = described_providers(config)["described-sse"](config.models[0])
    chunks = n(5000)
    reads = [_openai_chunk({"role": "assistant", "content": ""})]
    reads += [_TEXT_CHUNK] * chunks + [_openai_chunk({}, "stop") + b"data: [DONE]\n\n"]
    repeat = max(3, REPEAT * 3)
    builtin = _parser_cpu(lambda: openai_chat.stream_parser(), reads, repeat)
    desc = _parser_cpu(provider.stream_parser, reads, repeat)
    rows: list[list[Any]] = [
        ["parser alone", "built-in OpenAI", builtin * 1e6, 1.0],
        ["parser alone", "described SSE (seed 001)", desc * 1e6, desc / builtin],
    ]
    concurrency, total, size = 32, n(600), 50
    url = f"http://127.0.0.1:{b.gateway.port}/v1/messages"
    cpus = []
    for label, model in (
        ("built-in OpenAI", "oa-c50-d0"),
        ("described SSE (seed 001)", "ds-c50-d0"),
    ):
        body = {"model": model, "max_tokens": 256, "messages": MESSAGES, "stream": True}
        samples, _, cpu = measure(b.gateway, url, body, concurrency, total)
        assert all(s.ok for s in samples), f"{model}: failed requests"
        cpus.append(cpu / size)
        rows.append(
            ["gateway → Anthropic client", label, cpu / size * 1e6, _ratio(cpus[-1], cpus[0])]
        )
    return table(
        f"Described SSE provider vs the built-in OpenAI parser, same stream ({size}-chunk "
        f"streams at concurrency {concurrency} through the gateway)",
        ["measured", "upstream parser", "CPU µs/chunk", "ratio"],
        rows,
    )


def workers(b: Bench) -> str:
    rows = []
    two = start_gateway(b.upstream.port, SHAPES, workers=2)
    try:
        for label, proc in (("--workers 1", b.gateway), ("--workers 2", two)):
            url = f"http://127.0.0.1:{proc.port}/v1/chat/completions"
            for model, stream, total in (("oa-c1-d0", False, n(8000)), ("oa-c50-d0", True, n(800))):
                body = {"model": model, "messages": MESSAGES, "stream": stream}
                samples, wall, cpu = measure(proc, url, body, 64, total, repeat=1)
                ok = [s for s in samples if s.ok]
                rows.append(
                    [
                        label,
                        "streams of 50" if stream else "small requests",
                        len(ok) / wall,
                        median([s.latency for s in ok]) * 1e3,
                        cpu * len(ok) / wall,
                    ]
                )
    finally:
        two.stop()
    for i in (2, 3):
        rows[i].append(float(rows[i][2]) / float(rows[i - 2][2]))
    rows[0].append(1.0)
    rows[1].append(1.0)
    return table(
        "Multi-core scaling, concurrency 64 (2 cores shared with the load generator and upstream)",
        ["gateway", "load", "req/s", "p50 ms", "cores busy", "speed-up"],
        rows,
    )


def soak(b: Bench, seconds: float) -> str:
    """Mixed traffic for `seconds`: RSS after a warm-up minute-fraction and at the end."""
    url = f"http://127.0.0.1:{b.gateway.port}/v1/chat/completions"
    mixes: list[tuple[dict[str, Any], int]] = [
        ({"model": "oa-c1-d0", "messages": MESSAGES}, 200),
        ({"model": "oa-c50-d0", "messages": MESSAGES, "stream": True}, 40),
        ({"model": "an-c50-d0", "messages": MESSAGES, "stream": True}, 40),
        ({"model": "oa-c20-d50", "messages": MESSAGES, "stream": True}, 32),
        ({"model": "an-c1-d0", "messages": MESSAGES}, 100),
    ]
    samples: list[tuple[float, int]] = []
    requests = 0
    start = time.monotonic()
    warm = None
    while time.monotonic() - start < seconds:
        for body, n in mixes:
            requests += sum(s.ok for s in go(url, body, 16, n))
        now = time.monotonic() - start
        samples.append((now, b.gateway.rss_bytes()))
        if warm is None and now >= min(60.0, seconds / 5):
            warm = b.gateway.rss_bytes()
    end = b.gateway.rss_bytes()
    warm = warm or samples[0][1]
    peak = max(r for _, r in samples)
    return table(
        f"Soak: mixed traffic for {seconds:.0f} s",
        ["requests", "RSS after warm-up MiB", "RSS at end MiB", "peak MiB", "end vs warm-up"],
        [[requests, warm / 2**20, end / 2**20, peak / 2**20, f"{(end / warm - 1) * 100:+.1f}%"]],
    )


def servers(b: Bench) -> str:
    """uvicorn (what `tidegate serve` runs) against granian, serving the same app."""
    import shutil
    import socket
    import tempfile

    import yaml

    if shutil.which("granian") is None:
        return (
            "\n## uvicorn vs granian\n\ngranian is not installed (`pip install granian`): skipped."
        )
    models = [
        {
            "name": f"oa-c{c}-d0",
            "provider": "openai",
            "api_key": "bench-key",
            "base_url": f"http://127.0.0.1:{b.upstream.port}/c{c}/d0/v1",
        }
        for c in (1, 50)
    ]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        yaml.safe_dump({"models": models, "http": {"pool_size": 2048}}, handle)
    env = {
        "TIDEGATE_CONFIG": handle.name,
        "TIDEGATE_LOG_LEVEL": "info",
        "TIDEGATE_ENV_FILE": "/nonexistent",
    }
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # granian binds by itself; a port that was just free is good enough here
    cmd = [
        "granian",
        "--interface",
        "asgi",
        "--factory",
        "--loop",
        "uvloop",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--runtime-threads",
        "1",
        "tidegate.server:app_from_environment",
    ]
    granian = Proc(cmd, rf"Listening at: http://\S+:({port})", env=env)
    rows = []
    try:
        for label, proc in (("uvicorn", b.gateway), ("granian", granian)):
            url = f"http://127.0.0.1:{proc.port}/v1/chat/completions"
            for model, stream, conc, total in (
                ("oa-c1-d0", False, 32, n(6000)),
                ("oa-c50-d0", True, 32, n(600)),
            ):
                body = {"model": model, "messages": MESSAGES, "stream": stream}
                samples, wall, cpu = measure(proc, url, body, conc, total)
                ok = [s for s in samples if s.ok]
                unit = "µs/chunk" if stream else "µs/req"
                rows.append(
                    [
                        label,
                        "streams of 50" if stream else "small requests",
                        len(ok) / wall,
                        f"{cpu / (50 if stream else 1) * 1e6:.1f} {unit}",
                    ]
                )
    finally:
        granian.stop()
    return table(
        "uvicorn vs granian (same app, one worker, concurrency 32)",
        ["server", "load", "req/s", "CPU"],
        rows,
    )


def tenancy(b: Bench) -> str:
    """Managed keys, limits and the ledger on (SQLite; PostgreSQL + Redis) against off."""
    from bench import tenancy as t

    with tempfile.TemporaryDirectory() as tmp:
        targets, notes, databases = t.start_targets(b.upstream.port, Path(tmp))
        try:
            per_request = t.measure(targets, False, 1, 32, n(3000), REPEAT)
            per_stream = t.measure(targets, True, 50, 32, n(400), REPEAT)
            floor = t.sqlite_row_floor(Path(tmp), n(20_000))
        finally:
            for target in targets:
                target.proc.stop()
            t.drop(databases)
    rows = [
        [
            name,
            per_request[name] * 1e3,
            _ratio(per_request[name], per_request["off"]),
            per_stream[name] / 50 * 1e6,
            _ratio(per_stream[name], per_stream["off"]),
        ]
        for name in per_request
    ]
    figures = table(
        "Tenancy on the hot path: managed key, limits and ledger on vs off (concurrency 32)",
        ["target", "CPU ms/req", "vs off", "CPU µs/chunk (50-chunk streams)", "vs off"],
        rows,
    )
    notes.append(
        f"SQLite's own work per ledger row (sqlite3's executemany into the ledger's table, "
        f"500 rows per transaction, no SQLAlchemy): {floor * 1e6:.1f} µs of CPU"
    )
    return figures + "".join(f"\n\n{note}" for note in notes)


def pipeline(b: Bench) -> str:
    """The pipeline's own CPU per request, in-process, with the database off and on SQLite."""
    from bench.pipeline import cpu_per_request

    cpus: dict[str, list[float]] = {"off": [], "sqlite": []}
    for _ in range(REPEAT):
        for database, runs in cpus.items():
            runs.append(cpu_per_request(database, n(20_000)))
    off = statistics.median(cpus["off"])
    rows = [
        [database, statistics.median(runs) * 1e6, _ratio(statistics.median(runs), off)]
        for database, runs in cpus.items()
    ]
    return table(
        "The request pipeline alone: a non-streaming pass-through request driven in-process "
        "(no sockets, an upstream client that answers at once)",
        ["database", "CPU µs/request", "vs off"],
        rows,
    )


SCENARIOS: dict[str, Callable[[Bench], str]] = {
    "nonstream": nonstream,
    "stream": stream,
    "concurrent": concurrent,
    "memory": memory,
    "translation": translation,
    "described": described,
    "workers": workers,
    "servers": servers,
    "tenancy": tenancy,
    "pipeline": pipeline,
}


def main() -> None:
    global REPEAT, SCALE
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "scenario", nargs="+", choices=[*SCENARIOS, "soak", "all"], help="one or more, in order"
    )
    parser.add_argument("--seconds", type=float, default=600, help="soak duration")
    parser.add_argument("--repeat", type=int, default=REPEAT, help="runs per CPU figure (median)")
    parser.add_argument("--quick", action="store_true", help="tiny loads: check the scripts run")
    args = parser.parse_args()
    REPEAT = 1 if args.quick else args.repeat
    SCALE = 0.02 if args.quick else 1.0
    bench = Bench()
    try:
        names: list[str] = []
        for name in args.scenario:
            names += list(SCENARIOS) if name == "all" else [name]
        for name in names:
            figures = soak(bench, args.seconds) if name == "soak" else SCENARIOS[name](bench)
            print(figures, flush=True)
    finally:
        bench.close()


if __name__ == "__main__":
    main()
