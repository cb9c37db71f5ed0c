"""`windows.sync: batched` — shared windows without a Redis round trip on the request path.

Each replica keeps, per window, a *mirror* of the shared window as of its last flush and a *view*:
the mirror with this replica's values appended since (its pending values). A request's step is a
local step on the view, so it decides against the last shared state merged with its own pending
values; no request waits on Redis.

Every `flush_s` a background task sends each window's pending values in one script call per window,
all windows in one pipeline (one round trip; one per node on a cluster). The script appends them to
the shared window (same keys and layout as the exact mode's step, so replicas in either mode can
share windows) and returns what the caller's mirror lacks: every value appended since the last one
the caller saw (its own included, in the server's order), or the whole window when the mirror no
longer matches (a reset, a Redis restart, a first flush). A window this replica steps is therefore
at most one flush behind the other replicas; one it does not step is not kept up to date (free
while idle here) and is caught up by the flush after its next step.

With one replica the view is always exactly the shared window, so decisions equal `exact`'s. With
many, a decision between flushes misses the other replicas' values of the last `flush_s`
(bench/NOTES.md measures the agreement).

While Redis fails, the views keep deciding locally (marked `fallback`, one warning, backoff as in
`policies.stores.failover.Outage`); pending values are kept (at most a window's worth per key) and
flushed when Redis answers again. A flush that timed out may or may not have landed, like an exact
step that timed out: its values are not sent twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final

from redis.exceptions import NoScriptError

from policies.base import WindowKey, WindowStep
from policies.stores.failover import Outage
from policies.stores.memory import SlidingWindow
from policies.stores.redis import InFlightLimit, RedisWindowStore, _text, window_keys
from policies.stores.urls import RedisClient

log = logging.getLogger("recserve.windows")

DEFAULT_FLUSH_S: Final = 0.020

# KEYS: z, fifo, seq.  ARGV: size (0: unknown here, trim nothing), seen (the newest sequence number
# the caller holds, 0 for none), the caller's score for it, then the values to append (repr strings,
# as the step script takes).
# Returns {1 | 0, newest sequence number, scores}: 1 = the scores appended since `seen` (the caller's
# mirror still matches), 0 = the whole window (start the mirror over).
FLUSH_SCRIPT: Final = """
local size = tonumber(ARGV[1])
local seen = tonumber(ARGV[2])
for i = 4, #ARGV do
  local member = string.format('%d', redis.call('INCR', KEYS[3]))
  redis.call('ZADD', KEYS[1], ARGV[i], member)
  redis.call('RPUSH', KEYS[2], member)
end
local n = redis.call('LLEN', KEYS[2])
while size > 0 and n > size do
  redis.call('ZREM', KEYS[1], redis.call('LPOP', KEYS[2]))
  n = n - 1
end
local newest = tonumber(redis.call('GET', KEYS[3]) or '0')
local matches = 0
if seen > 0 and newest >= seen then
  local score = redis.call('ZSCORE', KEYS[1], string.format('%d', seen))
  if score and tonumber(score) == tonumber(ARGV[3]) then matches = 1 end
end
local count = n
if matches == 1 then count = math.min(newest - seen, n) end
local out = {}
if count > 0 then
  local members = redis.call('LRANGE', KEYS[2], n - count, -1)
  for i, member in ipairs(members) do out[i] = redis.call('ZSCORE', KEYS[1], member) end
