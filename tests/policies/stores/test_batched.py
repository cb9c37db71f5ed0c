"""`windows.sync: batched` on a real redis-server: local views, flushes, convergence, outages."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from policies.base import WindowKey
from policies.quantile import linear_quantile, quantile_fraction
from policies.stores.batched import BatchedWindowStore
from policies.stores.factory import build_stores
from policies.stores.memory import MemoryWindowStore
from policies.stores.urls import RedisConnection, connect
from tests.support.processes import GatewayProcess
from tests.support.redis_procs import RedisServer, patient_store
from tests.support.scripted_tier import ThreadedTier

from .conftest import ServerFactory
from .test_replicas import _config, _prompts

KEY = WindowKey("recserve", "device", "classification")
EDGE = WindowKey("recserve", "edge", "classification")


@pytest.fixture
async def connection(redis_server: RedisServer, redis_client: Redis) -> AsyncIterator[RedisConnection]:
    connection = connect(redis_server.url)  # redis_client has flushed the server
    yield connection
    await connection.close()


async def test_one_replica_decides_exactly_like_the_memory_store(connection: RedisConnection) -> None:
    """Alone, a replica's view is the shared window whatever the flush timing: equal thresholds."""
    store = BatchedWindowStore(connection.client, "solo", flush_s=0.002)
    memory = MemoryWindowStore()
    rng = random.Random(3)
    try:
        for i in range(800):
            key, confidence = rng.choice((KEY, EDGE)), rng.random()
            assert await store.step(key, confidence, 50, 0.3) == await memory.step(key, confidence, 50, 0.3)
            if i % 7 == 0:
                await asyncio.sleep(rng.choice((0, 0.001, 0.004)))  # flushes land between some steps
    finally:
        await store.aclose()
    shared = patient_store(connection.client, "solo")
    assert await shared.snapshot(KEY) == await memory.snapshot(KEY)  # every value reached Redis, in order
    assert await shared.snapshot(EDGE) == await memory.snapshot(EDGE)
    assert store.calls < 800  # batched: far fewer calls than steps


async def test_replicas_converge_on_the_shared_window(connection: RedisConnection) -> None:
    replicas = [BatchedWindowStore(connection.client, "many", background=False) for _ in range(3)]
    exact = patient_store(connection.client, "many")
    rng = random.Random(5)
    for _ in range(40):
        for replica in replicas:
            for _ in range(rng.randrange(1, 6)):
                await replica.step(KEY, rng.random(), 30, 0.3)
        for replica in rng.sample(replicas, len(replicas)):
            await replica.flush()
    for replica in replicas:
        await replica.flush()  # the last one to pick up the others' final flushes
    truth = await exact.snapshot(KEY)
    assert len(truth) == 30
    for replica in replicas:
        assert await replica.snapshot(KEY) == truth
    # The next step on any replica now answers what an exact step would.
    step = await replicas[0].step(KEY, 0.5, 30, 0.3)
    memory = MemoryWindowStore()
    for value in [*truth, 0.5]:
        expected = await memory.step(KEY, value, 30, 0.3)
    assert step == expected


async def test_one_replica_on_a_large_window_decides_exactly_within_reach(connection: RedisConnection) -> None:
    """A window too large to hold whole: the flush returns only the ranks around the quantile and
    the oldest values, and steps between flushes still equal the whole window's."""
    store = BatchedWindowStore(connection.client, "large", background=False)
    memory = MemoryWindowStore()
    rng = random.Random(6)
    for i in range(3000):  # fills W 1,000 three times over
        key, confidence = rng.choice((KEY, EDGE)), rng.random()
        assert await store.step(key, confidence, 1000, 0.3) == await memory.step(key, confidence, 1000, 0.3), i
        if i % 12 == 0:
            await store.flush()
    await store.flush()
    assert await store.snapshot(KEY) == await memory.snapshot(KEY)
    # Twice the values sent per flush (at most 12 here) either side, plus as many oldest: never W.
    assert store.values_returned / store.window_flushes <= 3 * 24 + 2


