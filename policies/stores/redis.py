"""Windows shared by every gateway replica, kept in Redis and stepped by one atomic Lua script.

Layout of one window (all keys share the hash tag `{<namespace>:<policy>:<tier>:<scope>}`, so a
Redis Cluster keeps them in one slot and the script may touch them together):

- `...}:z`    sorted set, score = confidence, member = sequence number (unique, so equal
              confidences are all kept); ranks answer the quantile in O(log W).
- `...}:fifo` list of members, oldest first; LPOP evicts in arrival order.
- `...}:seq`  counter that hands out the members.

The quantile arithmetic mirrors `policies.quantile.linear_quantile` operation for operation; Lua
numbers are IEEE doubles, scores travel as round-tripping decimal strings, and the result comes back
formatted with `%.17g`, so the threshold equals the memory store's and numpy's bit for bit.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, TypeVar

from redis.commands.core import AsyncScript

from policies.base import WindowKey, WindowStep
from policies.quantile import quantile_fraction
from policies.stores.urls import DEFAULT_SOCKET_TIMEOUT_S, RedisClient

# KEYS: z, fifo, seq.  ARGV: confidence (repr string), size, q (repr string).
# The confidence is passed to ZADD as the caller's string, never through a Lua number: Redis turns
# Lua numbers into strings with "%.14g", which would round the score.
STEP_SCRIPT: Final = """
local size = tonumber(ARGV[2])
local q = tonumber(ARGV[3])
local member = string.format('%d', redis.call('INCR', KEYS[3]))
redis.call('ZADD', KEYS[1], ARGV[1], member)
local n = redis.call('RPUSH', KEYS[2], member)
while n > size do
  redis.call('ZREM', KEYS[1], redis.call('LPOP', KEYS[2]))
  n = n - 1
