"""Run untrusted Python (a model's completion plus a problem's tests) in a confined subprocess.

How it is isolated (as root, the case on the evaluation machines; `sandbox_launcher.py` does the
privileged steps and then execs the program):
- interpreter: this Python (the system's `python3` when this one is out of the sandbox user's reach,
  as a venv under /root is) with `-I -S -B` (isolated: no PYTHON* variables, no user or site
  packages, the script's folder not on sys.path; no bytecode written), stdin from /dev/null;
- environment: only PATH, LANG, HOME and TMPDIR (both the working directory); nothing of ours;
- files: a fresh temporary directory per run with a size-bounded tmpfs over its `work/` folder (the
  cwd and the only writable place); every other mount read-only in a private mount namespace; the
  program runs as an unused uid/gid of its own with no groups, so root-owned files are out of reach too;
- network: a new network namespace whose loopback is down, so every connect fails;
- resources: wall-clock timeout (then SIGKILL of the process group and of every process of the
  sandbox uid), RLIMIT_AS (address space), RLIMIT_CPU, RLIMIT_FSIZE (which also bounds stdout and
  stderr: they go to files), RLIMIT_CORE 0, RLIMIT_NOFILE, RLIMIT_NPROC (processes of the sandbox uid);
- output: at most `read_bytes` of each stream is read back.
Not root: the same interpreter flags, environment, temporary directory, rlimits (no process limit)
and timeout; the network is isolated only if the kernel allows an unprivileged user namespace
(`Isolation.network`), and files outside the directory are protected only by the user's own rights.
`isolation()` says which case applies.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

LAUNCHER = Path(__file__).with_name("sandbox_launcher.py")
# Ids far above any real account (Linux uids are 32-bit); a random one per run, so concurrent
# sandboxes never share a process count or kill each other's processes.
_UID_LOW, _UID_HIGH = 1_500_000_000, 2_000_000_000
_ENV_PATH = "/usr/bin:/bin"


@dataclass(frozen=True, slots=True)
class Limits:
    """What one run may use. The defaults fit HumanEval's tests with a wide margin (they run in well
    under a second) on a loaded two-core machine."""

    wall_s: float = 20.0
    cpu_s: int = 10
    memory_bytes: int = 1 << 30       # address space
    file_bytes: int = 4 << 20         # any one file, stdout and stderr included
    tmpfs_bytes: int = 16 << 20       # everything written to the working directory
    open_files: int = 64
    processes: int = 16
    read_bytes: int = 64 << 10        # of stdout and of stderr, read back


@dataclass(frozen=True, slots=True)
class RunResult:
    """How a run ended."""

    returncode: int | None            # None: killed at the wall-clock timeout
    timed_out: bool
    stdout: str
    stderr: str

    @property
    def passed(self) -> bool:
        """Exited by itself with status 0."""
        return not self.timed_out and self.returncode == 0


@dataclass(frozen=True, slots=True)
class Isolation:
    """Which protections apply on this machine (see the module docstring)."""

    as_root: bool
    network: bool
    read_only_files: bool
    process_limit: bool


def isolation() -> Isolation:
    """The protections `run_python` applies here (all of them as root)."""
    root = os.geteuid() == 0
    return Isolation(as_root=root, network=root or _user_namespaces(), read_only_files=root, process_limit=root)


def _user_namespaces() -> bool:
    flag = Path("/proc/sys/kernel/unprivileged_userns_clone")
    try:
        return flag.read_text().strip() != "0"
    except OSError:
        return Path("/proc/self/ns/user").exists()


def _others_can_reach(path: Path) -> bool:
    """Every folder on the way is searchable, and the file executable, by a user with no rights."""
    parts = [path, *path.parents]
    return all(part.exists() and part.stat().st_mode & 0o001 for part in parts)


def interpreter() -> str:
    """The Python the program runs under: this one when an unprivileged uid can run it and read its
    standard library, else the system's `python3` (a venv under root's home is out of reach)."""
    own = Path(os.path.realpath(sys.executable))
    if os.geteuid() != 0 or (_others_can_reach(own) and _others_can_reach(Path(sys.base_prefix))):
        return str(own)
    for folder in _ENV_PATH.split(":"):
        candidate = Path(folder) / "python3"
        if candidate.exists() and _others_can_reach(Path(os.path.realpath(candidate))):
            return str(candidate)
    raise OSError("no Python the sandbox user may run (this one is below a folder only its owner can enter)")


def run_python(source: str, limits: Limits | None = None) -> RunResult:
    """Run `source` as a script in the sandbox and return how it ended (never raises for the program's
    own failures; raises OSError only if the sandbox itself cannot be set up)."""
    limits = limits or Limits()
    uid = secrets.randbelow(_UID_HIGH - _UID_LOW) + _UID_LOW
    with tempfile.TemporaryDirectory(prefix="recserve-sandbox-") as base:
        root = Path(base)
        os.chmod(root, 0o755)  # the sandbox uid must reach work/ and read the program
        work = root / "work"
        work.mkdir(mode=0o777)
        script = root / "program.py"
        script.write_text(source, encoding="utf-8")
        script.chmod(0o644)
        spec = {"uid": uid, "work": str(work), "limits": asdict(limits),
                "argv": [interpreter(), "-I", "-S", "-B", str(script)]}
        env = {"PATH": _ENV_PATH, "LANG": "C.UTF-8", "HOME": str(work), "TMPDIR": str(work)}
        with (root / "stdout").open("w+b") as out, (root / "stderr").open("w+b") as err:
            returncode = _run(spec, env, out, err, limits.wall_s)
            return RunResult(returncode, returncode is None, _head(out, limits.read_bytes),
                             _head(err, limits.read_bytes))


def _run(spec: dict[str, object], env: dict[str, str], out: BinaryIO, err: BinaryIO, wall_s: float) -> int | None:
    command = [sys.executable, "-I", "-S", "-B", str(LAUNCHER), "run", json.dumps(spec)]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                               start_new_session=True, close_fds=True)
    try:
        return process.wait(timeout=wall_s)
    except subprocess.TimeoutExpired:
        return None
    finally:
        # Children the program left behind (or a fork bomb still going) die with it, whether it
        # finished or not: first its process group, then anything of its uid that left the group.
        _kill_group(process.pid)
        process.wait()
        _reap(spec)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def _reap(spec: dict[str, object]) -> None:
    if os.geteuid() != 0:
        return
    payload = json.dumps({"uid": spec["uid"]})
    subprocess.run([sys.executable, "-I", "-S", "-B", str(LAUNCHER), "reap", payload],
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={"PATH": _ENV_PATH}, check=False, timeout=30)


def _head(stream: BinaryIO, limit: int) -> str:
    stream.seek(0)
    data = stream.read(limit)
    return data.decode("utf-8", errors="replace")
