"""How the local tiers share this machine's cores: threads, CPU affinity and polling per tier.

llama.cpp splits every matrix product across its threads and waits for all of them at each step,
spinning while it waits (`--poll`, default 50). On cores shared by more runnable threads than there
are cores, one descheduled thread holds up its siblings, which spin and steal the core from
it: with 1 + 1 + 2 threads on 2 cores the 2-thread tier fell to a fifth of its speed, and lower
when anything else ran. So `recserve tiers up` places the tiers whose `threads` is not set:

- enough cores (at least one per tier): each tier gets cores of its own, disjoint from the others'
  (the supervisor runs it under `taskset`, plus `--cpu-mask`), as many threads as cores, shares
  proportional to the model's size; nothing waits on a thread it does not run next to;
- fewer cores than tiers: one thread per tier, no pinning, no polling (`--poll 0`). A one-thread
  tier never waits on a sibling, and the scheduler shares the cores fairly among the tiers
  (each keeps about cores/tiers of a core when all are busy, instead of collapsing).

A tier with `threads` set in its config runs exactly as told (no mask, llama.cpp's polling).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Demand:
    """One local tier asking for CPU: its model's size weighs its share; `threads` set = as told."""

    name: str
    model_bytes: int
    threads: int | None = None


@dataclass(frozen=True)
class Placement:
    """What one llama-server gets. `cpus` None: not pinned; `poll` None: llama.cpp's default."""

    threads: int
    threads_batch: int
    cpus: tuple[int, ...] | None = None
    poll: int | None = None

    def describe(self) -> str:
        """E.g. '2 threads on cpus 2-3' or '1 thread, cores shared, no polling'."""
        words = f"{self.threads} thread{'s' if self.threads != 1 else ''}"
        if self.cpus is not None:
            words += f" on cpu{'s' if len(self.cpus) > 1 else ''} {cpu_list(self.cpus)}"
        if self.poll == 0:
            words += ", cores shared, no polling"
        return words


def available_cores() -> tuple[int, ...]:
    """The CPUs this process may run on (its affinity, which a container's cpuset narrows)."""
    return tuple(sorted(os.sched_getaffinity(0)))


def plan(demands: Sequence[Demand], cores: Sequence[int]) -> list[Placement]:
    """One Placement per demand, in order (see the module docstring for the rule)."""
    auto = [i for i, demand in enumerate(demands) if demand.threads is None]
    placements: list[Placement | None] = [
        None if demand.threads is None else Placement(demand.threads, demand.threads) for demand in demands
    ]
    cores = sorted(set(cores))
    if auto and len(cores) >= len(auto):
        shares = _shares([demands[i].model_bytes for i in auto], len(cores))
        start = 0
        for i, share in zip(auto, shares, strict=True):
            placements[i] = Placement(share, share, tuple(cores[start:start + share]))
            start += share
    else:
        for i in auto:
            placements[i] = Placement(1, 1, None, poll=0)
    return [p for p in placements if p is not None]


def _shares(weights: Sequence[int], total: int) -> list[int]:
    """`total` cores split by weight (largest remainder), at least one each; sum == total."""
    count = len(weights)
    spare = total - count
    weight_sum = sum(max(w, 1) for w in weights)
    exact = [spare * max(w, 1) / weight_sum for w in weights]
    shares = [int(x) for x in exact]
    by_remainder = sorted(range(count), key=lambda i: (exact[i] - shares[i], weights[i]), reverse=True)
    for i in by_remainder[: spare - sum(shares)]:
        shares[i] += 1
    return [1 + share for share in shares]


def cpu_list(cpus: Sequence[int]) -> str:
    """'0-3,6' style, for people."""
    runs: list[str] = []
    ordered = sorted(cpus)
    start = prev = ordered[0]
    for cpu in [*ordered[1:], None]:
        if cpu is not None and cpu == prev + 1:
            prev = cpu
            continue
        runs.append(str(start) if start == prev else f"{start}-{prev}")
        if cpu is not None:
            start = prev = cpu
    return ",".join(runs)


def cpu_mask(cpus: Sequence[int]) -> str:
    """llama-server's `--cpu-mask`: hex, bit i = CPU i."""
    return f"0x{sum(1 << cpu for cpu in set(cpus)):x}"