end
n = redis.call('ZCARD', KEYS[1])
local virtual = (n - 1) * q
local below = math.floor(virtual)
if below < 0 then below = 0 end
if below > n - 1 then below = n - 1 end
local above = math.min(below + 1, n - 1)
local gamma = virtual - below
local pair = redis.call('ZRANGE', KEYS[1], below, above, 'WITHSCORES')
local a = tonumber(pair[2])
local b = tonumber(pair[#pair])
local diff = b - a
local threshold
if gamma >= 0.5 then
  threshold = b - diff * (1 - gamma)
else
  threshold = a + diff * gamma
end
return {string.format('%.17g', threshold), n}
"""

# KEYS: z, fifo.  Scores are returned as Redis's own strings, so nothing is rounded on the way.
SNAPSHOT_SCRIPT: Final = """
local members = redis.call('LRANGE', KEYS[2], 0, -1)
local out = {}
for i, member in ipairs(members) do
  out[i] = redis.call('ZSCORE', KEYS[1], member)
end
return out
"""

_SUFFIXES: Final = ("z", "fifo", "seq")
DEFAULT_MAX_IN_FLIGHT: Final = 64
DEFAULT_QUEUE_TIMEOUT_S: Final = 0.5
DEFAULT_CALL_TIMEOUT_S: Final = DEFAULT_SOCKET_TIMEOUT_S


def _escape(part: str) -> str:
    # Percent-encode the characters that carry meaning in a key: braces would move the hash tag,
    # colons would make `a:b` + `c` collide with `a` + `b:c`.
    return (part.replace("%", "%25").replace("{", "%7B").replace("}", "%7D").replace(":", "%3A"))


def _escape_glob(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


def window_tag(namespace: str, key: WindowKey) -> str:
    """The hash tag shared by one window's keys: `{<namespace>:<policy>:<tier>:<scope>}`."""
    parts = (namespace, key.policy, key.tier, key.scope)
    return "{" + ":".join(_escape(part) for part in parts) + "}"


def window_keys(namespace: str, key: WindowKey) -> tuple[str, str, str]:
    """The sorted-set, FIFO-list and sequence keys of one window, in the order the scripts take."""
    tag = window_tag(namespace, key)
    z, fifo, seq = (f"{tag}:{suffix}" for suffix in _SUFFIXES)
    return z, fifo, seq


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


T = TypeVar("T")


class InFlightLimit:
    """At most `max_in_flight` calls at once on one client; one call, queueing included, lasts at
    most `call_timeout_s` (the URL's socket timeout).

    redis-py's asyncio pool raises MaxConnectionsError instead of waiting once every connection is
    busy; a burst of requests would then look like an outage. Queue here instead, below the pool's
    limit (steps take ~0.1 ms, so the wait is short) — and not for long: when Redis hangs, requests
    queued behind the stuck ones must fail over too, not wait their turn to time out one batch after
    another. The call's own budget is what is left of `call_timeout_s` after the queue: a request
    never waits on Redis longer than the configured socket timeout, whatever redis-py does inside
    (a reconnect, a cluster's topology refresh). Stores sharing one client share one limit.
    """

    def __init__(self, client: RedisClient, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
                 queue_timeout_s: float = DEFAULT_QUEUE_TIMEOUT_S,
                 call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S) -> None:
        pool = getattr(client, "connection_pool", None)  # a cluster client has a pool per node
        pool_limit = getattr(pool, "max_connections", max_in_flight)
        self._in_flight = asyncio.Semaphore(max(1, min(max_in_flight, int(pool_limit))))
        self._queue_timeout_s = min(queue_timeout_s, call_timeout_s)
        self._call_timeout_s = call_timeout_s

    @property
    def call_timeout_s(self) -> float:
        return self._call_timeout_s

    async def run(self, call: Callable[[], Awaitable[T]]) -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._call_timeout_s
        try:
            async with asyncio.timeout(self._queue_timeout_s):
                await self._in_flight.acquire()
        except TimeoutError:
            waited = self._queue_timeout_s
            raise TimeoutError(f"Redis window store: no free connection within {waited}s") from None
        try:
            async with asyncio.timeout_at(deadline):
                return await call()
        except TimeoutError as exc:
            budget = self._call_timeout_s
            raise TimeoutError(f"Redis window store: no answer within {budget}s") from exc
        finally:
            self._in_flight.release()


class RedisWindowStore:
    """A `WindowStore` whose windows live in Redis; one EVALSHA round trip per step.

    Errors from Redis (connection refused, timeouts, auth, a cluster without its slots, OOM, ...)
    propagate: wrapping the store in `FailoverWindowStore` is what turns them into local answers. The
    client is borrowed: whoever built it closes it (see `policies.stores.factory`).
    """

    def __init__(self, client: RedisClient, namespace: str = "recserve", *,
                 max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
                 queue_timeout_s: float = DEFAULT_QUEUE_TIMEOUT_S,
                 call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S) -> None:
        if not namespace:
            raise ValueError("namespace must not be empty")
        self._client = client
        self._namespace = namespace
        self._limit = InFlightLimit(client, max_in_flight, queue_timeout_s, call_timeout_s)
        # register_script sends EVALSHA and falls back to SCRIPT LOAD on NOSCRIPT (e.g. after a
        # Redis restart or failover), so the script body crosses the network once per server.
        self._step_script = client.register_script(STEP_SCRIPT)
        self._snapshot_script = client.register_script(SNAPSHOT_SCRIPT)

    @property
    def namespace(self) -> str:
        return self._namespace

    @property
    def client(self) -> RedisClient:
        return self._client

    @property
    def limit(self) -> InFlightLimit:
        """The client's in-flight limit, for other stores on the same client to share."""
        return self._limit

    async def step(self, key: WindowKey, confidence: float, size: int, beta: float) -> WindowStep:
        if not math.isfinite(confidence):
            raise ValueError(f"confidence must be finite, got {confidence!r}")
        if size < 1:
            raise ValueError(f"window size must be at least 1, got {size}")
        # repr() is the shortest string that round-trips, so Redis's strtod and Lua's tonumber see
        # exactly the double we hold.
        reply = await self._call(self._step_script, window_keys(self._namespace, key),
                                 (repr(float(confidence)), size, repr(quantile_fraction(beta))))
        threshold, length = reply
        return WindowStep(float(_text(threshold)), int(length))

    async def snapshot(self, key: WindowKey) -> list[float]:
        z, fifo, _ = window_keys(self._namespace, key)
        scores = await self._call(self._snapshot_script, (z, fifo), ())
        return [float(_text(score)) for score in scores]

    async def _call(self, script: AsyncScript, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        return await self._limit.run(lambda: script(keys=keys, args=args))

    async def reset(self, key: WindowKey | None = None) -> None:
        if key is not None:
            await self._client.delete(*window_keys(self._namespace, key))
            return
        # Every window of this namespace starts with "{<namespace>:" and ends with a window suffix;
        # the namespace's other keys (the cluster's control record, the probe windows with their
        # version counters) are not windows and stay. SCAN walks the keyspace in bounded batches
        # instead of blocking Redis the way KEYS would.
        prefix = _escape_glob("{" + _escape(self._namespace) + ":")
        for suffix in _SUFFIXES:
            batch: list[Any] = []
            async for name in self._client.scan_iter(match=f"{prefix}*}}:{suffix}", count=500):
                batch.append(name)
                if len(batch) >= 500:
                    await self._client.delete(*batch)
                    batch.clear()
            if batch:
                await self._client.delete(*batch)

    async def ping(self) -> bool:
        """True when Redis answers; for readiness probes, not the request path."""
        return bool(await self._client.ping())
