"""Build the stores that `windows:` in config.yaml asks for (the windows, and the quality policy's
probe windows beside them), plus the function that closes them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from redis.exceptions import RedisError

from policies.base import WindowStore
from policies.quality import ProbeStore, ProbeWindows
from policies.stores.failover import FailoverWindowStore
from policies.stores.memory import MemoryWindowStore
from policies.stores.probes_redis import SharedProbeWindows
from policies.stores.redis import RedisWindowStore
from policies.stores.urls import connect

# What "Redis is unavailable" looks like from redis-py: its own errors (ConnectionError,
# TimeoutError, AuthenticationError, ResponseError such as LOADING/READONLY/OOM, ...) plus the
# OS-level and asyncio timeouts that can escape it.
REDIS_UNAVAILABLE: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)


class WindowsSettings(Protocol):
    """The part of `gateway.config.WindowsConfig` this factory reads (structural: no gateway import)."""

    @property
    def store(self) -> str: ...

    @property
    def redis_url(self) -> str: ...

    @property
    def namespace(self) -> str: ...


async def _nothing_to_close() -> None:
    return None


@dataclass(frozen=True, slots=True)
class Stores:
    """The window store, the probe windows kept with it, and how to close both."""

    windows: WindowStore
    probes: ProbeStore
    close: Callable[[], Awaitable[None]]


def build_stores(windows: WindowsSettings, probe_window: int) -> Stores:
    """`memory` → process-local stores; `redis` → Redis stores (one connection) behind local failover.

    Nothing connects here (the Redis client connects on first use), so a gateway starts even while
    Redis is down and serves from local windows until it appears. Await `close` on shutdown.
    """
    if windows.store == "memory":
        return Stores(MemoryWindowStore(), ProbeWindows(probe_window), _nothing_to_close)
    if windows.store == "redis":
        connection = connect(windows.redis_url)
        shared = RedisWindowStore(connection.client, windows.namespace)
        store = FailoverWindowStore(
            shared,
            MemoryWindowStore(),
            unavailable=REDIS_UNAVAILABLE,
            describe=f"Redis window store at {connection.url}",
        )
        probes = SharedProbeWindows(connection.client, windows.namespace, probe_window,
                                    unavailable=REDIS_UNAVAILABLE, describe=f"Redis probe store at {connection.url}",
                                    limit=shared.limit)

        async def close() -> None:
            await probes.aclose()  # its reads and writes in flight go before the connection does
            await connection.close()

        return Stores(store, probes, close)
    raise ValueError(f"unknown windows.store {windows.store!r} (expected memory or redis)")


def build_window_store(windows: WindowsSettings) -> tuple[WindowStore, Callable[[], Awaitable[None]]]:
    """Just the window store of `build_stores` (for callers without a quality policy)."""
    stores = build_stores(windows, probe_window=1)
    return stores.windows, stores.close
