"""Supervisor error paths with real processes and real sockets (a script stands in for llama-server)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from gateway.local.server_build import ServerBinary
from gateway.local.supervisor import (
    DETERMINISTIC_FLAGS,
    PortInUseError,
    RunningTier,
    TierSpec,
    TierStartError,
    pid_file,
    read_record,
    running_from_record,
    runs_deterministic,
    start_tier,
    status,
    stop_recorded,
)


def test_port_in_use_names_tier_and_port(
    healthy_server: ServerBinary, model_file: Path, run_dir: Path, held_port: int
) -> None:
    with pytest.raises(PortInUseError) as info:
        start_tier(healthy_server, TierSpec("edge", model_file, held_port), run_dir)
    assert "tier 'edge'" in str(info.value) and f"port {held_port}" in str(info.value)
    assert read_record(run_dir, "edge") is None


def test_tier_that_dies_while_starting_shows_its_log(
    script_server: Callable[[str], ServerBinary], model_file: Path, run_dir: Path,
    free_port: Callable[[], int],
) -> None:
    server = script_server("""
        import sys
        print("llama_model_load: error loading model: bad magic", flush=True)
        sys.exit(1)
    """)
    with pytest.raises(TierStartError) as info:
        start_tier(server, TierSpec("device", model_file, free_port()), run_dir, health_timeout_s=30)
    message = str(info.value)
    assert "tier 'device'" in message and "exited with status 1" in message
    assert "bad magic" in message and str(run_dir / "device.log") in message
    assert not pid_file(run_dir, "device").exists()


def test_tier_killed_by_an_illegal_instruction_says_so(
    script_server: Callable[[str], ServerBinary], model_file: Path, run_dir: Path,
    free_port: Callable[[], int],
) -> None:
    # What a build with CPU instructions the machine does not allow does (AMX in some VMs).
    server = script_server("""
        import os, signal
        print("load_model: loading model", flush=True)
        os.kill(os.getpid(), signal.SIGILL)
    """)
    with pytest.raises(TierStartError, match=r"tier 'edge': llama-server was killed by SIGILL \(illegal instruction"):
        start_tier(server, TierSpec("edge", model_file, free_port()), run_dir, health_timeout_s=30)


def test_tier_that_never_gets_healthy_is_stopped(
    script_server: Callable[[str], ServerBinary], model_file: Path, run_dir: Path,
    free_port: Callable[[], int],
) -> None:
    server = script_server("""
        import time
        print("loading forever", flush=True)
        time.sleep(600)
    """)
    with pytest.raises(TierStartError, match=r"tier 'cloud': not healthy on port \d+ after 1 s") as info:
        start_tier(server, TierSpec("cloud", model_file, free_port()), run_dir, health_timeout_s=1)
    assert "loading forever" in str(info.value)
    assert read_record(run_dir, "cloud") is None


def test_missing_model_file_is_named(healthy_server: ServerBinary, run_dir: Path, tmp_path: Path,
                                     free_port: Callable[[], int]) -> None:
    with pytest.raises(TierStartError, match=r"tier 'edge': model file .*nope\.gguf does not exist"):
        start_tier(healthy_server, TierSpec("edge", tmp_path / "nope.gguf", free_port()), run_dir)


def test_start_status_and_stop_by_recorded_pid(
    healthy_server: ServerBinary, model_file: Path, run_dir: Path, free_port: Callable[[], int],
    started: list[RunningTier],
) -> None:
    port = free_port()
    tier = start_tier(healthy_server, TierSpec("device", model_file, port, threads=2), run_dir)
    started.append(tier)
    assert httpx.get(f"{tier.base_url}/health").status_code == 200
    record = read_record(run_dir, "device")
    assert record is not None and record.pid == tier.pid and record.port == port
    found = running_from_record("device", run_dir)
    assert found is not None and found.pid == tier.pid
    st = status("device", port, run_dir)
    assert st.alive and st.healthy and st.pid == tier.pid

    # What `tiers down` does: another process stops it through the PID file.
    assert stop_recorded("device", run_dir) == tier.pid
    assert tier.process is not None and tier.process.wait(timeout=10) is not None
    assert not pid_file(run_dir, "device").exists()
    after = status("device", port, run_dir)
    assert not after.alive and not after.healthy


def test_stale_pid_file_never_signals_an_unrelated_process(run_dir: Path) -> None:
    # Our own PID stands in for a PID the OS reused for something that is not llama-server.
    run_dir.mkdir()
    pid_file(run_dir, "edge").write_text(f'{{"pid": {os.getpid()}, "port": 8102}}', encoding="utf-8")
    assert running_from_record("edge", run_dir) is None
    assert stop_recorded("edge", run_dir) is None
    assert not pid_file(run_dir, "edge").exists()


def test_stop_when_nothing_was_recorded(run_dir: Path) -> None:
    assert stop_recorded("device", run_dir) is None
    assert status("device", 1, run_dir).pid is None


def test_tiers_start_deterministic_unless_told_otherwise(
    healthy_server: ServerBinary, model_file: Path, run_dir: Path, free_port: Callable[[], int],
    started: list[RunningTier],
) -> None:
    # The prompt cache makes logprobs depend on earlier requests: off by default.
    assert DETERMINISTIC_FLAGS == ("--no-cache-prompt",)
    default = start_tier(healthy_server, TierSpec("device", model_file, free_port()), run_dir)
    started.append(default)
    cached = start_tier(healthy_server, TierSpec("edge", model_file, free_port(), deterministic=False), run_dir)
    started.append(cached)
    assert runs_deterministic(default.pid)
    assert not runs_deterministic(cached.pid)
