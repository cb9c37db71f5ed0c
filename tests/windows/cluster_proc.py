"""A real Redis Cluster on loopback: six `redis-server --cluster-enabled yes` (three masters with one
replica each), joined by `redis-cli --cluster create`. Everything is bounded and stopped by `stop()`."""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import subprocess
import time
from pathlib import Path

from .redis_proc import RedisServer

NODE_TIMEOUT_MS = 1000  # how long a silent master stays a master; short, so failover is quick here
READY_TIMEOUT_S = 30.0


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_ports(count: int, rng: random.Random | None = None) -> list[int]:
    """Free ports whose cluster-bus twin (port + 10000) is free too; below the ephemeral range."""
    rng = rng or random.Random()
    ports: list[int] = []
    for _ in range(2000):
        port = rng.randrange(20000, 30000)
        if port not in ports and _bindable(port) and _bindable(port + 10000):
            ports.append(port)
            if len(ports) == count:
                return ports
    raise RuntimeError("no free ports for a Redis Cluster")


def _ask(port: int, *command: str, timeout: float = 1.0) -> str:
    """One command over a raw socket (inline protocol), the reply's text; '' when the node is silent."""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall((" ".join(command) + "\r\n").encode())
        chunks: list[bytes] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            text = b"".join(chunks)
            if text.startswith(b"$"):  # bulk string: wait for its declared length
                header, _, body = text.partition(b"\r\n")
                if len(body) >= int(header[1:]) + 2:
                    break
            elif text.endswith(b"\r\n"):
                break
        return b"".join(chunks).decode(errors="replace")
    return ""


class RedisClusterProcs:
    """Six nodes; `masters()` / `kill(port)` / `start(port)` for failover tests."""

    def __init__(self, binary: str, workdir: Path, *, masters: int = 3, replicas: int = 1) -> None:
        self.binary = binary
        self.workdir = workdir
        self.ports = cluster_ports(masters * (1 + replicas))
        self.replicas = replicas
        self.nodes: dict[int, RedisServer] = {}
        for port in self.ports:
            node = RedisServer(binary, workdir / str(port), extra_args=[
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--cluster-replica-validity-factor", "0"])
            node.port = port
            self.nodes[port] = node

    @property
    def url(self) -> str:
        """A `redis+cluster://` URL naming two startup nodes (either is enough to find the rest)."""
        return f"redis+cluster://127.0.0.1:{self.ports[0]},127.0.0.1:{self.ports[1]}"

    def start_all(self) -> RedisClusterProcs:
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli not found")
        try:
            for node in self.nodes.values():
                node.start()
            subprocess.run([cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
                            "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                           check=True, capture_output=True, timeout=60)
            self.wait_ok()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ok(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Until every running node says cluster_state:ok and agrees there are three masters."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running = [p for p, n in self.nodes.items() if n.running]
            if all("cluster_state:ok" in _ask(p, "CLUSTER", "INFO") for p in running) and \
                    len(self.masters()) == len(self.ports) // (1 + self.replicas):
                return
            time.sleep(0.1)
        raise RuntimeError("the Redis Cluster did not become ready in time")

    def masters(self) -> list[int]:
        """Ports of the nodes that are masters right now and running."""
        found: list[int] = []
        for port, node in self.nodes.items():
            if node.running and "role:master" in _ask(port, "INFO", "replication"):
                found.append(port)
        return sorted(found)

    def master_of(self, key: str) -> int:
        """The port of the running master that owns `key`'s slot."""
        for port in self.masters():
            reply = _ask(port, "CLUSTER", "KEYSLOT", key)
            slot = int(reply.strip().lstrip(":") or -1)
            for line in _ask(port, "CLUSTER", "NODES").splitlines():
                if "myself" in line and "master" in line:
                    ranges = [r for r in line.split()[8:] if not r.startswith("[")]
                    for part in ranges:
                        low, _, high = part.partition("-")
                        if int(low) <= slot <= int(high or low):
                            return port
        raise RuntimeError(f"no running master owns {key!r}")

    def kill(self, port: int) -> None:
        self.nodes[port].stop()

    def start(self, port: int) -> None:
        self.nodes[port].start()  # rejoins with its nodes.conf (as a replica of its successor)

    def stop(self) -> None:
        for node in self.nodes.values():
            if node.running:
                with contextlib.suppress(OSError):
                    node.resume()
            node.stop()
