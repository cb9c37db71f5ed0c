"""Redis goes away and comes back: local windows answer meanwhile, one warning, backoff, recovery."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from policies.base import Scope, WindowKey, WindowStep, WindowStore
from policies.recserve import RecServePolicy
from policies.stores.factory import build_window_store
from policies.stores.failover import FailoverWindowStore
from policies.stores.faults import STORE_FAULTS
from policies.stores.memory import MemoryWindowStore
from policies.stores.redis import RedisWindowStore
from policies.stores.urls import RedisConnection, connect
from tests.support.redis_procs import RedisServer

from .conftest import ServerFactory

KEY = WindowKey("recserve", "device", "classification")
LOGGER = "recserve.windows"


@dataclass
class FakeClock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class CountingStore:
    """Delegates to the real Redis store and records when the failover store tried it."""

    inner: WindowStore
    clock: FakeClock
    attempts: list[float] = field(default_factory=list)

    async def step(self, key: WindowKey, confidence: float, size: int, beta: float) -> WindowStep:
        self.attempts.append(self.clock.now)
        return await self.inner.step(key, confidence, size, beta)

    async def snapshot(self, key: WindowKey) -> list[float]:
        return await self.inner.snapshot(key)

    async def reset(self, key: WindowKey | None = None) -> None:
        await self.inner.reset(key)


@pytest.fixture
def server(redis_factory: ServerFactory) -> RedisServer:
    """A server of the test's own, since the test stops it."""
    return redis_factory(extra_args=["--requirepass", "hunter2"])


@pytest.fixture
async def connection(server: RedisServer) -> AsyncIterator[RedisConnection]:
    connection = connect(f"redis://:hunter2@127.0.0.1:{server.port}/0")
    yield connection
    await connection.close()


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


def _infos(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.INFO]


