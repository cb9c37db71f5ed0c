"""`windows.sync: auto` on a real redis-server: cold windows are stepped exactly, hot ones batched,
and a window moving between the two loses no value and decides on the whole window throughout."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from policies.base import WindowKey
from policies.stores.adaptive import AdaptiveWindowStore
from policies.stores.batched import BatchedWindowStore
from policies.stores.factory import build_stores
from policies.stores.failover import FailoverWindowStore
from policies.stores.memory import MemoryWindowStore
from policies.stores.redis import RedisWindowStore
from policies.stores.urls import RedisConnection, connect
from tests.support.redis_procs import RedisServer

HOT = WindowKey("recserve", "device", "classification")
COLD = WindowKey("recserve", "edge", "classification")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def connection(redis_server: RedisServer, redis_client: Redis) -> AsyncIterator[RedisConnection]:
    connection = connect(redis_server.url)  # redis_client has flushed the server
    yield connection
    await connection.close()


def _auto(connection: RedisConnection, namespace: str, clock: Clock) -> AdaptiveWindowStore:
    exact = FailoverWindowStore(RedisWindowStore(connection.client, namespace), MemoryWindowStore())
    batched = BatchedWindowStore(connection.client, namespace, background=False)
    return AdaptiveWindowStore(exact, batched, hot_per_s=100, clock=clock)


async def test_windows_take_the_mode_their_pace_calls_for_and_decide_exactly(connection: RedisConnection) -> None:
    clock = Clock()
    store = _auto(connection, "auto", clock)
    memory = MemoryWindowStore()  # one replica alone: every decision equals the whole window's
    rng = random.Random(4)
    modes: list[tuple[str, str]] = []
    flushed: list[int] = []  # windows the batched store had sent by the end of each second

    async def second(hot_steps: int, cold_steps: int) -> None:
        for i in range(max(hot_steps, cold_steps)):
            clock.now += 1.0 / max(hot_steps, cold_steps)
            for key, steps in ((HOT, hot_steps), (COLD, cold_steps)):
                if i < steps:
                    value = rng.random()
                    assert await store.step(key, value, 500, 0.3) == await memory.step(key, value, 500, 0.3)
            if i % 10 == 0:
                await store.batched.flush()
        modes.append((store.mode(HOT), store.mode(COLD)))
        flushed.append(store.batched.window_flushes)

    for _ in range(3):
        await second(300, 5)  # HOT at 300/s: batched once a second has been counted; COLD stays exact
    for _ in range(3):
        await second(20, 5)  # HOT cools below 50/s: back to exact
    # The pace is measured over whole seconds: a window changes mode one second after its traffic did.
    assert modes == [("exact", "exact")] + [("batched", "exact")] * 3 + [("exact", "exact")] * 2
    assert flushed[0] == 0 and flushed[1] > 0  # nothing batched while every window was exact
    assert flushed[4] == flushed[5]  # once back to exact, the batched store sends nothing more
    shared = RedisWindowStore(connection.client, "auto")
    for key in (HOT, COLD):  # every value reached the shared window, in order
        assert await shared.snapshot(key) == await memory.snapshot(key)


async def test_the_factory_builds_the_auto_store(redis_server: RedisServer, redis_client: Redis) -> None:
    from gateway.config.schema import WindowsConfig

    settings = WindowsConfig(store="redis", redis_url=redis_server.url, namespace="fa", sync="auto",
                             hot_steps_per_flush=1, max_sent_per_s=1000)
    stores = build_stores(settings, probe_window=10)
    try:
        assert isinstance(stores.windows, AdaptiveWindowStore)
        await stores.windows.step(COLD, 0.4, 10, 0.3)
        assert await RedisWindowStore(redis_client, "fa").snapshot(COLD) == [0.4]  # exact: at once
    finally:
        await stores.close()
