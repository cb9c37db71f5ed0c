"""Savings in users' terms, per workload and in total, for a scripted traffic mix with known prices and
uplink weights: requests and prompt tokens that never reached the top tier, communication, weighted
communication and spend against top-tier-only — the same in /metrics and in /admin/policy.

Scripted tiers report usage: prompt tokens = the words of the prompt, completion tokens = the answer's
tokens (one for `0.5`, two for the default answer, one per probability for `tokens=`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import TIER_NAMES, ask, tier_entry
from tests.support.scripted_tier import ThreadedTier

from .conftest import FileGatewayStarter
from .test_metrics import Samples, scrape, total, value

M = 1e-6  # USD per token at 1 USD per million
WEIGHTS = {"device": 0.0, "edge": 1.0, "cloud": 4.0}
PRICES = {"edge": (0.10, 0.40), "cloud": (1.00, 4.00)}  # USD per million input / output tokens; device free


def savings_config(tiers: dict[str, ThreadedTier], max_workloads: int = 100) -> dict[str, Any]:
    entries = []
    for name in TIER_NAMES:
        extra: dict[str, Any] = {"uplink_weight": WEIGHTS[name]}
        if name in PRICES:
            extra["price"] = {"input_per_mtok": PRICES[name][0], "output_per_mtok": PRICES[name][1]}
        entries.append(tier_entry(tiers[name], **extra))
    return {"tiers": entries, "policy": {"default": "casserve", "max_workloads": max_workloads,
                                         "casserve": {"thresholds": {"device": 0.8, "edge": 0.8}}}}


@dataclass(frozen=True)
class Sent:
    """One scripted request and what it costs by hand: the tiers that got the prompt with their
    completion tokens (None: no answer), the last of them answered."""

    prompt: str
    workload: str | None
    asked: dict[str, int | None]
    stream: bool = False

    @property
    def words(self) -> int:
        return len(self.prompt.split())


MIX = [
    Sent("t1 [device:0.9]", "tagger", {"device": 1}),
    Sent("t2 x [device:0.5][edge:0.9]", "tagger", {"device": 1, "edge": 1}),
    Sent("t3 [device:0.5][edge:0.5]", "tagger", {"device": 1, "edge": 1, "cloud": 2}),
    Sent("b1 a b [device:0.5][edge:tokens=0.9,0.9,0.9]", "bot", {"device": 1, "edge": 3}),
    Sent("b2 [device:status=500][edge:0.5]", "bot", {"device": None, "edge": 1, "cloud": 2}),
    Sent("b3 [device:0.5][edge:0.9]", "bot", {"device": 1, "edge": 1}, stream=True),
    Sent("g1 [device:0.9]", None, {"device": 1}),  # names no workload: its task's
]
# By hand from the prices and weights above (e.g. t3: edge 2 x 0.1 + 1 x 0.4, cloud 2 x 1 + 2 x 4).
EXPECTED = {
    "tagger": {"requests": 3, "top": 1, "prompt": 7, "top_prompt": 2, "uplink": 7, "weighted": 13.0,
               "top_weighted": 28.0, "spend": 11.3 * M, "top_spend": 23.0 * M},
    "bot": {"requests": 3, "top": 1, "prompt": 8, "top_prompt": 2, "uplink": 10, "weighted": 16.0,
            "top_weighted": 32.0, "spend": 12.8 * M, "top_spend": 32.0 * M},
    "generation": {"requests": 1, "top": 0, "prompt": 2, "top_prompt": 0, "uplink": 0, "weighted": 0.0,
                   "top_weighted": 8.0, "spend": 0.0, "top_spend": 6.0 * M},
}


def of_one(samples: Samples, name: str, **labels: str) -> float:
    """A per-workload series of an open gateway's one tenant (every per-workload series names its tenant)."""
    return value(samples, name, tenant="open", **labels)


def test_hand_costs_match_the_expected_table() -> None:
    """The table above is the mix costed by hand; this keeps the two from drifting apart."""
    for workload, want in EXPECTED.items():
        sent = [s for s in MIX if (s.workload or "generation") == workload]
        spend = top_spend = weighted = 0.0
        for s in sent:
            served = list(s.asked)[-1]
            for tier, out in s.asked.items():
                weighted += WEIGHTS[tier] * s.words
                price_in, price_out = PRICES.get(tier, (0.0, 0.0))
                spend += (s.words * price_in + (out or 0) * price_out) * M
            top_spend += (s.words * PRICES["cloud"][0] + (s.asked[served] or 0) * PRICES["cloud"][1]) * M
        assert weighted == want["weighted"]
        assert spend == pytest.approx(want["spend"])
        assert top_spend == pytest.approx(want["top_spend"])
        assert sum(s.words for s in sent) == want["prompt"]


def send_mix(root: str, sdk: Any) -> None:
    for s in MIX:
        extra: dict[str, Any] = {"extra_body": {"recserve": {"workload": s.workload}}} if s.workload else {}
        if s.stream:
            with sdk.chat.completions.create(model="recserve", messages=[{"role": "user", "content": s.prompt}],
                                             stream=True, max_tokens=16, **extra) as stream:
                assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        else:
            _, headers = ask(sdk, s.prompt, max_tokens=16, **extra)
            assert headers["x-recserve-tier"] == list(s.asked)[-1], s.prompt


