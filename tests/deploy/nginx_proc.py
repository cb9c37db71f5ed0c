"""Real nginx (Debian's /usr/sbin/nginx) in the foreground on loopback, owned by one test module."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from tests.support.servers import free_port

from .nginx_render import NGINX_CONF, render_nginx_conf


class NginxProcess:
    """docker/nginx.conf, rendered for loopback, run as `nginx -p DIR -c DIR/nginx.conf -g 'daemon off;'`."""

    def __init__(self, binary: str, workdir: Path, upstreams: Sequence[str]) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.conf = workdir / "nginx.conf"
        self.conf.write_text(render_nginx_conf(NGINX_CONF.read_text(), listen_port=self.port,
                                               upstreams=upstreams, workdir=workdir))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self, *extra: str) -> list[str]:
        return [self.binary, "-p", str(self.workdir), "-c", str(self.conf), "-g", "daemon off;", *extra]

    def check(self) -> subprocess.CompletedProcess[str]:
        """`nginx -t`: the rendered file parses."""
        return subprocess.run(self.command("-t"), capture_output=True, text=True, timeout=30, check=False)

    def start(self, timeout_s: float = 10.0) -> NginxProcess:
        with (self.workdir / "nginx.stderr").open("ab") as log:
            self._process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"nginx exited with {self._process.returncode}:\n{self.errors()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"nginx did not listen on {self.port} within {timeout_s}s:\n{self.errors()}")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()  # SIGTERM: fast shutdown of master and workers
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def errors(self) -> str:
        parts = [self.workdir / "nginx.stderr", self.workdir / "error.log"]
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in parts if p.exists())

    def access_lines(self) -> list[str]:
        path = self.workdir / "access.log"
        return path.read_text(errors="replace").splitlines() if path.exists() else []
