"""A real `recserve serve` process on loopback, for the multi-replica and outage tests."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import openai
import yaml

from tests.support.servers import free_port, wait_http_ok


def recserve_command() -> list[str]:
    """The installed console script beside this interpreter, else the module (same code)."""
    script = Path(sys.executable).parent / "recserve"
    return [str(script)] if script.exists() else [sys.executable, "-m", "gateway.cli"]


class GatewayProcess:
    """`recserve serve --config FILE` as a child process; stderr (its log) kept in a file."""

    def __init__(self, name: str, config: dict[str, Any], workdir: Path, args: Sequence[str] = ()) -> None:
        self.name = name
        self.args = tuple(args)  # extra `recserve serve` arguments, e.g. ("--workers", "2")
        self.port = free_port()
        self.config_path = workdir / f"{name}.yaml"
        self.log_path = workdir / f"{name}.log"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self._process: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None  # set by stop(): how the process ended

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> GatewayProcess:
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [*recserve_command(), "serve", "--config", str(self.config_path), "--port", str(self.port),
                 "--log-level", "info", *self.args],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            wait_http_ok(f"http://127.0.0.1:{self.port}/readyz", timeout=30)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"gateway {self.name} did not start:\n{self.log()[-3000:]}") from None
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()  # uvicorn shuts down gracefully: the lifespan closes the window store
        try:
            self.returncode = process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def sdk(self) -> openai.OpenAI:
        # No SDK retries: a request that failed must show up as a failure.
        return openai.OpenAI(base_url=self.url, api_key="unused", max_retries=0, timeout=30)
