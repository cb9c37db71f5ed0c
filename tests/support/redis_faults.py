"""Ways to make a real Redis (or Redis Cluster) fail a gateway's window store, each with its cure.

Every fault is done to the server itself (stopped, paused, filled up, reconfigured, made a replica,
...), never by replacing the client: the gateway meets what it would meet in production.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import redis
from redis.cluster import RedisCluster as SyncRedisCluster

from tests.support.redis_procs import RedisClusterProcs, RedisServer, ask_node, cluster_ports
from tests.support.store_faults import Fault

FILLER = "recserve-fault-filler:"


def _admin(server: RedisServer) -> redis.Redis:
    # RESP2 and a plain socket: this connection must keep working while the fault is on.
    return redis.Redis(port=server.port, protocol=2, socket_timeout=10)


def _fill_to_maxmemory(admin: redis.Redis) -> None:
    """`maxmemory-policy noeviction`, and values until a write is refused: a Redis that is full. Then
    `maxmemory` a little below what is used, so that it stays full whatever buffers come and go."""
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", str(int(admin.info("memory")["used_memory"]) + 1024 * 1024))
    blob = "x" * 64 * 1024
    for i in range(1000):
        try:
            admin.set(f"{FILLER}{i}", blob)
        except redis.exceptions.OutOfMemoryError:
            admin.config_set("maxmemory", str(int(admin.info("memory")["used_memory"]) - 256 * 1024))
            return
    raise RuntimeError("Redis never reached maxmemory")


def _free_memory(admin: redis.Redis) -> None:
    names = list(admin.scan_iter(match=f"{FILLER}*", count=1000))
    for i in range(0, len(names), 500):
        admin.delete(*names[i:i + 500])


def _window_key(admin: redis.Redis, namespace: str) -> str:
    """A window's sorted set of the gateway's (the device tier's)."""
    for name in admin.scan_iter(match=f"{{{namespace}:recserve:device:*}}:z", count=1000):
        return str(name.decode())
    raise RuntimeError("no device window in Redis yet")


class BusyScript:
    """Another client's script that never ends: Redis answers BUSY to everyone else until SCRIPT KILL."""

    def __init__(self, server: RedisServer) -> None:
        self._server = server
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        _admin(self._server).config_set("busy-reply-threshold", "100")

        def run() -> None:
            with contextlib.suppress(redis.exceptions.ResponseError):  # "Script killed by user"
                _admin(self._server).eval("while true do end", 0)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        time.sleep(0.2)  # past busy-reply-threshold: BUSY from now on

    def stop(self) -> None:
        admin = redis.Redis(port=self._server.port, protocol=2, socket_timeout=10)
        for _ in range(50):
            with contextlib.suppress(redis.exceptions.ResponseError):  # NOTBUSY: not started yet
                admin.script_kill()
                break
            time.sleep(0.1)
        if self._thread is not None:
            self._thread.join(timeout=10)


def single_redis_faults(server: RedisServer, master: RedisServer, namespace: str) -> list[Fault]:
    """The faults of one Redis (`server`, the gateway's); `master` is a second server it can follow."""
    admin = _admin(server)
    busy = BusyScript(server)
    return [
        Fault("connection refused (Redis stopped, restarted empty)", server.stop, server.start, ("connection",)),
        Fault("no answer (Redis paused with SIGSTOP)", server.pause, server.resume, ("timeout",), during_s=8.0),
        Fault("maxmemory reached, `noeviction` (writes refused with OOM; then memory freed)",
              lambda: _fill_to_maxmemory(admin), lambda: _free_memory(admin), ("oom",)),
        Fault("a window key of the wrong type (our script fails: WRONGTYPE)",
              lambda: admin.set(_window_key(admin, namespace), "not a sorted set"),
              lambda: admin.delete(_window_key(admin, namespace)), ("script",)),
        Fault("scripts flushed (NOSCRIPT)", lambda: admin.script_flush(), lambda: None, ()),
        Fault("another client's script running on (BUSY)", busy.start, busy.stop, ("busy",)),
        Fault("Redis turned replica (READONLY)",
              lambda: admin.replicaof("127.0.0.1", master.port), lambda: admin.replicaof("NO", "ONE"), ("readonly",)),
        Fault("password required, connections dropped (AUTH fails)",
              lambda: (admin.config_set("requirepass", "changed"),
                       admin.client_kill_filter(_type="normal", skipme=True)),
              lambda: admin.config_set("requirepass", ""), ("auth",)),
        Fault("ACL takes EVALSHA away (NOPERM)",
              lambda: admin.acl_setuser("default", enabled=True, commands=["-evalsha", "-eval"]),
              lambda: admin.acl_setuser("default", enabled=True, commands=["+@all"]), ("auth",)),
        Fault("maxclients reached, connections dropped",
              lambda: (admin.config_set("maxclients", "1"),
                       admin.client_kill_filter(_type="normal", skipme=True)),
              lambda: admin.config_set("maxclients", "10000"), ("connection",)),
    ]


def _device_master(cluster: RedisClusterProcs, namespace: str) -> int:
    with SyncRedisCluster(host="127.0.0.1", port=cluster.ports[0]) as client:
        names = [k.decode() for k in client.scan_iter(match=f"{{{namespace}:recserve:device:*}}:z")]
    if not names:
        raise RuntimeError("no device window in the cluster yet")
    return cluster.master_of(names[0])


def forming_fault(cluster: RedisClusterProcs) -> Fault:
    """Nodes up but no cluster yet (no slot served): the gateway starts against them; the cure is
    `redis-cli --cluster create`."""
    return Fault("Redis Cluster without slots at start (then `redis-cli --cluster create`)",
                 lambda: None, cluster.form, ("cluster",))


def cluster_down_fault(cluster: RedisClusterProcs, namespace: str, *, pause: bool = False) -> Fault:
    """A master without a replica killed (or paused): after `cluster-node-timeout` the others mark it
    failed and, with `cluster-require-full-coverage yes` (the default), answer CLUSTERDOWN for every
    slot. The master taken away is one that does not hold the device window, so its steps meet
    CLUSTERDOWN. A paused master also leaves a topology refresh waiting on it when redis-py happens
    to ask it first: that step times out instead."""
    gone: list[int] = []

    def inject() -> None:
        keep = _device_master(cluster, namespace)
        victim = next(port for port in cluster.masters() if port != keep)
        gone.append(victim)
        if pause:
            cluster.nodes[victim].pause()
        else:
            cluster.kill(victim)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the cluster noticed: CLUSTERDOWN from here on
            if "cluster_state:fail" in ask_node(keep, "CLUSTER", "INFO"):
                return
            time.sleep(0.05)
        raise RuntimeError("the cluster never went down")

    def clear() -> None:
        victim = gone.pop()
        if pause:
            cluster.nodes[victim].resume()
        else:
            cluster.start(victim)  # rejoins with its nodes.conf: the same master of the same slots
        cluster.wait_ok()

    how = "paused; then resumed" if pause else "killed; then restarted"
    return Fault(f"CLUSTERDOWN (a master without replica {how})", inject, clear,
                 ("cluster_down", "timeout") if pause else ("cluster_down",), during_s=8.0 if pause else 4.0)


def resharding_fault(cluster: RedisClusterProcs, namespace: str) -> Fault:
    """The device window's slot caught mid-migration: the slot is MIGRATING on its master, IMPORTING
    on another, and one of the window's three keys has moved — a script on them gets TRYAGAIN until
    the rest moves and the slot is handed over (then MOVED sends the client to the new master)."""
    moving: dict[str, object] = {}

    def node(port: int) -> redis.Redis:
        return redis.Redis(port=port, protocol=2, socket_timeout=10)

    def inject() -> None:
        with SyncRedisCluster(host="127.0.0.1", port=cluster.ports[0]) as client:
            (z,) = [k.decode() for k in client.scan_iter(match=f"{{{namespace}:recserve:device:*}}:z")]
            slot = client.keyslot(z)
        source = cluster.master_of(z)
        target = next(port for port in cluster.masters() if port != source)
        ids = {port: node(port).execute_command("CLUSTER", "MYID").decode() for port in (source, target)}
        node(target).execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source])
        node(source).execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target])
        node(source).execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", z)
        moving.update(slot=slot, source=source, target=target, target_id=ids[target])

    def clear() -> None:
        slot, source, target = moving["slot"], int(str(moving["source"])), int(str(moving["target"]))
        keys = node(source).execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
        if keys:
            node(source).execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys)
        for port in cluster.masters():
            node(port).execute_command("CLUSTER", "SETSLOT", slot, "NODE", moving["target_id"])
        cluster.wait_ok()

    return Fault("resharding: the window's slot mid-migration (TRYAGAIN; then handed over)", inject, clear,
                 ("cluster",))


def moving_clusters(binary: str, workdir: Path) -> tuple[RedisClusterProcs, RedisClusterProcs]:
    """Two clusters of three masters for `moved_cluster_fault`: the first names its nodes 127.0.0.2,
    the second 127.0.0.3 and takes over the ports the first one's URL names (not started yet)."""
    old = RedisClusterProcs(binary, workdir / "old", masters=3, replicas=0, announce_ip="127.0.0.2")
    others = [port for port in cluster_ports(3) if port not in old.ports]
    new = RedisClusterProcs(binary, workdir / "new", masters=3, replicas=0, announce_ip="127.0.0.3",
                            ports=[*old.ports[:2], others[0]])
    return old, new


def moved_cluster_fault(cluster: RedisClusterProcs, replacement: RedisClusterProcs) -> Fault:
    """Every node of `cluster` gone, and a new cluster formed at other addresses, reached by the same
    name (`replacement` listens on the port the URL names): pods rescheduled with new IPs."""

    def inject() -> None:
        for port in list(cluster.nodes):
            cluster.kill(port)

    def clear() -> None:
        replacement.start_nodes()
        replacement.form()

    return Fault("the whole cluster replaced by one at new addresses, reached by the same name", inject, clear,
                 ("cluster", "connection", "timeout"))
