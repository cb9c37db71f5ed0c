"""Real child processes owned by a test: the gateway (`recserve serve`) and nginx here, redis-server and
the Redis Cluster in `tests.support.redis_procs`. Each starts with its output in a log file.

Every process a test (or `bench/`) starts ends through the one `stop()` below: SIGTERM (or the
child's own polite signal), on which every one of them shuts down gracefully, then SIGKILL if it
lingers. This module imports only what `recserve` itself needs, so `bench/` can use it too."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tests.deploy.nginx_render import NGINX_CONF, render_nginx_conf
from tests.support.servers import free_port, wait_http_ok

if TYPE_CHECKING:
    import openai

KILL_WAIT_S = 5.0  # after SIGKILL: the kernel reaps at once, this only bounds a stuck zombie


def stop(process: subprocess.Popen[Any] | None, timeout_s: float = 5.0, *,
         ask: Callable[[], None] | None = None) -> int | None:
    """End `process`: ask it to stop (SIGTERM, or `ask`, e.g. closing its stdin), wait up to
    `timeout_s`, then SIGKILL. Returns its exit status; None when there was no process. A process
    that already exited is only reaped."""
    if process is None:
        return None
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError, BrokenPipeError):  # it exited just now
            (ask or process.terminate)()
        try:
            return process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait(timeout=KILL_WAIT_S)


class ChildProcess:
    """One child process: `_spawn` starts it, `stop` ends it (a no-op when it is not running)."""

    stop_timeout_s = 5.0  # how long SIGTERM may take before SIGKILL

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None  # set by stop(): how the process ended

    def _spawn(self, args: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None
               ) -> subprocess.Popen[bytes]:
        with log_path.open("ab") as log:
            self._process = subprocess.Popen(list(args), stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, env=None if env is None else dict(env))
        return self._process

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        self.returncode = stop(process, self.stop_timeout_s)


def recserve_command() -> list[str]:
    """The installed console script beside this interpreter, else the module (same code)."""
    script = Path(sys.executable).parent / "recserve"
    return [str(script)] if script.exists() else [sys.executable, "-m", "gateway.cli"]


class GatewayProcess(ChildProcess):
    """`recserve serve --config FILE` as a child process; stderr (its log) kept in a file."""

    stop_timeout_s = 15.0  # uvicorn shuts down gracefully: the lifespan closes the window store

    def __init__(self, name: str, config: dict[str, Any], workdir: Path, args: Sequence[str] = (),
                 env: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.name = name
        self.args = tuple(args)  # extra `recserve serve` arguments, e.g. ("--workers", "2")
        self.env = env  # its whole environment; None: this process's
        self.port = free_port()
        self.config_path = workdir / f"{name}.yaml"
        self.log_path = workdir / f"{name}.log"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> GatewayProcess:
        self._spawn([*recserve_command(), "serve", "--config", str(self.config_path), "--port", str(self.port),
                     "--log-level", "info", *self.args], self.log_path, self.env)
        try:
            wait_http_ok(f"http://127.0.0.1:{self.port}/readyz", timeout=30)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"gateway {self.name} did not start:\n{self.log()[-3000:]}") from None
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def sdk(self) -> openai.OpenAI:
        import openai  # here, not at the top: bench/ imports this module without the SDK

        # No SDK retries: a request that failed must show up as a failure.
        return openai.OpenAI(base_url=self.url, api_key="unused", max_retries=0, timeout=30)


class NginxProcess(ChildProcess):
    """docker/nginx.conf, rendered for loopback, run as `nginx -p DIR -c DIR/nginx.conf -g 'daemon off;'`."""

    stop_timeout_s = 10.0  # SIGTERM: fast shutdown of master and workers

    def __init__(self, binary: str, workdir: Path, upstreams: Sequence[str]) -> None:
        super().__init__()
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.conf = workdir / "nginx.conf"
        self.conf.write_text(render_nginx_conf(NGINX_CONF.read_text(), listen_port=self.port,
                                               upstreams=upstreams, workdir=workdir))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self, *extra: str) -> list[str]:
        return [self.binary, "-p", str(self.workdir), "-c", str(self.conf), "-g", "daemon off;", *extra]

    def check(self) -> subprocess.CompletedProcess[str]:
        """`nginx -t`: the rendered file parses."""
        return subprocess.run(self.command("-t"), capture_output=True, text=True, timeout=30, check=False)

    def start(self, timeout_s: float = 10.0) -> NginxProcess:
        process = self._spawn(self.command(), self.workdir / "nginx.stderr")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"nginx exited with {process.returncode}:\n{self.errors()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"nginx did not listen on {self.port} within {timeout_s}s:\n{self.errors()}")

    def errors(self) -> str:
        parts = [self.workdir / "nginx.stderr", self.workdir / "error.log"]
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in parts if p.exists())

    def access_lines(self) -> list[str]:
        path = self.workdir / "access.log"
        return path.read_text(errors="replace").splitlines() if path.exists() else []
