"""In-process windows: a FIFO for eviction plus a sorted list for ranks, O(log W) search per step."""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque

from policies.base import WindowKey, WindowStep
from policies.quantile import linear_quantile, quantile_fraction


class SlidingWindow:
    """At most `size` most recent values, with the beta-quantile answered from a sorted copy."""

    __slots__ = ("_fifo", "_sorted")

    def __init__(self) -> None:
        self._fifo: deque[float] = deque()
        self._sorted: list[float] = []

    def step(self, value: float, size: int, beta: float) -> WindowStep:
        self.push(value, size)
        return WindowStep(linear_quantile(self._sorted, quantile_fraction(beta)), len(self._fifo))

    def push(self, value: float, size: int) -> None:
        """Append `value` and drop the oldest beyond `size` (a step without the quantile)."""
        self._fifo.append(value)
        insort(self._sorted, value)
        while len(self._fifo) > size:
            oldest = self._fifo.popleft()
            del self._sorted[bisect_left(self._sorted, oldest)]

    def quantile(self, beta: float) -> float:
        """The beta-quantile of the values held (numpy's "linear"); the window must not be empty."""
        return linear_quantile(self._sorted, quantile_fraction(beta))

    def assign(self, other: SlidingWindow) -> None:
        """Become a copy of `other`, reusing this window's storage."""
        self._fifo.clear()
        self._fifo.extend(other._fifo)
        self._sorted[:] = other._sorted

    def copy(self) -> SlidingWindow:
        twin = SlidingWindow()
        twin._fifo = self._fifo.copy()
        twin._sorted = self._sorted.copy()
        return twin

    def __len__(self) -> int:
        return len(self._fifo)

    def values(self) -> list[float]:
        return list(self._fifo)


class MemoryWindowStore:
    """The embedded default store; one instance per gateway process, shared by its requests."""

    def __init__(self) -> None:
        self._windows: dict[WindowKey, SlidingWindow] = {}

    async def step(self, key: WindowKey, confidence: float, size: int, beta: float) -> WindowStep:
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = SlidingWindow()
        return window.step(confidence, size, beta)

    async def snapshot(self, key: WindowKey) -> list[float]:
        window = self._windows.get(key)
        return window.values() if window else []

    async def reset(self, key: WindowKey | None = None) -> None:
        if key is None:
            self._windows.clear()
        else:
            self._windows.pop(key, None)

    def keys(self) -> list[WindowKey]:
        return list(self._windows)
