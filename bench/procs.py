"""Processes the benchmark starts on loopback, and what they cost (CPU seconds, peak RSS)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.processes import stop

_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    """A server process on loopback; stopped with SIGTERM (then SIGKILL) by `stop`."""

    name: str
    process: subprocess.Popen[bytes]
    url: str

    def cpu_seconds(self) -> float:
        """User + system CPU of the process and its descendants alive now (`--workers N`: all workers)."""
        total = 0.0
        for pid in [self.process.pid, *_descendants(self.process.pid)]:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / _TICKS
        return total

    def peak_rss_mb(self) -> float:
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    def stop(self) -> None:
        stop(self.process, 10)


def _children(pid: int) -> list[int]:
    # Every thread's list: a child started from another thread is listed under that thread only.
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    todo = _children(pid)
    while todo:
        child = todo.pop()
        found.append(child)
        todo += _children(child)
    return found


def start(name: str, command: Sequence[str], url: str, ready_path: str, *, env: dict[str, str] | None = None,
          log: Path | None = None, timeout_s: float = 60.0) -> Server:
    """Start `command` and wait (bounded) until GET url+ready_path answers 200."""
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(list(command), stdout=out, stderr=subprocess.STDOUT,
                               env={**os.environ, **(env or {})})
    server = Server(name, process, url)
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode} (log: {log})")
            try:
                if client.get(url + ready_path).status_code == 200:
                    return server
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    server.stop()
    raise TimeoutError(f"{name} not ready within {timeout_s}s (log: {log})")


def fake_tier(port: int, delay_ms: float = 0.0) -> Server:
    command = [sys.executable, "-m", "bench.fake_tier", "--port", str(port), "--delay-ms", str(delay_ms)]
    return start(f"fake-tier:{port}", command, f"http://127.0.0.1:{port}", "/v1/models")
