"""The quality policy's replay decides as the gateway does: a scripted sequence is recorded through the
pinned models, then sent through a fresh gateway with `policy.default: quality` and probe_rate 1.0 (every
kept or bypassed answer probed, so the gateway's unseeded RNG draws cannot differ from the replay's).
Every path (bypass marks included) must equal the replay's, and every tier must have received exactly
the calls the replay counts for the path and the probes. Probes run in the background in the gateway:
each request waits until its probes have reached the tiers, as the replay finishes them in order."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

from gateway.evaluation.datasets import Example
from gateway.evaluation.live import ask_live, examples_of
from gateway.evaluation.record import read_trace, record
from gateway.evaluation.replay import QualityOptions, SimulatedProber, cascade, quality_policy, requests_from_rows
from tests.conftest import GatewayStarter
from tests.support.scripted_tier import ThreadedTier

SETTINGS = {"probe_rate": 1.0, "target": 0.9, "min_probes": 6, "window": 12, "similarity": 0.5}
POLICY = {"policy": {"default": "quality", "recserve": {"beta": {"device": 0.2, "edge": 0.4}, "window": 10000},
                     "quality": SETTINGS}}


def _examples() -> list[Example]:
    """Right only when sure, then always wrong (bypass), then right and sure again (drift back)."""
    rng = random.Random(4)
    examples = []
    for index in range(45):
        confidence = round(rng.uniform(0.3, 0.99), 3)
        if index < 15:
            device = "yes" if confidence > 0.8 else "no"
        elif index < 30:
            device = "no"
        else:
            device, confidence = "yes", 0.95
        prompt = (f"q{index} [device:answer={device}][device:{confidence}]"
                  f"[edge:answer={'yes' if index % 4 else 'no'}][edge:{rng.uniform(0.3, 0.99):.3f}]"
                  "[cloud:answer=yes][cloud:0.99]")
        examples.append(Example("scripted", index, prompt, "generation", None, "yes", 8))
    return examples


def _chat_calls(tiers: dict[str, ThreadedTier]) -> dict[str, int]:
    return {name: sum(r.path.endswith("/chat/completions") for r in tier.requests) for name, tier in tiers.items()}


def _wait_for(tiers: dict[str, ThreadedTier], expected: dict[str, int], timeout_s: float = 5.0) -> dict[str, int]:
    deadline = time.monotonic() + timeout_s
    while (seen := _chat_calls(tiers)) != expected and time.monotonic() < deadline:
        time.sleep(0.01)
    return seen


def test_quality_replay_matches_the_gateway(start_gateway: GatewayStarter, tiers: dict[str, ThreadedTier],
                                            tmp_path: Path) -> None:
    trace = tmp_path / "scripted.jsonl"
    with start_gateway(POLICY).sdk() as client:
        assert record(_examples(), trace, client, report=lambda _: None) == 45
    rows = read_trace(trace)
    requests = requests_from_rows(rows)
    options = QualityOptions(min_probes=SETTINGS["min_probes"], probe_window=SETTINGS["window"])
    policy = quality_policy({"device": 0.2, "edge": 0.4}, 10000, SETTINGS["target"], options)
    outcomes = asyncio.run(cascade(requests, policy, prober=SimulatedProber(policy, 1.0, 0.5, seed=0)))
    paths = [o.path() for o in outcomes]
    assert {"device", "device>edge", "device~>edge"} <= set(paths)  # kept, floor-escalated, bypassed
    assert any(o.bypassed for o in outcomes[:30]) and paths[-1] == "device"  # bypass, then drift followed

    fresh = start_gateway(POLICY)
    expected = _chat_calls(tiers)
    live_paths = []
    with fresh.sdk() as client:
        for example, outcome in zip(examples_of(rows), outcomes, strict=True):
            live_paths.append(ask_live(client, example)["path"])
            for tier in [*outcome.visited, *outcome.probes]:
                expected[tier] += 1
            assert _wait_for(tiers, expected) == expected, f"request {example.index}: {live_paths[-1]}"
    assert live_paths == paths
    time.sleep(0.3)
    assert _chat_calls(tiers) == expected  # no late probe beyond what the replay counts
