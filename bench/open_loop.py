"""Open-loop load: a fixed request rate over a fixed number of keep-alive connections.

wrk (closed loop) keeps every connection busy, so at concurrency 16 it measures a saturated server
(latency = 16 / throughput). Production traffic arrives at a rate; this generator sends request i at
t0 + i / rate whatever happened before, and times each from its *scheduled* start, so falling
behind shows up as latency instead of being hidden (no coordinated omission).

Runs as its own process (`python -m bench.open_loop URL --rate R --connections C --seconds S`) and
prints one JSON line; `measure()` starts it and reads that line back.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from dataclasses import dataclass

import uvloop

from gateway.upstream import http1


@dataclass(frozen=True, slots=True)
class OpenLoopResult:
    sent: int
    failures: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    achieved_rps: float


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def _drive(url: str, body: bytes, rate: float, connections: int, seconds: float) -> dict[str, float]:
    base, _, path = url.partition("/v1/")
    pool = http1.Pool(base + "/v1", limit=connections, headers={"content-type": "application/json"})
    total = max(1, int(rate * seconds))
    latencies: list[float] = []
    failures = 0
    start = time.perf_counter() + 0.05

    async def worker(first: int) -> None:
        nonlocal failures
        for i in range(first, total, connections):
            scheduled = start + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                async with asyncio.timeout(10):
                    answer = await pool.send("POST", path, body, {})
                ok = answer.status == 200
            except (http1.HttpError, TimeoutError):
                ok = False
            if ok:
                latencies.append(time.perf_counter() - scheduled)
            else:
                failures += 1

    await asyncio.gather(*(worker(k) for k in range(connections)))
    elapsed = time.perf_counter() - start
    await pool.aclose()
    return {"sent": total, "failures": failures, "p50_ms": _percentile(latencies, 0.5) * 1000,
            "p90_ms": _percentile(latencies, 0.9) * 1000, "p99_ms": _percentile(latencies, 0.99) * 1000,
            "achieved_rps": total / elapsed}


def measure(url: str, body: dict[str, object], *, rate: float, connections: int, seconds: float) -> OpenLoopResult:
    """Run the generator in its own process (bounded: rate * seconds requests, 10 s timeout each)."""
    completed = subprocess.run(
        [sys.executable, "-m", "bench.open_loop", url, "--body", json.dumps(body), "--rate", str(rate),
         "--connections", str(connections), "--seconds", str(seconds)],
        capture_output=True, text=True, timeout=seconds + 120, check=True)
    return OpenLoopResult(**json.loads(completed.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.open_loop", description=__doc__)
    parser.add_argument("url", help="e.g. http://127.0.0.1:8000/v1/chat/completions")
    parser.add_argument("--body", required=True, help="JSON request body")
    parser.add_argument("--rate", type=float, default=1000.0, help="requests per second, all connections")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    result = uvloop.run(_drive(args.url, args.body.encode(), args.rate, args.connections, args.seconds))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
