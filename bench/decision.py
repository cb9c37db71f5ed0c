"""In-process cost of one cascade decision: confidence estimate + window step + compare."""

from __future__ import annotations

import asyncio
import math
import random
import statistics
import time

from policies.base import Scope
from policies.confidence import response_confidence
from policies.recserve import RecServePolicy
from policies.stores.memory import MemoryWindowStore


def _choices(p: float) -> list[dict[str, object]]:
    token = {"token": "ok", "logprob": math.log(p), "top_logprobs": [{"token": "ok", "logprob": math.log(p)}]}
    return [{"index": 0, "logprobs": {"content": [token] * 8}}]


async def _measure(steps: int, window: int) -> tuple[float, float]:
    policy = RecServePolicy(MemoryWindowStore(), lambda tier: 0.3, window)
    rng = random.Random(7)
    payloads = [_choices(rng.uniform(0.05, 0.99)) for _ in range(256)]
    for _ in range(window):  # a full window, as in steady state
        await policy.decide("device", Scope("generation"), rng.random())
    samples: list[float] = []
    for i in range(steps):
        started = time.perf_counter()
        confidence = response_confidence("generation", payloads[i % 256], None)
        assert confidence is not None
        await policy.decide("device", Scope("generation"), confidence)
        samples.append(time.perf_counter() - started)
    samples.sort()
    return statistics.median(samples) * 1e6, samples[int(len(samples) * 0.99)] * 1e6


def decision_cost(steps: int = 20_000, window: int = 10_000) -> tuple[float, float]:
    """(p50, p99) in microseconds for an 8-token generation answer at a full window of `window`."""
    return asyncio.run(_measure(steps, window))
