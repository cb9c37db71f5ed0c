"""Warm-up with `policy.quality.warmup_answer: top` (the default): while a tier and task is still being
learned, an answer the tier would keep is verified instead of served — the request goes straight to the
top tier, the client gets the top tier's answer, and the pair is the tier's probe. No answer the floor
has not judged reaches a client; no probe call is made for it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from gateway.config.loading import ConfigError, parse_config
from tests.cascade.test_quality_policy import QUALITY, probes_settle, prompt
from tests.cascade.test_quality_probes import (
    ADMIN,
    ADMIN_ENV,
    admin_key,
    device_quality,
    probe_tokens,
    probes_of,
    scrape,
)
from tests.cascade.test_streaming import stream, text_of
from tests.conftest import GatewayStarter, RunningGateway, ask, merge
from tests.support.scripted_tier import ThreadedTier

__all__ = ["admin_key"]  # the fixture, imported for its side effect

VERIFY = merge(QUALITY, {"auth": {"admin_key_env": ADMIN_ENV},
                         "policy": {"quality": {"probe_rate": 0.0, "min_probes": 10, "warmup_probes": 10}}})


@pytest.fixture
def verifying(start_gateway: GatewayStarter, admin_key: None) -> RunningGateway:
    return start_gateway(VERIFY)


def sent_to(tiers: dict[str, ThreadedTier]) -> dict[str, int]:
    return {name: len(tier.requests) for name, tier in tiers.items()}


def test_a_learning_tier_is_verified_by_the_top_tier_which_answers(verifying: RunningGateway,
                                                                   tiers: dict[str, ThreadedTier]) -> None:
    with verifying.sdk() as sdk:
        answers = []
        for i in range(10):  # the device would keep every one (β 0.01), but it is still being learned
            body, headers = ask(sdk, prompt(i, "yes", 0.95) + "[cloud:answer=no]")
            answers.append((body.choices[0].message.content, headers["x-recserve-path"]))
        probes_settle(tiers)
        # Each answer was the cloud's; the edge was never asked; the cloud only once per request.
        assert answers == [("no", "device?>cloud")] * 10
        assert sent_to(tiers) == {"device": 10, "edge": 0, "cloud": 10}
        samples = scrape(verifying.root)
        assert probes_of(samples, "disagreed") == 10  # generation: token-F1 of "yes" and "no" is 0
        assert probe_tokens(samples, "cloud") == 0  # no probe call: the request's own cloud call answered
        escalations = samples[("recserve_escalations_total", frozenset({"tier": "device", "reason": "warmup"}.items()))]
        assert escalations == 10
        # Learned: the device disagreed every time, so it is bypassed; no more verification of it.
        assert device_quality(verifying.root)["bypassed"] is True
        _, headers = ask(sdk, prompt(99, "yes", 0.95))
        assert headers["x-recserve-path"] == "device~>edge?>cloud"  # and now the edge is being learned


def test_a_tier_that_agrees_is_trusted_once_learned(verifying: RunningGateway,
                                                    tiers: dict[str, ThreadedTier]) -> None:
    with verifying.sdk() as sdk:
        paths = []
        for i in range(12):
            _, headers = ask(sdk, prompt(i, "yes", 0.95))
            paths.append(headers["x-recserve-path"])
            probes_settle(tiers)
        view = device_quality(verifying.root)
    assert paths == ["device?>cloud"] * 10 + ["device", "device"]
    assert view["probes"] == 10 and view["warming_up"] is False and view["warmup_answer"] == "top"
    assert view["bypassed"] is False and view["best_agreement"] >= 0.9


def test_an_escalated_answer_is_not_verified(start_gateway: GatewayStarter, admin_key: None,
                                             tiers: dict[str, ThreadedTier]) -> None:
    # β 0.9 at the device: 0.2 after 0.9 is below the window's quantile, so the plain rule escalates.
    gateway = start_gateway(merge(VERIFY, {"policy": {"recserve": {"beta": {"device": 0.9}}}}))
    with gateway.sdk() as sdk:
        _, first = ask(sdk, prompt(0, "yes", 0.9))
        _, second = ask(sdk, prompt(1, "yes", 0.2))
    assert first["x-recserve-path"] == "device?>cloud"
    assert second["x-recserve-path"] == "device>edge?>cloud"  # the edge, still learning, verified in turn


def test_the_verified_answer_is_served_when_the_top_tier_fails(verifying: RunningGateway,
                                                               tiers: dict[str, ThreadedTier]) -> None:
    with verifying.sdk() as sdk:
        body, headers = ask(sdk, "q1 [device:answer=yes][device:0.95][cloud:status=500]")
        probes_settle(tiers)
    assert body.choices[0].message.content == "yes"
    assert headers["x-recserve-path"] == "device?>cloud!" and headers["x-recserve-degraded"] == "true"
    # The verification could not happen: the probe is retried in the background, fails too, counts as failed.
    assert probes_of(scrape(verifying.root), "failed") == 1
    assert device_quality(verifying.root)["probes"] == 0


@pytest.mark.parametrize("mode", ["buffered", "early"])
def test_a_streamed_request_streams_the_top_tiers_answer(start_gateway: GatewayStarter, admin_key: None,
                                                         tiers: dict[str, ThreadedTier], mode: str) -> None:
    gateway = start_gateway(merge(VERIFY, {"streaming": {"mode": mode, "decide_after_tokens": 1}}))
    with gateway.sdk() as sdk:
        chunks, headers = stream(sdk, prompt(1, "yes", 0.95) + "[cloud:answer=no]")
        probes_settle(tiers)
    assert headers["x-recserve-path"] == "device?>cloud" and text_of(chunks) == "no"
    assert len(tiers["cloud"].requests) == 1 and tiers["cloud"].requests[0].json.get("stream") is True
    # Buffered: the device's whole answer was at hand. Early: only its first token was read, so the
    # probe asks the device once more, for a plain answer.
    device_calls = tiers["device"].requests
    assert len(device_calls) == (1 if mode == "buffered" else 2)
    if mode == "early":
        assert "stream" not in device_calls[1].json
    view = device_quality(gateway.root) if mode == "buffered" else _prefix_view(gateway)
    assert view["probes"] == 1


def _prefix_view(gateway: RunningGateway) -> dict[str, Any]:
    """Early commit judges a prefix, whose probes are kept under the prefix window's task key."""
    view = httpx.get(gateway.root + "/admin/policy", headers=ADMIN).json()
    quality: dict[str, dict[str, Any]] = next(t for t in view["tiers"] if t["name"] == "device")["quality"]
    return quality["generation@prefix1"]


def test_warmup_answer_is_validated() -> None:
    assert parse_config({"tiers": [{"name": "t", "base_url": "http://127.0.0.1:1/v1", "model": "m"}],
                         "policy": {"quality": {"warmup_answer": "kept"}}}).policy.quality.warmup_answer == "kept"
    with pytest.raises(ConfigError, match="warmup_answer"):
        parse_config({"tiers": [{"name": "t", "base_url": "http://127.0.0.1:1/v1", "model": "m"}],
                      "policy": {"quality": {"warmup_answer": "cloud"}}})
