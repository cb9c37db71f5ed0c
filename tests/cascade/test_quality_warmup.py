"""Warm-up probing of the quality policy in a real gateway: while a tier and task holds fewer than
`policy.quality.warmup_probes` probes, every answer the tier keeps is probed; then `probe_rate` applies
(0 here, so that nothing is left to chance). Learning then takes about min_probes requests, not
min_probes / probe_rate."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from gateway.cascade.runtime import quality_settings
from gateway.config.loading import ConfigError, parse_config
from gateway.config.schema import QualityPolicyConfig
from policies.quality import QualitySettings
from tests.cascade.test_quality_policy import probes_settle, prompt
from tests.conftest import GatewayStarter, RunningGateway, ask, merge
from tests.support.redis_procs import RedisServer
from tests.support.scripted_tier import ThreadedTier

ADMIN_ENV = "RECSERVE_TEST_WARMUP_ADMIN_KEY"
ADMIN = {"authorization": "Bearer warmup-admin"}
# min_probes 50: in the first two tests the curve never decides, so every request stays on the device.
WARMUP = {"auth": {"admin_key_env": ADMIN_ENV},
          "policy": {"default": "quality", "recserve": {"beta": {"device": 0.01, "edge": 0.01}},
                     "quality": {"probe_rate": 0.0, "target": 0.9, "min_probes": 50, "window": 100,
                                 "warmup_probes": 5, "warmup_answer": "kept", "confidence_level": 0.5}}}


@pytest.fixture(autouse=True)
def admin_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ADMIN_ENV, "warmup-admin")


def device_quality(gateway: RunningGateway) -> dict[str, Any]:
    view = httpx.get(gateway.root + "/admin/policy", headers=ADMIN).json()
    entry: dict[str, Any] = next(t for t in view["tiers"] if t["name"] == "device")["quality"]["generation"]
    return entry


def test_the_first_warmup_probes_kept_answers_are_probed_then_the_probe_rate_applies(
        start_gateway: GatewayStarter, tiers: dict[str, ThreadedTier]) -> None:
    gateway = start_gateway(WARMUP)
    with gateway.sdk() as sdk:
        assert device_quality(gateway)["warming_up"] is True
        paths = []
        for i in range(12):
            _, headers = ask(sdk, prompt(i, "yes", 0.95))
            paths.append(headers["x-recserve-path"])
            if i == 4:  # the fifth kept answer: the warm-up is done once its probe is in
                probes_settle(tiers)
                assert len(tiers["cloud"].requests) == 5 and device_quality(gateway)["warming_up"] is False
        probes_settle(tiers)
    assert paths == ["device"] * 12  # every answer kept on the device: the cloud only ever saw probes
    assert len(tiers["cloud"].requests) == 5  # warm-up: 5 probes; then probe rate 0: none
    learned = device_quality(gateway)
    assert learned["probes"] == 5 and learned["enough"] is False and learned["warming_up"] is False


def test_concurrent_requests_do_not_overshoot_the_warm_up_in_one_replica(
        start_gateway: GatewayStarter, tiers: dict[str, ThreadedTier]) -> None:
    # The top tier takes 0.5 s, so all 16 requests are answered while the first probes are in flight:
    # the prober counts its own pending probes, and stops at 5.
    gateway = start_gateway(WARMUP)
    with gateway.sdk() as sdk, ThreadPoolExecutor(8) as pool:
        paths = list(pool.map(lambda i: ask(sdk, prompt(i, "yes", 0.95) + "[cloud:sleep=0.5]")[1]["x-recserve-path"],
                              range(16)))
        probes_settle(tiers)
        deadline = time.monotonic() + 5
        while device_quality(gateway)["probes"] < 5 and time.monotonic() < deadline:
            time.sleep(0.05)  # the probes' answers take 0.5 s to come back
    assert paths == ["device"] * 16
    assert len(tiers["cloud"].requests) == 5
    assert device_quality(gateway)["probes"] == 5


@pytest.mark.parametrize("warmup", [None, 0])
def test_with_warm_up_the_curve_decides_after_min_probes_requests(
        start_gateway: GatewayStarter, tiers: dict[str, ThreadedTier], warmup: int | None) -> None:
    # The device is right when sure (0.95) and wrong when not (0.6). warmup_probes unset = min_probes (20).
    quality = {"probe_rate": 0.0, "target": 0.9, "min_probes": 20, "window": 200}
    gateway = start_gateway(merge(WARMUP, {"policy": {"quality": {**quality, "warmup_probes": warmup}}}))
    assert gateway.config.policy.quality.warmup_probes == (20 if warmup is None else 0)
    with gateway.sdk() as sdk:
        for i in range(20):
            sure = i >= 10  # rising confidences: the window rule (β 0.01) keeps every one of them
            _, headers = ask(sdk, prompt(i, "yes" if sure else "no", 0.95 if sure else 0.6))
            assert headers["x-recserve-path"] == "device"
        probes_settle(tiers)
        _, unsure = ask(sdk, prompt(20, "no", 0.6))
        _, sure = ask(sdk, prompt(21, "yes", 0.95))
    if warmup == 0:  # at probe rate 0 nothing was learned: the plain rule still decides
        assert device_quality(gateway)["probes"] == 0
        assert unsure["x-recserve-path"] == sure["x-recserve-path"] == "device"
        assert sure["x-recserve-quality-estimate"] == "none"
        return
    # 20 requests, 20 probes: the curve (10 agreeing at 0.95, 10 not at 0.6) keeps only the sure answers.
    assert device_quality(gateway)["probes"] == 20 and device_quality(gateway)["enough"] is True
    assert unsure["x-recserve-path"] == "device>edge"
    assert sure["x-recserve-path"] == "device" and float(sure["x-recserve-quality-estimate"]) >= 0.9


def test_warmup_probes_config() -> None:
    tiers = {"tiers": [{"name": "a", "base_url": "http://127.0.0.1:1/v1", "model": "m"}]}

    def quality(**settings: Any) -> QualityPolicyConfig:
        return parse_config({**tiers, "policy": {"quality": settings}}).policy.quality

    assert quality().warmup_probes == 20  # min_probes' default
    assert quality(min_probes=8).warmup_probes == 8
    assert quality(min_probes=30, window=25).warmup_probes == 25  # at most what a window holds
    assert quality(warmup_probes=None, min_probes=7).warmup_probes == 7
    assert quality(warmup_probes=0).warmup_probes == 0
    for bad, message in ((-1, "greater than or equal to 0"), (2.5, "valid integer"), (True, "valid integer"),
                         ("5", "valid integer"), (201, "is more than policy.quality.window (200)")):
        with pytest.raises(ConfigError) as error:
            quality(warmup_probes=bad)
        assert len(error.value.errors) == 1 and error.value.errors[0].startswith("policy.quality.warmup_probes: ")
        assert message in error.value.errors[0]


def test_quality_settings_defaults_are_the_configs() -> None:
    # The policy's own defaults (what a QualityPolicy built outside the gateway gets) match the config's.
    assert QualitySettings() == quality_settings(QualityPolicyConfig())
    assert QualitySettings().warmup_probes == QualityPolicyConfig().min_probes


def test_replicas_sharing_redis_warm_up_together(start_gateway: GatewayStarter, tiers: dict[str, ThreadedTier],
                                                 redis_server: RedisServer) -> None:
    # The count comes from the shared probe store: probes taken by replica A count for replica B too.
    shared = merge(WARMUP, {"windows": {"store": "redis", "redis_url": redis_server.url, "namespace": "warmup"}})
    a, b = start_gateway(shared), start_gateway(shared)
    with a.sdk() as sdk:
        for i in range(3):
            ask(sdk, prompt(i, "yes", 0.95))
        probes_settle(tiers)
    assert len(tiers["cloud"].requests) == 3
    assert device_quality(b)["probes"] == 3  # /admin/policy reads the shared probes afresh
    with b.sdk() as sdk:
        for i in range(3, 10):
            _, headers = ask(sdk, prompt(i, "yes", 0.95))
            assert headers["x-recserve-path"] == "device"
            probes_settle(tiers)
    assert len(tiers["cloud"].requests) == 5  # B probed the 2 that were missing, then stopped
    assert device_quality(a)["probes"] == device_quality(b)["probes"] == 5
    assert device_quality(a)["warming_up"] is False