async def test_a_flush_reads_back_as_much_with_eight_replicas_as_with_one(connection: RedisConnection) -> None:
    """The cost of a flush follows the caller's own pace, not the number of replicas stepping the
    window; after a flush a replica decides on the whole shared window."""
    returned = {}
    for replicas in (1, 8):
        stores = [BatchedWindowStore(connection.client, f"pace{replicas}", background=False)
                  for _ in range(replicas)]
        rng = random.Random(7)
        for _ in range(60):
            for store in stores:
                for _ in range(10):
                    await store.step(KEY, rng.random(), 2000, 0.3)
                await store.flush()
        returned[replicas] = stores[0].values_returned / stores[0].window_flushes
        await stores[0].flush(refresh=KEY)
        truth = await patient_store(connection.client, f"pace{replicas}").snapshot(KEY)
        assert len(truth) == min(2000, 600 * replicas)
        memory = MemoryWindowStore()
        for value in [*truth, 0.5]:
            expected = await memory.step(KEY, value, 2000, 0.3)
        assert await stores[0].step(KEY, 0.5, 2000, 0.3) == expected
    assert returned[8] <= returned[1] + 1 <= 3 * 20 + 3  # reach 20: twice the 10 values per flush


async def test_a_send_cap_samples_hot_windows_and_leaves_cold_ones_whole(connection: RedisConnection) -> None:
    """`max_sent_per_s` 250 at flush 20 ms: 5 values per flush per window. The hot window (50 steps
    per interval) sends one step in 10, and decides on exactly the window those build; the cold one
    (3 per interval) sends all; every step decides."""
    store = BatchedWindowStore(connection.client, "capped", flush_s=0.02, background=False, max_sent_per_s=250)
    hot_memory, cold_memory = MemoryWindowStore(), MemoryWindowStore()  # fed only what is sent
    rng = random.Random(8)
    cold = 0
    for interval in range(100):
        for i in range(50):
            confidence = rng.random()
            step = await store.step(KEY, confidence, 1000, 0.3)
            if interval == 0 or i % 10 == 9:  # the first interval has no pace yet: all sent
                assert step == await hot_memory.step(KEY, confidence, 1000, 0.3)
            else:  # not sent: decided against the window without joining it
                window = await hot_memory.snapshot(KEY)
                assert step.length == len(window)
                assert step.threshold == linear_quantile(sorted(window), quantile_fraction(0.3))
        for _ in range(3):
            confidence = rng.random()
            assert await store.step(EDGE, confidence, 1000, 0.3) == await cold_memory.step(EDGE, confidence, 1000, 0.3)
            cold += 1
        await store.flush()
    shared = patient_store(connection.client, "capped")
    assert await shared.snapshot(KEY) == await hot_memory.snapshot(KEY)
    assert len(await shared.snapshot(KEY)) == 50 + 99 * 5
    assert await shared.snapshot(EDGE) == await cold_memory.snapshot(EDGE) and cold == 300


async def test_a_reset_elsewhere_restarts_the_mirror(connection: RedisConnection) -> None:
    store = BatchedWindowStore(connection.client, "reset", background=False)
    for value in (0.1, 0.2, 0.3):
        await store.step(KEY, value, 10, 0.5)
    await store.flush()
    await patient_store(connection.client, "reset").reset()  # another replica's admin reset
    await patient_store(connection.client, "reset").step(KEY, 0.9, 10, 0.5)
    await store.step(KEY, 0.7, 10, 0.5)
    await store.flush()
    assert await store.snapshot(KEY) == [0.9, 0.7]  # the shared window, not the stale mirror


async def test_an_outage_decides_locally_and_flushes_after(redis_factory: ServerFactory) -> None:
    server = redis_factory()
    connection = connect(server.url)
    store = BatchedWindowStore(connection.client, "outage", background=False)
    try:
        await store.step(KEY, 0.4, 10, 0.5)
        await store.flush()
        server.stop()
        await store.step(KEY, 0.6, 10, 0.5)
        await store.flush()  # fails: the outage begins
        assert store.degraded and store.error_count == 1
        step = await store.step(KEY, 0.8, 10, 0.5)
        assert step.fallback and step.length == 3  # the local view, warm
        server.start()  # empty: Redis lost the window
        for _ in range(100):  # bounded; the retry is due 0.5 s after the failure
            await asyncio.sleep(0.05)
            await store.flush()
            if not store.degraded:
                break
        assert not store.degraded
        # The value of the failed flush may or may not have landed, so it is not sent twice; what
        # was decided during the outage reaches the shared window now.
        assert await patient_store(connection.client, "outage").snapshot(KEY) == [0.8]
        assert not (await store.step(KEY, 0.2, 10, 0.5)).fallback
    finally:
        await store.aclose()
        await connection.close()


