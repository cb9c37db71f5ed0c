"""numpy's percentile with method="linear" (Hyndman & Fan type 7), reproduced bit for bit on a
sorted sequence so that the memory and Redis stores and `np.percentile` agree exactly."""

from __future__ import annotations

import math
from typing import Protocol


class Ranked(Protocol):
    """Values by ascending rank: a sorted list, or a window that knows only some ranks."""

    def __len__(self) -> int: ...

    def __getitem__(self, rank: int, /) -> float: ...


def quantile_fraction(beta: float) -> float:
    """The fraction numpy sees for `np.percentile(x, 100 * beta)`: it divides the percentile by 100."""
    return (100.0 * beta) / 100.0


def linear_quantile(sorted_values: Ranked, q: float) -> float:
    """Type-7 quantile of an ascending, non-empty sequence, with numpy's exact float steps."""
    n = len(sorted_values)
    virtual = (n - 1) * q
    below = math.floor(virtual)
    below = min(max(below, 0), n - 1)
    above = min(below + 1, n - 1)
    gamma = virtual - below
    a = sorted_values[below]
    b = sorted_values[above]
    diff = b - a
    # numpy's _lerp: interpolate from the nearer end for numerical symmetry.
    if gamma >= 0.5:
        return b - diff * (1 - gamma)
    return a + diff * gamma
