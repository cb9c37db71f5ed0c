"""Build the stores that `windows:` in config.yaml asks for (the windows, and the quality policy's
probe windows beside them), plus the function that closes them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from policies.base import WindowStore
from policies.quality import ProbeStore, ProbeWindows
from policies.stores.adaptive import AdaptiveWindowStore
from policies.stores.batched import BatchedWindowStore
from policies.stores.failover import FailoverWindowStore
from policies.stores.memory import MemoryWindowStore
from policies.stores.probes_redis import SharedProbeWindows
from policies.stores.redis import RedisWindowStore
from policies.stores.urls import connect_any


class WindowsSettings(Protocol):
    """The part of `gateway.config.schema.WindowsConfig` this factory reads (structural: no gateway import)."""

    @property
    def store(self) -> str: ...

    @property
    def redis_url(self) -> str: ...

    @property
    def namespace(self) -> str: ...

    @property
    def sync(self) -> str: ...

    @property
    def flush_ms(self) -> float: ...

    @property
    def max_sent_per_s(self) -> float: ...

    @property
    def hot_steps_per_flush(self) -> float: ...


async def _nothing_to_close() -> None:
    return None


@dataclass(frozen=True, slots=True)
class Stores:
    """The window store, the probe windows kept with it, and how to close both."""

    windows: WindowStore
    probes: ProbeStore
    close: Callable[[], Awaitable[None]]


def build_stores(windows: WindowsSettings, probe_window: int) -> Stores:
    """`memory` → process-local stores; `redis` → Redis stores (one client) with local failover.

    `sync: exact` steps the shared window on every decision (behind `FailoverWindowStore`);
    `sync: batched` decides locally and flushes every `flush_ms` (`BatchedWindowStore`, which fails
    over by itself); `sync: auto` keeps each window in one of the two by its pace
    (`AdaptiveWindowStore`). Nothing connects here (the Redis client connects on first use), so a gateway
    starts even while Redis is down, or a Redis Cluster has no slots yet, and serves from local
    windows until it answers; every store fails over on `policies.stores.faults.fault_kind`. Await
    `close` on shutdown.
    """
    if windows.store == "memory":
        return Stores(MemoryWindowStore(), ProbeWindows(probe_window), _nothing_to_close)
    if windows.store != "redis":
        raise ValueError(f"unknown windows.store {windows.store!r} (expected memory or redis)")
    if windows.sync not in ("exact", "batched", "auto"):
        raise ValueError(f"unknown windows.sync {windows.sync!r} (expected exact, batched or auto)")
    connection = connect_any(windows.redis_url)
    shared = RedisWindowStore(connection.client, windows.namespace, call_timeout_s=connection.timeout_s)
    describe = f"Redis window store at {connection.url}"
    store: WindowStore
    batched: BatchedWindowStore | None = None
    if windows.sync != "exact":
        batched = BatchedWindowStore(connection.client, windows.namespace, flush_s=windows.flush_ms / 1000,
                                     limit=shared.limit, describe=describe, max_sent_per_s=windows.max_sent_per_s)
    exact = FailoverWindowStore(shared, MemoryWindowStore(), describe=describe)
    if windows.sync == "auto" and batched is not None:
        store = AdaptiveWindowStore(exact, batched, hot_per_s=windows.hot_steps_per_flush / (windows.flush_ms / 1000))
    else:
        store = batched or exact
    probes = SharedProbeWindows(connection.client, windows.namespace, probe_window,
                                describe=f"Redis probe store at {connection.url}", limit=shared.limit)

    async def close() -> None:
        await probes.aclose()  # its reads and writes in flight go before the connection does
        if batched is not None:
            await batched.aclose()  # its last flush, too
        await connection.close()

    return Stores(store, probes, close)


def build_window_store(windows: WindowsSettings) -> tuple[WindowStore, Callable[[], Awaitable[None]]]:
    """Just the window store of `build_stores` (for callers without a quality policy)."""
    stores = build_stores(windows, probe_window=1)
    return stores.windows, stores.close
