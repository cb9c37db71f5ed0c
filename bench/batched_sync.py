"""`windows.sync: batched` against `exact` on one synthetic stream replayed across simulated replicas.

The stream: `--requests` requests from `--replicas` replicas, each a Poisson source of `--rate`
requests/s, `--tasks` task types (two: two device and two edge windows), device and edge confidences from a
Beta(2, 2) whose mean drifts slowly (so the windows keep moving), β 0.3, W `--window`.

`exact` is the shared window stepped in arrival order: decisions equal a memory store fed the same
order (tests/policies/stores/test_replicas.py shows exact mode reproduces it bit for bit), so the reference
is computed with one. `batched` runs the real `BatchedWindowStore` of each replica against a real
redis-server, on a virtual clock: requests and flushes (every `flush_ms`, each replica with its own
phase) are processed in time order; a flush is a real script call on Redis. A request's decisions
are local steps, timed on the wall clock (the request path's added latency); the same for the
memory stores, with a Redis PING at every replica's flush tick so that they step between the same
network I/O; `exact`'s latency is measured as real EVALSHA round trips of the same steps. Every
setting runs `--repeats` times, in turn; the table gives the median p50 and p99.

    python -m bench.batched_sync                    # 100,000 requests, 8 replicas, flush 5/20/100 ms
    python -m bench.batched_sync --requests 20000   # quicker
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import math
import platform
import random
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import redis

from bench.window_store import throwaway_redis
from policies.base import Scope, WindowStore
from policies.stores.batched import BatchedWindowStore
from policies.stores.memory import MemoryWindowStore
from policies.stores.redis import RedisWindowStore
from policies.stores.urls import connect

TIERS = ("device", "edge", "cloud")
TASKS = ("classification", "generation")
BETA = 0.3


@dataclass(frozen=True, slots=True)
class Request:
    at: float  # seconds since the start
    replica: int
    task: str
    confidences: tuple[float, float]  # device, edge


@dataclass
class Run:
    """What one store setting decided, request by request, and what it cost."""

    name: str
    decisions: list[list[bool]] = field(default_factory=list)  # per request: escalate at device[, edge]
    step_ns: list[int] = field(default_factory=list)  # per request: time spent in the store's steps
    redis_calls: int = 0  # commands (script calls)
    round_trips: int = 0  # pipelines: what a request would wait for, were it on the request path
    read_back: int = 0  # scores the flushes returned
    window_flushes: int = 0  # windows the flushes carried
    repeats: list[tuple[float, float]] = field(default_factory=list)  # (p50, p99) µs of each repeat

    def latency(self) -> tuple[float, float]:
        """Median over the repeats of the p50 and of the p99 of the request path's added time."""
        return (statistics.median(p50 for p50, _ in self.repeats),
                statistics.median(p99 for _, p99 in self.repeats))

    def served(self, index: int) -> str:
        return TIERS[sum(self.decisions[index])]


def synthetic_stream(requests: int, replicas: int, rate: float, tasks: int, seed: int) -> list[Request]:
    rng = random.Random(seed)
    clocks = [rng.expovariate(rate) for _ in range(replicas)]
    heap = [(at, replica) for replica, at in enumerate(clocks)]
    heapq.heapify(heap)
    stream: list[Request] = []
    while len(stream) < requests:
        at, replica = heapq.heappop(heap)
        drift = 0.12 * math.sin(2 * math.pi * at / 4.0)  # the traffic's difficulty moves slowly

        def confidence(shift: float) -> float:
            return min(max(rng.betavariate(2, 2) + drift + shift, 0.0), 1.0)  # noqa: B023

        task = rng.choices(TASKS[:tasks], (0.6, 0.4)[:tasks])[0]
        stream.append(Request(at, replica, task, (confidence(0), confidence(0.1))))
        heapq.heappush(heap, (at + rng.expovariate(rate), replica))
    return stream


async def _decide(store: WindowStore, request: Request, window: int) -> tuple[list[bool], int]:
    decisions: list[bool] = []
    spent = 0
    for tier, confidence in zip(TIERS[:2], request.confidences, strict=True):
        started = time.perf_counter_ns()
        step = await store.step(Scope(request.task).key("recserve", tier), confidence, window, BETA)
        spent += time.perf_counter_ns() - started
        escalate = step.length > 1 and confidence < step.threshold
        decisions.append(escalate)
        if not escalate:
            break
    return decisions, spent


