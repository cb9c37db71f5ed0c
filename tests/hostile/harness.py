"""The measuring side of the hostile suite: the hostile tier's process, the gateway process and its
memory, a healthy client that keeps calling during every case, and one client call observed in full.

Every loop here stops by itself: threads on a stop event, waits on deadlines, reads on a wall clock.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.processes import GatewayProcess, stop

REPO = Path(__file__).resolve().parents[2]
KILL_RSS_MB = 1024.0  # a gateway past this is killed (and restarted) to protect the shared machine
SAMPLE_EVERY_S = 0.02
REPORT_KEY = pytest.StashKey[str]()  # the table, for the terminal summary
KEEP_BYTES = 256 * 1024  # of a response body: the first and the last this many bytes are kept
READ_BYTES = 1024 * 1024  # the client reads a body in pieces of up to this size
STALL_CPU_METRIC = "recserve_event_loop_stall_cpu_seconds"


def longest_stall_cpu(before: dict[float, float], after: dict[float, float]) -> float:
    """The bucket bound (s) holding the longest of the stalls counted between two readings; 0.0 when there
    were none. A reading from a restarted gateway counts from zero."""
    if not after:
        return 0.0
    if any(after.get(bound, 0.0) < count for bound, count in before.items()):
        before = {}
    new = {bound: count - before.get(bound, 0.0) for bound, count in after.items()}
    total = new.get(float("inf"), 0.0)
    return min((bound for bound, count in new.items() if count == total), default=0.0) if total else 0.0


def self_signed_cert(workdir: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 that no trust store knows (openssl CLI)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the TLS cases need the openssl CLI (or the cryptography package)")
    cert, key = workdir / "hostile-cert.pem", workdir / "hostile-key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "1", "-subj", "/CN=hostile.invalid", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=30)
    return cert, key


class HostileTierProcess:
    """`python -m tests.hostile.hostile_tier` as a child process (its CPU is not the test's)."""

    def __init__(self, workdir: Path, tls: tuple[Path, Path] | None) -> None:
        self.log_path = workdir / "hostile-tier.log"
        self._tls = tls
        self._process: subprocess.Popen[bytes] | None = None
        self._control: httpx.Client | None = None
        self.port = 0
        self.tls_port = 0

    def start(self, timeout_s: float = 60.0) -> HostileTierProcess:
        command = [sys.executable, "-m", "tests.hostile.hostile_tier", "--port", "0"]
        if self._tls is not None:
            command += ["--tls-port", "0", "--cert", str(self._tls[0]), "--key", str(self._tls[1])]
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=log,
                                             stdin=subprocess.DEVNULL)
        assert self._process.stdout is not None
        ready, _, _ = select.select([self._process.stdout], [], [], timeout_s)
        line = self._process.stdout.readline() if ready else b""
        if not line:
            self.stop()
            raise RuntimeError(f"hostile tier did not start:\n{self.log_path.read_text(errors='replace')[-3000:]}")
        ports = json.loads(line)
        self.port, self.tls_port = ports["port"], ports.get("tls_port", 0)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def state(self, clear: bool = False) -> tuple[int, list[dict[str, Any]]]:
        """(cases still running, records)."""
        if self._control is None:  # one client, kept: building one costs ~40 ms, and this runs twice a case
            self._control = httpx.Client(base_url=self.url, timeout=5)
        response = self._control.post("/_hostile/clear") if clear else self._control.get("/_hostile/records")
        data = response.json()
        return int(data["running"]), list(data["records"])

    def settle(self, timeout_s: float = 5.0) -> bool:
        """Wait until no case is running; False if one still is after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while self.state()[0]:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def stop(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None
        process, self._process = self._process, None
        if process is None:
            return
        stop(process, 10)
        if process.stdout is not None:
            process.stdout.close()


def _proc_kb(pid: int, field_name: str) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return float(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0.0


class MeasuredGateway(GatewayProcess):
    """The gateway under test, with extra environment (the tier's key) and a memory watch: peak RSS
    per case (VmHWM, reset through /proc/<pid>/clear_refs, plus 20 ms samples of VmRSS), and a
    watchdog that kills it past KILL_RSS_MB."""

    def __init__(self, name: str, config: dict[str, Any], workdir: Path, env: dict[str, str]) -> None:
        super().__init__(name, config, workdir)
        self._env = env
        self._peak_kb = 0.0
        self._hwm_resettable = False
        self.killed_at_mb = 0.0
        self.restarts = 0
        self._stop = threading.Event()
        self._watch: threading.Thread | None = None
        self._scraper = httpx.Client(timeout=10)  # kept: read twice a case

    @property
    def pid(self) -> int:
        return self._process.pid if self._process is not None else 0

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> MeasuredGateway:
        saved = {name: os.environ.get(name) for name in self._env}
        os.environ.update(self._env)  # Popen copies the environment at spawn
        try:
            super().start()
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
        if self._watch is None:
            self._watch = threading.Thread(target=self._sample, name="gateway-rss", daemon=True)
            self._watch.start()
        return self

    def restart(self) -> None:
        self.stop()
        self.restarts += 1
        self.start()

    def close(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.join(5)
        self._scraper.close()
        self.stop()

    def begin_case(self) -> None:
        self.killed_at_mb = 0.0
        self._peak_kb = _proc_kb(self.pid, "VmRSS")
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS now
            self._hwm_resettable = True
        except OSError:
            self._hwm_resettable = False

    def loop_stalls(self) -> dict[float, float]:
        """The gateway's own count of event-loop stalls by the CPU its loop spent in each (cumulative per
        bucket bound, from recserve_event_loop_stall_cpu_seconds); empty when it cannot be read."""
        try:
            text = self._scraper.get(f"http://127.0.0.1:{self.port}/metrics").text
        except httpx.HTTPError:
            return {}
        return {float(sample.labels["le"]): sample.value for family in text_string_to_metric_families(text)
                if family.name == STALL_CPU_METRIC for sample in family.samples if sample.name.endswith("_bucket")}

    def case_peak_mb(self) -> float:
        peak = self._peak_kb
        if self._hwm_resettable:
            peak = max(peak, _proc_kb(self.pid, "VmHWM"))
        return max(peak / 1024, self.killed_at_mb)

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY_S):
            pid = self.pid
            if not pid:
                continue
            rss = _proc_kb(pid, "VmRSS")
            self._peak_kb = max(self._peak_kb, rss)
            if rss / 1024 > KILL_RSS_MB and self.alive:
                self.killed_at_mb = rss / 1024
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


class HealthyLoad:
    """A second client calling a healthy pinned tier in a loop, in its own process
    (tests/hostile/healthy_load.py); each case reads the worst latency seen during it (a call still
    in flight counts with its age)."""

    def __init__(self, base_url: str, model: str) -> None:
        self._command = [sys.executable, "-m", "tests.hostile.healthy_load", "--base-url", base_url, "--model", model]
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._lock = threading.Lock()
        self._worst = 0.0
        self._failures: list[str] = []
        self._calls = 0
        self._inflight_since: float | None = None

    def start(self) -> HealthyLoad:
        self._process = subprocess.Popen(self._command, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         text=True)
        self._reader = threading.Thread(target=self._read, name="healthy-load", daemon=True)
        self._reader.start()
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        assert process.stdin is not None
        stop(process, 15, ask=process.stdin.close)  # a closed stdin is the child's signal to stop
        if self._reader is not None:
            self._reader.join(5)
        if process.stdout is not None:
            process.stdout.close()

    def begin_case(self) -> None:
        with self._lock:
            self._worst, self._failures, self._calls = 0.0, [], 0

    def wait_for_calls(self, count: int, timeout_s: float) -> None:
        """Let at least `count` calls complete inside the case's window, so even a case over in
        milliseconds is measured against calls that overlapped its aftermath."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if self._calls >= count:
                    return
            time.sleep(0.01)

    def end_case(self) -> tuple[float, int, list[str]]:
        """(worst latency s, calls completed, failures) since begin_case."""
        with self._lock:
            worst = self._worst
            if self._inflight_since is not None:
                worst = max(worst, time.monotonic() - self._inflight_since)
            return worst, self._calls, list(self._failures)

    def _read(self) -> None:
        process = self._process
        assert process is not None and process.stdout is not None
        for line in process.stdout:  # ends when the child exits
            kind, _, rest = line.strip().partition(" ")
            with self._lock:
                if kind == "S":
                    self._inflight_since = float(rest)
                elif kind == "E":
                    started, ended, error = rest.split(" ", 2)
                    self._inflight_since = None
                    self._worst = max(self._worst, float(ended) - float(started))
                    self._calls += 1
                    if error != "-":
                        self._failures.append(error)


