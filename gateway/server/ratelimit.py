"""Per-client-key rate limit: a token bucket per key, answered with 429 and `retry-after`;
and the request-header size limit, checked at the same point (after the key check).

`auth.rate_limit: {requests_per_minute: N, burst: M}` turns it on (default off). Each key's bucket
holds at most `burst` tokens and refills at N/60 tokens a second; a request takes one token or is
refused with the seconds until one is back.

With `windows.store: redis` the buckets live in Redis, stepped by one atomic Lua script (Redis's own
clock, so replicas with skewed clocks agree), and all replicas share them. While Redis fails
(`policies.stores.faults`) each replica limits from its own in-memory buckets and retries Redis
with the window store's backoff: an outage never turns into failed requests. Keys are stored as
SHA-256 digests, never as the key itself. The limiter hangs off `app.state` (built on first use,
rebuilt when a reload changes its settings), so there is no module-level state.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Protocol

from starlette.requests import Request

from gateway.config.schema import GatewayConfig, RateLimitConfig
from gateway.errors import GatewayError

LOGGER: Final = logging.getLogger("recserve.ratelimit")
STATE_ATTRIBUTE: Final = "rate_limiter"  # on app.state
MAX_LOCAL_BUCKETS: Final = 100_000  # bound on memory: idle full buckets are dropped beyond this

# KEYS[1]: the bucket hash. ARGV: rate (tokens/s), capacity. Returns {allowed, wait_s as a string}
# (Lua numbers come back truncated to integers, so the wait travels as text).
BUCKET_SCRIPT: Final = """
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local saved = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(saved[1]) or capacity
local at = tonumber(saved[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - at) * rate)
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'at', string.format('%.17g', now))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate * 1000) + 1000)
return {allowed, string.format('%.17g', wait)}
"""


class RateLimited(GatewayError):
    """429 in OpenAI's shape, with `retry-after` in whole seconds (at least 1)."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


@dataclass(frozen=True, slots=True)
class BucketDraw:
    """One draw from a client's token bucket."""

    allowed: bool
    wait_s: float  # seconds until a token is back; 0 when allowed


class Buckets(Protocol):
    """Where buckets live; `take` spends one token of `key`'s bucket if it has one."""

    async def take(self, key: str, rate: float, capacity: int) -> BucketDraw: ...


@dataclass
class MemoryBuckets:
    """Buckets in this process; `clock` is injectable for tests."""

    clock: Callable[[], float] = time.monotonic
    _state: dict[str, tuple[float, float]] = field(default_factory=dict)  # key → (tokens, at)

    async def take(self, key: str, rate: float, capacity: int) -> BucketDraw:
        now = self.clock()
        tokens, at = self._state.get(key, (float(capacity), now))
        tokens = min(float(capacity), tokens + max(0.0, now - at) * rate)
        if tokens >= 1.0:
            self._remember(key, (tokens - 1.0, now))
            return BucketDraw(True, 0.0)
        self._remember(key, (tokens, now))
        return BucketDraw(False, (1.0 - tokens) / rate)

    def _remember(self, key: str, value: tuple[float, float]) -> None:
        if key not in self._state and len(self._state) >= MAX_LOCAL_BUCKETS:
            self._state.pop(next(iter(self._state)))  # oldest inserted first: bounded, never fails
        self._state[key] = value



class RedisBuckets:
    """Buckets in Redis, shared by every replica; falls back to `local` while Redis fails, under the
    window store's outage rules (one warning, one request at a time retries, backoff to 10 s)."""

    def __init__(self, redis_url: str, namespace: str, local: MemoryBuckets) -> None:
        from policies.stores.failover import Outage
        from policies.stores.urls import connect_any

        self._connection = connect_any(redis_url)  # any URL form: a bucket is one key, so one cluster slot
        self._script = self._connection.client.register_script(BUCKET_SCRIPT)
        self._namespace = namespace
        self._local = local
        self._outage = Outage(describe=f"rate limit store at {self._connection.url}", local_name="per-replica buckets",
                              logger=LOGGER)

    @property
    def fault_counts(self) -> dict[str, int]:
        """Redis failures seen, by kind (each answered from the per-replica buckets)."""
        return dict(self._outage.faults)

    def redis_key(self, key: str) -> str:
        return f"{self._namespace}:ratelimit:{key}"

    async def take(self, key: str, rate: float, capacity: int) -> BucketDraw:
        reply = await self._outage.attempt(lambda: self._draw(key, rate, capacity))
        return reply if reply is not None else await self._local.take(key, rate, capacity)

    async def _draw(self, key: str, rate: float, capacity: int) -> BucketDraw:
        # Bounded like a window step: a cluster's own retries must not hold the request.
        async with asyncio.timeout(self._connection.timeout_s):
            allowed, wait = await self._script(keys=[self.redis_key(key)], args=[repr(rate), capacity])
        text = wait.decode() if isinstance(wait, bytes) else str(wait)
        return BucketDraw(bool(int(allowed)), float(text))

    async def aclose(self) -> None:
        await self._connection.close()


