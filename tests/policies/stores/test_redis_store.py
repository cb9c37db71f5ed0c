"""The Redis store's own behaviour: FIFO trimming, key layout, isolation, reset, snapshot, atomicity."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from policies.base import WindowKey, WindowStep
from policies.stores.redis import RedisWindowStore, window_keys, window_tag
from tests.support.redis_procs import RedisServer, patient_store

KEY = WindowKey("recserve", "device", "classification")


async def test_fifo_trims_oldest_first(redis_client: Redis) -> None:
    store = patient_store(redis_client, "fifo")
    lengths = [(await store.step(KEY, value, 3, 0.5)).length for value in (0.9, 0.1, 0.5, 0.7, 0.2)]
    assert lengths == [1, 2, 3, 3, 3]
    assert await store.snapshot(KEY) == [0.5, 0.7, 0.2]  # 0.9 and 0.1 left in arrival order
    z, fifo, _ = window_keys("fifo", KEY)
    assert await redis_client.zcard(z) == await redis_client.llen(fifo) == 3


async def test_equal_confidences_are_all_kept(redis_client: Redis) -> None:
    store = patient_store(redis_client, "ties")
    for _ in range(5):
        step = await store.step(KEY, 0.5, 10, 0.3)
    assert step == WindowStep(0.5, 5)
    assert await store.snapshot(KEY) == [0.5] * 5


async def test_smaller_window_size_trims_at_once(redis_client: Redis) -> None:
    store = patient_store(redis_client, "shrink")
    for value in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6):
        await store.step(KEY, value, 10, 0.5)
    step = await store.step(KEY, 0.7, 2, 0.5)  # the operator lowered policy.recserve.window
    assert step.length == 2
    assert await store.snapshot(KEY) == [0.6, 0.7]
    assert step.threshold == float(np.percentile([0.6, 0.7], 50))


async def test_keys_share_one_cluster_slot_and_are_namespaced(redis_client: Redis) -> None:
    store = patient_store(redis_client, "prod-eu")
    await store.step(KEY, 0.4, 10, 0.3)
    names = sorted(n.decode() if isinstance(n, bytes) else n for n in await redis_client.keys("*"))
    assert names == [
        "{prod-eu:recserve:device:classification}:fifo",
        "{prod-eu:recserve:device:classification}:seq",
        "{prod-eu:recserve:device:classification}:z",
    ]
    assert len({key_slot(name.encode()) for name in names}) == 1
    # Different windows land on different tags, so a cluster spreads them over slots.
    other = window_tag("prod-eu", WindowKey("recserve", "edge", "classification"))
    assert other != window_tag("prod-eu", KEY)


async def test_awkward_names_cannot_break_the_hash_tag_or_collide(redis_client: Redis) -> None:
    braces = WindowKey("recserve", "ti}er{", "gen:eration")
    z, fifo, seq = window_keys("ns", braces)
    assert z.count("{") == 1 and z.index("}") == len(window_tag("ns", braces)) - 1
    assert len({key_slot(k.encode()) for k in (z, fifo, seq)}) == 1
    assert window_tag("a:b", KEY) != window_tag("a", WindowKey("b:recserve", "device", "classification"))
    store = patient_store(redis_client, "ns")
    assert (await store.step(braces, 0.3, 5, 0.3)).length == 1
    assert await store.snapshot(braces) == [0.3]


async def test_namespaces_and_windows_are_independent(redis_client: Redis) -> None:
    blue, green = patient_store(redis_client, "blue"), patient_store(redis_client, "green")
    edge = WindowKey("recserve", "edge", "classification")
    gen = WindowKey("recserve", "device", "generation")
    await blue.step(KEY, 0.1, 10, 0.3)
    await blue.step(KEY, 0.2, 10, 0.3)
    await blue.step(edge, 0.9, 10, 0.3)
    await blue.step(gen, 0.8, 10, 0.3)
    await green.step(KEY, 0.5, 10, 0.3)
    assert await blue.snapshot(KEY) == [0.1, 0.2]
    assert await blue.snapshot(edge) == [0.9]
    assert await blue.snapshot(gen) == [0.8]
    assert await green.snapshot(KEY) == [0.5]


async def test_reset_one_window_or_the_whole_namespace(redis_client: Redis) -> None:
    # A namespace with glob characters must not make reset() reach into other namespaces.
    store, bystander = patient_store(redis_client, "re*set"), patient_store(redis_client, "re-set")
    edge = WindowKey("recserve", "edge", "classification")
    for window in (KEY, edge):
        await store.step(window, 0.5, 10, 0.3)
        await bystander.step(window, 0.5, 10, 0.3)
    await store.reset(KEY)
    assert await store.snapshot(KEY) == []
    assert await store.snapshot(edge) == [0.5]
    assert (await store.step(KEY, 0.7, 10, 0.3)).length == 1  # starts cold again
    await store.reset()
    assert await store.snapshot(KEY) == await store.snapshot(edge) == []
    assert await bystander.snapshot(KEY) == await bystander.snapshot(edge) == [0.5]
    await redis_client.set("unrelated", "1")
    # The namespace's keys that are not windows: the cluster's control record, a probe window.
    others = {"{re*set:control}": "version", "{re*set:control}:replicas": "r1",
              "{re*set:quality:device:classification}:probes:v": "7"}
    for name, value in others.items():
        await redis_client.set(name, value)
    await store.reset()
    assert await redis_client.get("unrelated") == b"1"
    for name, value in others.items():
        assert await redis_client.get(name) == value.encode()


async def test_reset_of_many_windows_is_batched(redis_client: Redis) -> None:
    store = patient_store(redis_client, "many")
    for i in range(300):  # 900 keys: more than one SCAN/DEL batch
        await store.step(WindowKey("recserve", f"tier{i}", "generation"), 0.5, 4, 0.3)
    await store.reset()
    assert await redis_client.dbsize() == 0


async def test_snapshot_is_exact(redis_client: Redis) -> None:
    store = patient_store(redis_client, "exact")
    values = [0.1, 1 / 3, 5e-324, 1 - 2**-53, 0.30000000000000004, 0.0, 1.0]
    for value in values:
        await store.step(KEY, value, 100, 0.3)
    assert await store.snapshot(KEY) == values


async def test_script_is_reloaded_after_script_flush(redis_client: Redis) -> None:
    """EVALSHA falls back to loading the script (NOSCRIPT) — what a Redis restart or failover looks like."""
    store = patient_store(redis_client, "noscript")
    await store.step(KEY, 0.2, 10, 0.5)
    await redis_client.script_flush()
    assert await store.step(KEY, 0.4, 10, 0.5) == WindowStep(0.30000000000000004, 2)


async def test_rejects_what_redis_cannot_store(redis_client: Redis) -> None:
    store = patient_store(redis_client, "bad")
    with pytest.raises(ValueError, match="finite"):
        await store.step(KEY, float("nan"), 10, 0.3)
    with pytest.raises(ValueError, match="at least 1"):
        await store.step(KEY, 0.5, 0, 0.3)
    with pytest.raises(ValueError, match="namespace"):
        RedisWindowStore(redis_client, "")


async def test_concurrent_replicas_step_atomically(redis_server: RedisServer) -> None:
    """Three clients (three replicas) interleave 600 steps: every step saw a distinct window length."""
    clients = [Redis.from_url(redis_server.url) for _ in range(3)]
    try:
        # 600 steps at once queue behind 64 slots per store; on a loaded machine that can take more than
        # the production bounds (queueing and call together), which this test is not about.
        stores = [patient_store(client, "atomic") for client in clients]
        await stores[0].reset()
        steps = await asyncio.gather(*(
            stores[i % 3].step(KEY, (i % 97) / 97, 10_000, 0.3) for i in range(600)
        ))
        assert sorted(step.length for step in steps) == list(range(1, 601))
        assert sorted(await stores[1].snapshot(KEY)) == sorted((i % 97) / 97 for i in range(600))
        await stores[0].reset()
    finally:
        for client in clients:
            await client.aclose()
