"""Build the window store that `windows:` in config.yaml asks for, plus the function that closes it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from redis.exceptions import RedisError

from policies.base import WindowStore
from policies.stores.failover import FailoverWindowStore
from policies.stores.memory import MemoryWindowStore
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


def build_window_store(windows: WindowsSettings) -> tuple[WindowStore, Callable[[], Awaitable[None]]]:
    """`memory` → one process-local store; `redis` → the Redis store behind a local-memory failover.

    Nothing connects here (the Redis client connects on first use), so a gateway starts even while
    Redis is down and serves from local windows until it appears. Await the returned close function
    on shutdown.
    """
    if windows.store == "memory":
        return MemoryWindowStore(), _nothing_to_close
    if windows.store == "redis":
        connection = connect(windows.redis_url)
        store = FailoverWindowStore(
            RedisWindowStore(connection.client, windows.namespace),
            MemoryWindowStore(),
            unavailable=REDIS_UNAVAILABLE,
            describe=f"Redis window store at {connection.url}",
        )
        return store, connection.close
    raise ValueError(f"unknown windows.store {windows.store!r} (expected memory or redis)")
