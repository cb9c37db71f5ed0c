"""What a batched replica knows of a shared window: enough to step it locally, not all of it.

A window of W values needs only two ranks for its β-quantile. After a flush a replica holds, of the
shared window:

- its length;
- `near`: the values ranked `reach` either side of the quantile (sorted), and how many rank below;
- `oldest`: the `reach` oldest values, in arrival order (the next to leave when the window is full).

A local step inserts its value by comparison with `near` and evicts the oldest known value the same
way, so the quantile of the window *as it would be after this replica's steps* stays exact for as
long as this replica has made at most `reach` steps since the flush: every step moves the quantile's
rank by at most one inside `near`, and evicts at most one of `oldest`. Past that (an outage, or a
burst between flushes), the threshold is clamped to the nearest known value and an eviction of an
unknown value is booked on the quantile's side in proportion (`β` of them below); the next flush
starts over from the shared window. A window whose values all fit in the reach is held whole, and
then every local step is exact whatever their number.

The point: a flush returns O(reach) values, however many replicas step the window, where a full
mirror would have to read back every value any replica appended.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque
from collections.abc import Iterable

from policies.quantile import linear_quantile


class KnownWindow:
    """The part of a shared window around its quantile, stepped locally between flushes."""

    __slots__ = ("_below", "_below_debt", "_beyond", "_length", "_near", "_oldest", "clamped", "whole")

    def __init__(self, length: int = 0, below: int = 0, near: Iterable[float] = (),
                 oldest: Iterable[float] = ()) -> None:
        self._length = length
        self._below = below  # values ranked below `near`
        self._near = sorted(near)
        self._oldest = deque(oldest)
        # Whole: `near` and `oldest` hold every value (then a step's value joins `oldest` too).
        self.whole = below == 0 and len(self._near) == length and len(self._oldest) == length
        self._below_debt = 0.0  # evictions of unknown values, the share booked below not yet taken
        self.clamped = 0  # quantiles answered from the edge of `near` (a rank outside it), since the flush
        self._beyond = False  # the last lookup was outside `near`

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, rank: int) -> float:
        """The value of global rank `rank` (the nearest known one outside `near`)."""
        index = rank - self._below
        last = len(self._near) - 1
        if 0 <= index <= last:
            return self._near[index]
        self._beyond = True
        return self._near[0 if index < 0 else last]

    def push(self, value: float, size: int, q: float) -> None:
        """Append `value`, then drop the oldest beyond `size` (as the shared window will)."""
        near = self._near
        above = self._length - self._below - len(near)
        if near and value < near[0] and self._below:
            self._below += 1
        elif near and value > near[-1] and above:
            pass  # ranks above `near`: only the length grows
        else:
            insort(near, value)
        if self.whole:
            self._oldest.append(value)
        self._length += 1
        while self._length > size:
            self._evict(q)

    def quantile(self, q: float) -> float:
        """The window's q-quantile (numpy's "linear"); the window must not be empty."""
        self._beyond = False
        threshold = linear_quantile(self, q)
        self.clamped += self._beyond
        return threshold

    def values(self) -> list[float] | None:
        """Every value in arrival order, when this replica holds the whole window; else None."""
        return list(self._oldest) if self.whole else None

    def _evict(self, q: float) -> None:
        near = self._near
        above = self._length - self._below - len(near)
        self._length -= 1
        if not self._oldest:  # beyond what the flush returned: book it by the quantile's share
            self._below_debt += q
            from_below = self._below_debt >= 1
            if from_below:
                self._below_debt -= 1
            if from_below and self._below:
                self._below -= 1
            elif not from_below and above:
                pass
            elif self._below:
                self._below -= 1
            elif near and not above:
                near.pop(0 if from_below else -1)
            return
        gone = self._oldest.popleft()
        if near and gone < near[0] and self._below:
            self._below -= 1
        elif near and gone > near[-1] and above:
            pass
        elif near:
            # Equal values are interchangeable in the ranks: removing any one of them is exact.
            index = min(bisect_left(near, gone), len(near) - 1)
            del near[index]
