"""The window quantile equals numpy's percentile(method="linear") bit for bit, and the memory
window keeps exactly the last W values."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.base import Scope, WindowKey
from policies.quantile import linear_quantile, quantile_fraction
from policies.recserve import RecServePolicy
from policies.stores.memory import MemoryWindowStore, SlidingWindow

confidences = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
betas = st.floats(min_value=0.001, max_value=0.999, allow_nan=False)


@settings(max_examples=400, deadline=None)
@given(values=st.lists(confidences, min_size=1, max_size=60), beta=betas)
def test_linear_quantile_matches_numpy_exactly(values: list[float], beta: float) -> None:
    expected = float(np.percentile(values, 100 * beta, method="linear"))
    assert linear_quantile(sorted(values), quantile_fraction(beta)) == expected


@settings(max_examples=200, deadline=None)
@given(values=st.lists(confidences, min_size=1, max_size=80), beta=betas,
       size=st.integers(min_value=1, max_value=12))
def test_sliding_window_is_fifo_and_exact(values: list[float], beta: float, size: int) -> None:
    window = SlidingWindow()
    for i, value in enumerate(values):
        step = window.step(value, size, beta)
        kept = values[max(0, i + 1 - size): i + 1]
        assert window.values() == kept
        assert step.length == len(kept)
        assert step.threshold == float(np.percentile(kept, 100 * beta))


async def test_recserve_policy_cold_start_then_strict_less_than() -> None:
    store = MemoryWindowStore()
    policy = RecServePolicy(store, lambda tier: 0.5, window=10)
    first = await policy.decide("device", Scope("generation"), 0.1)
    assert not first.escalate and first.threshold is None  # one value: always kept
    second = await policy.decide("device", Scope("generation"), 0.9)  # window [0.1, 0.9] -> median 0.5
    assert not second.escalate and second.threshold == 0.5
    third = await policy.decide("device", Scope("generation"), 0.5)  # window [.1,.9,.5] -> 0.5; 0.5 < 0.5 is false
    assert not third.escalate and third.threshold == 0.5
    fourth = await policy.decide("device", Scope("generation"), 0.2)  # [.1,.9,.5,.2] -> 0.35
    assert fourth.escalate and fourth.threshold == float(np.percentile([0.1, 0.9, 0.5, 0.2], 50))


async def test_windows_are_separate_per_tier_and_task() -> None:
    store = MemoryWindowStore()
    policy = RecServePolicy(store, lambda tier: 0.3, window=100)
    await policy.decide("device", Scope("generation"), 0.4)
    await policy.decide("device", Scope("classification"), 0.6)
    await policy.decide("edge", Scope("generation"), 0.8)
    assert await store.snapshot(WindowKey("recserve", "device", "generation")) == [0.4]
    assert await store.snapshot(WindowKey("recserve", "device", "classification")) == [0.6]
    assert await store.snapshot(WindowKey("recserve", "edge", "generation")) == [0.8]
    await store.reset(WindowKey("recserve", "edge", "generation"))
    assert await store.snapshot(WindowKey("recserve", "edge", "generation")) == []
