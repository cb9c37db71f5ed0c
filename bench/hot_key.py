"""One hot window key: steps/s at 1, 4 and 16 concurrent clients, `exact` vs `batched`, on a real Redis.

Every client is a process of its own (a replica with one request in flight at a time) stepping the
same window (W `--window`, pre-filled, β 0.3) back to back for `--seconds`:

- `exact`: `RedisWindowStore.step`, one EVALSHA round trip per step (today's behaviour);
- `batched`: `BatchedWindowStore.step` (local step, the replica's flusher sends pending values every
  `--flush-ms`, one script call per flush for this one key), paced so that the clients together
  offer the steps/s `exact` reached with as many clients: the same traffic.

Per cell: steps/s over all clients, client-side p50/p99 per step, Redis script calls per step, the
share of the steps whose value reached the shared window (its sequence counter), the redis-server
process's CPU (share of one core, from /proc) and the scripts' own time per step (INFO
commandstats). The ceiling for one key is where Redis's core is full: steps/s divided by the share
of the core used (a projection: on this 2-core machine the clients, not Redis, run out of CPU
first).

    python -m bench.hot_key                       # 1, 4, 16 clients, 5 s each, both modes
    python -m bench.hot_key --clients 1 4 --seconds 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import platform
import random
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any

import redis
from redis.asyncio import Redis

from bench.procs import _TICKS
from bench.window_store import throwaway_redis
from policies.base import WindowKey
from policies.quantile import quantile_fraction
from policies.stores.batched import FLUSH_SCRIPT, MIN_REACH, BatchedWindowStore
from policies.stores.redis import RedisWindowStore, window_keys
from policies.stores.urls import connect

BETA = 0.3
KEY = WindowKey("recserve", "device", "hot")


@dataclass(frozen=True)
class Cell:
    mode: str
    clients: int
    steps: int
    seconds: float
    p50_us: float
    p99_us: float
    calls: int
    redis_cpu_s: float
    server_usec: int
    landed: int

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.seconds

    @property
    def redis_core_share(self) -> float:
        return self.redis_cpu_s / self.seconds

    @property
    def ceiling(self) -> float | None:
        """Steps/s with Redis's core full, projected from this cell."""
        return self.steps_per_s / self.redis_core_share if self.redis_core_share else None


def _client(mode: str, url: str, namespace: str, window: int, flush_s: float, seconds: float,
            rate: float | None, go: MpEvent, out: Any) -> None:
    async def run() -> None:
        connection = connect(url, socket_timeout=30.0)
        client: Redis = connection.client
        store: RedisWindowStore | BatchedWindowStore
        store = (RedisWindowStore(client, namespace) if mode == "exact"
                 else BatchedWindowStore(client, namespace, flush_s=flush_s))
        rng = random.Random(os.getpid())
        await client.ping()
        samples: list[float] = []
        go.wait()
        start = time.perf_counter()
        deadline = start + seconds
        steps = 0
        while (now := time.perf_counter()) < deadline:
            if rate is not None and (due := start + steps / rate) > now:
                await asyncio.sleep(due - now)
                now = time.perf_counter()
            await store.step(KEY, rng.random(), window, BETA)
            samples.append(time.perf_counter() - now)
            steps += 1
            # A request does other work between steps; here it at least lets the flusher run.
            await asyncio.sleep(0)
        calls = steps if isinstance(store, RedisWindowStore) else store.calls
        samples.sort()
        # Reported before cleaning up: a flush cut off by a timeout must not hold up the numbers.
        out.put((steps, samples[len(samples) // 2] if samples else 0.0,
                 samples[min(len(samples) - 1, int(len(samples) * 0.99))] if samples else 0.0, calls))
        with contextlib.suppress(Exception):
            if isinstance(store, BatchedWindowStore):
                await asyncio.wait_for(store.aclose(), 5)
            await asyncio.wait_for(connection.close(), 5)

    asyncio.run(run())


def redis_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def script_stat(client: redis.Redis, field: str = "usec") -> int:
    """Redis's running total of `field` ("usec": time inside, "calls") over its script commands."""
    stats = client.info("commandstats")
    return sum(int(v.get(field, 0)) for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))


def _prefill(url: str, namespace: str, window: int) -> None:
    async def fill() -> None:
        connection = connect(url, socket_timeout=60.0)
        store = RedisWindowStore(connection.client, namespace, queue_timeout_s=60.0, call_timeout_s=60.0)
        rng = random.Random(7)
        for start in range(0, window, 500):
            await asyncio.gather(*(store.step(KEY, rng.random(), window, BETA)
                                   for _ in range(min(500, window - start))))
        await connection.close()

    asyncio.run(fill())


