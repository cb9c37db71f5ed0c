"""Which workload a request belongs to, and a bound on how many the gateway keeps apart.

A workload is an application sending requests (a sentiment tagger, a support bot, a code assistant):
windows, probe windows and competence are kept per workload, so one tier's competence at one job is
not averaged away by another job. Its name comes from the request (`recserve.workload`, else the
`x-recserve-workload` header), else from the client key's default in config, else it is derived:
`structured` for requests with tools or a JSON response format, the normalised label set for labelled
classification, otherwise the task.

A workload belongs to the tenant whose client named (or derived) it, unless the operator declares
it shared (`policy.shared_workloads`): one tenant's traffic never moves another's windows under the
same name (docs/concepts/tenants.md).

Clients choose names, so the number kept apart is bounded (`WorkloadRegistry`): past
`max_workloads`, a new name takes the place of the least recently used one only if that one has been
idle for `idle_s`; otherwise it is served under its tenant's OVERFLOW name. A flood of made-up names
therefore costs one overflow window, not one window each.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.protocol import WORKLOAD_NAME_PATTERN
from policies.base import Task

OVERFLOW = "other"
WORKLOAD_HEADER = "x-recserve-workload"
_NAME = re.compile(WORKLOAD_NAME_PATTERN)
_LABEL_UNSAFE = re.compile(r"[^a-z0-9._-]+")


# The derived workload of requests asked for structure (tools, a JSON response format): their answers
# are judged by another estimator (the tokens of their JSON values), so their confidences are kept in
# windows of their own rather than mixed with free text's.
STRUCTURED = "structured"


def derived_workload(task: Task, labels: Sequence[str] | None, structured: bool = False) -> str:
    """The workload of a request that names none: `structured` for tools or a JSON response format, its
    label set when it has one, else its task."""
    if structured:
        return STRUCTURED
    if task != "classification" or not labels:
        return task
    parts = sorted({_LABEL_UNSAFE.sub("_", label.strip().casefold()).strip("_") or "_" for label in labels})
    name = "labels:" + ",".join(parts)
    if _NAME.match(name):
        return name
    # Too long (or unusual) to be a key: a short digest of the set names it instead.
    return "labels:" + hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def valid_name(name: str) -> bool:
    return bool(_NAME.match(name))


@dataclass(frozen=True, slots=True)
class Workload:
    """A workload as windows are kept: its name and whose it is (a tenant's scope, "" when every
    tenant shares it: a declared shared workload, or anything on an open gateway)."""

    name: str
    tenant: str = ""


class WorkloadRegistry:
    """At most `max_workloads` workloads kept apart, least recently used first to go (once idle)."""

    def __init__(self, max_workloads: int, idle_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._max = max_workloads
        self._idle_s = idle_s
        self._clock = clock
        self._seen: OrderedDict[Workload, float] = OrderedDict()  # workload -> last use, least recent first

    def admit(self, workload: Workload) -> tuple[Workload, Workload | None]:
        """The workload to serve `workload` under (its tenant's OVERFLOW when there is no room), and the
        one evicted to make room for it (if any)."""
        now = self._clock()
        if workload in self._seen:
            self._seen[workload] = now
            self._seen.move_to_end(workload)
            return workload, None
        evicted = None
        if len(self._seen) >= self._max:
            oldest, last_used = next(iter(self._seen.items()))
            if now - last_used < self._idle_s:
                return Workload(OVERFLOW, workload.tenant), None
            del self._seen[oldest]
            evicted = oldest
        self._seen[workload] = now
        return workload, evicted

    def resize(self, max_workloads: int, idle_s: float) -> list[Workload]:
        """New bounds (a reload); returns the workloads dropped to fit them."""
        self._max, self._idle_s = max_workloads, idle_s
        dropped = []
        while len(self._seen) > self._max:
            workload, _ = self._seen.popitem(last=False)
            dropped.append(workload)
        return dropped

    def kept(self) -> list[Workload]:
        """The workloads kept apart, most recently used first (each tenant's OVERFLOW is possible too)."""
        return list(reversed(self._seen))

    def __len__(self) -> int:
        return len(self._seen)
