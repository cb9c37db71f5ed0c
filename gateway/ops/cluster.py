"""Replicas agree through Redis: one versioned control record, a pub/sub announcement per change,
and a registry of which replica runs which version.

Keys (one hash tag per namespace, so they live in one slot on Redis Cluster too):
    {<ns>:control}           hash: version, config_version, overrides (JSON), origin
    {<ns>:control}:replicas  hash: replica id → JSON {version, config_version, config_digest, seen, error}
    channel <ns>:control     a change's version number

A change bumps `version` and publishes it in one server-side script, so no replica can see a
version without its record. A replica that misses the message (pub/sub is fire-and-forget) finds
the higher version on its next check (see `Reloader.catch_up`).

Every call is bounded by the URL's socket timeout (`windows.redis_url`, default 0.5 s), retries
included: the control record is read in the background, but an admin call waits on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from policies.stores.urls import AnyConnection, connect_any

log = logging.getLogger("recserve.reload")

# KEYS: control hash.  ARGV: kind (reload|policy), overrides JSON, origin, channel.
_PUBLISH_SCRIPT: Final = """
local v = redis.call('HINCRBY', KEYS[1], 'version', 1)
if ARGV[1] == 'reload' then redis.call('HSET', KEYS[1], 'config_version', v) end
redis.call('HSET', KEYS[1], 'overrides', ARGV[2], 'origin', ARGV[3])
redis.call('PUBLISH', ARGV[4], tostring(v))
return v
"""
HEARTBEAT_S: Final = 5.0
STALE_AFTER_S: Final = 3 * HEARTBEAT_S
_MAX_BACKOFF_S: Final = 10.0
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ControlState:
    """The cluster's current change record."""

    version: int
    config_version: int
    overrides: Any  # JSON as written by Overrides.to_json


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


class ClusterLink:
    """The Redis side of reload coordination for one (redis_url, namespace)."""

    def __init__(self, redis_url: str, namespace: str, replica_id: str) -> None:
        self._connection: AnyConnection = connect_any(redis_url)
        self._control = "{" + namespace + ":control}"
        self._replicas = self._control + ":replicas"
        self._channel = namespace + ":control"
        self.replica_id = replica_id
        self.target = (redis_url, namespace)
        self._publish = self._connection.client.register_script(_PUBLISH_SCRIPT)
        self._listener: asyncio.Task[None] | None = None

    @property
    def timeout_s(self) -> float:
        """The budget of one call to Redis (the URL's socket timeout)."""
        return self._connection.timeout_s

    async def _bounded(self, call: Awaitable[T]) -> T:
        async with asyncio.timeout(self._connection.timeout_s):
            return await call

    async def version(self) -> int:
        raw = await self._bounded(self._connection.client.hget(self._control, "version"))
        return int(_text(raw)) if raw is not None else 0

    async def state(self) -> ControlState:
        raw = await self._bounded(self._connection.client.hgetall(self._control))
        fields = {_text(k): _text(v) for k, v in raw.items()}
        overrides: Any = {}
        try:
            overrides = json.loads(fields.get("overrides", "{}"))
        except ValueError:
            log.warning("ignoring malformed overrides in %s", self._control)
        return ControlState(int(fields.get("version", 0)), int(fields.get("config_version", 0)), overrides)

    async def announce(self, kind: str, overrides: Any) -> int:
        """Record a change (`reload` or `policy`) and tell every replica; returns the new version."""
        result = await self._bounded(self._publish(
            keys=[self._control], args=[kind, json.dumps(overrides), self.replica_id, self._channel]))
        return int(result)

    async def report(self, entry: dict[str, Any]) -> None:
        """Publish what this replica runs, for `GET /admin/config` on any replica."""
        await self._bounded(self._connection.client.hset(self._replicas, self.replica_id,
                                                          json.dumps({**entry, "seen": time.time()})))

    async def replicas(self) -> list[dict[str, Any]]:
        raw = await self._bounded(self._connection.client.hgetall(self._replicas))
        now = time.time()
        entries: list[dict[str, Any]] = []
        for key, value in raw.items():
            try:
                entry = json.loads(_text(value))
            except ValueError:
                continue
            seen = float(entry.pop("seen", 0.0))
            entries.append({"id": _text(key), **entry, "seen_s_ago": round(now - seen, 1),
                            "stale": now - seen > STALE_AFTER_S})
        return sorted(entries, key=lambda e: str(e["id"]))

    def listen(self, on_change: Callable[[], Awaitable[None]],
               heartbeat: Callable[[], Awaitable[None]]) -> None:
        """Start the background subscriber: `on_change` after each announcement (and after each
        (re)subscribe, since messages sent meanwhile are lost), `heartbeat` every few seconds."""
        self._listener = asyncio.get_running_loop().create_task(self._listen(on_change, heartbeat))

    async def _listen(self, on_change: Callable[[], Awaitable[None]],
                      heartbeat: Callable[[], Awaitable[None]]) -> None:
        backoff = 0.5
        failing = False
        while True:
            try:
                async with self._connection.client.pubsub() as pubsub:
                    await pubsub.subscribe(self._channel)
                    await on_change()
                    if failing:
                        log.info("control channel %s subscribed again", self._channel)
                    failing, backoff = False, 0.5
                    next_beat = 0.0
                    while True:
                        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                        if message is not None:
                            await on_change()
                        if time.monotonic() >= next_beat:
                            await heartbeat()
                            next_beat = time.monotonic() + HEARTBEAT_S
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis down or restarting: the per-request check still catches up
                if not failing:
                    log.warning("control channel %s lost (%s: %s); retrying", self._channel,
                                type(exc).__name__, exc)
                failing = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)

    async def aclose(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            # The listener logs its own failures; here we only wait for it to be gone.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
        # Shutting down while Redis is away: the entry goes stale on its own.
        with contextlib.suppress(Exception):
            await self._bounded(self._connection.client.hdel(self._replicas, self.replica_id))
        await self._connection.close()
