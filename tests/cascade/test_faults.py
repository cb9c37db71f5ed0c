"""Faults at each tier: escalation with a marked path, degraded answers, 502/504, busy tiers,
deadlines, upstream rejections and chained gateways. Both backends must behave the same."""

from __future__ import annotations

import concurrent.futures
import time

import openai
import pytest

from tests.conftest import BOTH_BACKENDS, GatewayStarter, ask, base_config
from tests.support.scripted_tier import ThreadedTier

# Both backends (plain HTTP and litellm) must pass every test here.
pytestmark = BOTH_BACKENDS


FAULTS = ["status=500", "status=503", "status=429", "reset", "garbage", "status=401"]


@pytest.mark.parametrize("fault", FAULTS)
def test_lower_tier_fault_escalates(client: openai.OpenAI, fault: str) -> None:
    answer, headers = ask(client, f"x [device:{fault}][edge:0.9]")
    assert headers["x-recserve-path"] == "device!>edge"
    assert headers["x-recserve-tier"] == "edge"
    assert answer.model == "edge-model"
    assert "x-recserve-degraded" not in headers


def test_lower_tier_timeout_escalates(start_gateway: GatewayStarter, tiers: dict[str, ThreadedTier]) -> None:
    gateway = start_gateway({"tiers": [
        {"name": "device", "base_url": tiers["device"].base_url, "model": "device-model", "timeout_s": 0.3},
        {"name": "edge", "base_url": tiers["edge"].base_url, "model": "edge-model"},
        {"name": "cloud", "base_url": tiers["cloud"].base_url, "model": "cloud-model"}]})
    with gateway.sdk() as sdk:
        _, headers = ask(sdk, "x [device:sleep=3][edge:0.9]")
    assert headers["x-recserve-path"] == "device!>edge"


def test_final_tier_fault_returns_best_lower_answer_degraded(client: openai.OpenAI) -> None:
    answer, headers = ask(client, "x [device:0.1][edge:status=500][cloud:status=500]", model="recserve/casserve")
    assert headers["x-recserve-degraded"] == "true"
    assert headers["x-recserve-tier"] == "device"
    assert headers["x-recserve-path"] == "device>edge!>cloud!"
    assert answer.model == "device-model"
    assert float(headers["x-recserve-confidence"]) == pytest.approx(0.1)