@dataclass
class RateLimiter:
    """One limiter per app: the settings it was built for and where its buckets live."""

    settings: RateLimitConfig
    store_key: tuple[str, str, str]  # (store, redis_url, namespace) it was built for
    buckets: Buckets

    async def check(self, client: str) -> None:
        """Spend a token of `client`'s bucket or raise RateLimited."""
        verdict = await self.buckets.take(client_bucket(client), self.settings.rate_per_second,
                                          self.settings.capacity)
        if not verdict.allowed:
            retry_after = max(1, math.ceil(verdict.wait_s))
            raise RateLimited(
                f"Rate limit reached for this API key ({self.settings.requests_per_minute:g} requests per "
                f"minute, burst {self.settings.capacity}); retry after {retry_after} s.",
                headers={"retry-after": str(retry_after)})


async def close_limiter(state: object) -> None:
    """Close the app's limiter's shared-store connection, if one was opened (app shutdown)."""
    limiter: RateLimiter | None = getattr(state, STATE_ATTRIBUTE, None)
    if limiter is not None and isinstance(limiter.buckets, RedisBuckets):
        await limiter.buckets.aclose()


def limiter_faults(state: object) -> dict[str, int] | None:
    """The shared-store failures of the app's limiter by kind; None without Redis buckets."""
    limiter: RateLimiter | None = getattr(state, STATE_ATTRIBUTE, None)
    if limiter is not None and isinstance(limiter.buckets, RedisBuckets):
        return limiter.buckets.fault_counts
    return None


def client_bucket(client: str) -> str:
    """The bucket name of a client: a digest, so neither memory nor Redis holds the key itself."""
    return hashlib.sha256(client.encode()).hexdigest()[:32]


def client_identity(request: Request, key: str | None) -> str:
    """The presented key; without one (an open gateway) the peer address."""
    if key:
        return "key:" + key
    peer = request.client.host if request.client else "unknown"
    return "peer:" + peer


def limiter_for(state: object, config: GatewayConfig) -> RateLimiter | None:
    """The app's limiter for `config` (None when the limit is off), built or rebuilt as needed."""
    settings = config.auth.rate_limit
    if settings is None:
        return None
    windows = config.windows
    store_key = (windows.store, windows.redis_url, windows.namespace)
    current: RateLimiter | None = getattr(state, STATE_ATTRIBUTE, None)
    if current is not None and current.store_key == store_key:
        if current.settings != settings:
            current = RateLimiter(settings, store_key, current.buckets)
            setattr(state, STATE_ATTRIBUTE, current)
        return current
    buckets: Buckets = MemoryBuckets()
    if windows.store == "redis":
        buckets = RedisBuckets(windows.redis_url, windows.namespace, MemoryBuckets())
    limiter = RateLimiter(settings, store_key, buckets)
    setattr(state, STATE_ATTRIBUTE, limiter)
    return limiter


class HeadersTooLarge(GatewayError):
    """431: the request's headers together exceed `server.max_header_bytes`."""

    status = 431
    type = "invalid_request_error"
    code = "headers_too_large"


def header_bytes(request: Request) -> int:
    """Bytes the request's header lines take (name, value, ': ' and CRLF each)."""
    return sum(len(name) + len(value) + 4 for name, value in request.scope.get("headers", ()))


async def admit_client(request: Request, config: GatewayConfig, key: str | None) -> None:
    """The intake's step after the key check: the header size limit (431), then the token bucket
    of the client presenting `key` (429 + retry-after)."""
    limit = config.server.max_header_bytes
    if header_bytes(request) > limit:
        raise HeadersTooLarge(f"Request headers are larger than the limit of {limit} bytes.")
    limiter = limiter_for(request.app.state, config)
    if limiter is not None:
        await limiter.check(client_identity(request, key))