def _cell(mode: str, clients: int, url: str, redis_pid: int, args: argparse.Namespace,
          rate: float | None) -> Cell:
    namespace = f"hot-{uuid.uuid4().hex[:8]}"
    _prefill(url, namespace, args.window)
    context = multiprocessing.get_context("spawn")
    go = context.Event()
    out = context.Queue()
    procs = [context.Process(target=_client, args=(mode, url, namespace, args.window, args.flush_ms / 1000,
                                                   args.seconds, rate, go, out), daemon=True)
             for _ in range(clients)]
    for proc in procs:
        proc.start()
    sync = redis.Redis.from_url(url)
    time.sleep(1.0 + 0.1 * clients)  # every client connected and waiting (spawn imports take a while)
    seq = window_keys(namespace, KEY)[2]
    usec_before, cpu_before, seq_before = script_stat(sync), redis_cpu_s(redis_pid), int(sync.get(seq) or 0)
    go.set()
    results = [out.get(timeout=args.seconds + 120) for _ in procs]
    for proc in procs:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.terminate()
    usec_after, cpu_after, seq_after = script_stat(sync), redis_cpu_s(redis_pid), int(sync.get(seq) or 0)
    sync.delete(*window_keys(namespace, KEY))
    sync.close()
    p50 = sorted(r[1] for r in results)[len(results) // 2]
    p99 = max(r[2] for r in results)
    return Cell(mode, clients, sum(r[0] for r in results), args.seconds, p50 * 1e6, p99 * 1e6,
                sum(r[3] for r in results), cpu_after - cpu_before, usec_after - usec_before,
                seq_after - seq_before)


def flush_costs(url: str, window: int, sizes: Sequence[int], replicas: Sequence[int], calls: int = 40) -> list[str]:
    """Redis µs per flush call of `size` values while `replicas` replicas flush the key as often.

    Between two of the caller's flushes the other replicas append (replicas - 1) x size values
    (untimed); the caller's call appends its own and reads back the window around the quantile and
    its oldest values, `reach` (twice `size`, at least `MIN_REACH`) each, as the gateway's flush does.
    """
    rows: list[str] = []
    sync = redis.Redis.from_url(url)
    rng = random.Random(11)
    sha = sync.script_load(FLUSH_SCRIPT)
    q = repr(quantile_fraction(BETA))

    def flush(keys: Sequence[str], size: int) -> None:
        reach = max(MIN_REACH, 2 * size)
        sync.evalsha(sha, 3, *keys, window, q, reach, size, *(repr(rng.random()) for _ in range(size)))

    for size in sizes:
        for count in replicas:
            namespace = f"flush-{uuid.uuid4().hex[:8]}"
            _prefill(url, namespace, window)
            keys = window_keys(namespace, KEY)
            usec = 0
            for _ in range(calls):
                for _ in range(count - 1):  # the others' flushes since ours
                    flush(keys, size)
                before = script_stat(sync)
                flush(keys, size)
                usec += script_stat(sync) - before
            per_call = usec / calls
            rows.append(f"| {count} | {size:,} | {max(MIN_REACH, 2 * size)} | {per_call:,.0f} "
                        f"| {per_call / size:.2f} |")
            sync.delete(*keys)
    sync.close()
    return rows


def table(cells: Sequence[Cell]) -> str:
    lines = ["| mode | clients | steps/s | p50 µs / step | p99 µs / step | Redis calls / step | values landed | "
             "Redis core used | script µs / step | one-core ceiling, steps/s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in cells:
        ceiling = f"{c.ceiling:,.0f}" if c.ceiling else "-"
        lines.append(f"| {c.mode} | {c.clients} | {c.steps_per_s:,.0f} | {c.p50_us:.1f} | {c.p99_us:.0f} | "
                     f"{c.calls / c.steps:.4f} | {c.landed / c.steps:.1%} | {c.redis_core_share:.0%} | "
                     f"{c.server_usec / c.steps:.1f} | {ceiling} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hot_key", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="*", default=[1, 4, 16])
    parser.add_argument("--modes", nargs="+", default=["exact", "batched"], choices=["exact", "batched"])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--window", type=int, default=10_000)
    parser.add_argument("--flush-ms", type=float, default=20.0)
    parser.add_argument("--flush-values", type=int, nargs="+", default=[2, 20, 100],
                        help="values per flush call in the script-cost table (20: 1,000 steps/s at 20 ms)")
    parser.add_argument("--flush-replicas", type=int, nargs="*", default=[1, 4, 16],
                        help="replicas flushing the key in the script-cost table (none: skip it)")
    args = parser.parse_args(argv)
    cells: list[Cell] = []
    loads = [os.getloadavg()[0]]
    with throwaway_redis() as url:
        info = redis.Redis.from_url(url)
        version = info.info("server")["redis_version"]
        redis_pid = int(info.info("server")["process_id"])
        info.close()
        for clients in args.clients:
            offered: float | None = None  # batched is paced at exact's steps/s (closed loop without exact)
            for mode in args.modes:
                rate = offered / clients if mode == "batched" and offered else None
                cells.append(_cell(mode, clients, url, redis_pid, args, rate))
                offered = cells[-1].steps_per_s if mode == "exact" else offered
                loads.append(os.getloadavg()[0])
                print(table(cells[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
        costs = (flush_costs(url, args.window, args.flush_values, args.flush_replicas)
                 if args.flush_replicas else [])
    print(f"One window key, W {args.window:,}, {args.seconds:g} s per cell, flush {args.flush_ms:g} ms (batched); "
          f"redis-server {version}, redis-py {redis.__version__}, Python {platform.python_version()}, "
          f"{len(os.sched_getaffinity(0))} cores, load average (1 min) {min(loads):.2f}-{max(loads):.2f}")
    print()
    print(table(cells))
    if costs:
        print()
        print(f"Flush script cost inside Redis (W {args.window:,}, pre-filled), one replica's call of "
              "k values while N replicas flush the key as often:")
        print()
        print("| replicas N | values per call k | reach | µs per call | µs per value appended |")
        print("|---:|---:|---:|---:|---:|")
        print("\n".join(costs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
