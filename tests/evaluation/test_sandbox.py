"""The code sandbox against hostile completions: each runs for real in `run_python`'s subprocess.

Checked: an infinite loop ends at the timeout; a fork bomb and a memory bomb are bounded; writes to the
repository or to /tmp land nowhere; a connect to a loopback server we run fails; no secret of the
parent's environment is visible; a flood of output is cut; and nothing the program started survives.
The strict file, network and process checks need root (the sandbox's own user and namespaces);
elsewhere they are skipped and `isolation()` says what applies.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.evaluation.sandbox import Limits, isolation, run_python

REPO = Path(__file__).resolve().parents[2]
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="namespaces and the sandbox uid need root")
# Small enough that the hostile cases end quickly on a loaded machine, large enough for Python to start.
QUICK = Limits(wall_s=5.0, cpu_s=3, memory_bytes=512 << 20, processes=8)


def test_a_plain_program_runs_and_its_output_comes_back() -> None:
    result = run_python("import sys\nprint('hello')\nprint('oops', file=sys.stderr)\n")
    assert result.passed
    assert result.stdout == "hello\n"
    assert result.stderr == "oops\n"


def test_a_failing_program_does_not_pass() -> None:
    result = run_python("assert 1 == 2, 'wrong'\n")
    assert not result.passed and not result.timed_out
    assert result.returncode == 1
    assert "AssertionError: wrong" in result.stderr


def test_infinite_loop_ends_at_a_limit() -> None:
    result = run_python("while True:\n    pass\n", QUICK)
    # Whichever comes first on a busy machine: the wall clock (timed out) or RLIMIT_CPU (SIGXCPU at
    # the soft limit, SIGKILL at the hard one).
    assert not result.passed
    assert result.timed_out or result.returncode in (-24, -9)


def test_sleeping_forever_ends_at_the_wall_clock() -> None:
    result = run_python("import time\ntime.sleep(3600)\n", Limits(wall_s=1.0))
    assert result.timed_out and not result.passed


def test_memory_bomb_is_bounded() -> None:
    result = run_python("blocks = []\nwhile True:\n    blocks.append(bytearray(64 << 20))\n", QUICK)
    assert not result.passed
    assert "MemoryError" in result.stderr


def _live_processes_of(uid: int) -> int:
    """Processes of `uid` that still run (zombies wait for init to collect them and use nothing)."""
    count = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if entry.stat().st_uid == uid and state not in ("Z", "X"):
                    count += 1
            except OSError:
                continue
    return count


@needs_root
def test_fork_bomb_is_bounded_and_nothing_survives() -> None:
    bomb = ("import os\nprint(os.getuid(), flush=True)\ncount = 0\n"
            "while True:\n"
            "    try:\n"
            "        if os.fork() == 0:\n"
            "            os.setsid()\n"  # leaving the process group does not escape the uid sweep
            "            while True:\n"
            "                pass\n"
            "        count += 1\n"
            "    except OSError:\n"
            "        print('forks', count, flush=True)\n"
            "        break\n"
            "while True:\n"
            "    pass\n")
    result = run_python(bomb, QUICK)
    uid_line, forks_line = result.stdout.splitlines()[:2]
    # RLIMIT_NPROC counts the sandbox uid's processes, the program itself included.
    assert int(forks_line.split()[1]) < QUICK.processes
    assert not result.passed
    assert _live_processes_of(int(uid_line)) == 0


@needs_root
def test_writes_outside_the_working_directory_fail(tmp_path: Path) -> None:
    canary = Path("/tmp") / f"recserve-canary-{os.getpid()}"
    in_repo = REPO / f"canary-{os.getpid()}"
    program = "\n".join(
        f"try:\n    open({str(path)!r}, 'w').write('x')\n    print('wrote', {str(path)!r})\n"
        f"except OSError as exc:\n    print('refused', exc.errno)"
        for path in (canary, in_repo, tmp_path / "canary", Path.home() / "canary"))
    program += "\nopen('inside.txt', 'w').write('fine')\nprint('inside ok')\n"
    result = run_python(program)
    assert result.passed, result.stderr
    assert "wrote" not in result.stdout
    assert result.stdout.count("refused") == 4
    assert "inside ok" in result.stdout
    for path in (canary, in_repo, tmp_path / "canary", Path.home() / "canary"):
        assert not path.exists()


@needs_root
def test_the_working_directory_is_bounded() -> None:
    program = ("n = 0\ntry:\n    while True:\n        open(f'f{n}', 'wb').write(b'x' * (1 << 20))\n        n += 1\n"
               "except OSError as exc:\n    print('stopped', n, exc.errno)\n")
    result = run_python(program, Limits(tmpfs_bytes=4 << 20))
    assert result.passed, result.stderr
    assert int(result.stdout.split()[1]) <= 4


@pytest.fixture()
def loopback_server() -> Iterator[tuple[int, list[bytes]]]:
    received: list[bytes] = []
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                received.append(conn.recv(100))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], received
    finally:
        stop.set()
        thread.join()
        server.close()


@pytest.mark.skipif(not isolation().network, reason="no network namespace available to this user")
def test_no_network(loopback_server: tuple[int, list[bytes]]) -> None:
    port, received = loopback_server
    # The server is reachable from here, so a failure inside is the sandbox's doing.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"from the test")
    program = (f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=3).sendall(b'leak')\n"
               "    print('connected')\nexcept OSError as exc:\n    print('refused', exc.errno)\n")
    result = run_python(program)
    assert result.passed, result.stderr
    assert result.stdout.startswith("refused")
    deadline = time.monotonic() + 5
    while not received and time.monotonic() < deadline:
        time.sleep(0.05)
    assert received == [b"from the test"]


def test_environment_secrets_are_not_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSERVE_TEST_SECRET", "s3cret-value")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-should-not-leak")
    program = ("import os, pathlib\nprint(sorted(os.environ))\n"
               "print(any(b's3cret' in p.read_bytes() for p in [pathlib.Path('/proc/self/environ')]))\n")
    result = run_python(program)
    assert result.passed, result.stderr
    names, leaked = result.stdout.splitlines()
    assert names == "['HOME', 'LANG', 'PATH', 'TMPDIR']"
    assert leaked == "False"
    assert "s3cret" not in result.stdout and "sk-should" not in result.stdout


@needs_root
def test_the_parents_environment_file_is_out_of_reach() -> None:
    result = run_python(f"print(open('/proc/{os.getpid()}/environ', 'rb').read()[:10])\n")
    assert not result.passed
    assert "PermissionError" in result.stderr


@needs_root
def test_other_processes_cannot_be_signalled() -> None:
    program = (f"import os, signal\nfor pid in ({os.getpid()}, 1):\n    try:\n        os.kill(pid, signal.SIGTERM)\n"
               "        print('signalled', pid)\n    except PermissionError:\n        print('refused', pid)\n")
    result = run_python(program)
    assert result.passed, result.stderr
    assert result.stdout == f"refused {os.getpid()}\nrefused 1\n"


def test_huge_output_is_bounded() -> None:
    limits = Limits(file_bytes=1 << 20, read_bytes=4096)
    result = run_python("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n", limits)
    assert not result.passed
    assert len(result.stdout) == 4096


def test_stdin_is_empty() -> None:
    result = run_python("import sys\nprint(repr(sys.stdin.read()))\n")
    assert result.passed and result.stdout == "''\n"
