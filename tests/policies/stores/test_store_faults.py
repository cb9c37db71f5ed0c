"""A window store in trouble never fails a request: real `recserve serve` processes against real
Redis faults answer 200 from local windows (`x-recserve-window: local`), count each failure by kind
in `recserve_window_store_errors_total`, and return to the shared windows by themselves once the
fault is cleared — a Redis Cluster that has no slots yet when the gateway starts included."""

from __future__ import annotations

import itertools
import shutil
import time
from collections.abc import Iterator

import httpx
import pytest
from redis.cluster import RedisCluster as SyncRedisCluster

from tests.support.processes import GatewayProcess
from tests.support.redis_faults import (
    cluster_down_fault,
    forming_fault,
    moved_cluster_fault,
    moving_clusters,
    resharding_fault,
    single_redis_faults,
)
from tests.support.redis_procs import RedisClusterProcs, RedisServer
from tests.support.scripted_tier import ThreadedTier
from tests.support.store_faults import WINDOW, Fault, FaultRow, gateway_config, measure, prompts

from .conftest import ServerFactory

# The call budget (URL `socket_timeout`): a healthy Redis answers within it on a starved machine too,
# so a local answer here means a fault, not a slow CPU. A refused or failing Redis answers at once.
CALL_BUDGET = "socket_timeout=2&socket_connect_timeout=2"
SEEDS = itertools.count(1)


def _check(row: FaultRow, gateway: GatewayProcess) -> None:
    """Every request answered 200; the fault was answered locally and counted under its kind (or, for
    a fault redis-py handles itself, not at all); the shared windows came back."""
    print(f"\n{row.markdown()}")
    assert set(row.statuses()) == {200}, row.statuses()
    if not row.fault.expected:
        assert row.local() == 0 and not row.counted, row
    else:
        assert row.local() > 0, row
        assert any(row.counted[f"windows/{kind}"] for kind in row.fault.expected), row.counted
    assert row.recovered_s is not None, row.after[-5:]
    assert "Internal error" not in gateway.log() and "Traceback" not in gateway.log(), gateway.log()[-3000:]


def _cluster(redis_binary: str, tmp_path_factory: pytest.TempPathFactory) -> RedisClusterProcs:
    if shutil.which("redis-cli") is None:
        pytest.skip("redis-cli is needed to form a Redis Cluster")
    return RedisClusterProcs(redis_binary, tmp_path_factory.mktemp("faults-cluster"), masters=3, replicas=0)


def _device_window(cluster: RedisClusterProcs, namespace: str) -> list[float]:
    """The device tier's shared window as Redis holds it, oldest first."""
    with SyncRedisCluster(host="127.0.0.1", port=cluster.ports[0]) as client:
        (fifo,) = [k.decode() for k in client.scan_iter(match=f"{{{namespace}:recserve:device:*}}:fifo")]
        members = client.lrange(fifo, 0, -1)
        scores = client.zmscore(fifo.removesuffix(":fifo") + ":z", members)
    return [float(score) for score in scores]


@pytest.mark.parametrize("sync", ["exact", "batched"])
def test_a_gateway_started_before_the_cluster_has_slots_serves_then_joins(
        sync: str, redis_binary: str, tiers: dict[str, ThreadedTier],
        tmp_path_factory: pytest.TempPathFactory) -> None:
    cluster = _cluster(redis_binary, tmp_path_factory).start_nodes()  # nodes up, no slot served
    namespace = f"forming-{sync}"
    config = gateway_config(tiers, {"store": "redis", "redis_url": f"{cluster.url}?{CALL_BUDGET}",
                                    "namespace": namespace, "sync": sync})
    gateway = GatewayProcess(namespace, config, tmp_path_factory.mktemp("forming"))
    try:
        gateway.start()  # ready although the cluster serves no slot
        row = measure(gateway, forming_fault(cluster), prompts(next(SEEDS)), healthy_first=False)
        _check(row, gateway)
        # Joined: the shared window holds what this gateway stepped since it went shared, exactly in
        # exact mode; batched mode also sends what it stepped locally since its last failed flush.
        time.sleep(0.2)  # batched: the last flush (every 20 ms)
        shared = [s.device for s in row.after if s.shared]
        window = [round(v, 9) for v in _device_window(cluster, namespace)]
        if sync == "exact":
            assert window == shared[-WINDOW:]
        else:
            kept = min(len(shared), WINDOW)
            assert window[-kept:] == shared[-kept:]
    finally:
        gateway.stop()
        cluster.stop()


