"""`windows.sync: auto` — each window in the mode its own traffic calls for.

A window this replica steps less than `hot_per_s` times a second is stepped in `exact` mode (one
Redis call per step: for a window with fewer than about 2 steps per flush interval that is cheaper
for Redis than a flush, and decisions are exact); once it is stepped faster it moves to `batched`
(no Redis call on the request path; a flush per `flush_ms` carries all its values), and back once
it has cooled below half that rate. The gateway sets `hot_per_s` from `windows.hot_steps_per_flush`. Both modes
keep the same keys and layout in Redis, so a window moves without losing anything:

- to `batched`: the batched store fetches what it needs of the shared window first (one call, on
  the step that found the window hot), so the first batched decision is made on the whole window;
- to `exact`: the batched store's pending values are flushed first, then the next step is exact.

The pace is counted per replica over `pace_s` (1 s) windows of time.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from policies.base import WindowKey, WindowStep
from policies.stores.batched import BatchedWindowStore
from policies.stores.failover import FailoverWindowStore

DEFAULT_HOT_PER_S: Final = 100.0  # 2 steps per 20 ms flush


@dataclass(slots=True)
class _Pace:
    since: float
    steps: int = 0


class AdaptiveWindowStore:
    """A `WindowStore` that steps cold windows exactly and hot ones batched."""

    def __init__(self, exact: FailoverWindowStore, batched: BatchedWindowStore, *,
                 hot_per_s: float = DEFAULT_HOT_PER_S, pace_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not hot_per_s > 0 or not pace_s > 0:
            raise ValueError("hot_per_s and pace_s must be > 0")
        self.exact = exact
        self.batched = batched
        self._hot_per_s = hot_per_s
        self._pace_s = pace_s
        self._clock = clock
        self._paces: dict[WindowKey, _Pace] = {}
        self._hot: set[WindowKey] = set()

    @property
    def degraded(self) -> bool:
        return self.exact.degraded or self.batched.degraded

    @property
    def error_count(self) -> int:
        return self.exact.error_count + self.batched.error_count

    @property
    def fault_counts(self) -> dict[str, int]:
        counts = Counter(self.exact.fault_counts)
        counts.update(self.batched.fault_counts)
        return dict(counts)

    def mode(self, key: WindowKey) -> str:
        return "batched" if key in self._hot else "exact"

    async def step(self, key: WindowKey, confidence: float, size: int, beta: float) -> WindowStep:
        now = self._clock()
        pace = self._paces.get(key)
        if pace is None:
            pace = self._paces[key] = _Pace(now)
        pace.steps += 1
        if now - pace.since >= self._pace_s:
            rate = pace.steps / (now - pace.since)
            pace.since, pace.steps = now, 0
            if key not in self._hot and rate >= self._hot_per_s:
                await self.batched.adopt(key, size, beta)
                self._hot.add(key)
            elif key in self._hot and rate < self._hot_per_s / 2:
                self._hot.discard(key)  # steps from now on are exact ...
                await self.batched.release(key)  # ... after the batched ones have been sent
        store = self.batched if key in self._hot else self.exact
        return await store.step(key, confidence, size, beta)

    async def snapshot(self, key: WindowKey) -> list[float]:
        return await (self.batched if key in self._hot else self.exact).snapshot(key)

    async def reset(self, key: WindowKey | None = None) -> None:
        """Reset both sides; the windows start cold again."""
        if key is None:
            self._paces.clear()
            self._hot.clear()
        else:
            self._paces.pop(key, None)
            self._hot.discard(key)
        await self.batched.reset(key)
        await self.exact.reset(key)

    async def aclose(self) -> None:
        await self.batched.aclose()
