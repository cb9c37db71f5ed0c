"""The quality policy's probe windows, shared by every replica through Redis.

Layout per tier and scope, beside the quality policy's own window (same hash tag, so one Redis
Cluster slot):

- `{<namespace>:quality:<tier>:<scope>}:probes`    list of `<confidence>|<0 or 1>`, newest first,
                                                  at most `window` long
- `{<namespace>:quality:<tier>:<scope>}:probes:v`  version, bumped by every add and every reset
                                                  (never restarted: a replica holding version V
                                                  must not mistake V new probes for its old ones)

An add is one script (LPUSH, LTRIM, INCR). Decisions never wait on Redis: `curve()` answers from the
curve fitted at the last read and, at most every `refresh_s` per key, starts a background read that
sends the pairs back only when the version moved (one round trip; O(window) only after a change).
Every probe is also kept in local windows, which answer while Redis fails (the window store's
`Outage` rules: one warning, backoff, one retry at a time); adds made meanwhile stay local.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Final

from policies.base import WindowKey
from policies.competence import CompetenceCurve, fit_competence
from policies.quality import ProbeWindows
from policies.stores.failover import Outage, OutageHealth
from policies.stores.faults import fault_kind
from policies.stores.redis import InFlightLimit, _escape, _escape_glob, _text, window_tag
from policies.stores.urls import RedisClient

log = logging.getLogger("recserve.windows")

# KEYS: probes, version.  ARGV: "<confidence>|<agreed>", size.  Returns the new version.
ADD_SCRIPT: Final = """
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
redis.call('PERSIST', KEYS[2])
return redis.call('INCR', KEYS[2])
"""

# KEYS: probes, version.  ARGV: the version the caller holds, size.  The pairs only when it moved.
READ_SCRIPT: Final = """
local version = redis.call('GET', KEYS[2])
if not version then version = '0' end
if version == ARGV[1] then return {version} end
return {version, redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)}
"""

# KEYS: probes, version (of one tier and scope).  Empties the window and moves its version on. The
# version of an emptied window outlives it for a day (every replica has read it by then), so windows
# dropped for good (evicted workloads) leave no key behind; a new probe makes it permanent again.
CLEAR_SCRIPT: Final = """
redis.call('DEL', KEYS[1])
local version = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], 86400)
return version
"""

DEFAULT_REFRESH_S: Final = 0.2


def probe_keys(namespace: str, key: WindowKey) -> tuple[str, str]:
    """The pairs list and the version counter of one tier and scope."""
    tag = window_tag(namespace, key)
    return f"{tag}:probes", f"{tag}:probes:v"


def _pair(raw: Any) -> tuple[float, bool] | None:
    confidence, _, agreed = _text(raw).partition("|")
    try:
        return float(confidence), agreed == "1"
    except ValueError:
        return None  # not ours: ignore rather than fail every read


@dataclass(frozen=True, slots=True)
class _Seen:
    """The shared pairs of one key as last read: their version and fitted curve."""

    version: int
    curve: CompetenceCurve | None
    count: int


class SharedProbeWindows(OutageHealth):
    """A `policies.quality.ProbeStore` in Redis, read through a cache; owns its background tasks."""

    def __init__(self, client: RedisClient, namespace: str, size: int, *,
                 classify: Callable[[BaseException], str | None] = fault_kind,
                 describe: str = "shared probe store", refresh_s: float = DEFAULT_REFRESH_S,
                 clock: Callable[[], float] = time.monotonic, limit: InFlightLimit | None = None) -> None:
        self._client = client
        self._limit = limit or InFlightLimit(client)  # share the window store's: one pool between them
        self._namespace = namespace
        self._size = size
        self._local = ProbeWindows(size)
        self._outage = Outage(describe=describe, local_name="local probe windows", classify=classify,
                              clock=clock)
        self._refresh_s = refresh_s
        self._clock = clock
        self._seen: dict[WindowKey, _Seen] = {}
        self._next_read: dict[WindowKey, float] = {}
        self._locks: dict[WindowKey, asyncio.Lock] = {}  # one read per key at a time: replies apply in order
        self._writing = asyncio.Lock()  # adds reach Redis in the order they were made (a FIFO lock)
        self._tasks: set[asyncio.Task[None]] = set()
        self._add_script = client.register_script(ADD_SCRIPT)
        self._read_script = client.register_script(READ_SCRIPT)
        self._clear = client.register_script(CLEAR_SCRIPT)

    # ----- the ProbeStore protocol ---------------------------------------------------------------

    def add(self, key: WindowKey, confidence: float, agreed: bool) -> None:
        self._local.add(key, confidence, agreed)
        self._spawn(self._push(key, f"{float(confidence)!r}|{int(agreed)}"))

    def curve(self, key: WindowKey) -> CompetenceCurve | None:
        seen = self._shared(key)
        return seen.curve if seen is not None else self._local.curve(key)

    def count(self, key: WindowKey) -> int:
        seen = self._shared(key)
        return seen.count if seen is not None else self._local.count(key)

    async def reset(self, key: WindowKey | None = None) -> None:
        await self._local.reset(key)
        if key is None:
            self._seen.clear()
        else:
            self._seen.pop(key, None)
        await self._delete(key)

    def resize(self, size: int) -> None:
        if size == self._size:
            return
        self._size = size
        self._local.resize(size)
        # Read every key again in full: the window now ends elsewhere.
        self._seen = {key: replace(seen, version=-1) for key, seen in self._seen.items()}
        self._next_read.clear()

    async def sync(self, key: WindowKey) -> None:
        await self._refresh(key)

    # ----- Redis ---------------------------------------------------------------------------------

    def _shared(self, key: WindowKey) -> _Seen | None:
        """The shared view of `key`, re-read in the background when due; None while Redis is not
        trusted or before the first read (the local windows answer then)."""
        now = self._clock()
        if now >= self._next_read.get(key, 0.0):
            self._next_read[key] = now + self._refresh_s
            self._spawn(self._refresh(key))
        return None if self._outage.degraded else self._seen.get(key)

    async def _push(self, key: WindowKey, pair: str) -> None:
        keys = probe_keys(self._namespace, key)
        async with self._writing:
            added = await self._guarded(lambda: self._add_script(keys=keys, args=(pair, self._size)))
        if added is not None:
            await self._refresh(key)  # this replica sees its own probe merged with the others' at once

    async def _refresh(self, key: WindowKey) -> None:
        async with self._locks.setdefault(key, asyncio.Lock()):
            seen = self._seen.get(key)
            held = seen.version if seen is not None else -1
            keys = probe_keys(self._namespace, key)
            reply = await self._guarded(lambda: self._read_script(keys=keys, args=(str(held), self._size)))
            if reply is None or len(reply) < 2:
                return  # unreachable, or unchanged since the last read
            # LRANGE gives newest first; fit the window oldest first, as the local windows hold it.
            pairs = [p for p in (_pair(raw) for raw in reversed(reply[1])) if p is not None]
            self._seen[key] = _Seen(int(_text(reply[0])), fit_competence(pairs), len(pairs))

    async def _delete(self, key: WindowKey | None) -> None:
        if key is not None:
            pairs, version = probe_keys(self._namespace, key)
            await self._guarded(lambda: self._clear(keys=[pairs, version]))
            return
        pattern = _escape_glob("{" + _escape(self._namespace) + ":") + "*}:probes"

        async def scan() -> list[str]:
            return [_text(name) async for name in self._client.scan_iter(match=pattern, count=500)]

        names = await self._outage.absorb(scan)  # not under the call budget: a large keyspace takes a while
        for name in names or ():
            await self._guarded(partial(self._clear, keys=[name, name + ":v"]))

    async def _guarded(self, call: Callable[[], Awaitable[Any]]) -> Any:
        """Make one Redis call under the outage rules; None when Redis was not (or could not be) asked."""
        return await self._outage.attempt(partial(self._limit.run, call))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # used outside an event loop (offline replay): the local windows suffice
            work.close()
            return
        task = loop.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("probe store task failed", exc_info=task.exception())

    async def aclose(self) -> None:
        """Cancel reads and writes still in flight (before the Redis client is closed)."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