async def test_outage_backoff_and_recovery(server: RedisServer, connection: RedisConnection,
                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    clock = FakeClock()
    shared = CountingStore(RedisWindowStore(connection.client, "fo"), clock)
    store = FailoverWindowStore(shared, MemoryWindowStore(), clock=clock,
                                describe="Redis window store at redis://:***@127.0.0.1")
    for value in (0.2, 0.4, 0.6):
        assert not (await store.step(KEY, value, 100, 0.5)).fallback
    assert await store.local.snapshot(KEY) == [0.2, 0.4, 0.6]  # mirrored: the outage starts warm
    assert not store.degraded

    server.stop()
    step = await store.step(KEY, 0.8, 100, 0.5)
    assert step == WindowStep(0.5, 4, fallback=True)  # local window 0.2..0.8, not a cold start
    assert store.degraded
    for _ in range(20):  # backing off: answered locally without touching Redis
        assert (await store.step(KEY, 0.5, 100, 0.5)).fallback
    assert shared.attempts[-1] == clock.now and len(shared.attempts) == 4

    # Probes at 0.5, 1, 2, 4, 8, 10, 10 s after the previous failure, each one request only.
    outage_start = clock.now
    for _ in range(300):
        clock.now += 0.25
        assert (await store.step(KEY, 0.5, 100, 0.5)).fallback
    probes = [round(t - outage_start, 2) for t in shared.attempts[4:]]
    assert probes[:7] == [0.5, 1.5, 3.5, 7.5, 15.5, 25.5, 35.5]
    assert len(_warnings(caplog)) == 1
    assert "hunter2" not in caplog.text and "ConnectionError" in _warnings(caplog)[0]

    server.start()  # same port, empty (no persistence), scripts gone: NOSCRIPT reload path
    clock.now += 10
    back = await store.step(KEY, 0.9, 100, 0.5)
    assert back == WindowStep(0.9, 1)  # the shared window again (Redis lost it: cold)
    assert not store.degraded
    assert len(_infos(caplog)) == 1 and "answering again" in _infos(caplog)[0]
    assert (await store.step(KEY, 0.1, 100, 0.5)) == WindowStep(0.5, 2)

    server.stop()  # a second outage is a second warning
    assert (await store.step(KEY, 0.3, 100, 0.5)).fallback
    assert len(_warnings(caplog)) == 2


async def test_in_flight_failures_do_not_stretch_the_backoff(server: RedisServer, connection: RedisConnection,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    shared = CountingStore(RedisWindowStore(connection.client, "burst"), clock)
    store = FailoverWindowStore(shared, MemoryWindowStore(), clock=clock)
    await store.step(KEY, 0.5, 10, 0.3)
    server.stop()
    steps = await asyncio.gather(*(store.step(KEY, i / 50, 10, 0.3) for i in range(50)))
    assert all(step.fallback for step in steps)
    assert len(_warnings(caplog)) == 1
    clock.now += 0.5  # the first backoff, not 0.5 * 2**k for k failed in-flight requests
    await store.step(KEY, 0.5, 10, 0.3)
    assert shared.attempts[-1] == clock.now


async def test_slow_redis_times_out_and_only_one_request_probes(
        server: RedisServer, connection: RedisConnection, caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    shared = CountingStore(RedisWindowStore(connection.client, "slow"), clock)
    store = FailoverWindowStore(shared, MemoryWindowStore(), clock=clock)
    await store.step(KEY, 0.5, 10, 0.3)
    server.pause()  # accepts, never answers: only the socket timeout gets us out
    try:
        first = await asyncio.wait_for(store.step(KEY, 0.6, 10, 0.3), timeout=10)
        assert first.fallback
        assert "Timeout" in _warnings(caplog)[0]
        clock.now += 0.5
        attempts = len(shared.attempts)
        steps = await asyncio.wait_for(
            asyncio.gather(*(store.step(KEY, 0.5, 10, 0.3) for _ in range(20))), timeout=10)
        assert all(step.fallback for step in steps)
        assert len(shared.attempts) == attempts + 1  # one probe; the other 19 did not wait on Redis
    finally:
        server.resume()
    clock.now += 1.0
    assert not (await store.step(KEY, 0.5, 10, 0.3)).fallback
    assert len(_warnings(caplog)) == 1


async def test_auth_error_falls_back(server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    connection = connect(f"redis://:wrong-password@127.0.0.1:{server.port}/0")
    try:
        store = FailoverWindowStore(RedisWindowStore(connection.client, "auth"), MemoryWindowStore(),
                                    describe=f"Redis at {connection.url}")
        policy = RecServePolicy(store, lambda _tier: 0.5, 10)
        decision = await policy.decide("device", Scope("classification"), 0.4)
        assert decision.fallback and not decision.escalate
        assert "AuthenticationError" in _warnings(caplog)[0]
        assert "wrong-password" not in caplog.text
    finally:
        await connection.close()


async def test_snapshot_and_reset_during_an_outage(server: RedisServer, connection: RedisConnection) -> None:
    store = FailoverWindowStore(RedisWindowStore(connection.client, "snap"), MemoryWindowStore(), clock=FakeClock())
    await store.step(KEY, 0.3, 10, 0.3)
    assert await store.snapshot(KEY) == [0.3]
    server.stop()
    assert await store.snapshot(KEY) == [0.3]  # the local mirror
    assert store.degraded
    with pytest.raises(STORE_FAULTS):  # an admin asking for a reset must hear it failed
        await store.reset()
    assert await store.local.snapshot(KEY) == []


async def test_factory_end_to_end_with_real_clock(server: RedisServer,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    @dataclass(frozen=True)
    class Windows:
        store: str
        redis_url: str
        namespace: str
        sync: str = "exact"
        flush_ms: float = 20.0

    store, close = build_window_store(
        Windows("redis", f"redis://:hunter2@127.0.0.1:{server.port}/0", "factory"))
    try:
        assert isinstance(store, FailoverWindowStore)
        assert not (await store.step(KEY, 0.5, 10, 0.3)).fallback
        server.stop()
        assert (await store.step(KEY, 0.5, 10, 0.3)).fallback
        assert "redis://:***@127.0.0.1" in _warnings(caplog)[0] and "hunter2" not in caplog.text
        server.start()
        for _ in range(100):  # bounded: the first probe is due 0.5 s after the failure
            await asyncio.sleep(0.05)
            if not (await store.step(KEY, 0.5, 10, 0.3)).fallback:
                break
        assert not store.degraded
    finally:
        await close()


async def test_factory_memory_and_config_model() -> None:
    from gateway.config.schema import WindowsConfig  # the real config model satisfies the factory's Protocol

    store, close = build_window_store(WindowsConfig(namespace="recserve"))
    assert isinstance(store, MemoryWindowStore)
    await close()
    refused = WindowsConfig(store="redis", redis_url="redis://127.0.0.1:1/0", namespace="f")
    store, close = build_window_store(refused)
    assert isinstance(store, FailoverWindowStore)  # built without connecting: Redis may come later
    assert (await store.step(KEY, 0.5, 10, 0.3)).fallback
    await close()
    with pytest.raises(ValueError):
        build_window_store(WindowsConfig(store="redis", redis_url="redis://h/0?bogus=1", namespace="f"))


async def test_requests_queued_behind_a_hung_redis_fail_over_too(server: RedisServer,
                                                                 connection: RedisConnection) -> None:
    """With every permit held by a stuck call, the next steps give up waiting and answer locally."""
    shared = RedisWindowStore(connection.client, "queue", max_in_flight=2, queue_timeout_s=0.1)
    store = FailoverWindowStore(shared, MemoryWindowStore())
    await store.step(KEY, 0.5, 10, 0.3)
    server.pause()
    try:
        steps = await asyncio.wait_for(
            asyncio.gather(*(store.step(KEY, 0.5, 10, 0.3) for _ in range(10))), timeout=10)
    finally:
        server.resume()
    assert all(step.fallback for step in steps)
    server.pause()
    try:
        outcomes = await asyncio.gather(*(shared.step(KEY, 0.5, 10, 0.3) for _ in range(3)),
                                        return_exceptions=True)
    finally:
        server.resume()
    assert all(isinstance(outcome, STORE_FAULTS) for outcome in outcomes)
    assert sum("no free connection" in str(outcome) for outcome in outcomes) == 1