def test_metrics_and_admin_policy_count_savings_per_workload(start_file_gateway: FileGatewayStarter,
                                                             tiers: dict[str, ThreadedTier]) -> None:
    gateway = start_file_gateway(savings_config(tiers))
    with gateway.sdk() as sdk:
        send_mix(gateway.root, sdk)
    m = scrape(gateway.root)
    with gateway.admin() as http:
        view = http.get("/admin/policy").json()
    savings = view["savings"]
    assert list(savings["workloads"]) == ["bot", "tagger", "generation"]  # most requests first, then by name
    assert view["tiers"][2]["price"] == {"input_per_mtok": 1.0, "output_per_mtok": 4.0}
    assert [t["uplink_weight"] for t in view["tiers"]] == [0.0, 1.0, 4.0]
    for workload, want in EXPECTED.items():
        got = savings["workloads"][workload]
        assert got["requests"] == want["requests"]
        assert got["below_top"]["requests"] == want["requests"] - want["top"]
        assert got["below_top"]["requests_share"] == pytest.approx(1 - want["top"] / want["requests"])
        assert got["below_top"]["prompt_tokens_share"] == pytest.approx(1 - want["top_prompt"] / want["prompt"])
        assert got["communication"] == {"uplink_prompt_tokens": want["uplink"],
                                        "top_tier_only_prompt_tokens": want["prompt"],
                                        "vs_top_tier_only": pytest.approx(want["uplink"] / want["prompt"])}
        weighted = got["weighted_communication"]
        assert weighted["weighted"] == pytest.approx(want["weighted"])
        assert weighted["top_tier_only"] == pytest.approx(want["top_weighted"])
        assert weighted["vs_top_tier_only"] == pytest.approx(want["weighted"] / want["top_weighted"])
        assert got["spend"]["usd"] == pytest.approx(want["spend"])
        assert got["spend"]["top_tier_only_usd"] == pytest.approx(want["top_spend"])
        assert got["spend"]["vs_top_tier_only"] == pytest.approx(want["spend"] / want["top_spend"])
        # The same numbers in Prometheus.
        assert total(m, "recserve_workload_requests_total", workload=workload) == want["requests"]
        assert of_one(m, "recserve_workload_top_tier_requests_total", workload=workload) == want["top"]
        assert of_one(m, "recserve_workload_prompt_tokens_total", workload=workload) == want["prompt"]
        assert of_one(m, "recserve_workload_top_tier_prompt_tokens_total", workload=workload) == want["top_prompt"]
        assert of_one(m, "recserve_workload_uplink_prompt_tokens_total", workload=workload) == want["uplink"]
        assert of_one(m, "recserve_workload_weighted_uplink_tokens_total", workload=workload) == \
            pytest.approx(want["weighted"])
        assert of_one(m, "recserve_workload_top_tier_only_weighted_uplink_tokens_total", workload=workload) == \
            pytest.approx(want["top_weighted"])
        assert of_one(m, "recserve_workload_spend_usd_total", workload=workload) == pytest.approx(want["spend"])
        assert of_one(m, "recserve_workload_top_tier_only_spend_usd_total", workload=workload) == \
            pytest.approx(want["top_spend"])
    assert savings["workloads"]["tagger"]["served"] == {"cloud": 1, "device": 1, "edge": 1}
    assert of_one(m, "recserve_workload_requests_total", workload="bot", tier="edge") == 2
    everything = savings["total"]
    # An open gateway is one tenant, `open`: its figures are the gateway's.
    assert savings["tenants"] == {"open": {"total": everything, "workloads": savings["workloads"]}}
    assert everything["requests"] == view["requests"] == 7
    assert everything["below_top"]["requests_share"] == pytest.approx(5 / 7)
    assert everything["below_top"]["prompt_tokens_share"] == pytest.approx(13 / 17)
    assert everything["weighted_communication"]["vs_top_tier_only"] == pytest.approx(29 / 68)
    assert everything["spend"]["usd"] == pytest.approx(24.1 * M)
    assert everything["spend"]["top_tier_only_usd"] == pytest.approx(61 * M)
    assert everything["spend"]["saved_usd"] == pytest.approx(36.9 * M)
    # Communication as before: the per-workload uplink adds up to the tiers' uplink counters.
    assert everything["communication"]["uplink_prompt_tokens"] == view["communication"]["uplink_prompt_tokens"] \
        == total(m, "recserve_uplink_prompt_tokens_total") == 17


def test_without_prices_spend_ratios_are_none_and_weights_default_to_one(file_gateway: Any) -> None:
    with file_gateway.sdk() as sdk:
        ask(sdk, "w1 w2 [device:0.9]", max_tokens=16)
        ask(sdk, "w1 w2 [device:0.1][edge:0.9]", max_tokens=16)
    with file_gateway.admin() as http:
        got = http.get("/admin/policy").json()["savings"]["total"]
    assert got["spend"] == {"usd": 0.0, "top_tier_only_usd": 0.0, "saved_usd": 0.0, "vs_top_tier_only": None}
    # Weight 1 everywhere: the device's prompts count too (set its uplink_weight to 0 to leave them out).
    assert got["weighted_communication"] == {"weighted": 9.0, "top_tier_only": 6.0, "vs_top_tier_only": 1.5}
    assert got["below_top"]["requests_share"] == 1.0


def test_workload_labels_stay_bounded_as_names_churn(start_file_gateway: FileGatewayStarter,
                                                     tiers: dict[str, ThreadedTier]) -> None:
    config = savings_config(tiers, max_workloads=2)
    config["policy"]["workload_idle_s"] = 0  # the gateway lets every new name in, evicting the oldest
    gateway = start_file_gateway(config)
    with gateway.sdk() as sdk:
        for i in range(6):
            ask(sdk, "x [device:0.9]", max_tokens=16, extra_body={"recserve": {"workload": f"app-{i}"}})
    m = scrape(gateway.root)
    names = {dict(labels)["workload"] for (name, labels) in m if name == "recserve_workload_requests_total"}
    assert names == {"app-0", "app-1", "other"}
    assert of_one(m, "recserve_workload_requests_total", workload="other", tier="device") == 4