async def test_a_snapshot_of_a_window_never_stepped_here_trims_nothing(connection: RedisConnection) -> None:
    exact = patient_store(connection.client, "peek")
    for value in (0.1, 0.2, 0.3):
        await exact.step(KEY, value, 10, 0.5)
    store = BatchedWindowStore(connection.client, "peek", background=False)
    assert await store.snapshot(KEY) == [0.1, 0.2, 0.3]
    assert await exact.snapshot(KEY) == [0.1, 0.2, 0.3]


async def test_the_factory_builds_batched_stores(redis_server: RedisServer, redis_client: Redis) -> None:
    from gateway.config.schema import WindowsConfig

    settings = WindowsConfig(store="redis", redis_url=redis_server.url, namespace="fac", sync="batched",
                             flush_ms=5)
    stores = build_stores(settings, probe_window=10)
    try:
        assert isinstance(stores.windows, BatchedWindowStore)
        for value in (0.3, 0.6):
            await stores.windows.step(KEY, value, 10, 0.3)
        for _ in range(100):  # bounded: the background flush runs every 5 ms
            await asyncio.sleep(0.01)
            if await redis_client.llen("{fac:recserve:device:classification}:fifo") == 2:
                break
        assert await patient_store(redis_client, "fac").snapshot(KEY) == [0.3, 0.6]
    finally:
        await stores.close()


def test_a_batched_gateway_reports_its_flushes(tiers: dict[str, ThreadedTier], redis_server: RedisServer,
                                               tmp_path: Path) -> None:
    """/metrics counts what the flushes cost Redis: values sent, scores read back, script calls."""
    windows = {"store": "redis", "redis_url": redis_server.url, "namespace": "flushmetrics", "sync": "batched",
               "flush_ms": 5}
    gateway = GatewayProcess("batched-metrics", _config(tiers, windows), tmp_path).start()
    try:
        with gateway.sdk() as client:
            for prompt in _prompts(12, seed=4):
                client.chat.completions.create(model="recserve", messages=[{"role": "user", "content": prompt}],
                                               max_tokens=8)
        counters: dict[str, float] = {}
        for _ in range(100):  # bounded: the flusher runs every 5 ms
            text = httpx.get(gateway.url.removesuffix("/v1") + "/metrics", timeout=5).text
            counters = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
                        if line.startswith("recserve_window_") and not line.startswith("#")}
            if counters.get("recserve_window_flush_values_sent_total", 0) >= 12:
                break
            time.sleep(0.05)
    finally:
        gateway.stop()
    # Every request stepped the device window; those that escalated, the edge window too.
    assert counters["recserve_window_flush_values_sent_total"] >= 12
    assert counters["recserve_window_flush_values_read_total"] >= counters["recserve_window_flush_windows_total"]
    assert 1 <= counters["recserve_window_flush_calls_total"] <= counters["recserve_window_flush_windows_total"]
    assert counters["recserve_window_flushes_total"] >= 1
    assert counters["recserve_window_steps_beyond_reach_total"] == 0


async def test_closing_stops_the_flusher_even_when_a_layer_below_swallows_its_cancellation(
        connection: RedisConnection, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cancellation turned into another error inside a flush (a client library may do that) must
    not keep the background flusher alive: `aclose` returns."""
    store = BatchedWindowStore(connection.client, "closing", flush_s=0.001)
    inside = asyncio.Event()

    async def flush(**_: object) -> None:
        inside.set()
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            raise ConnectionError("the connection was torn down") from None

    await store.step(KEY, 0.5, 50, 0.3)  # starts the background flusher
    flushers = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    monkeypatch.setattr(store, "flush", flush)
    await asyncio.wait_for(inside.wait(), 10)
    async with asyncio.timeout(10):
        await store.aclose()
    assert flushers and all(task.done() for task in flushers)