async def run_memory(redis_url: str, stream: Sequence[Request], replicas: int, window: int, tick_ms: float,
                     seed: int, *, shared: bool) -> Run:
    """Memory stores, stepped in arrival order: one window for all (`shared`: the exact decisions)
    or one per replica (nothing shared: what sharing buys). A Redis PING at each replica's tick (as
    often as a batched flush) interleaves the same network I/O with the steps, so their latency is
    measured under the same disturbance as the batched runs'."""
    connection = connect(redis_url, socket_timeout=30.0)
    if shared:
        run = Run(f"exact (memory store, one window; a PING every {tick_ms:g} ms)")
        stores = [MemoryWindowStore()] * replicas
    else:
        run = Run(f"memory per replica (not shared; a PING every {tick_ms:g} ms)")
        stores = [MemoryWindowStore() for _ in range(replicas)]
    ticks = Ticks(replicas, tick_ms / 1000, seed)
    try:
        for request in stream:
            await ticks.until(request.at, lambda _replica: connection.client.ping())
            decisions, spent = await _decide(stores[request.replica], request, window)
            run.decisions.append(decisions)
            run.step_ns.append(spent)
    finally:
        await connection.close()
    return run


class Ticks:
    """Every replica's periodic work (flushes) on the virtual clock, each with its own phase."""

    def __init__(self, replicas: int, every_s: float, seed: int) -> None:
        rng = random.Random(seed)
        self._every_s = every_s
        self._next = [rng.uniform(0, every_s) for _ in range(replicas)]

    async def until(self, now: float, work: Callable[[int], Awaitable[object]]) -> None:
        """Run each tick due before `now`, in time order."""
        while True:
            replica = min(range(len(self._next)), key=self._next.__getitem__)
            if self._next[replica] > now:
                return
            await work(replica)
            self._next[replica] += self._every_s


async def run_exact_latency(redis_url: str, stream: Sequence[Request], window: int, count: int) -> Run:
    """Real EVALSHA round trips for the first `count` requests (one client, as one request sees it)."""
    connection = connect(redis_url, socket_timeout=30.0)
    store = RedisWindowStore(connection.client, "bench-exact", call_timeout_s=30.0)
    run = Run("exact (Redis)")
    try:
        await store.reset()
        for request in stream[:count]:
            decisions, spent = await _decide(store, request, window)
            run.decisions.append(decisions)
            run.step_ns.append(spent)
            run.redis_calls += len(decisions)
            run.round_trips += len(decisions)
        await store.reset()
    finally:
        await connection.close()
    return run


async def run_batched(redis_url: str, stream: Sequence[Request], replicas: int, window: int,
                      flush_ms: float, seed: int) -> Run:
    connection = connect(redis_url, socket_timeout=30.0)
    namespace = f"bench-batched-{flush_ms:g}"
    stores = [BatchedWindowStore(connection.client, namespace, flush_s=flush_ms / 1000, background=False)
              for _ in range(replicas)]
    ticks = Ticks(replicas, flush_ms / 1000, seed)
    run = Run(f"batched {flush_ms:g} ms")
    try:
        await RedisWindowStore(connection.client, namespace).reset()
        for request in stream:
            await ticks.until(request.at, lambda replica: stores[replica].flush())
            decisions, spent = await _decide(stores[request.replica], request, window)
            run.decisions.append(decisions)
            run.step_ns.append(spent)
        run.redis_calls = sum(store.calls for store in stores)
        run.round_trips = sum(store.round_trips for store in stores)
        run.read_back = sum(store.values_returned for store in stores)
        run.window_flushes = sum(store.window_flushes for store in stores)
        await RedisWindowStore(connection.client, namespace).reset()
    finally:
        await connection.close()
    return run


