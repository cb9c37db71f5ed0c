"""Restarting tiers at once: sockets a stopped server left in TIME_WAIT never look like a listener."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from gateway.local.server_build import ServerBinary
from gateway.local.supervisor import (
    PortInUseError,
    RunningTier,
    TierSpec,
    check_port,
    port_is_free,
    start_tier,
    stop_recorded,
)


def _time_wait_states(port: int) -> int:
    """Sockets on local `port` in TIME_WAIT (state 06 in /proc/net/tcp)."""
    count = 0
    for line in Path("/proc/net/tcp").read_text(encoding="ascii").splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "06":
            count += 1
    return count


def test_a_port_whose_server_closed_connections_first_is_free() -> None:
    # The server side closes first (as an HTTP/1.0 server does after its answer): its end of the
    # connection, on the server's port, stays in TIME_WAIT after the listener is gone.
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = int(listener.getsockname()[1])
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = listener.accept()
            accepted.close()
            assert client.recv(1) == b""
        assert not port_is_free(port)  # still listening
    assert _time_wait_states(port) >= 1
    assert port_is_free(port)


def test_a_listening_port_is_never_free(free_port: Callable[[], int]) -> None:
    port = free_port()
    with socket.socket() as listener:
        # Even a listener that allows address reuse itself holds the port.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen()
        assert not port_is_free(port)
        with pytest.raises(PortInUseError, match=f"port {port}"):
            check_port("device", port)


def test_down_then_up_at_once_on_the_same_port(
    healthy_server: ServerBinary, model_file: Path, run_dir: Path, free_port: Callable[[], int],
    started: list[RunningTier],
) -> None:
    port = free_port()
    spec = TierSpec("device", model_file, port)
    for round_ in range(3):
        tier = start_tier(healthy_server, spec, run_dir)
        started.append(tier)
        # Health checks over fresh connections; the stand-in (HTTP/1.0) closes each one first.
        for _ in range(5):
            assert httpx.get(f"{tier.base_url}/health").status_code == 200
        assert stop_recorded("device", run_dir) == tier.pid, round_
        assert tier.process is not None and tier.process.wait(timeout=10) is not None
        assert _time_wait_states(port) >= 1