@dataclass
class Observation:
    """One client request as the client saw it."""

    status: int | None = None  # None: no HTTP answer at all
    headers: dict[str, str] = field(default_factory=dict)  # lower-cased names (a repeat: the last)
    header_text: str = ""  # every header line as received
    first: bytes = b""  # the first KEEP_BYTES of the body
    last: bytes = b""  # the last KEEP_BYTES (overlapping `first` when short)
    size: int = 0
    elapsed_s: float = 0.0
    client_error: str = ""
    found: set[str] = field(default_factory=set)  # needles seen in the body
    found_in_headers: set[str] = field(default_factory=set)
    stopped_reading: bool = False  # the client gave up at its wall-clock deadline

    @property
    def whole(self) -> bytes | None:
        return self.first if self.size <= KEEP_BYTES else None


class _Scanner:
    """Keeps the ends of a body and looks for needles across chunk boundaries."""

    def __init__(self, observation: Observation, needles: list[str]) -> None:
        self._obs = observation
        self._needles = [n.encode() for n in needles if n]
        self._overlap = max((len(n) for n in self._needles), default=1) - 1
        self._carry = b""
        self._tail: collections.deque[bytes] = collections.deque()
        self._tail_size = 0

    def finish(self) -> None:
        self._obs.last = b"".join(self._tail)[-KEEP_BYTES:]

    def feed(self, data: bytes) -> None:
        obs = self._obs
        if len(obs.first) < KEEP_BYTES:
            obs.first += data[: KEEP_BYTES - len(obs.first)]
        # Cheap per chunk (a flood is read at full speed): the tail is rebuilt only when needed.
        self._tail.append(data)
        self._tail_size += len(data)
        while self._tail_size - len(self._tail[0]) >= KEEP_BYTES:
            self._tail_size -= len(self._tail.popleft())
        obs.size += len(data)
        window = self._carry + data
        for needle in self._needles:
            if needle in window:
                obs.found.add(needle.decode())
        self._carry = window[-self._overlap:] if self._overlap else b""


