"""A simulation (not a measurement): how many workers, replicas and Redis Cluster shards a deployment
at a given request rate needs, from per-unit costs measured on this machine.

Nothing here sends a request. Inputs are the measured unit costs (defaults: bench/NOTES.md,
"Capacity simulation"); the model applies them to a synthetic deployment:

- traffic: `--workloads` workloads with Zipf shares of the requests (one hot workload,
  a long tail); every request steps its workload's device window, a share β of them the edge window
  too (the cascade's steady state), so `1 + β` steps per request;
- keys: the real window keys (`policies.stores.redis.window_tag`), hashed to cluster slots with Redis
  Cluster's CRC16 (redis-py's `key_slot`), slots split evenly over the shards as
  `redis-cli --cluster create` does;
- Redis cost per window key per second: `exact`: steps x core µs per step; `batched`: every worker
  that steps the window flushes it every `--flush-ms`, so flushes x (µs of protocol per call + µs of
  script per window flushed) + values sent x µs of script per value (its append and its share of the
  read-back, which follows the caller's own pace, not the number of workers; bench.hot_key measures
  the script's cost at 2, 20 and 100 values per call); with `windows.max_sent_per_s` a worker sends
  at most that many values per second to a window;
- gateway: requests / (requests/s per worker x `--target`), workers packed `--workers-per-replica`.

Scenarios: a Zipf(1.1) or even workload mix, `exact`, `batched` or `auto` (a window batched where
one worker steps it at least twice per flush interval, as `windows.hot_steps_per_flush` defaults;
flush 20 or 100 ms, with or without `max_sent_per_s`). For each rate and scenario it prints the
smallest shard count that keeps every shard at or below `--target` of a core, and the hottest key's
share of a core: a key above one core cannot be placed at all (one key lives on one shard, one
script at a time).

    python -m bench.capacity_model                          # 1x, 10x, 100x the one-key exact ceiling
    python -m bench.capacity_model --rates 40000 400000
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from redis.crc import key_slot

from policies.base import Scope
from policies.stores.redis import window_tag

SLOTS = 16_384
MAX_SHARDS = 1024  # the search's limit
HOT_PER_FLUSH = 2.0  # windows.hot_steps_per_flush's default


@dataclass(frozen=True)
class Costs:
    worker_rps: float  # requests/s one gateway worker serves (3-tier cascade)
    exact_us: float  # Redis core µs per exact step (script + protocol)
    batched_call_us: float  # Redis core µs of protocol per flush call
    batched_flush_us: float  # Redis script µs per window flushed, beyond its values
    batched_value_us: float  # Redis script µs per value a flush appends (with its share of the read-back)
    beta: float


@dataclass(frozen=True)
class Scenario:
    """One row group: a workload mix and a windows setting."""

    zipf: float  # 0: every workload as busy as the others
    mode: str  # exact | batched | auto
    flush_ms: float = 20.0
    max_sent_per_s: float = 0.0  # per worker and window (0: every value)

    def describe(self) -> str:
        if self.mode == "exact":
            return "exact"
        extra = f", max_sent_per_s {self.max_sent_per_s:g}" if self.max_sent_per_s else ""
        return f"{self.mode}, flush {self.flush_ms:g} ms{extra}"


SCENARIOS = (Scenario(1.1, "exact"), Scenario(1.1, "batched"), Scenario(1.1, "auto"),
             Scenario(0.0, "exact"), Scenario(0.0, "batched"), Scenario(0.0, "auto"),
             Scenario(1.1, "auto", 100.0), Scenario(1.1, "auto", 100.0, 5.0),
             Scenario(1.1, "batched", 100.0, 1.0), Scenario(0.0, "batched", 100.0, 1.0))


@dataclass(frozen=True)
class Layout:
    rate: float
    workers: int
    replicas: int
    shards: int | None  # None: no shard count fits (a key above one core)
    shards_by_load: int | None  # slots moved to balance load (redis-cli --cluster rebalance --weight)
    hottest_key_core: float
    busiest_shard_core: float


def _shares(count: int, s: float) -> list[float]:
    weights = [1 / (rank ** s) for rank in range(1, count + 1)]
    total = sum(weights)
    return [w / total for w in weights]


def _key_loads(rate: float, shares: Sequence[float], scenario: Scenario, replicas_workers: int,
               costs: Costs) -> dict[int, float]:
    """Core share per window key, keyed by its slot (keys on one slot add up)."""
    by_slot: dict[int, float] = {}
    for index, share in enumerate(shares):
        for tier, fraction in (("device", 1.0), ("edge", costs.beta)):
            steps = rate * share * fraction
            if steps <= 0:
                continue
            # auto: batched where one worker steps the window at least HOT_PER_FLUSH times per flush.
            per_flush = steps / replicas_workers * scenario.flush_ms / 1000
            if scenario.mode == "exact" or (scenario.mode == "auto" and per_flush < HOT_PER_FLUSH):
                load = steps * costs.exact_us / 1e6
            else:
                # Every worker that sees this workload flushes its window each flush_s (at most one call
                # per value sent: a quiet window flushes only when it has something pending).
                sent = min(steps, replicas_workers * scenario.max_sent_per_s) if scenario.max_sent_per_s else steps
                calls = min(replicas_workers / (scenario.flush_ms / 1000), sent)
                load = (calls * (costs.batched_call_us + costs.batched_flush_us) + sent * costs.batched_value_us) / 1e6
            tag = window_tag("recserve", Scope("generation", f"workload-{index}").key("recserve", tier))
            slot = key_slot(tag.encode())
            by_slot[slot] = by_slot.get(slot, 0.0) + load
    return by_slot


def _shard_of(slot: int, shards: int) -> int:
    return min(shards - 1, slot * shards // SLOTS)


def _even_ranges(loads: dict[int, float], target: float) -> tuple[int, float] | None:
    """Fewest shards with slots split in even ranges (as `redis-cli --cluster create` does)."""
    for shards in range(1, MAX_SHARDS + 1):
        per_shard = [0.0] * shards
        for slot, load in loads.items():
            per_shard[_shard_of(slot, shards)] += load
        if max(per_shard) <= target:
            return shards, max(per_shard)
    return None


def _by_load(loads: dict[int, float], target: float) -> int | None:
    """Fewest shards when slots are placed by load (largest first, onto the least loaded shard)."""
    ordered = sorted(loads.values(), reverse=True)
    for shards in range(max(1, math.ceil(sum(ordered) / target)), MAX_SHARDS + 1):
        per_shard = [0.0] * shards
        for load in ordered:
            per_shard[per_shard.index(min(per_shard))] += load
        if max(per_shard) <= target:
            return shards
    return None


def layout(rate: float, scenario: Scenario, args: argparse.Namespace, costs: Costs) -> Layout:
    workers = max(1, math.ceil(rate / (costs.worker_rps * args.target)))
    replicas = math.ceil(workers / args.workers_per_replica)
    loads = _key_loads(rate, _shares(args.workloads, scenario.zipf), scenario, workers, costs)
    hottest = max(loads.values())
    if hottest > args.target:
        return Layout(rate, workers, replicas, None, None, hottest, hottest)
    even = _even_ranges(loads, args.target)
    return Layout(rate, workers, replicas, even[0] if even else None, _by_load(loads, args.target), hottest,
                  even[1] if even else hottest)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.capacity_model", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker-rps", type=float, required=True, help="measured: requests/s per worker")
    parser.add_argument("--exact-us", type=float, required=True, help="measured: Redis core µs per exact step")
    parser.add_argument("--batched-call-us", type=float, required=True,
                        help="measured: Redis core µs of protocol per flush call")
    parser.add_argument("--batched-flush-us", type=float, required=True,
                        help="measured: Redis script µs per window flushed, beyond its values")
    parser.add_argument("--batched-value-us", type=float, required=True,
                        help="measured: Redis script µs per value flushed")
    parser.add_argument("--rates", type=float, nargs="+", help="requests/s (default: 1x, 10x, 100x the "
                        "one-key exact ceiling, 1e6 / exact-us steps/s)")
    parser.add_argument("--beta", type=float, default=0.3)
    parser.add_argument("--workloads", type=int, default=200)
    parser.add_argument("--target", type=float, default=0.6, help="busiest core's share at most (headroom)")
    parser.add_argument("--workers-per-replica", type=int, default=8)
    args = parser.parse_args(argv)
    costs = Costs(args.worker_rps, args.exact_us, args.batched_call_us, args.batched_flush_us,
                  args.batched_value_us, args.beta)
    ceiling = 1e6 / args.exact_us  # one key, one core, every request stepping it
    rates = args.rates or [ceiling, 10 * ceiling, 100 * ceiling]
    print(f"SIMULATION from measured unit costs: {args.worker_rps:,.0f} req/s per worker, exact {args.exact_us:g} µs "
          f"per step, batched {args.batched_call_us + args.batched_flush_us:g} µs per window flushed + "
          f"{args.batched_value_us:g} µs per value sent; {args.workloads} workloads, Zipf 1.1 (the hottest has "
          f"{_shares(args.workloads, 1.1)[0]:.0%} of the traffic) or even; β {args.beta:g}; cores kept at "
          f"≤ {args.target:.0%}; {args.workers_per_replica} workers per replica")
    print()
    print("| rate | requests/s | workers | replicas | workload mix | windows mode | cluster shards "
          "| shards, slots placed by load | hottest key, share of a core | busiest shard |")
    print("|---:|---:|---:|---:|---|---|---:|---:|---:|---:|")
    for rate in rates:
        for scenario in SCENARIOS:
            out = layout(rate, scenario, args, costs)
            shards = f"{out.shards:,}" if out.shards is not None else "does not fit"
            by_load = f"{out.shards_by_load:,}" if out.shards_by_load is not None else "does not fit"
            mix = f"Zipf {scenario.zipf:g}" if scenario.zipf else "even"
            print(f"| {rate / ceiling:.0f}x | {rate:,.0f} | {out.workers:,} | {out.replicas:,} | {mix} "
                  f"| {scenario.describe()} | {shards} | {by_load} | {out.hottest_key_core:.0%} "
                  f"| {out.busiest_shard_core:.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
