"""The benchmark runs end to end in its short smoke mode (it measures; it asserts no timings)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is installed by `make system-deps`")
def test_bench_smoke_mode_produces_the_table() -> None:
    result = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--litellm", ""], cwd=REPO,
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    table = result.stdout
    closed, _, opened = table.partition("Open loop:")
    workers = [line for line in closed.splitlines() if line.startswith("| gateway --workers 2, pinned tier |")]
    assert len(workers) == 2 and all(line.split("|")[8].strip() == "0" for line in workers), table
    assert all(line.split("|")[9].strip() != "—" for line in workers), table  # CPU over both workers
    for label in ("tier direct", "gateway, pinned tier", "gateway, 3-tier cascade"):
        rows = [line for line in closed.splitlines() if line.startswith(f"| {label} |")]
        assert len(rows) == 2, table  # concurrency 1 and 16
        assert all(line.split("|")[8].strip() == "0" for line in rows), table  # no failed requests
        open_rows = [line for line in opened.splitlines() if line.startswith(f"| {label} |")]
        assert len(open_rows) == 1, table  # the fixed-rate run
        assert open_rows[0].split("|")[8].strip() == "0", table  # no failed requests
    assert "cascade decision in memory" in table and "time to first byte" in table


def test_early_ttft_bench_runs_on_paced_fake_tiers() -> None:
    result = subprocess.run([sys.executable, "-m", "bench.early_ttft", "--requests", "3", "--token-ms", "2"],
                            cwd=REPO, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    table = result.stdout
    assert "| direct from device tier | 3 |" in table and "| gateway, pinned `recserve/device` | 3 |" in table
    verdicts = [line for line in table.splitlines() if line.startswith("- early k = ")]
    assert len(verdicts) == 3, table  # k = 4, 8, 16: each checked or said to be unchecked


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is installed by `make system-deps`")
def test_mixed_windows_bench_compares_the_sync_modes() -> None:
    result = subprocess.run([sys.executable, "-m", "bench.mixed_windows", "--seconds", "1.5", "--cold", "5"],
                            cwd=REPO, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:-1]]
            for line in result.stdout.splitlines() if line.startswith("| ") and not line.startswith("| mode")}
    assert list(rows) == ["exact", "batched", "auto"], result.stdout
    assert rows["exact"][0] == "1.000" and rows["exact"][3] == "100.00%"  # one call per step; the reference
    assert float(rows["batched"][0]) < 0.2 and float(rows["auto"][0]) < 1.0  # flushes carry many steps


def test_tool_validators_bench_compares_the_three_libraries(tmp_path: Path) -> None:
    from gateway.evaluation.bfcl import WHEEL
    from gateway.local.models import download_wheel

    wheel = download_wheel(WHEEL, tmp_path, log_path=tmp_path / "pip.log", report=lambda _: None, timeout_s=600)
    result = subprocess.run([sys.executable, "-m", "bench.tool_validators", "--wheel", str(wheel),
                             "--categories", "simple_python", "--repeat", "1", "--hostile-timeout", "2"],
                            cwd=REPO, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line.split("|")[1].strip() for line in result.stdout.splitlines() if line.startswith("| ")]
    assert rows[1:] == ["jsonschema", "fastjsonschema", "jsonschema-rs (RegexOptions)"], result.stdout
    rs_row = next(line for line in result.stdout.splitlines() if line.startswith("| jsonschema-rs"))
    assert "invalid in" in rs_row  # jsonschema-rs answers the hostile pattern
    assert "The validity gate per tool request" in result.stdout.splitlines()[-1]


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is installed by `make system-deps`")
def test_tracing_cost_bench_measures_off_and_on_beside_a_revision() -> None:
    result = subprocess.run([sys.executable, "-m", "bench.tracing_cost", "--base", "HEAD", "--rounds", "1",
                             "--seconds", "1", "--targets", "pinned"], cwd=REPO, capture_output=True, text=True,
                            timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| gateway, pinned |")]
    assert [row.split("|")[2].strip() for row in rows] == ["before", "off", "on"], result.stdout
    spans = next(line for line in result.stdout.splitlines() if line.startswith("`on` side:"))
    assert int(spans.split()[2]) > 0, spans  # the traced gateway exported over OTLP/HTTP
