"""Probes of the quality policy in a real gateway: streamed answers are probed once the stream ends,
probe traffic is counted in /metrics and /admin/policy, and the probes learned survive a reload."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gateway.config.loading import load_config
from gateway.server.app import create_app
from tests.cascade.test_quality_policy import QUALITY, probes_settle, prompt
from tests.cascade.test_streaming import stream, text_of
from tests.conftest import GatewayStarter, ask, base_config, merge
from tests.support.scripted_tier import ThreadedTier
from tests.support.servers import UvicornThread

ADMIN_ENV = "RECSERVE_TEST_PROBE_ADMIN_KEY"
ADMIN = {"authorization": "Bearer probe-admin"}


@pytest.fixture
def admin_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ADMIN_ENV, "probe-admin")


def quality_config(**extra: Any) -> dict[str, Any]:
    # Background probes of served answers: the warm-up serves kept answers ("kept") so that they are probed.
    kept = {"policy": {"quality": {"warmup_answer": "kept"}}}
    return merge(merge(QUALITY, kept), {"auth": {"admin_key_env": ADMIN_ENV}, **extra})


def scrape(root: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(root + "/metrics").text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def probes_of(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], outcome: str,
              task: str = "generation") -> float:
    labels = frozenset({"tier": "device", "task": task, "outcome": outcome}.items())
    return samples.get(("recserve_probe_requests_total", labels), 0.0)


def probe_tokens(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], tier: str) -> float:
    return samples.get(("recserve_probe_uplink_prompt_tokens_total", frozenset({"tier": tier}.items())), 0.0)


def device_quality(root: str, task: str = "generation") -> dict[str, Any]:
    view = httpx.get(root + "/admin/policy", headers=ADMIN).json()
    entry: dict[str, Any] = next(t for t in view["tiers"] if t["name"] == "device")["quality"][task]
    return entry


@pytest.mark.parametrize("mode", ["buffered", "early"])
def test_a_streamed_answer_is_probed_once_the_stream_has_ended(start_gateway: GatewayStarter, admin_key: None,
                                                               tiers: dict[str, ThreadedTier], mode: str) -> None:
    gateway = start_gateway(quality_config(streaming={"mode": mode, "decide_after_tokens": 1}))
    with gateway.sdk() as sdk:
        chunks, headers = stream(sdk, prompt(1, "yes", 0.95))
        probes_settle(tiers)
    assert headers["x-recserve-path"] == "device" and text_of(chunks) == "yes"
    probe = tiers["cloud"].requests
    assert len(probe) == 1  # the top tier was asked once, after the stream: that is the probe
    assert "stream" not in probe[0].json and "stream_options" not in probe[0].json  # a plain answer
    samples = scrape(gateway.root)
    assert probes_of(samples, "agreed", "generation") == 1
    assert probe_tokens(samples, "cloud") == len(prompt(1, "yes", 0.95).split())


def test_streamed_probes_teach_the_policy_to_bypass_a_wrong_device(start_gateway: GatewayStarter, admin_key: None,
                                                                   tiers: dict[str, ThreadedTier]) -> None:
    gateway = start_gateway(quality_config())
    with gateway.sdk() as sdk:
        for i in range(10):  # min_probes: 10
            chunks, headers = stream(sdk, prompt(i, "no", 0.6))
            assert text_of(chunks) == "no" and headers["x-recserve-path"] == "device"
            probes_settle(tiers)
        assert device_quality(gateway.root)["bypassed"] is True
        chunks, headers = stream(sdk, prompt(10, "no", 0.6))
    assert headers["x-recserve-path"] == "device~>edge" and text_of(chunks) == "yes"


def test_probe_calls_and_their_tokens_are_counted(start_gateway: GatewayStarter, admin_key: None,
                                                  tiers: dict[str, ThreadedTier]) -> None:
    gateway = start_gateway(quality_config())
    sent = [prompt(i, answer, 0.95) for i, answer in enumerate(["yes", "yes", "no", "yes", "no"])]
    failing = "q9 [device:answer=yes][device:0.95][edge:answer=yes][cloud:status=500]"
    with gateway.sdk() as sdk:
        for text in sent:
            ask(sdk, text)
        probes_settle(tiers)
        before = scrape(gateway.root)
        _, headers = ask(sdk, failing)  # kept at the device; its probe finds the top tier failing
        probes_settle(tiers)
    assert headers["x-recserve-path"] == "device"
    after = scrape(gateway.root)
    assert (probes_of(before, "agreed"), probes_of(before, "disagreed"), probes_of(before, "failed")) == (3, 2, 0)
    assert probes_of(after, "failed") == 1
    words = sum(len(text.split()) for text in sent)  # what the scripted top tier reports as prompt_tokens
    assert probe_tokens(before, "cloud") == words
    assert probe_tokens(after, "cloud") > words  # the failed probe's prompt went up too
    # Requests that stayed at the device shipped nothing up; the probes did, and "saved" says so.
    assert sum(v for (name, _), v in after.items() if name == "recserve_uplink_prompt_tokens_total") == 0
    communication = httpx.get(gateway.root + "/admin/policy", headers=ADMIN).json()["communication"]
    assert communication["probe_uplink_prompt_tokens"] == probe_tokens(after, "cloud")
    assert communication["uplink_prompt_tokens"] == 0 and communication["saved"] < 1


@pytest.fixture
def file_gateway(tiers: dict[str, ThreadedTier], tmp_path: Path, admin_key: None) -> Iterator[tuple[str, Path]]:
    config = merge(base_config(tiers), quality_config())
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    with UvicornThread(create_app(load_config(path), config_path=str(path))) as server:
        yield server.base_url, path


def test_probe_windows_survive_a_reload(file_gateway: tuple[str, Path], tiers: dict[str, ThreadedTier]) -> None:
    root, path = file_gateway
    with openai.OpenAI(base_url=root + "/v1", api_key="unused", max_retries=0) as sdk:
        for i in range(12):
            ask(sdk, prompt(i, "no", 0.6))
            probes_settle(tiers)
        learned = device_quality(root)
        assert learned["bypassed"] is True and learned["probes"] == 12
        config = yaml.safe_load(path.read_text())
        config["policy"]["quality"]["window"] = 11  # a smaller probe window: the newest 11 stay
        config["tiers"][0]["timeout_s"] = 4
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        reloaded = httpx.post(root + "/admin/reload", headers=ADMIN)
        assert reloaded.status_code == 200 and reloaded.json()["changed"] == ["policy", "tiers"]
        kept = device_quality(root)
        assert kept["bypassed"] is True and kept["probes"] == 11
        _, headers = ask(sdk, prompt(50, "no", 0.6))
    assert headers["x-recserve-path"] == "device~>edge"  # the new runtime decides with the old probes


@pytest.mark.parametrize("key", ["workload", "task"])
def test_probes_are_booked_under_the_requests_workload_whatever_the_keying(
        start_gateway: GatewayStarter, admin_key: None, tiers: dict[str, ThreadedTier], key: str) -> None:
    """Under `policy.key: task` windows and probes are kept per task, but what a probe costs is still
    the named workload's: its savings figures hold its probes, and no entry is made for the task."""
    gateway = start_gateway(quality_config(policy={"key": key}))
    with gateway.sdk() as sdk:
        for i in range(3):  # kept at the device (warm-up serves kept answers), each one probed
            _, headers = ask(sdk, prompt(i, "yes", 0.95), extra_body={"recserve": {"workload": "bot"}})
            assert headers["x-recserve-path"] == "device" and headers["x-recserve-workload"] == "bot"
        probes_settle(tiers)
    savings = httpx.get(gateway.root + "/admin/policy", headers=ADMIN).json()["savings"]
    assert list(savings["workloads"]) == ["bot"]
    probed = sum(len(tiers[name].requests) for name in ("edge", "cloud"))
    assert probed >= 3  # only probes went above the device
    assert savings["workloads"]["bot"]["communication"]["uplink_prompt_tokens"] > 0
    assert savings["workloads"]["bot"] == savings["total"]
