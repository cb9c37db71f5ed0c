"""The Redis store, the memory store and numpy agree exactly, step by step, and so do the decisions."""

from __future__ import annotations

import asyncio
import random
import uuid

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from policies.base import Scope, WindowKey
from policies.recserve import RecServePolicy
from policies.stores.memory import MemoryWindowStore
from tests.support.redis_procs import RedisServer, patient_store

# Ties and exact binary fractions are where interpolation bugs hide; plain floats cover the rest
# (hypothesis also draws 0.0, 1.0 and subnormals from this range).
confidences = st.one_of(
    st.floats(min_value=0.0, max_value=1.0, allow_nan=False),
    st.sampled_from([0.0, 0.1, 0.25, 0.3, 0.5, 0.7, 1.0, 5e-324, 1 - 2**-53]),
)
betas = st.one_of(
    st.floats(min_value=0.0, max_value=1.0, exclude_min=True, exclude_max=True),
    st.sampled_from([0.3, 0.2, 0.1, 0.5, 0.9, 0.01, 0.99, 1e-9, 0.07]),
)


async def _run_three_ways(url: str, values: list[float], size: int, beta: float) -> None:
    client = Redis.from_url(url)
    try:
        namespace = f"prop-{uuid.uuid4().hex}"
        shared = patient_store(client, namespace)
        memory = MemoryWindowStore()
        key = WindowKey("recserve", "device", "classification")
        window: list[float] = []
        for value in values:
            via_redis = await shared.step(key, value, size, beta)
            via_memory = await memory.step(key, value, size, beta)
            window = [*window, value][-size:]
            expected = float(np.percentile(window, 100 * beta))
            assert via_redis.threshold == via_memory.threshold == expected, (window, beta)
            # Bit-for-bit, not just ==: 0.0 and -0.0 compare equal.
            assert via_redis.threshold.hex() == expected.hex()
            assert via_redis.length == via_memory.length == len(window)
            assert not via_redis.fallback
        assert await shared.snapshot(key) == window
        await shared.reset()
    finally:
        await client.aclose()


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(values=st.lists(confidences, min_size=1, max_size=80), size=st.integers(1, 40), beta=betas)
def test_redis_equals_memory_equals_numpy(redis_server: RedisServer, values: list[float], size: int,
                                          beta: float) -> None:
    asyncio.run(_run_three_ways(redis_server.url, values, size, beta))


async def _decisions(policy: RecServePolicy, values: list[float]) -> list[tuple[bool, float | None, int]]:
    out = []
    for value in values:
        decision = await policy.decide("device", Scope("classification"), value)
        out.append((decision.escalate, decision.threshold, decision.window_length))
    return out


@settings(max_examples=60, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(values=st.lists(confidences, min_size=1, max_size=60), size=st.integers(1, 30), beta=betas)
def test_same_decisions(redis_server: RedisServer, values: list[float], size: int, beta: float) -> None:
    async def run() -> None:
        client = Redis.from_url(redis_server.url)
        try:
            shared = patient_store(client, f"dec-{uuid.uuid4().hex}")
            via_redis = await _decisions(RecServePolicy(shared, lambda _tier: beta, size), values)
            local = MemoryWindowStore()
            via_memory = await _decisions(RecServePolicy(local, lambda _tier: beta, size), values)
            assert via_redis == via_memory
            # The rule itself, spelled out against numpy: append first, judge only with > 1 entry.
            window: list[float] = []
            for value, (escalate, threshold, length) in zip(values, via_redis, strict=True):
                window = [*window, value][-size:]
                assert length == len(window)
                if len(window) > 1:
                    assert threshold == float(np.percentile(window, 100 * beta))
                    assert escalate == (value < threshold)
                else:
                    assert (escalate, threshold) == (False, None)
            await shared.reset()
        finally:
            await client.aclose()

    asyncio.run(run())


async def test_long_sequence_at_authors_setting(redis_client: Redis) -> None:
    """W = 1000, β = 0.3 over 4000 steps (the window fills and slides for 3000 of them)."""
    rng = random.Random(20250516)
    shared = patient_store(redis_client, "long")
    memory = MemoryWindowStore()
    key = WindowKey("recserve", "edge", "generation")
    window: list[float] = []
    for i in range(4000):
        value = round(rng.random(), 3) if i % 2 else rng.betavariate(2, 5)
        a = await shared.step(key, value, 1000, 0.3)
        b = await memory.step(key, value, 1000, 0.3)
        window = [*window, value][-1000:]
        assert a == b
        assert a.threshold == float(np.percentile(window, 30.0))