def test_every_tier_failing_is_a_502_in_openai_shape(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        ask(client, "x [*:status=500]")
    assert caught.value.status_code == 502
    error = caught.value.body
    assert isinstance(error, dict) and error["type"] == "upstream_error" and error["code"] == "tier_failed"
    assert caught.value.response.headers["x-recserve-path"] == "device!>edge!>cloud!"


def test_pinned_tier_failure_is_a_502(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        ask(client, "x [edge:garbage]", model="recserve/edge")
    assert caught.value.status_code == 502


def test_deadline_without_any_answer_is_a_504(start_gateway: GatewayStarter) -> None:
    gateway = start_gateway({"server": {"request_timeout_s": 0.5}})
    with gateway.sdk() as sdk, pytest.raises(openai.APIStatusError) as caught:
        ask(sdk, "x [*:sleep=3]")
    assert caught.value.status_code == 504
    assert caught.value.response.headers["x-recserve-path"] == "device!>edge!>cloud!"


def test_deadline_after_a_lower_answer_returns_it_degraded(start_gateway: GatewayStarter) -> None:
    gateway = start_gateway({"server": {"request_timeout_s": 0.8}, "policy": {"default": "casserve"}})
    with gateway.sdk() as sdk:
        _, headers = ask(sdk, "x [device:0.2][edge:sleep=3][cloud:0.9]")
    assert headers["x-recserve-degraded"] == "true" and headers["x-recserve-tier"] == "device"
    assert headers["x-recserve-path"].startswith("device>edge!>cloud")


def test_min_budget_skips_a_tier_that_cannot_finish(start_gateway: GatewayStarter,
                                                    tiers: dict[str, ThreadedTier]) -> None:
    entries = [{"name": n, "base_url": tiers[n].base_url, "model": f"{n}-model",
                "min_budget_s": 5 if n == "cloud" else 0} for n in ("device", "edge", "cloud")]
    gateway = start_gateway({"server": {"request_timeout_s": 2}, "policy": {"default": "casserve"}, "tiers": entries})
    with gateway.sdk() as sdk:
        _, headers = ask(sdk, "x [device:0.1][edge:0.2]")
    assert headers["x-recserve-path"] == "device>edge>cloud!"
    assert headers["x-recserve-tier"] == "edge" and headers["x-recserve-degraded"] == "true"
    assert not tiers["cloud"].requests


def test_busy_lower_tier_escalates(start_gateway: GatewayStarter, tiers: dict[str, ThreadedTier]) -> None:
    gateway = start_gateway({"tiers": [
        {"name": "device", "base_url": tiers["device"].base_url, "model": "device-model",
         "max_concurrency": 1, "queue_timeout_s": 0.1},
        {"name": "edge", "base_url": tiers["edge"].base_url, "model": "edge-model"},
        {"name": "cloud", "base_url": tiers["cloud"].base_url, "model": "cloud-model"}]})
    with gateway.sdk() as sdk, concurrent.futures.ThreadPoolExecutor(2) as pool:
        slow = pool.submit(ask, sdk, "slow [device:sleep=2][device:0.9]")
        # Wait until the slow request holds the device's only slot (the tier has seen it).
        deadline = time.monotonic() + 10
        while not tiers["device"].requests and time.monotonic() < deadline:
            time.sleep(0.01)
        _, headers = ask(sdk, "fast [edge:0.9]")
        _, slow_headers = slow.result(timeout=10)
    assert headers["x-recserve-path"] == "device!>edge"
    assert slow_headers["x-recserve-path"] == "device"


def test_upstream_508_is_passed_on(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        ask(client, "x [device:status=508]")
    assert caught.value.status_code == 508
    # Like every answer, the error says where the request went: the edge refused it.
    with pytest.raises(openai.APIStatusError) as caught:
        ask(client, "x [device:0.1][device:nologprobs][edge:status=508]")
    assert caught.value.status_code == 508
    assert caught.value.response.headers["x-recserve-path"] == "device>edge!"


def test_a_tier_refusing_the_clients_request_is_a_400_with_the_path(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client, "x [device:status=400]")
    assert caught.value.response.headers["x-recserve-path"] == "device!"
    assert caught.value.response.headers["x-recserve-task"] == "generation"


CHAINED_PROMPT = ("x [device:status=500][edge:0.9][edge:header=x-recserve-path:edge%5Bdevice>cloud%5D]"
                  "[edge:header=x-recserve-uplink-tokens:10]")


def test_chained_gateway_path_is_nested_and_uplink_adds_up(start_gateway: GatewayStarter,
                                                           tiers: dict[str, ThreadedTier]) -> None:
    marked = [{**entry, "recserve_gateway": entry["name"] == "edge"} for entry in base_config(tiers)["tiers"]]
    gateway = start_gateway({"tiers": marked})
    with gateway.sdk() as sdk:
        _, headers = ask(sdk, CHAINED_PROMPT)
    assert headers["x-recserve-path"] == "device!>edge[edge[device>cloud]]"
    assert int(headers["x-recserve-uplink-tokens"]) == 2 + 10  # our edge hop (2 words) + the chain's


def test_recserve_headers_of_a_tier_that_is_not_a_gateway_are_ignored(client: openai.OpenAI) -> None:
    _, headers = ask(client, CHAINED_PROMPT)
    assert headers["x-recserve-path"] == "device!>edge"
    assert int(headers["x-recserve-uplink-tokens"]) == 2
