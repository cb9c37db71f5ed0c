"""The sandbox's first process: confines itself, then execs the untrusted program (see `sandbox.py`).

Run as `python -I -S -B sandbox_launcher.py run '<json>'` (or `reap '<json>'`). Standard library
only and no imports of ours, so it works under `-I -S` and runs nothing a completion could shadow.
Doing this in a separate process instead of a `preexec_fn` keeps the privileged steps out of a
forked copy of a possibly multi-threaded parent.

As root, in this order:
1. a new network namespace (only a loopback that is down: every connect fails) and a new mount
   namespace whose mounts are made private, so nothing below propagates back;
2. a size-bounded tmpfs, owned by the sandbox user, over the working directory (the only writable
   place), then every other mount remounted read-only;
3. resource limits (address space, CPU seconds, file size, no core dumps, open files, processes);
4. all groups dropped and uid/gid set to an unused id of the sandbox's own, so the limits cannot be
   raised, the read-only mounts cannot be remounted, the process limit counts only this sandbox's
   processes, and `reap` can kill every process of that id;
5. exec of the program with the environment the parent passed (already minimal).
Not root: steps 1-2 are tried as an unprivileged user namespace (network only) and skipped if the
kernel refuses; steps 3 and 5 always happen, without the process limit (it would count every process
of the user); `sandbox.py` then bounds processes by killing the process group.
"""

import contextlib
import ctypes
import json
import os
import re
import resource
import signal
import sys
from typing import Any

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18


def _libc() -> Any:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
    libc.unshare.argtypes = (ctypes.c_int,)
    return libc


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(libc: Any, source: str | None, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    enc = [None if v is None else v.encode() for v in (source, target, fstype, data)]
    _check(libc.mount(enc[0], enc[1], enc[2], flags, enc[3]), f"mount {target}")


def _mount_points() -> list[str]:
    points: list[str] = []
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        for line in fh:
            # Field 5 is the mount point, with spaces and the like octal-escaped.
            raw = line.split()[4]
            points.append(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), raw))
    return points


def _confine_files(libc: Any, work: str, uid: int, tmpfs_bytes: int) -> None:
    _check(libc.unshare(CLONE_NEWNS | CLONE_NEWNET), "unshare")
    _mount(libc, None, "/", None, MS_REC | MS_PRIVATE, None)
    _mount(libc, "sandbox", work, "tmpfs", MS_NOSUID | MS_NODEV,
           f"size={tmpfs_bytes},nr_inodes=4096,mode=0700,uid={uid},gid={uid}")
    for point in _mount_points():
        if point == work:
            continue
        try:
            _mount(libc, None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY, None)
        except OSError:
            # A mount hidden below another (or one the kernel locks) cannot be reached by path from
            # inside; the ones that can be reached are remounted, and the sandbox user has no rights
            # on root-owned files anyway.
            continue


def _limit(name: int, value: int, hard: int | None = None) -> None:
    resource.setrlimit(name, (value, value if hard is None else hard))


def run(spec: dict[str, Any]) -> None:
    uid = int(spec["uid"])
    limits = spec["limits"]
    as_root = os.geteuid() == 0
    libc = _libc()
    if as_root:
        _confine_files(libc, spec["work"], uid, int(limits["tmpfs_bytes"]))
    else:
        # Documented: without user namespaces the network is not isolated.
        with contextlib.suppress(OSError):
            _check(libc.unshare(CLONE_NEWUSER | CLONE_NEWNET), "unshare")
    os.chdir(spec["work"])
    _limit(resource.RLIMIT_AS, int(limits["memory_bytes"]))
    # SIGXCPU at the soft limit ends a Python program with a clear signal; SIGKILL a second later
    # ends one that ignores it.
    _limit(resource.RLIMIT_CPU, int(limits["cpu_s"]), int(limits["cpu_s"]) + 1)
    _limit(resource.RLIMIT_FSIZE, int(limits["file_bytes"]))
    _limit(resource.RLIMIT_CORE, 0)
    _limit(resource.RLIMIT_NOFILE, int(limits["open_files"]))
    if as_root:
        _limit(resource.RLIMIT_NPROC, int(limits["processes"]))
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    os.execve(spec["argv"][0], spec["argv"], dict(os.environ))


def reap(spec: dict[str, Any]) -> None:
    """Kill every process of the sandbox's uid (as that uid, kill(-1) reaches exactly those)."""
    uid = int(spec["uid"])
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    # A process forking while we kill can leave a new child, so go round a few times; kill(-1) also
    # "succeeds" on zombies waiting for init, so the count, not an error, ends the loop.
    for _ in range(5):
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            return


if __name__ == "__main__":
    command, payload = sys.argv[1], json.loads(sys.argv[2])
    if command == "run":
        run(payload)
    elif command == "reap":
        reap(payload)
    else:
        raise SystemExit(f"unknown command {command!r}")
