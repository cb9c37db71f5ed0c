"""config.yaml validation: every problem reported with its key path, as data and from the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config.loading import ConfigError, load_config, parse_config

REPO = Path(__file__).resolve().parents[2]
TIERS = [{"name": "device", "base_url": "http://127.0.0.1:1/v1", "model": "d"},
         {"name": "edge", "base_url": "http://127.0.0.1:2/v1", "model": "e"},
         {"name": "cloud", "base_url": "http://127.0.0.1:3/v1", "model": "c"}]


def errors_of(data: object) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    return caught.value.errors


def test_shipped_config_is_valid() -> None:
    config = load_config(REPO / "config.yaml")
    assert [t.name for t in config.tiers] == ["device", "edge", "cloud"]
    assert config.beta_for("device") == 0.3 and config.policy.recserve.window == 10000


def test_errors_name_their_key_paths() -> None:
    errors = errors_of({"tiers": [{**TIERS[0], "timeout_s": -1, "colour": "red"}, {"name": "x"}],
                        "policy": {"recserve": {"beta": 1.5}}})
    assert "tiers.0.timeout_s: Input should be greater than 0" in errors
    assert "tiers.0.colour: unknown key" in errors
    assert "tiers.1.base_url: Field required" in errors
    assert "policy.recserve.beta: Input should be less than 1" in errors


def test_cross_references_are_checked() -> None:
    errors = errors_of({"tiers": [*TIERS, TIERS[0]], "policy": {
        "default": "fog", "recserve": {"beta": {"device": 0.3, "mist": 0.2}},
        "casserve": {"thresholds": {"rain": 0.5}}, "tool_requests": "sky"}})
    assert "tiers.3.name: duplicate tier name 'device'" in errors
    assert any(e.startswith("policy.default: 'fog'") for e in errors)
    assert "policy.recserve.beta.mist: unknown tier 'mist'" in errors
    assert "policy.recserve.beta.edge: missing (every tier but the last needs a beta)" in errors
    assert "policy.casserve.thresholds.rain: unknown tier 'rain'" in errors
    assert "policy.tool_requests: unknown tier 'sky'" in errors


def test_per_tier_beta_and_thresholds() -> None:
    config = parse_config({"tiers": TIERS, "policy": {"recserve": {"beta": {"device": 0.3, "edge": 0.2}},
                                                      "casserve": {"thresholds": {"device": 0.6}}}})
    assert (config.beta_for("device"), config.beta_for("edge")) == (0.3, 0.2)
    assert (config.threshold_for("device"), config.threshold_for("edge")) == (0.6, 0.8)


def test_reserved_and_missing_tiers() -> None:
    assert any("reserved" in e for e in errors_of({"tiers": [{**TIERS[0], "name": "casserve"}]}))
    assert errors_of({"tiers": []}) == ["tiers: List should have at least 1 item after validation, not 0"]
    assert errors_of([1, 2]) == ["(top level): expected a mapping of sections"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True,
                          timeout=60, cwd=REPO)


def test_cli_config_check_reports_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("tiers:\n  - {name: device, base_url: ftp://x, model: m}\nserver: {port: many}\n")
    result = run_cli("config", "check", str(bad))
    assert result.returncode == 2
    assert "tiers.0.base_url: must start with http:// or https://" in result.stderr
    assert "server.port: Input should be a valid integer" in result.stderr
    assert "Traceback" not in result.stderr

    broken = tmp_path / "broken.yaml"
    broken.write_text("tiers: [\n")
    result = run_cli("config", "check", str(broken))
    assert result.returncode == 2 and "invalid YAML" in result.stderr and "Traceback" not in result.stderr

    result = run_cli("serve", "--config", str(tmp_path / "missing.yaml"))
    assert result.returncode == 2 and "cannot read" in result.stderr and "Traceback" not in result.stderr


def test_cli_config_check_accepts_the_shipped_config() -> None:
    result = run_cli("config", "check", str(REPO / "config.yaml"))
    assert result.returncode == 0, result.stderr
    assert "3 tiers: device > edge > cloud" in result.stdout


def test_redis_url_can_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_REDIS_URL", "redis://:s3cret@10.0.0.5:6379/2")
    config = parse_config({"tiers": TIERS, "windows": {"store": "redis", "redis_url_env": "TEST_REDIS_URL"}})
    assert config.windows.redis_url == "redis://:s3cret@10.0.0.5:6379/2"
    monkeypatch.delenv("TEST_REDIS_URL")
    errors = errors_of({"tiers": TIERS, "windows": {"store": "redis", "redis_url_env": "TEST_REDIS_URL"}})
    assert errors == ["windows: redis_url_env: environment variable TEST_REDIS_URL is not set"]


def test_the_send_cap_needs_batched_shared_windows() -> None:
    for windows in ({"max_sent_per_s": 50}, {"store": "redis", "max_sent_per_s": 50}):
        assert errors_of({"tiers": TIERS, "windows": windows}) == [
            "windows: windows.max_sent_per_s needs windows.store: redis and windows.sync: batched or auto "
            "(it caps what each flush sends to the shared window)"]
    assert errors_of({"tiers": TIERS, "windows": {"max_sent_per_s": -1}}) == [
        "windows.max_sent_per_s: Input should be greater than or equal to 0"]
    config = parse_config({"tiers": TIERS, "windows": {"store": "redis", "sync": "batched", "max_sent_per_s": 50}})
    assert config.windows.max_sent_per_s == 50


def test_a_tool_call_form_needs_the_constrained_tool_mode() -> None:
    assert errors_of({"tiers": [{**TIERS[0], "tool_call_form": "call_or_list"}]}) == [
        "tiers.0: tool_call_form applies only to tool_mode: constrained"]
    config = parse_config({"tiers": [{**TIERS[0], "tool_mode": "constrained", "tool_call_form": "call_or_list"},
                                     {**TIERS[1], "tool_mode": "constrained"}]})
    assert [tier.tool_call_form for tier in config.tiers] == ["call_or_list", "list"]
    shipped = load_config(REPO / "config.yaml")
    assert [(t.tool_mode, t.tool_call_form) for t in shipped.tiers] == [
        ("constrained", "list"), ("constrained", "call_or_list"), ("constrained", "list")]