def call(sdk: openai.OpenAI, model: str, text: str, *, stream: bool, deadline_s: float,
         needles: list[str], tools: list[dict[str, Any]] | None = None) -> Observation:
    """One chat completion through the official SDK, its body read raw until it ends or `deadline_s`."""
    obs = Observation()
    scanner = _Scanner(obs, needles)
    started = time.monotonic()
    options: dict[str, Any] = {"model": model, "max_tokens": 16, "stream": stream,
                               "messages": [{"role": "user", "content": text}],
                               "timeout": httpx.Timeout(deadline_s, connect=5.0)}
    if tools:
        options["tools"] = tools
    try:
        with sdk.chat.completions.with_streaming_response.create(**options) as response:
            obs.status = response.status_code
            _keep_headers(obs, response.headers.multi_items())
            for piece in response.iter_bytes(READ_BYTES):
                scanner.feed(piece)
                if time.monotonic() - started > deadline_s:
                    obs.stopped_reading = True
                    break
    except openai.APIStatusError as exc:
        obs.status = exc.response.status_code
        _keep_headers(obs, exc.response.headers.multi_items())
        scanner.feed(exc.response.content)
    except (openai.APIConnectionError, httpx.HTTPError) as exc:
        obs.client_error = f"{type(exc).__name__}: {str(exc)[:200]}"
    obs.elapsed_s = time.monotonic() - started
    scanner.finish()
    obs.found_in_headers = {n for n in needles if n and n in obs.header_text}
    return obs


def _keep_headers(obs: Observation, items: list[tuple[str, str]]) -> None:
    obs.headers = {name.lower(): value for name, value in items}
    obs.header_text = "\n".join(f"{name}: {value}" for name, value in items)
