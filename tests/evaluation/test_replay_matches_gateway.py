"""Replay decides exactly as the gateway: a scripted sequence is recorded through the pinned models,
then sent through a fresh gateway with model `recserve`, and every served tier, path and uplink count
must equal the replay's. Real uvicorn gateway, scripted tiers on loopback, the official SDK."""

from __future__ import annotations

import random
from pathlib import Path

from gateway.evaluation.datasets import Example
from gateway.evaluation.live import run_live
from gateway.evaluation.record import read_trace, record
from tests.conftest import GatewayStarter

# A small window and per-tier betas, so eviction and both thresholds are exercised in 40 requests.
POLICY = {"policy": {"default": "recserve", "recserve": {"beta": {"device": 0.3, "edge": 0.5}, "window": 6}}}


def _examples(count: int) -> list[Example]:
    rng = random.Random(11)
    examples = []
    for index in range(count):
        device = "nologprobs" if index % 9 == 4 else f"{rng.uniform(0.05, 0.95):.3f}"
        prompt = f"question {index} [device:{device}][edge:{rng.uniform(0.05, 0.95):.3f}]"
        examples.append(Example("scripted", index, prompt, "generation", None, "0", 8))
    return examples


def test_live_gateway_serves_where_replay_says(start_gateway: GatewayStarter, tmp_path: Path) -> None:
    examples = _examples(40)
    trace = tmp_path / "scripted.jsonl"
    recorder = start_gateway(POLICY)
    with recorder.sdk() as client:
        assert record(examples, trace, client, report=lambda _: None) == 40
        # Resumable: a second run finds every example complete and asks nothing.
        assert record(examples, trace, client, report=lambda _: None) == 0
    rows = read_trace(trace)
    assert len(rows) == 120 and all(row["confidence_agrees"] for row in rows)

    fresh = start_gateway(POLICY)  # empty windows, as the live comparison requires
    with fresh.sdk() as client:
        summary = run_live([trace], client, config=fresh.config)
    assert summary["requests_total"] == 40
    assert summary["served_tier_matches"] == 40
    assert summary["path_matches"] == 40
    assert summary["uplink_token_matches"] == 40
    served = {row["live_tier"] for row in summary["requests"]}
    assert served == {"device", "edge", "cloud"}  # the sequence really exercises every tier


QUALITY = {"policy": {"default": "quality", "recserve": {"beta": {"device": 0.3, "edge": 0.3}, "window": 10},
                      "quality": {"probe_rate": 0.0, "target": 0.8, "min_probes": 5, "window": 40,
                                  "confidence_level": 0.5}}}


def _quality_examples(count: int) -> list[Example]:
    """The device agrees with the cloud only when sure (> 0.6); the edge when above 0.3."""
    rng = random.Random(5)
    examples = []
    for index in range(count):
        device, edge = rng.uniform(0.05, 0.95), rng.uniform(0.05, 0.95)
        prompt = (f"question {index} [device:{device:.3f}][device:answer={'yes' if device > 0.6 else 'no'}]"
                  f"[edge:{edge:.3f}][edge:answer={'yes' if edge > 0.3 else 'no'}][cloud:answer=yes]")
        examples.append(Example("scripted", index, prompt, "generation", None, "yes", 8))
    return examples


def test_live_quality_gateway_serves_where_replay_says(start_gateway: GatewayStarter, tmp_path: Path) -> None:
    """`recserve eval live --policy quality` on scripted tiers: the warm-up's verifications (probe rate 0,
    warmup_answer top) and the learned floor decide alike live and in replay."""
    trace = tmp_path / "quality.jsonl"
    with start_gateway(QUALITY).sdk() as client:
        assert record(_quality_examples(60), trace, client, report=lambda _: None) == 60
    fresh = start_gateway(QUALITY)
    with fresh.sdk() as client:
        summary = run_live([trace], client, config=fresh.config, policy="quality")
    assert summary["requests_total"] == 60 and summary["policy"] == "quality"
    assert summary["path_matches"] == summary["served_tier_matches"] == summary["uplink_token_matches"] == 60
    paths = {row["live_path"] for row in summary["requests"]}
    assert {"device?>cloud", "device"} <= paths  # verified during the warm-up, then kept once learned
    assert any("edge?" in path for path in paths)  # the edge warmed up in turn


def _labelled(count: int) -> list[Example]:
    """Two classification workloads interleaved, each with its own label set (so its own windows,
    keyed by workload): a sure one and an unsure one, which one shared window would mix."""
    rng = random.Random(17)
    examples = []
    for index in range(count):
        if index % 2:
            p = rng.uniform(0.7, 0.99)
            prompt = f"review {index} [device:label=positive:{p:.3f},negative:{1 - p:.3f}][edge:0.9]"
            examples.append(Example("reviews", index, prompt, "classification", ("positive", "negative"),
                                    "positive", 1))
        else:
            p = rng.uniform(0.5, 0.7)
            prompt = f"claim {index} [device:label=yes:{p:.3f},no:{1 - p:.3f}][edge:0.9]"
            examples.append(Example("claims", index, prompt, "classification", ("yes", "no"), "yes", 1))
    return examples


def test_live_gateway_keys_workloads_as_replay_does(start_gateway: GatewayStarter, tmp_path: Path) -> None:
    """The gateway derives a workload from each label set; the live comparison replays in the same
    workloads, so decisions match request for request (keyed by task alone they would not)."""
    trace = tmp_path / "labelled.jsonl"
    with start_gateway(POLICY).sdk() as client:
        assert record(_labelled(40), trace, client, report=lambda _: None) == 40
    fresh = start_gateway(POLICY)
    with fresh.sdk() as client:
        summary = run_live([trace], client, config=fresh.config)
    assert summary["served_tier_matches"] == summary["path_matches"] == 40
