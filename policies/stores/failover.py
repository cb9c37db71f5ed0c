"""Keep deciding when the shared window store is down: answer from local windows, probe with backoff.

While the shared store is healthy every step goes to it, and (by default) is mirrored into the
local windows so that an outage starts from this replica's recent history rather than a cold
window. When a step raises one of the `unavailable` errors the store:

- answers that step and every following one from the local windows, marked `fallback=True`;
- logs one warning for the outage, and one info line when the shared store answers again;
- does not touch the shared store at all until the backoff delay has passed (so requests are not
  slowed by a dead Redis), then lets exactly one request probe it; the delay doubles on each failed
  probe up to `max_backoff_s`.

`Outage` holds that bookkeeping and makes the calls under it (`attempt`, `read`), so the batched
windows and the shared probe windows of the quality policy fail over alike; `OutageHealth` is what
each of those stores reports of it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Final, TypeVar

from policies.base import WindowKey, WindowStep, WindowStore
from policies.stores.memory import MemoryWindowStore

LOGGER: Final = logging.getLogger("recserve.windows")

T = TypeVar("T")


class Outage:
    """Whether a shared store is trusted right now, and when to try it again after it failed.

    `unavailable` are the errors that mean the shared store is down (others are bugs and propagate)."""

    def __init__(self, *, describe: str, local_name: str = "local windows",
                 unavailable: tuple[type[BaseException], ...] = (Exception,),
                 clock: Callable[[], float] = time.monotonic, initial_backoff_s: float = 0.5,
                 max_backoff_s: float = 10.0, logger: logging.Logger = LOGGER) -> None:
        if not 0 < initial_backoff_s <= max_backoff_s:
            raise ValueError("need 0 < initial_backoff_s <= max_backoff_s")
        self.unavailable = unavailable
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

    async def attempt(self, call: Callable[[], Awaitable[T]]) -> T | None:
        """Make `call` to the shared store under these rules: not at all while backing off (or while
        another call is the one retry), a failure starts or prolongs the outage, a success ends it.
        None when the call was not made or failed with one of the `unavailable` errors."""
        probe = self.begin()
        if probe is None:
            return None
        try:
            reply = await call()
        except self.unavailable as exc:
            self.failed(exc, probe)
            return None
        finally:
            self.end(probe)
        self.recovered()
        return reply

    async def read(self, call: Callable[[], Awaitable[T]]) -> T | None:
        """Make `call`, a read off the request path, unless the shared store is known to be down (a
        read never is the retry); None when it was not made or failed (which starts an outage)."""
        if self.degraded:
            return None
        try:
            return await call()
        except self.unavailable as exc:
            self.failed(exc, probe=False)
            return None


class OutageHealth:
    """What a store that keeps an `Outage` reports of it (for /readyz and metrics)."""

    _outage: Outage

    @property
    def error_count(self) -> int:
        """Shared-store failures seen since this store was built (each one answered locally)."""
        return self._outage.errors

    @property
    def degraded(self) -> bool:
        """True while local windows answer because the shared store failed."""
        return self._outage.degraded


class FailoverWindowStore(OutageHealth):
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
        self._mirror = mirror
        self._outage = Outage(describe=describe, unavailable=unavailable, clock=clock,
                              initial_backoff_s=initial_backoff_s, max_backoff_s=max_backoff_s, logger=logger)

    @property
    def shared(self) -> WindowStore:
        return self._shared

    @property
    def local(self) -> MemoryWindowStore:
        return self._local

    async def step(self, key: WindowKey, confidence: float, size: int, beta: float) -> WindowStep:
        shared = await self._outage.attempt(partial(self._shared.step, key, confidence, size, beta))
        if shared is None:
            return await self._local_step(key, confidence, size, beta)
        if self._mirror:
            await self._local.step(key, confidence, size, beta)
        return shared

    async def snapshot(self, key: WindowKey) -> list[float]:
        shared = await self._outage.read(partial(self._shared.snapshot, key))
        return shared if shared is not None else await self._local.snapshot(key)

    async def reset(self, key: WindowKey | None = None) -> None:
        """Reset both sides; an unreachable shared store is reported to the caller (an admin)."""
        await self._local.reset(key)
        await self._shared.reset(key)

    async def _local_step(self, key: WindowKey, confidence: float, size: int, beta: float) -> WindowStep:
        step = await self._local.step(key, confidence, size, beta)
        return WindowStep(step.threshold, step.length, fallback=True)
