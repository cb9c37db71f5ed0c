"""Per-step latency of the window stores: memory vs Redis (loopback), at W = 1,000 / 10,000 / 100,000.

    python -m bench.window_store [--steps 5000] [--redis-url redis://127.0.0.1:6379/0]

Without --redis-url a throwaway `redis-server` (from PATH) is started on a free loopback port with
persistence off and stopped at the end. Each W is pre-filled to full (so every measured step also
evicts), then `--steps` sequential steps are timed one by one; the Redis numbers are full client
round trips (EVALSHA over TCP + reply parsing), as a gateway request sees them; the `server` column
is Redis's own mean time inside the script (INFO commandstats), which client-side scheduling noise
on a busy machine does not touch.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from redis.asyncio import Redis

from policies.base import WindowKey, WindowStore
from policies.stores.memory import MemoryWindowStore
from policies.stores.redis import RedisWindowStore
from policies.stores.urls import connect

SIZES = (1_000, 10_000, 100_000)
BETA = 0.3
FILL_BATCH = 5_000


@dataclass(frozen=True)
class Row:
    store: str
    size: int
    steps: int
    p50_us: float
    p99_us: float
    max_us: float
    server_us: float | None = None


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


async def _prefill_redis(client: Redis, namespace: str, key: WindowKey, size: int,
                         rng: random.Random) -> None:
    # Fill through step() itself, many in flight at once: the layout is exactly what the gateway
    # builds, in a fraction of the time of one sequential round trip per value.
    store = RedisWindowStore(client, namespace, queue_timeout_s=60.0)  # thousands queue on purpose
    for start in range(0, size, FILL_BATCH):
        await asyncio.gather(*(store.step(key, rng.random(), size, BETA)
                               for _ in range(min(FILL_BATCH, size - start))))


async def _measure(store: WindowStore, name: str, key: WindowKey, size: int, steps: int,
                   rng: random.Random) -> Row:
    samples: list[float] = []
    gc.collect()  # the pre-fill's garbage is not the store's cost
    for _ in range(steps):
        value = rng.random()
        started = time.perf_counter_ns()
        step = await store.step(key, value, size, BETA)
        samples.append((time.perf_counter_ns() - started) / 1000)
        assert step.length == size
    samples.sort()
    return Row(name, size, steps, _percentile(samples, 0.5), _percentile(samples, 0.99), samples[-1])


async def _evalsha_totals(client: Redis) -> tuple[int, int]:
    stats = (await client.info("commandstats")).get("cmdstat_evalsha", {})
    return int(stats.get("calls", 0)), int(stats.get("usec", 0))


async def run(redis_url: str, steps: int, sizes: Sequence[int]) -> list[Row]:
    rows: list[Row] = []
    rng = random.Random(7)
    key = WindowKey("recserve", "device", "classification")
    for size in sizes:
        memory = MemoryWindowStore()
        for _ in range(size):
            await memory.step(key, rng.random(), size, BETA)
        rows.append(await _measure(memory, "memory", key, size, steps, rng))

    connection = connect(redis_url, socket_timeout=30.0)
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    store = RedisWindowStore(connection.client, namespace)
    try:
        for size in sizes:
            await _prefill_redis(connection.client, namespace, key, size, rng)
            calls_before, usec_before = await _evalsha_totals(connection.client)
            row = await _measure(store, "redis", key, size, steps, rng)
            calls_after, usec_after = await _evalsha_totals(connection.client)
            calls = calls_after - calls_before
            server_us = (usec_after - usec_before) / calls if calls else None
            rows.append(Row(row.store, row.size, row.steps, row.p50_us, row.p99_us, row.max_us, server_us))
            await store.reset(key)
    finally:
        await store.reset()
        await connection.close()
    return rows


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def throwaway_redis() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not on PATH; pass --redis-url")
    port = _free_port()
    with tempfile.TemporaryDirectory() as workdir:
        process = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
             "--dir", workdir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(200):  # ≤ 4 s
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
                        sock.sendall(b"PING\r\n")
                        if sock.recv(16).startswith(b"+PONG"):
                            break
                except OSError:
                    pass
                time.sleep(0.02)
            else:
                raise SystemExit("redis-server did not start")
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            process.wait(timeout=10)


def table(rows: Sequence[Row]) -> str:
    lines = ["| store | W | steps | p50 (µs) | p99 (µs) | max (µs) | server mean (µs) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r.store} | {r.size:,} | {r.steps:,} | {r.p50_us:.1f} | {r.p99_us:.1f} | {r.max_us:.0f} | "
              + (f"{r.server_us:.1f} |" if r.server_us is not None else "- |") for r in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.window_store", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5_000, help="timed steps per store and W")
    parser.add_argument("--redis-url", help="use this Redis instead of starting a throwaway one")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    args = parser.parse_args(argv)
    if args.redis_url:
        rows = asyncio.run(run(args.redis_url, args.steps, args.sizes))
    else:
        with throwaway_redis() as url:
            rows = asyncio.run(run(url, args.steps, args.sizes))
    print(table(rows))


if __name__ == "__main__":
    main()