def _percentile(values: Sequence[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000.0  # µs


def agreement(reference: Run, other: Run) -> dict[str, float]:
    """Share of equal decisions: per tier among requests that reached it in both, and the served tier."""
    out: dict[str, float] = {}
    for level, tier in enumerate(TIERS[:2]):
        pairs = [(a[level], b[level]) for a, b in zip(reference.decisions, other.decisions, strict=False)
                 if len(a) > level and len(b) > level]
        out[tier] = sum(x == y for x, y in pairs) / len(pairs)
    n = min(len(reference.decisions), len(other.decisions))
    out["served tier"] = sum(reference.served(i) == other.served(i) for i in range(n)) / n
    return out


def escalation(run: Run) -> dict[str, float]:
    reached_edge = [d for d in run.decisions if len(d) > 1]
    return {"device": sum(d[0] for d in run.decisions) / len(run.decisions),
            "edge": sum(d[1] for d in reached_edge) / max(1, len(reached_edge))}


def report(runs: Sequence[Run], reference: Run, requests: int, args: argparse.Namespace, versions: str) -> str:
    lines = [f"{requests:,} requests, {args.replicas} replicas x {args.rate:g} req/s, {args.tasks} task type(s), "
             f"W {args.window:,}, β {BETA}; {versions}", "",
             "| store | agree device | agree edge | agree served tier | escalate device | escalate edge "
             "| Redis commands / request | round trips / request | scores read back / window flushed "
             "| added p50 (µs) | added p99 (µs) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for run in runs:
        agree = agreement(reference, run) if run is not reference else {"device": 1, "edge": 1, "served tier": 1}
        rates = escalation(run)
        calls = run.redis_calls / len(run.decisions)
        trips = run.round_trips / len(run.decisions)
        p50, p99 = run.latency()
        read_back = f"{run.read_back / run.window_flushes:.1f}" if run.read_back else "-"
        lines.append(f"| {run.name} | {agree['device']:.4%} | {agree['edge']:.4%} | {agree['served tier']:.4%} "
                     f"| {rates['device']:.3f} | {rates['edge']:.3f} | {calls:.3f} | {trips:.3f} | {read_back} "
                     f"| {p50:.1f} | {p99:.1f} |")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> str:
    stream = synthetic_stream(args.requests, args.replicas, args.rate, args.tasks, args.seed)
    with throwaway_redis() as url:
        info = redis.Redis.from_url(url).info("server")
        versions = (f"redis-server {info['redis_version']}, redis-py {redis.__version__}, "
                    f"Python {platform.python_version()}")
        settings: list[Callable[[], Awaitable[Run]]] = [
            partial(run_memory, url, stream, args.replicas, args.window, 20.0, args.seed, shared=True),
            partial(run_memory, url, stream, args.replicas, args.window, 20.0, args.seed, shared=False),
            partial(run_exact_latency, url, stream, args.window, args.exact_requests),
            *(partial(run_batched, url, stream, args.replicas, args.window, flush_ms, args.seed)
              for flush_ms in args.flush_ms)]
        # Decisions and Redis calls do not depend on timing (virtual clock): kept from the first
        # repeat. Latency is noisy on a shared machine: each repeat runs every setting once, in turn.
        runs: list[Run] = []
        for repeat in range(args.repeats):
            for index, setting in enumerate(settings):
                run = await setting()
                if not repeat:
                    runs.append(run)
                runs[index].repeats.append((_percentile(run.step_ns, 0.5), _percentile(run.step_ns, 0.99)))
                run.step_ns.clear()
    return report(runs, runs[0], len(stream), args, versions)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.batched_sync", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--replicas", type=int, default=8)
    parser.add_argument("--rate", type=float, default=1000.0, help="requests/s per replica")
    parser.add_argument("--window", type=int, default=10_000)
    parser.add_argument("--tasks", type=int, choices=(1, 2), default=2,
                        help="task types in the stream (windows per tier)")
    parser.add_argument("--flush-ms", type=float, nargs="+", default=[5.0, 20.0, 100.0])
    parser.add_argument("--exact-requests", type=int, default=20_000,
                        help="requests replayed through real Redis steps for exact's latency")
    parser.add_argument("--repeats", type=int, default=3, help="latency: median over this many runs of each")
    parser.add_argument("--seed", type=int, default=1)
    print(asyncio.run(main_async(parser.parse_args(argv))))


if __name__ == "__main__":
    main()
