"""Spend and weighted communication of replayed policies, worked out by hand on the three-request trace
of test_replay_metrics (completion tokens added: device 1, edge 2, cloud 3 per answer)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config.loading import load_config
from gateway.evaluation.replay import cascade, casserve_policy, requests_from_rows, summarise
from gateway.evaluation.report import write_report
from gateway.evaluation.report_savings import TierRates, rates_from_config, savings_columns
from tests.evaluation.test_replay_metrics import _rows

COMPLETION = {"device": 1, "edge": 2, "cloud": 3}
RATES = {"device": TierRates(0.0), "edge": TierRates(1.0, 1.0, 2.0), "cloud": TierRates(4.0, 10.0, 20.0)}


def rows() -> list[dict[str, Any]]:
    return [{**row, "completion_tokens": COMPLETION[row["tier"]]} for row in _rows()]


def test_casserve_spend_and_weighted_communication_by_hand() -> None:
    requests = requests_from_rows(rows())
    # θ=0.5: request 0 stays on the device, request 1 climbs device → edge → cloud, request 2 stays.
    entry = summarise(requests, asyncio.run(cascade(requests, casserve_policy(0.5))), "casserve", {})
    assert entry["savings_tokens"] == {"in": {"device": 56, "edge": 20, "cloud": 22},
                                       "out": {"device": 3, "edge": 2, "cloud": 3},
                                       "served_out": 5, "top_prompt": 68}
    columns = savings_columns(entry, RATES)
    # Weighted: 0 x 56 + 1 x 20 + 4 x 22 = 108 against 4 x 68. Spend (per million): edge 20 x 1 + 2 x 2,
    # cloud 22 x 10 + 3 x 20 = 304 against 68 x 10 + 5 x 20 = 780 at the cloud's prices.
    assert columns["weighted_vs_top"] == pytest.approx(108 / 272)
    assert columns["spend_vs_top"] == pytest.approx(304 / 780)
    kept = summarise(requests, asyncio.run(cascade(requests, casserve_policy(0.0))), "casserve", {})
    assert savings_columns(kept, RATES) == {"weighted_vs_top": 0.0, "spend_vs_top": 0.0}  # all on the free device
    assert savings_columns({}, RATES) == {"weighted_vs_top": None, "spend_vs_top": None}


def test_rates_from_a_gateway_config(tmp_path: Path) -> None:
    tier = {"base_url": "http://127.0.0.1:1/v1", "model": "m"}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"tiers": [
        {"name": "device", **tier, "uplink_weight": 0},
        {"name": "edge", **tier},
        {"name": "cloud", **tier, "uplink_weight": 4, "price": {"input_per_mtok": 10, "output_per_mtok": 20}}]}))
    rates = rates_from_config(load_config(path))
    assert dict(rates) == {"device": TierRates(0.0), "edge": TierRates(1.0), "cloud": TierRates(4.0, 10.0, 20.0)}


def test_report_shows_the_columns(tmp_path: Path) -> None:
    traces = tmp_path / "traces"
    traces.mkdir()
    (traces / "toy.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows()), encoding="utf-8")
    md, js, _ = write_report(traces, tmp_path / "out", rates=RATES)
    text = md.read_text(encoding="utf-8")
    assert "| weighted comm vs cloud-only | spend vs cloud-only |" in text
    assert "| toy | cloud-only | 0.667 | 0.00 / 0.00 / 1.00 |" in text
    cloud_row = next(line for line in text.splitlines() if line.startswith("| toy | cloud-only |"))
    assert cloud_row.endswith("| 1.00 | 1.00 |")  # top-tier-only against itself
    policies = json.loads(js.read_text(encoding="utf-8"))["results"][0]["policies"]
    device = next(p for p in policies if p["policy"] == "device-only")
    assert device["weighted_vs_top"] == 0.0 and device["spend_vs_top"] == 0.0
