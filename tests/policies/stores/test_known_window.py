"""A replica's partial knowledge of a shared window steps exactly like the whole window, within reach."""

from __future__ import annotations

import random

import pytest

from policies.quantile import linear_quantile, quantile_fraction
from policies.stores.memory import SlidingWindow
from policies.stores.neighbourhood import KnownWindow


def _known(values: list[float], q: float, reach: int) -> KnownWindow:
    """What the flush script returns for a shared window holding `values` (oldest first)."""
    ranked = sorted(values)
    n = len(ranked)
    if not n:
        return KnownWindow()
    rank = min(max(int((n - 1) * q), 0), n - 1)
    first = max(rank - reach, 0)
    return KnownWindow(n, first, ranked[first:min(rank + 1 + reach, n - 1) + 1], values[:min(reach, n)])


@pytest.mark.parametrize("draw", ["continuous", "ties"])
@pytest.mark.parametrize("beta", [0.0, 0.3, 0.5, 0.97])
def test_within_reach_every_step_equals_the_whole_window(draw: str, beta: float) -> None:
    rng = random.Random(f"{draw}{beta}")

    def value() -> float:
        return rng.random() if draw == "continuous" else rng.choice((0.1, 0.2, 0.2, 0.3))

    q = quantile_fraction(beta)
    for trial in range(60):
        size = rng.choice((300, 1000))
        shared = SlidingWindow()
        for _ in range(rng.randrange(1, 2 * size)):  # filling or full
            shared.push(value(), size)
        reach = rng.choice((16, 40))
        known = _known(shared.values(), q, reach)
        for _ in range(reach):
            v = value()
            shared.push(v, size)
            known.push(v, size, q)
            assert len(known) == len(shared)
            assert known.quantile(q) == shared.quantile(beta), trial
        assert known.clamped == 0


def test_a_small_window_held_whole_stays_exact_for_any_number_of_steps() -> None:
    rng = random.Random(2)
    shared = SlidingWindow()
    for _ in range(30):
        shared.push(rng.random(), 50)
    known = _known(shared.values(), 0.3, 50)
    assert known.whole
    for _ in range(500):
        v = rng.random()
        shared.push(v, 50)
        known.push(v, 50, 0.3)
        assert known.quantile(0.3) == shared.quantile(0.3)
    assert known.values() == shared.values()


def test_beyond_reach_the_threshold_stays_near_and_is_counted() -> None:
    """A burst past the reach is answered from the nearest known value, not an error."""
    rng = random.Random(3)
    shared = SlidingWindow()
    for _ in range(1000):
        shared.push(rng.random(), 1000)
    known = _known(shared.values(), 0.3, 16)
    flushed = shared.quantile(0.3)
    for _ in range(400):  # all far below the quantile: the true threshold leaves the known ranks
        v = rng.random() * 0.01
        shared.push(v, 1000)
        known.push(v, 1000, 0.3)
        assert len(known) == 1000
        # Every value pulls the threshold down; the known one follows as far as `near` reaches.
        assert shared.quantile(0.3) <= known.quantile(0.3) <= flushed
    assert known.clamped > 0
    assert known.quantile(0.3) > shared.quantile(0.3)
    assert known.values() is None  # not held whole: no snapshot from it


def test_an_empty_window_fills_exactly() -> None:
    shared, known = SlidingWindow(), KnownWindow()
    rng = random.Random(4)
    for _ in range(100):
        v = rng.random()
        shared.push(v, 40)
        known.push(v, 40, 0.3)
        assert known.quantile(0.3) == linear_quantile(sorted(shared.values()), 0.3)
