"""Keep deciding when the shared window store is down: answer from local windows, probe with backoff.

While the shared store is healthy every step goes to it, and (by default) is mirrored into the
local windows so that an outage starts from this replica's recent history rather than a cold
window. When a step raises one of the `unavailable` errors the store:

- answers that step and every following one from the local windows, marked `fallback=True`;
- logs one warning for the outage, and one info line when the shared store answers again;
- does not touch the shared store at all until the backoff delay has passed (so requests are not
  slowed by a dead Redis), then lets exactly one request probe it; the delay doubles on each failed
  probe up to `max_backoff_s`.

`Outage` holds that bookkeeping, so the shared probe windows of the quality policy fail over alike.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

from policies.base import WindowKey, WindowStep, WindowStore
from policies.stores.memory import MemoryWindowStore

LOGGER: Final = logging.getLogger("recserve.windows")


class Outage:
    """Whether a shared store is trusted right now, and when to try it again after it failed."""

    def __init__(self, *, describe: str, local_name: str = "local windows",
                 clock: Callable[[], float] = time.monotonic, initial_backoff_s: float = 0.5,
                 max_backoff_s: float = 10.0, logger: logging.Logger = LOGGER) -> None:
        if not 0 < initial_backoff_s <= max_backoff_s:
            raise ValueError("need 0 < initial_backoff_s <= max_backoff_s")
        self._describe = describe
        self._local_name = local_name
        self._clock = clock
        self._initial_backoff_s = initial_backoff_s
        self._max_backoff_s = max_backoff_s
        self._log = logger
        self._down_since: float | None = None  # None while the shared store is trusted
        self._backoff_s = initial_backoff_s
        self._retry_at = 0.0
        self._probing = False  # one call at a time finds out whether the shared store is back
        self.errors = 0  # shared-store failures seen, for metrics

    @property
    def degraded(self) -> bool:
        return self._down_since is not None

    def begin(self) -> bool | None:
        """None: do not touch the shared store now; False: an ordinary call; True: the one retry.

        A True must be paired with `end(True)` once the call is over (success or not).
        """
        if self._down_since is None:
            return False
        if self._probing or self._clock() < self._retry_at:
            return None
        self._probing = True
        return True

    def end(self, probe: bool) -> None:
        if probe:
            self._probing = False

    def failed(self, exc: BaseException, probe: bool) -> None:
        self.errors += 1
        now = self._clock()
        if self._down_since is None:
            self._down_since = now
            self._backoff_s = self._initial_backoff_s
            self._log.warning(
                "%s unreachable (%s: %s); deciding with %s, retrying in %.1fs",
                self._describe, type(exc).__name__, exc, self._local_name, self._backoff_s,
            )
        elif probe:
            # Only a failed probe lengthens the wait; requests that were already in flight when the
            # outage began fail too, and must not push the next probe out further.
            self._backoff_s = min(self._backoff_s * 2, self._max_backoff_s)
        else:
            return
        self._retry_at = now + self._backoff_s

    def recovered(self) -> None:
        if self._down_since is None:
            return
        outage = self._clock() - self._down_since
        self._down_since = None
        self._backoff_s = self._initial_backoff_s
        self._log.info("%s reachable again after %.1fs; back to shared %s", self._describe, outage,
                       self._local_name.removeprefix("local "))


class FailoverWindowStore:
    """A `WindowStore` that prefers `shared` and falls back to `local` while `shared` is failing."""

    def __init__(
        self,
        shared: WindowStore,
        local: MemoryWindowStore,
        *,
        unavailable: tuple[type[BaseException], ...] = (Exception,),
        describe: str = "shared window store",
        clock: Callable[[], float] = time.monotonic,
        initial_backoff_s: float = 0.5,
        max_backoff_s: float = 10.0,
        mirror: bool = True,
        logger: logging.Logger = LOGGER,
    ) -> None:
        self._shared = shared
        self._local = local
        self._unavailable = unavailable
        self._mirror = mirror
        self._outage = Outage(describe=describe, clock=clock, initial_backoff_s=initial_backoff_s,
                              max_backoff_s=max_backoff_s, logger=logger)

    @property
    def error_count(self) -> int:
        """Shared-store failures seen since this store was built (each one answered locally)."""
        return self._outage.errors

    @property
    def degraded(self) -> bool:
        """True while steps are answered from local windows (for /readyz and metrics)."""
        return self._outage.degraded

    @property
    def shared(self) -> WindowStore:
        return self._shared

    @property
    def local(self) -> MemoryWindowStore:
        return self._local

    async def step(self, key: WindowKey, confidence: float, size: int, beta: float) -> WindowStep:
        probe = self._outage.begin()
        if probe is None:
            return await self._local_step(key, confidence, size, beta)
        try:
            shared = await self._shared.step(key, confidence, size, beta)
        except self._unavailable as exc:
            self._outage.failed(exc, probe)
            return await self._local_step(key, confidence, size, beta)
        finally:
            self._outage.end(probe)
        self._outage.recovered()
        if self._mirror:
            await self._local.step(key, confidence, size, beta)
        return shared

    async def snapshot(self, key: WindowKey) -> list[float]:
        if not self._outage.degraded:
            try:
                return await self._shared.snapshot(key)
            except self._unavailable as exc:
                self._outage.failed(exc, probe=False)
        return await self._local.snapshot(key)

    async def reset(self, key: WindowKey | None = None) -> None:
        """Reset both sides; an unreachable shared store is reported to the caller (an admin)."""
        await self._local.reset(key)
        await self._shared.reset(key)

    async def _local_step(self, key: WindowKey, confidence: float, size: int, beta: float) -> WindowStep:
        step = await self._local.step(key, confidence, size, beta)
        return WindowStep(step.threshold, step.length, fallback=True)
