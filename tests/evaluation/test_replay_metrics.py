"""Replay arithmetic on a hand-made three-request trace, worked out by hand in the comments."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.evaluation.replay import (
    cascade,
    casserve_policy,
    fixed,
    oracle,
    recserve_policy,
    requests_from_rows,
    summarise,
)

LATENCY = {"device": 0.1, "edge": 0.2, "cloud": 0.5}
# (confidence, correct, prompt tokens) per tier; prompt bytes per request.
TRACE = [
    ({"device": (0.9, True, 10), "edge": (0.8, True, 12), "cloud": (0.99, True, 14)}, 50),
    ({"device": (0.2, False, 18), "edge": (0.3, False, 20), "cloud": (0.9, True, 22)}, 80),
    ({"device": (0.7, False, 28), "edge": (0.95, True, 30), "cloud": (0.6, False, 32)}, 100),
]


def _rows() -> list[dict[str, Any]]:
    rows = []
    for index, (tiers, size) in enumerate(TRACE):
        for tier, (confidence, correct, tokens) in tiers.items():
            rows.append({"dataset": "toy", "index": index, "tier": tier, "task": "classification",
                         "confidence": confidence, "correct": correct, "prompt_tokens": tokens,
                         "prompt_bytes": size, "latency_s": LATENCY[tier]})
    return rows


def test_casserve_metrics() -> None:
    requests = requests_from_rows(_rows())
    # θ=0.5: request 0 stays on the device (0.9); request 1 climbs 0.2 → 0.3 → cloud; request 2 stays (0.7).
    outcomes = asyncio.run(cascade(requests, casserve_policy(0.5)))
    assert [o.served for o in outcomes] == ["device", "cloud", "device"]
    m = summarise(requests, outcomes, "casserve", {"threshold": 0.5})
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["share"] == pytest.approx({"device": 2 / 3, "edge": 0.0, "cloud": 1 / 3})
    assert m["tokens_to"] == {"edge": 20, "cloud": 22} and m["uplink_tokens"] == 42
    assert m["comm_vs_cloud"] == pytest.approx(42 / (14 + 22 + 32))
    assert m["uplink_bytes"] == 160 and m["bytes_vs_cloud"] == pytest.approx(160 / 230)
    assert m["mean_latency_s"] == pytest.approx((0.1 + 0.8 + 0.1) / 3)


def test_recserve_windows_in_request_order() -> None:
    requests = requests_from_rows(_rows())
    # β=0.5: request 0 is a cold start at the device; request 1: device window [0.9, 0.2] has median
    # 0.55 > 0.2 → edge, whose window [0.3] is cold → served there; request 2: device window
    # [0.9, 0.2, 0.7] has median 0.7 and 0.7 < 0.7 is false (strict) → kept on the device.
    outcomes = asyncio.run(cascade(requests, recserve_policy(0.5, 10000)))
    assert [(o.served, o.visited) for o in outcomes] == [
        ("device", ["device"]), ("edge", ["device", "edge"]), ("device", ["device"])]
    m = summarise(requests, outcomes, "recserve", {"beta": 0.5})
    assert m["accuracy"] == pytest.approx(1 / 3) and m["uplink_tokens"] == 20


def test_fixed_tiers_and_oracle() -> None:
    requests = requests_from_rows(_rows())
    cloud = summarise(requests, fixed(requests, "cloud"), "cloud-only", {})
    assert cloud["comm_vs_cloud"] == 1.0 and cloud["accuracy"] == pytest.approx(2 / 3)
    device = summarise(requests, fixed(requests, "device"), "device-only", {})
    assert device["uplink_tokens"] == 0 and device["accuracy"] == pytest.approx(1 / 3)
    best = summarise(requests, oracle(requests), "oracle", {})
    # Lowest correct tier: device, cloud, edge.
    assert best["accuracy"] == 1.0 and best["uplink_tokens"] == 22 + 30
    assert best["mean_latency_s"] == pytest.approx((0.1 + 0.5 + 0.2) / 3)


def test_failed_tier_call_escalates_without_a_window_entry() -> None:
    rows = _rows()
    rows[0] = {**rows[0], "error": "APIConnectionError", "confidence": None}
    outcomes = asyncio.run(cascade(requests_from_rows(rows), recserve_policy(0.5, 10000)))
    # Request 0 now starts at the edge (cold: served there); the device window starts at request 1.
    assert [o.served for o in outcomes] == ["edge", "device", "device"]


def test_complete_only_leaves_out_requests_with_a_failed_call() -> None:
    rows = _rows()
    rows[2] = {**rows[2], "error": "timed out", "prompt_tokens": None}  # request 0's cloud call
    assert [r.index for r in requests_from_rows(rows, complete_only=True)] == [1, 2]
    assert len(requests_from_rows(rows)) == 3
