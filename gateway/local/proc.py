"""Run a long child process (pip build or download) with a bounded time and a visible heartbeat."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

Report = Callable[[str], None]


class CommandFailed(RuntimeError):
    """A child process exited non-zero or ran past its time limit; the message names its log."""


def tail(path: Path, lines: int = 20) -> str:
    """The last `lines` lines of a text file ('' when it does not exist)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def _last_line(path: Path) -> str:
    text = tail(path, 1).strip()
    return text[:120]


def run_with_heartbeat(
    cmd: Sequence[str],
    *,
    label: str,
    log_path: Path,
    timeout_s: float,
    report: Report,
    env: Mapping[str, str] | None = None,
    heartbeat_s: float = 15.0,
) -> None:
    """Run `cmd`, output to `log_path`; every `heartbeat_s` report elapsed time and the log's last line.

    Raises CommandFailed (with the log's tail) on a non-zero exit or after `timeout_s`.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    next_beat = started + heartbeat_s
    with log_path.open("wb") as log:
        # A new session so a timeout can end the whole tree (pip spawns cmake, make, cc...).
        proc = subprocess.Popen(
            list(cmd), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None, start_new_session=True,
        )
        try:
            while True:
                try:
                    code = proc.wait(timeout=0.5)
                    break
                except subprocess.TimeoutExpired:
                    pass
                now = time.monotonic()
                if now - started > timeout_s:
                    _kill_group(proc)
                    raise CommandFailed(
                        f"{label}: gave up after {timeout_s:.0f} s; log: {log_path}\n{tail(log_path)}"
                    )
                if now >= next_beat:
                    next_beat = now + heartbeat_s
                    report(f"  {label}: {now - started:.0f} s elapsed ... {_last_line(log_path)}")
        except BaseException:
            _kill_group(proc)
            raise
    if code != 0:
        raise CommandFailed(f"{label}: exit status {code}; log: {log_path}\n{tail(log_path)}")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