end
return {matches, newest, out}
"""


@dataclass(slots=True)
class _Window:
    """One window as this replica knows it."""

    size: int  # 0 until this replica steps the window (then the trim applies)
    mirror: SlidingWindow = field(default_factory=SlidingWindow)  # the shared window at the last flush
    view: SlidingWindow = field(default_factory=SlidingWindow)  # mirror + pending: what steps read
    pending: list[float] = field(default_factory=list)  # stepped here, not yet sent
    seen: int = 0  # sequence number of the mirror's newest value (0: none)
    seen_score: str = ""


class BatchedWindowStore:
    """A `WindowStore` that decides locally and syncs with the shared Redis window every `flush_s`."""

    def __init__(self, client: RedisClient, namespace: str = "recserve", *, flush_s: float = DEFAULT_FLUSH_S,
                 limit: InFlightLimit | None = None, describe: str = "Redis window store",
                 unavailable: tuple[type[BaseException], ...] = (Exception,),
                 clock: Callable[[], float] = time.monotonic, background: bool = True) -> None:
        if not flush_s > 0:
            raise ValueError("flush_s must be > 0")
        self._shared = RedisWindowStore(client, namespace)  # for reset; shares the client
        self._limit = limit or self._shared.limit
        self._namespace = namespace
        self._flush_s = flush_s
        self._client = client
        self._sha = hashlib.sha1(FLUSH_SCRIPT.encode()).hexdigest()
        self._unavailable = unavailable
        self._outage = Outage(describe=describe, clock=clock)
        self._windows: dict[WindowKey, _Window] = {}
        self._background = background  # False: the caller calls flush() (the bench's virtual clock)
        self._flusher: asyncio.Task[None] | None = None
        self._flushing = asyncio.Lock()
        self.calls = 0  # script calls sent (one per window per flush), for the bench and metrics
        self.round_trips = 0  # pipelines sent (one per flush with anything to send)

    @property
    def degraded(self) -> bool:
        return self._outage.degraded

    @property
    def error_count(self) -> int:
        return self._outage.errors

    async def step(self, key: WindowKey, confidence: float, size: int, beta: float) -> WindowStep:
        if not math.isfinite(confidence):
            raise ValueError(f"confidence must be finite, got {confidence!r}")
        if size < 1:
            raise ValueError(f"window size must be at least 1, got {size}")
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window(size)
        window.size = size
        window.pending.append(confidence)
        if len(window.pending) > size:  # only during an outage: older values would be evicted anyway
            del window.pending[: len(window.pending) - size]
        window.view.push(confidence, size)
        if self._background and self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_forever())
        return WindowStep(window.view.quantile(beta), len(window.view), fallback=self._outage.degraded)

    async def snapshot(self, key: WindowKey) -> list[float]:
        """The window as this replica sees it after a sync (its view, when Redis is unreachable)."""
        with contextlib.suppress(*self._unavailable):
            await self.flush(refresh=key)
        window = self._windows.get(key)
        return window.view.values() if window else []

    async def reset(self, key: WindowKey | None = None) -> None:
        """Empty the shared window(s) and this replica's copies; Redis errors reach the caller."""
        async with self._flushing:
            if key is None:
                self._windows.clear()
            else:
                self._windows.pop(key, None)
            await self._limit.run(lambda: self._shared.reset(key))

    async def flush(self, *, refresh: WindowKey | None = None) -> None:
        """Send every window's pending values and bring its mirror up to date (one call per window
        with pending values, and one for `refresh` even without: a window this replica does not
        step is not kept up to date, so it costs nothing while idle here)."""
        async with self._flushing:
            probe = self._outage.begin()
            if probe is None:
                return
            if refresh is not None and refresh not in self._windows:
                self._windows[refresh] = _Window(0)  # size unknown until stepped here
            try:
                await self._flush_once(refresh)
            except self._unavailable as exc:
                self._outage.failed(exc, probe)
                return
            finally:
                self._outage.end(probe)
            self._outage.recovered()

    async def _flush_once(self, refresh: WindowKey | None) -> None:
        due = [(key, window, window.pending) for key, window in self._windows.items()
               if window.pending or key == refresh]
        if not due:
            return
        for _, window, _ in due:
            window.pending = []  # steps made while the calls are out go to the next flush
        self.calls += len(due)
        self.round_trips += 1
        replies = await self._limit.run(partial(self._send, due))
        if any(isinstance(reply, NoScriptError) for reply in replies):
            # A restarted or failed-over Redis forgot the script: none of those calls ran, so
            # sending them again after loading it cannot append anything twice.
            await self._client.script_load(FLUSH_SCRIPT)
            again = [entry for entry, reply in zip(due, replies, strict=True) if isinstance(reply, NoScriptError)]
            retried = iter(await self._limit.run(partial(self._send, again)))
            replies = [next(retried) if isinstance(reply, NoScriptError) else reply for reply in replies]
        failure: BaseException | None = None
        for (key, window, _), reply in zip(due, replies, strict=True):
            if isinstance(reply, BaseException):
                failure = failure or reply
            elif self._windows.get(key) is window:  # not reset meanwhile
                self._apply(window, reply)
        if failure is not None:
            raise failure

    async def _send(self, due: Sequence[tuple[WindowKey, _Window, list[float]]]) -> list[Any]:
        """One pipeline: a script call per window, one round trip (per node, on a cluster)."""
        pipe = self._client.pipeline(transaction=False)
        for key, window, values in due:
            pipe.evalsha(self._sha, 3, *window_keys(self._namespace, key),
                         window.size, window.seen, window.seen_score, *(repr(v) for v in values))
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies

    @staticmethod
    def _apply(window: _Window, reply: Any) -> None:
        matches, newest, scores = reply
        values = [float(_text(score)) for score in scores]
        size = window.size or sys.maxsize
        if not int(matches):
            window.mirror = SlidingWindow()
        for value in values:
            window.mirror.push(value, size)
        window.seen = int(newest)
        window.seen_score = _text(scores[-1]) if scores else window.seen_score
        if not len(window.mirror):
            window.seen, window.seen_score = 0, ""
        window.view.assign(window.mirror)  # in place: the next step need not grow a fresh list
        for value in window.pending:
            window.view.push(value, size)

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self._flush_s)
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not stop the flushing for good; log it and go on
                log.exception("flushing the batched windows failed")

    async def aclose(self) -> None:
        """Stop the background flusher and send what is pending (bounded by the call timeout)."""
        flusher, self._flusher = self._flusher, None
        if flusher is not None:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
        with contextlib.suppress(*self._unavailable):
            await self.flush()