@pytest.mark.parametrize("fault", ["master-killed", "master-paused", "resharding"])
def test_a_cluster_fault_is_answered_locally_and_recovers(
        fault: str, redis_binary: str, tiers: dict[str, ThreadedTier],
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """CLUSTERDOWN (a master without replica gone) and a slot caught mid-migration."""
    cluster = _cluster(redis_binary, tmp_path_factory).start_all()
    namespace = "down"
    config = gateway_config(tiers, {"store": "redis", "redis_url": f"{cluster.url}?{CALL_BUDGET}",
                                    "namespace": namespace})
    gateway = GatewayProcess("down", config, tmp_path_factory.mktemp("down"))
    try:
        gateway.start()
        chosen = resharding_fault(cluster, namespace) if fault == "resharding" else \
            cluster_down_fault(cluster, namespace, pause=fault == "master-paused")
        _check(measure(gateway, chosen, prompts(next(SEEDS))), gateway)
    finally:
        gateway.stop()
        cluster.stop()


def test_a_cluster_back_at_new_addresses_is_found_through_the_url(
        redis_binary: str, tiers: dict[str, ThreadedTier], tmp_path_factory: pytest.TempPathFactory) -> None:
    """The URL names the cluster by 127.0.0.1 (a stable name); its nodes call themselves 127.0.0.2.
    All of them go, and a new cluster comes up as 127.0.0.3 behind the same name and ports: the gateway
    must look it up by the URL again, not by the addresses the old cluster reported."""
    if shutil.which("redis-cli") is None:
        pytest.skip("redis-cli is needed to form a Redis Cluster")
    workdir = tmp_path_factory.mktemp("moved")
    old, new = moving_clusters(redis_binary, workdir)
    config = gateway_config(tiers, {"store": "redis", "redis_url": f"{old.url}?{CALL_BUDGET}", "namespace": "moved"})
    gateway = GatewayProcess("moved", config, workdir)
    try:
        old.start_all()
        gateway.start()
        _check(measure(gateway, moved_cluster_fault(old, new), prompts(next(SEEDS))), gateway)
    finally:
        gateway.stop()
        old.stop()
        new.stop()


@pytest.fixture(scope="module")
def faulty(redis_factory: ServerFactory, tiers: dict[str, ThreadedTier],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, list[Fault]]]:
    """One gateway on a Redis of its own, and the faults that Redis can be put through."""
    server: RedisServer = redis_factory()
    master: RedisServer = redis_factory()  # for the READONLY fault: the server turns its replica
    config = gateway_config(tiers, {"store": "redis", "redis_url": f"{server.url}?{CALL_BUDGET}",
                                    "namespace": "faults"})
    gateway = GatewayProcess("faults", config, tmp_path_factory.mktemp("faults")).start()
    yield gateway, single_redis_faults(server, master, "faults")
    gateway.stop()


@pytest.mark.parametrize("index", range(10), ids=["refused", "paused", "oom-noeviction", "script-error",
                                                  "noscript", "busy", "readonly", "auth", "noperm",
                                                  "maxclients"])
def test_a_single_redis_fault_is_answered_locally_and_recovers(
        index: int, faulty: tuple[GatewayProcess, list[Fault]]) -> None:
    gateway, faults = faulty
    assert len(faults) == 10
    _check(measure(gateway, faults[index], prompts(next(SEEDS))), gateway)


def test_an_admin_reset_while_redis_fails_is_a_503(redis_factory: ServerFactory, tiers: dict[str, ThreadedTier],
                                                   tmp_path_factory: pytest.TempPathFactory,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The one call that cannot degrade (it must empty the shared windows) says so, never a 500."""
    server: RedisServer = redis_factory()
    monkeypatch.setenv("RECSERVE_FAULTS_ADMIN_KEY", "admin-key-for-faults")
    config = gateway_config(tiers, {"store": "redis", "redis_url": server.url, "namespace": "reset"})
    config["auth"]["admin_key_env"] = "RECSERVE_FAULTS_ADMIN_KEY"
    gateway = GatewayProcess("reset", config, tmp_path_factory.mktemp("reset")).start()
    reset = f"http://127.0.0.1:{gateway.port}/admin/windows/reset"
    admin = {"authorization": "Bearer admin-key-for-faults"}
    try:
        server.stop()
        refused = httpx.post(reset, headers=admin, timeout=30)
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "window_store_unavailable"
        server.start()
        assert httpx.post(reset, headers=admin, timeout=30).status_code == 200
    finally:
        gateway.stop()
