"""The quality policy's probe windows in Redis: shared by replicas, cheap to read, local in an outage."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from policies.base import WindowKey
from policies.competence import fit_competence
from policies.quality import ProbeWindows
from policies.stores.probes_redis import SharedProbeWindows, probe_keys
from policies.stores.urls import RedisConnection, connect
from tests.support.redis_procs import RedisServer

from .conftest import ServerFactory

KEY = WindowKey("quality", "device", "classification")
PAIRS = [(0.1 * i, i % 3 != 0) for i in range(1, 10)]
REFRESH_S = 0.05
SETTLE_S = 30.0  # the most a settle waits: a bound, not an expectation


async def _settle(store: SharedProbeWindows) -> None:
    """Let the background writes and reads started so far finish: all of them, however slow the machine
    (a bound of 0.5 s left a busy machine's writes running into the next step's command count)."""
    deadline = time.monotonic() + SETTLE_S
    await asyncio.sleep(0.01)
    while store._tasks and time.monotonic() < deadline:  # the store's own background work, nothing else
        await asyncio.wait(list(store._tasks), timeout=deadline - time.monotonic())


def _shared(client: Redis, size: int = 5, refresh_s: float = 0.05) -> SharedProbeWindows:
    return SharedProbeWindows(client, "ps", size, refresh_s=refresh_s)


async def test_two_replicas_share_one_window_in_redis(redis_client: Redis) -> None:
    a, b = _shared(redis_client), _shared(redis_client)
    try:
        for confidence, agreed in PAIRS:
            a.add(KEY, confidence, agreed)
            await _settle(a)
        probes, version = probe_keys("ps", KEY)
        assert (probes, version) == ("{ps:quality:device:classification}:probes",
                                     "{ps:quality:device:classification}:probes:v")
        assert await redis_client.llen(probes) == 5  # trimmed to the window at every add
        assert int(await redis_client.get(version) or 0) == len(PAIRS)
        expected = fit_competence(PAIRS[-5:])
        assert a.curve(KEY) == expected and a.count(KEY) == 5  # A read its own probes back at once
        assert b.count(KEY) == 0  # B has not read yet: its (empty) local windows answer meanwhile
        await b.sync(KEY)
        assert b.curve(KEY) == expected and b.count(KEY) == 5
    finally:
        await a.aclose()
        await b.aclose()


async def test_a_decision_reads_the_cache_and_redis_only_when_the_version_moved(redis_client: Redis) -> None:
    reader, writer = _shared(redis_client, size=200, refresh_s=REFRESH_S), _shared(redis_client, size=200)
    try:
        for i in range(200):
            writer.add(KEY, i / 200, i > 100)
        await _settle(writer)
        await reader.sync(KEY)
        await redis_client.config_resetstat()
        started = time.monotonic()
        for _ in range(2000):  # about 0.1 s of decisions on a developer's machine: two refresh periods
            reader.curve(KEY)
        await asyncio.sleep(0.12)
        for _ in range(10):
            reader.curve(KEY)
        await _settle(reader)
        periods = (time.monotonic() - started) / REFRESH_S
        stats = await redis_client.info("commandstats")
        # At most one version check (EVALSHA → GET) per refresh period however many decisions ask (the
        # promise; counted in periods that passed, as a machine 2.5x slower with both cores busy runs
        # the 2000 decisions over many more of them: 28 checks were seen there), and not one LRANGE:
        # nothing changed.
        assert stats["cmdstat_evalsha"]["calls"] <= periods + 2, periods
        assert "cmdstat_lrange" not in stats
        writer.add(KEY, 0.99, True)
        await _settle(writer)
        await asyncio.sleep(0.06)
        reader.curve(KEY)  # due again: the version moved, so this read brings the pairs
        await _settle(reader)
        assert (await redis_client.info("commandstats"))["cmdstat_lrange"]["calls"] >= 1
        assert reader.count(KEY) == 200 and reader.curve(KEY) == writer.curve(KEY)
    finally:
        await reader.aclose()
        await writer.aclose()


async def test_resize_keeps_the_newest_probes(redis_client: Redis) -> None:
    store = _shared(redis_client, size=5)
    local = ProbeWindows(5)
    try:
        for confidence, agreed in PAIRS:
            store.add(KEY, confidence, agreed)
            local.add(KEY, confidence, agreed)
        await _settle(store)
        store.resize(3)
        local.resize(3)
        await store.sync(KEY)
        assert store.count(KEY) == local.count(KEY) == 3
        assert store.curve(KEY) == local.curve(KEY) == fit_competence(PAIRS[-3:])
    finally:
        await store.aclose()


@pytest.fixture
async def own_server(redis_factory: ServerFactory) -> AsyncIterator[tuple[RedisServer, RedisConnection]]:
    server = redis_factory()  # the test stops it
    connection = connect(server.url)
    yield server, connection
    await connection.close()


async def test_an_outage_falls_back_to_the_local_probes(own_server: tuple[RedisServer, RedisConnection],
                                                        caplog: pytest.LogCaptureFixture) -> None:
    server, connection = own_server
    caplog.set_level(logging.INFO, logger="recserve.windows")
    store = SharedProbeWindows(connection.client, "po", 50, refresh_s=0.01,
                               describe="Redis probe store at test")
    try:
        store.add(KEY, 0.9, True)
        await _settle(store)
        assert store.count(KEY) == 1 and not store.degraded
        server.stop()
        for confidence, agreed in PAIRS:  # adds fail over: no exception, kept locally
            store.add(KEY, confidence, agreed)
            await _settle(store)
        assert store.degraded and store.error_count >= 1
        assert store.count(KEY) == 1 + len(PAIRS)  # the local windows, which mirrored every add
        assert store.curve(KEY) == fit_competence([(0.9, True), *PAIRS])
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "Redis probe store at test failing (connection" in warnings[0]
        server.start()  # empty again: no persistence
        for _ in range(100):  # the backoff's next retry (0.5 s) finds it back
            store.curve(KEY)
            await asyncio.sleep(0.02)
            if not store.degraded:
                break
        assert not store.degraded
        await store.sync(KEY)
        assert store.count(KEY) == 0  # shared again; what was added during the outage stayed local
    finally:
        await store.aclose()


async def test_a_reset_moves_the_version_on_so_no_replica_keeps_a_stale_curve(redis_client: Redis) -> None:
    """B holds version 3; A resets, then adds 3 new probes. Had the reset restarted the counter, B would
    see version 3 again and keep its stale curve; it must read the new pairs instead."""
    a, b = _shared(redis_client), _shared(redis_client)
    try:
        for confidence, agreed in PAIRS[:3]:
            a.add(KEY, confidence, agreed)
        await _settle(a)
        await b.sync(KEY)
        assert b.count(KEY) == 3
        await a.reset(KEY)  # done when it returns: the shared window is empty now
        probes, version = probe_keys("ps", KEY)
        assert await redis_client.llen(probes) == 0 and int(await redis_client.get(version) or 0) == 4
        fresh = [(0.9, False), (0.95, False), (0.99, False)]
        for confidence, agreed in fresh:
            a.add(KEY, confidence, agreed)
        await _settle(a)
        await b.sync(KEY)
        assert b.curve(KEY) == fit_competence(fresh) and b.count(KEY) == 3
        await a.reset()  # everything: same rule for every tier and task
        assert await redis_client.llen(probes) == 0 and int(await redis_client.get(version) or 0) == 8
        await b.sync(KEY)
        assert b.count(KEY) == 0 and b.curve(KEY) is None
    finally:
        await a.aclose()
        await b.aclose()
