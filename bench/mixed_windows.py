"""One hot window and many cold ones: what each `windows.sync` mode costs Redis, on a real redis-server.

`--replicas` simulated replicas each step one hot window `--hot-rate` times a second and each of
`--cold` cold windows `--cold-rate` times a second (Poisson), for `--seconds` of virtual time, W
`--window`, β 0.3. Each replica has its own store and connection:

- `exact`: every step is one EVALSHA (`FailoverWindowStore` over `RedisWindowStore`);
- `batched`: `BatchedWindowStore`, flushed every `--flush-ms` on the virtual clock;
- `auto`: `AdaptiveWindowStore` over both, on the virtual clock (`hot_steps_per_flush` 2).

Per mode: Redis script calls and script time per request (INFO commandstats: evalsha + eval), the
redis-server process's CPU per request (/proc, protocol included; the clients' own work is not in
it), and the share of decisions equal to `exact`'s (the same stream, arrival order). The CPU column is
the one to read for cost; script time alone leaves out the per-call protocol work that batching saves.

    python -m bench.mixed_windows                     # 4 replicas, 1 hot + 50 cold windows, 20 s
    python -m bench.mixed_windows --seconds 5         # quicker
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import platform
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import redis

from bench.hot_key import redis_cpu_s, script_stat
from bench.window_store import throwaway_redis
from policies.base import WindowKey, WindowStore
from policies.stores.adaptive import AdaptiveWindowStore
from policies.stores.batched import BatchedWindowStore
from policies.stores.failover import FailoverWindowStore
from policies.stores.memory import MemoryWindowStore
from policies.stores.redis import RedisWindowStore
from policies.stores.urls import RedisConnection, connect

BETA = 0.3
HOT_STEPS_PER_FLUSH = 2.0


@dataclass(frozen=True, slots=True, order=True)
class Step:
    at: float
    replica: int
    window: int  # 0: the hot one
    confidence: float = field(compare=False)


class VirtualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def stream(args: argparse.Namespace) -> list[Step]:
    rng = random.Random(args.seed)
    heap: list[tuple[float, int, int]] = []
    rates = [args.hot_rate] + [args.cold_rate] * args.cold
    for replica in range(args.replicas):
        for window, rate in enumerate(rates):
            heap.append((rng.expovariate(rate), replica, window))
    heapq.heapify(heap)
    steps: list[Step] = []
    while heap and heap[0][0] < args.seconds:
        at, replica, window = heapq.heappop(heap)
        steps.append(Step(at, replica, window, rng.betavariate(2, 2)))
        heapq.heappush(heap, (at + rng.expovariate(rates[window]), replica, window))
    return steps


def _key(window: int) -> WindowKey:
    return WindowKey("recserve", "device", "hot" if window == 0 else f"cold-{window}")


def _store(mode: str, connection: RedisConnection, namespace: str, clock: VirtualClock,
           flush_s: float) -> tuple[WindowStore, BatchedWindowStore | None]:
    exact = FailoverWindowStore(RedisWindowStore(connection.client, namespace, call_timeout_s=30.0),
                                MemoryWindowStore())
    if mode == "exact":
        return exact, None
    batched = BatchedWindowStore(connection.client, namespace, flush_s=flush_s, background=False, clock=clock)
    if mode == "batched":
        return batched, batched
    return AdaptiveWindowStore(exact, batched, hot_per_s=HOT_STEPS_PER_FLUSH / flush_s, clock=clock), batched


@dataclass
class Cell:
    mode: str
    requests: int
    calls: int
    script_usec: int
    cpu_s: float
    agree: float


async def run(mode: str, url: str, redis_pid: int, steps: Sequence[Step], args: argparse.Namespace,
              reference: list[bool] | None) -> tuple[Cell, list[bool]]:
    flush_s = args.flush_ms / 1000
    clock = VirtualClock()
    namespace = f"mixed-{mode}"
    connections = [connect(url, socket_timeout=30.0) for _ in range(args.replicas)]
    stores = [_store(mode, c, namespace, clock, flush_s) for c in connections]
    sync = redis.Redis.from_url(url)
    calls_before = script_stat(sync, "calls")
    usec_before, cpu_before = script_stat(sync), redis_cpu_s(redis_pid)
    rng = random.Random(args.seed)
    next_flush = [rng.uniform(0, flush_s) for _ in range(args.replicas)]
    decisions: list[bool] = []
    for step in steps:
        clock.now = step.at
        for replica, (_, batched) in enumerate(stores):
            while batched is not None and next_flush[replica] <= step.at:
                await batched.flush()
                next_flush[replica] += flush_s
        result = await stores[step.replica][0].step(_key(step.window), step.confidence, args.window, BETA)
        decisions.append(result.length > 1 and step.confidence < result.threshold)
    for _, batched in stores:
        if batched is not None:
            await batched.flush()
    cell = Cell(mode, len(steps), script_stat(sync, "calls") - calls_before, script_stat(sync) - usec_before,
                redis_cpu_s(redis_pid) - cpu_before,
                1.0 if reference is None else sum(a == b for a, b in zip(reference, decisions, strict=True))
                / len(steps))
    sync.close()
    for connection in connections:
        await connection.close()
    return cell, decisions


async def main_async(args: argparse.Namespace) -> str:
    steps = stream(args)
    hot = sum(s.window == 0 for s in steps)
    with throwaway_redis() as url:
        info = redis.Redis.from_url(url).info("server")
        cells: list[Cell] = []
        reference: list[bool] | None = None
        for mode in ("exact", "batched", "auto"):
            cell, decisions = await run(mode, url, int(info["process_id"]), steps, args, reference)
            reference = reference or decisions
            cells.append(cell)
    lines = [f"{len(steps):,} requests over {args.seconds:g} s (virtual): {args.replicas} replicas, each stepping "
             f"1 hot window at {args.hot_rate:g}/s and {args.cold} cold ones at {args.cold_rate:g}/s "
             f"({hot / len(steps):.0%} of the requests hot); W {args.window:,}, flush {args.flush_ms:g} ms; "
             f"redis-server {info['redis_version']}, redis-py {redis.__version__}, Python {platform.python_version()}",
             "", "| mode | script calls / request | script µs / request | redis-server CPU µs / request "
                 "| decisions equal to exact |", "|---|---:|---:|---:|---:|"]
    for c in cells:
        lines.append(f"| {c.mode} | {c.calls / c.requests:.3f} | {c.script_usec / c.requests:.1f} | "
                     f"{c.cpu_s * 1e6 / c.requests:.1f} | {c.agree:.2%} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mixed_windows", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--hot-rate", type=float, default=1000.0, help="steps/s of the hot window per replica")
    parser.add_argument("--cold", type=int, default=50, help="cold windows")
    parser.add_argument("--cold-rate", type=float, default=5.0, help="steps/s of each cold window per replica")
    parser.add_argument("--window", type=int, default=10_000)
    parser.add_argument("--flush-ms", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=1)
    print(asyncio.run(main_async(parser.parse_args(argv))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
