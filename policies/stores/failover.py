"""Keep deciding when the shared window store is down: answer from local windows, probe with backoff.

While the shared store is healthy every step goes to it, and (by default) is mirrored into the
local windows so that an outage starts from this replica's recent history rather than a cold
window. When a step fails with a shared-store fault the store:

- answers that step and every following one from the local windows, marked `fallback=True`;
- logs one warning for the outage, and one info line when the shared store answers again;
- does not touch the shared store at all until the backoff delay has passed (so requests are not
  slowed by a dead Redis), then lets exactly one request probe it; the delay doubles on each failed
  probe up to `max_backoff_s`.

What counts as the shared store failing is `policies.stores.faults.fault_kind`: all of redis-py's
errors (a cluster without its slots, CLUSTERDOWN, OOM under `noeviction`, a failed script, ...) and
the OS-level ones around them; each failure is counted by its kind. Anything else is a bug and
propagates.

`Outage` holds that bookkeeping and makes the calls under it (`attempt`, `read`), so the batched
windows and the shared probe windows of the quality policy fail over alike; `OutageHealth` is what
each of those stores reports of it.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Final, TypeVar

from policies.base import WindowKey, WindowStep, WindowStore
from policies.stores.faults import fault_kind
from policies.stores.memory import MemoryWindowStore

LOGGER: Final = logging.getLogger("recserve.windows")

T = TypeVar("T")


class Outage:
    """Whether a shared store is trusted right now, and when to try it again after it failed.

    `classify` names the kind of a shared-store failure, or None for an error that is not one (a
    bug: it propagates)."""

    def __init__(self, *, describe: str, local_name: str = "local windows",
                 classify: Callable[[BaseException], str | None] = fault_kind,
                 clock: Callable[[], float] = time.monotonic, initial_backoff_s: float = 0.5,
                 max_backoff_s: float = 10.0, logger: logging.Logger = LOGGER) -> None:
        if not 0 < initial_backoff_s <= max_backoff_s:
            raise ValueError("need 0 < initial_backoff_s <= max_backoff_s")
        self._classify = classify
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
        self.faults: Counter[str] = Counter()  # shared-store failures seen, by kind, for metrics

    @property
    def errors(self) -> int:
        return sum(self.faults.values())

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

    def failed(self, exc: BaseException, probe: bool, kind: str) -> None:
        self.faults[kind] += 1
        now = self._clock()
        if self._down_since is None:
            self._down_since = now
            self._backoff_s = self._initial_backoff_s
            # A failure inside redis-py that is none of its errors is a client bug: keep its traceback.
            self._log.warning(
                "%s failing (%s, %s: %s); deciding with %s, retrying in %.1fs",
                self._describe, kind, type(exc).__name__, exc, self._local_name, self._backoff_s,
                exc_info=exc if kind == "client" else None,
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
        self._log.info("%s answering again after %.1fs; back to shared %s", self._describe, outage,
                       self._local_name.removeprefix("local "))

    async def attempt(self, call: Callable[[], Awaitable[T]]) -> T | None:
        """Make `call` to the shared store under these rules: not at all while backing off (or while
        another call is the one retry), a failure starts or prolongs the outage, a success ends it.
        None when the call was not made or failed with a shared-store fault."""
        probe = self.begin()
        if probe is None:
            return None
        try:
            reply = await call()
        except Exception as exc:
            if not self._counted(exc, probe):
                raise
            return None
        finally:
            self.end(probe)
        self.recovered()
        return reply

    async def read(self, call: Callable[[], Awaitable[T]]) -> T | None:
        """Make `call`, a read off the request path, unless the shared store is known to be down (a
        read never is the retry); None when it was not made or failed (which starts an outage)."""
        return None if self.degraded else await self.absorb(call)

    async def absorb(self, call: Callable[[], Awaitable[T]]) -> T | None:
        """Make `call` whatever the outage's state; None when it failed (which starts an outage)."""
        try:
            return await call()
        except Exception as exc:
            if not self._counted(exc, False):
                raise
            return None

    def _counted(self, exc: Exception, probe: bool) -> bool:
        """Count `exc` as a shared-store failure; False when it is none (a bug, for the caller to raise)."""
        kind = self._classify(exc)
        if kind is not None:
            self.failed(exc, probe, kind)
        return kind is not None


class OutageHealth:
    """What a store that keeps an `Outage` reports of it (for /readyz and metrics)."""

    _outage: Outage

    @property
    def error_count(self) -> int:
        """Shared-store failures seen since this store was built (each one answered locally)."""
        return self._outage.errors

    @property
    def fault_counts(self) -> dict[str, int]:
        """`error_count` by kind (`policies.stores.faults.KINDS`)."""
        return dict(self._outage.faults)

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
        classify: Callable[[BaseException], str | None] = fault_kind,
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
        self._outage = Outage(describe=describe, classify=classify, clock=clock,
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
