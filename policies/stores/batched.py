"""`windows.sync: batched` — shared windows without a Redis round trip on the request path.

Each replica keeps, per window, what it knows of the shared window as of its last flush — its
length, the values ranked around the quantile, the oldest values (`policies.stores.neighbourhood`)
— and its *pending* values, stepped here since. A request's step is a local step on that
knowledge, so it decides against the last shared state merged with its own pending values; no
request waits on Redis.

Every `flush_s` a background task sends every window's pending values in one script call (on a
cluster: one per hash slot, all in one pipeline, a round trip per node). The script appends them to
the shared window (same keys and layout as the exact mode's step, so replicas in either mode can
share windows) and returns the window's length, the values ranked `reach` either side of its
quantile and its `reach` oldest values. `reach` follows this replica's own rate (twice the values it
sent in its last flushes, at least `MIN_REACH`), so a flush costs Redis O(values sent + reach),
however many replicas step the window — it reads back none of the other replicas' values. A window
of at most `WHOLE_UP_TO` values is returned whole.

`max_sent_per_s` caps the values a replica sends to one window per second: a window this replica
stepped k times in its last flush interval, more than the cap allows, sends every n-th value from
then on (n = k / the interval's allowance, rounded up) and steps only those locally too; every step
still decides against the window. A hot window then spans more requests (it moves slower) and costs
Redis less; a window below the cap is not touched (docs/capacity.md: for windows stepped at rates
one Redis core cannot append).

With one replica, decisions equal `exact`'s while it makes at most `reach` steps between two
flushes (always, for a window held whole). With many, a decision between flushes misses the other
replicas' values of the last `flush_s` (bench/NOTES.md measures the agreement). A window this
replica does not step is not kept up to date (free while idle here).

While Redis fails, the windows keep deciding locally (marked `fallback`, one warning, backoff as in
`policies.stores.failover.Outage`); pending values are kept (at most a window's worth per key) and
flushed when Redis answers again. A flush that timed out may or may not have landed, like an exact
step that timed out: its values are not sent twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final

from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import NoScriptError

from policies.base import WindowKey, WindowStep
from policies.quantile import quantile_fraction
from policies.stores.failover import Outage, OutageHealth
from policies.stores.faults import fault_kind
from policies.stores.neighbourhood import KnownWindow
from policies.stores.redis import InFlightLimit, RedisWindowStore, _text, window_keys
from policies.stores.urls import RedisClient

log = logging.getLogger("recserve.windows")

DEFAULT_FLUSH_S: Final = 0.020
MIN_REACH: Final = 8  # ranks fetched either side of the quantile, and oldest values, at least
MAX_REACH: Final = 2048  # at most (a burst beyond it is decided approximately until the next flush)
WHOLE_UP_TO: Final = 256  # a window of at most this many values comes back whole
WINDOWS_PER_CALL: Final = 32

# Any number of windows in one call (all keys in one slot on a cluster). KEYS: z, fifo, seq of each
# window.  ARGV, per window: size (0: unknown here, trim nothing), q (the quantile's fraction, repr
# string), reach, the number of values to append, then those values (repr strings, as the step
# script takes).  Returns, per window: {length, rank of the first `near` value, near: the scores
# ranked reach either side of the quantile, ascending, oldest: the reach oldest scores, oldest
# first}. Commands are variadic, in slices that Lua's unpack takes.
FLUSH_SCRIPT: Final = """
local function sliced(command, key, items)
  for i = 1, #items, 1000 do
    redis.call(command, key, unpack(items, i, math.min(i + 999, #items)))
  end
end
local out = {}
local at = 1
for w = 1, #KEYS / 3 do
  local z, fifo, seq = KEYS[3 * w - 2], KEYS[3 * w - 1], KEYS[3 * w]
  local size, q, reach = tonumber(ARGV[at]), tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2])
  local count = tonumber(ARGV[at + 3])
  local first = at + 4
  at = first + count
  if count > 0 then
    local last = redis.call('INCRBY', seq, count)
    local scored, members = {}, {}
    for i = 1, count do
      local member = string.format('%d', last - count + i)
      members[i] = member
      scored[2 * i - 1] = ARGV[first + i - 1]
      scored[2 * i] = member
    end
    sliced('ZADD', z, scored)
    sliced('RPUSH', fifo, members)
  end
  local n = redis.call('LLEN', fifo)
  while size > 0 and n > size do
    local gone = redis.call('LPOP', fifo, math.min(n - size, 1000))
    redis.call('ZREM', z, unpack(gone))
    n = n - #gone
  end
  local near, oldest, lo = {}, {}, 0
  if n > 0 then
    local r = math.min(math.max(math.floor((n - 1) * q), 0), n - 1)
    lo = math.max(r - reach, 0)
    local ranked = redis.call('ZRANGE', z, lo, math.min(r + 1 + reach, n - 1), 'WITHSCORES')
    for i = 2, #ranked, 2 do near[i / 2] = ranked[i] end
    local members = redis.call('LRANGE', fifo, 0, math.min(reach, n) - 1)
    if #members > 0 then oldest = redis.call('ZMSCORE', z, unpack(members)) end
  end
  out[w] = {n, lo, near, oldest}
end
return out
"""


@dataclass(slots=True)
class _Window:
    """One window as this replica knows it."""

    size: int
    q: float  # the quantile's fraction at the last step (the flush centres `near` on it)
    known: KnownWindow = field(default_factory=KnownWindow)  # the shared window + pending steps
    pending: list[float] = field(default_factory=list)  # stepped here, not yet sent
    sent: tuple[int, int] = (0, 0)  # values sent in the last two flushes: this replica's pace
    stepped: int = 0  # steps since the last flush (its pace, for max_sent_per_s)
    every: int = 1  # send one step in `every` (max_sent_per_s)
    skipped: int = 0  # steps since the last one sent

    def reach(self) -> int:
        if self.size <= WHOLE_UP_TO:
            return max(self.size, 1)
        return min(self.size, MAX_REACH, max(MIN_REACH, 2 * max(self.sent)))


_Due = list[tuple[WindowKey, _Window, list[float]]]  # windows to flush, with the values to send


class BatchedWindowStore(OutageHealth):
    """A `WindowStore` that decides locally and syncs with the shared Redis window every `flush_s`."""

    def __init__(self, client: RedisClient, namespace: str = "recserve", *, flush_s: float = DEFAULT_FLUSH_S,
                 limit: InFlightLimit | None = None, describe: str = "Redis window store",
                 classify: Callable[[BaseException], str | None] = fault_kind,
                 clock: Callable[[], float] = time.monotonic, background: bool = True,
                 max_sent_per_s: float = 0.0) -> None:
        if not flush_s > 0:
            raise ValueError("flush_s must be > 0")
        if max_sent_per_s < 0:
            raise ValueError("max_sent_per_s must be >= 0 (0: no cap)")
        # Values one window may send per flush interval (0: all of them).
        self._allowance = max_sent_per_s * flush_s
        self._shared = RedisWindowStore(client, namespace)  # for reset and snapshot; shares the client
        self._limit = limit or self._shared.limit
        self._namespace = namespace
        self._flush_s = flush_s
        self._client = client
        self._sha = hashlib.sha1(FLUSH_SCRIPT.encode()).hexdigest()
        self._outage = Outage(describe=describe, classify=classify, clock=clock)
        self._windows: dict[WindowKey, _Window] = {}
        self._background = background  # False: the caller calls flush() (the bench's virtual clock)
        self._flusher: asyncio.Task[None] | None = None
        self._flushing = asyncio.Lock()
        self.calls = 0  # script calls sent (one per flush; per slot on a cluster), for the bench and metrics
        self.round_trips = 0  # pipelines sent (one per flush with anything to send)
        self.window_flushes = 0  # windows sent (a call may carry many)
        self.values_sent = 0
        self.clamped = 0  # quantiles answered from beyond the reach (a burst or an outage): approximate
        self.values_returned = 0  # scores the flushes read back (the cost that does not grow with replicas)
        self._closing = False

    async def step(self, key: WindowKey, confidence: float, size: int, beta: float) -> WindowStep:
        if not math.isfinite(confidence):
            raise ValueError(f"confidence must be finite, got {confidence!r}")
        if size < 1:
            raise ValueError(f"window size must be at least 1, got {size}")
        q = quantile_fraction(beta)
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window(size, q)
        window.size, window.q = size, q
        window.stepped += 1
        if window.skipped + 1 < window.every and len(window.known):
            window.skipped += 1  # not sent: decide against the window without adding to it
            return WindowStep(window.known.quantile(q), len(window.known), fallback=self._outage.degraded)
        window.skipped = 0
        window.pending.append(confidence)
        if len(window.pending) > size:  # only during an outage: older values would be evicted anyway
            del window.pending[: len(window.pending) - size]
        window.known.push(confidence, size, q)
        if self._background and self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_forever())
        return WindowStep(window.known.quantile(q), len(window.known), fallback=self._outage.degraded)

    async def adopt(self, key: WindowKey, size: int, beta: float) -> None:
        """Start keeping `key` here (stepped in exact mode so far): fetch what a step needs of the
        shared window now, so that the first step here decides on the whole window."""
        if key not in self._windows:
            self._windows[key] = _Window(size, quantile_fraction(beta))
        await self.flush(refresh=key)  # a store fault is the outage's to count, not the caller's

    async def release(self, key: WindowKey) -> None:
        """Stop keeping `key` here: its pending values go to the shared window first."""
        if key in self._windows:
            await self.flush()  # sends the pending values; nothing to read back for a window let go
            self._windows.pop(key, None)

    async def snapshot(self, key: WindowKey) -> list[float]:
        """The shared window after this replica's pending values reach it (while Redis is
        unreachable: the local window if held whole, else nothing — the rest is not known here)."""
        await self.flush(refresh=key)
        shared = await self._outage.read(partial(self._limit.run, partial(self._shared.snapshot, key)))
        if shared is not None:
            return shared
        window = self._windows.get(key)
        return (window.known.values() or []) if window else []

    async def reset(self, key: WindowKey | None = None) -> None:
        """Empty the shared window(s) and this replica's copies; Redis errors reach the caller."""
        async with self._flushing:
            if key is None:
                self._windows.clear()
            else:
                self._windows.pop(key, None)
            await self._limit.run(lambda: self._shared.reset(key))

    async def flush(self, *, refresh: WindowKey | None = None) -> None:
        """Send every window's pending values and bring what this replica knows of it up to date (the
        windows with pending values, and `refresh` even without, if stepped here). A store fault
        starts (or prolongs) the outage and is not raised."""
        async with self._flushing:
            await self._outage.attempt(partial(self._flush_once, refresh))

    async def _flush_once(self, refresh: WindowKey | None) -> None:
        if self._allowance:  # every window's pace over the last interval, sent or not
            for window in self._windows.values():
                window.every = max(1, math.ceil(window.stepped / self._allowance))
                window.stepped = 0
        due = [(key, window, window.pending) for key, window in self._windows.items()
               if window.pending or key == refresh]
        if not due:
            return
        for _, window, values in due:
            window.pending = []  # steps made while the calls are out go to the next flush
            window.sent = (window.sent[1], len(values))
            self.values_sent += len(values)
        calls = self._calls(due)
        self.calls += len(calls)
        self.window_flushes += len(due)
        self.round_trips += 1
        replies = await self._limit.run(partial(self._send, calls))
        if any(isinstance(reply, NoScriptError) for reply in replies):
            # A restarted or failed-over Redis forgot the script: none of those calls ran, so
            # sending them again after loading it cannot append anything twice.
            await self._client.script_load(FLUSH_SCRIPT)
            again = [call for call, reply in zip(calls, replies, strict=True) if isinstance(reply, NoScriptError)]
            retried = iter(await self._limit.run(partial(self._send, again)))
            replies = [next(retried) if isinstance(reply, NoScriptError) else reply for reply in replies]
        failure: BaseException | None = None
        for call, reply in zip(calls, replies, strict=True):
            if isinstance(reply, BaseException):
                failure = failure or reply
                continue
            for (key, window, _), answer in zip(call, reply, strict=True):
                if self._windows.get(key) is window:  # not reset meanwhile
                    self.clamped += window.known.clamped
                    self.values_returned += self._apply(window, answer)
        if failure is not None:
            raise failure

    def _calls(self, due: _Due) -> list[_Due]:
        """The windows of one flush, grouped into script calls: one call on a single Redis, one
        per hash slot on a cluster (a script may only touch keys of one slot there); at most
        `WINDOWS_PER_CALL` windows each."""
        groups: dict[int, _Due] = {}
        if isinstance(self._client, RedisCluster):
            for entry in due:
                groups.setdefault(key_slot(window_keys(self._namespace, entry[0])[0].encode()), []).append(entry)
        else:
            groups[0] = due
        # Bounded, so that one script does not hold Redis for long when a replica steps many windows.
        return [group[i:i + WINDOWS_PER_CALL] for group in groups.values()
                for i in range(0, len(group), WINDOWS_PER_CALL)]

    async def _send(self, calls: Sequence[_Due]) -> list[Any]:
        """One pipeline: a script call per group of windows, one round trip (per node, on a cluster)."""
        pipe = self._client.pipeline(transaction=False)
        for call in calls:
            keys: list[str] = []
            args: list[Any] = []
            for key, window, values in call:
                keys.extend(window_keys(self._namespace, key))
                args.extend((window.size, repr(window.q), window.reach(), len(values)))
                args.extend(repr(v) for v in values)
            pipe.evalsha(self._sha, len(keys), *keys, *args)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies

    @staticmethod
    def _apply(window: _Window, reply: Any) -> int:
        """Start over from the shared window in `reply`, then re-apply the steps made since it was
        sent; returns how many scores came back."""
        length, first_rank, near, oldest = reply
        window.known = KnownWindow(int(length), int(first_rank), _scores(near), _scores(oldest))
        for value in window.pending:
            window.known.push(value, window.size, window.q)
        return len(near) + len(oldest)

    async def _flush_forever(self) -> None:
        # Stops at `aclose` even if a layer below turned the cancellation into another error.
        while not self._closing:
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
        self._closing = True
        if flusher is not None:
            flusher.cancel()
            try:
                await flusher
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # our caller's own cancellation, not the flusher's
        await self.flush()


def _scores(raw: Sequence[Any]) -> list[float]:
    return [float(_text(score)) for score in raw if score is not None]
