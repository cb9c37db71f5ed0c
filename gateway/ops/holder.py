"""The app's current Runtime, swappable at run time.

Each request leases the runtime that is current when it starts and keeps it to its last byte
(streams included), so a reload never changes the config under a request in flight. A swap is one
assignment on the event loop, hence atomic; the replaced runtime is closed in the background once
its last lease is returned (or after a drain timeout, so a stuck client cannot pin it forever).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from gateway.cascade.runtime import Runtime

log = logging.getLogger("recserve.reload")

Retire = Callable[[Runtime], Awaitable[None]]


@dataclass(slots=True)
class _Slot:
    """One runtime and the requests currently holding it."""

    runtime: Runtime
    leases: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.idle.set()


async def _close_runtime(runtime: Runtime) -> None:
    await runtime.aclose()


class Lease:
    """`async with holder.lease() as runtime`: a plain context manager, not a generator, since every
    request takes one."""

    __slots__ = ("_slot",)

    def __init__(self, slot: _Slot) -> None:
        self._slot = slot

    async def __aenter__(self) -> Runtime:
        self._slot.leases += 1
        self._slot.idle.clear()
        return self._slot.runtime

    async def __aexit__(self, *_: object) -> None:
        self._slot.leases -= 1
        if self._slot.leases == 0:
            self._slot.idle.set()


class RuntimeHolder:
    """Holds the current Runtime; `lease()` for requests, `swap()` for reloads."""

    def __init__(self, runtime: Runtime, *, drain_timeout_s: float, retire: Retire = _close_runtime) -> None:
        self._slot = _Slot(runtime)
        self._drain_timeout_s = drain_timeout_s
        self._retire = retire
        self._retiring: set[asyncio.Task[None]] = set()

    @property
    def current(self) -> Runtime:
        return self._slot.runtime

    @property
    def in_flight(self) -> int:
        """Leases on the current runtime (requests being served right now)."""
        return self._slot.leases

    def lease(self) -> Lease:
        """The current runtime, kept open until the block exits even if a swap happens meanwhile."""
        return Lease(self._slot)

    def swap(self, runtime: Runtime, *, retire: Retire | None = None) -> Runtime:
        """Make `runtime` current at once; the old one is retired when its requests have finished.

        `retire` overrides how the old runtime is closed (e.g. to also close a window store that the
        new runtime no longer shares). Returns the old runtime.
        """
        old, self._slot = self._slot, _Slot(runtime)
        task = asyncio.get_running_loop().create_task(self._drain(old, retire or self._retire))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
        return old.runtime

    async def _drain(self, slot: _Slot, retire: Retire) -> None:
        try:
            await asyncio.wait_for(slot.idle.wait(), self._drain_timeout_s)
        except TimeoutError:
            log.warning("closing a replaced runtime with %d request(s) still in flight after %.0fs",
                        slot.leases, self._drain_timeout_s)
        try:
            await retire(slot.runtime)
        except Exception:  # a failing close must not take the reload (or the loop) down with it
            log.exception("closing a replaced runtime failed")

    async def aclose(self) -> None:
        """Shutdown: finish retiring replaced runtimes, then close the current one."""
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
        await self._retire(self._slot.runtime)
