"""The quality policy's replay decides as the gateway does: a scripted sequence is recorded through the
pinned models, then sent through a fresh gateway with `policy.default: quality`, and compared with the
replay at settings where the gateway's unseeded RNG draws cannot differ from the replay's: probe_rate 1.0
(every kept or bypassed answer probed), and probe_rate 0 with a warm-up (the first `warmup_probes` kept or
bypassed answers of each tier and task probed, then none); each with `warmup_answer` "kept" (warm-up
answers served, probed in the background) and "top" (verified by the top tier, which answers:
`device?>cloud`). Every path (bypass and verify marks included) must equal the replay's, and every tier
must have received exactly the calls the replay counts for the path and the probes. Probes run in the
background in the gateway: each request waits until its probes have reached the tiers, as the replay
finishes them in order."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

from gateway.evaluation.datasets import Example
from gateway.evaluation.live import ask_live, examples_of
from gateway.evaluation.record import read_trace, record
from gateway.evaluation.replay import Outcome, cascade, requests_from_rows
from gateway.evaluation.replay_quality import QualityOptions, SimulatedProber, quality_policy
from tests.conftest import GatewayStarter
from tests.support.scripted_tier import ThreadedTier

# confidence_level 0.5: the floor reads the agreement rate itself, as a dozen probes allow.
SETTINGS = {"probe_rate": 1.0, "target": 0.9, "min_probes": 6, "window": 12, "similarity": 0.5,
            "warmup_answer": "kept", "confidence_level": 0.5}
BETA = {"device": 0.2, "edge": 0.4}
# No sampling at all: only the warm-up probes, the first 6 per tier and task; then the curve decides.
# At the default confidence level 0.9, 6 agreeing pairs never vouch for 0.9 (the bound is 0.78).
WARMUP_ONLY = {**SETTINGS, "probe_rate": 0.0, "warmup_probes": 6, "confidence_level": 0.9}
# The gateway's default: a warming-up tier's kept answer is verified by the top tier, which answers.
VERIFY = {**SETTINGS, "warmup_answer": "top"}
VERIFY_WARMUP_ONLY = {**WARMUP_ONLY, "warmup_answer": "top"}


def _policy(settings: dict[str, Any]) -> dict[str, Any]:
    return {"policy": {"default": "quality", "recserve": {"beta": BETA, "window": 10000}, "quality": settings}}


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


def _replayed_and_live(start_gateway: GatewayStarter, tiers: dict[str, ThreadedTier], tmp_path: Path,
                       settings: dict[str, Any]) -> list[Outcome]:
    """Record the scripted sequence, replay it, send it through a fresh gateway and compare both."""
    trace = tmp_path / "scripted.jsonl"
    with start_gateway(_policy(settings)).sdk() as client:
        assert record(_examples(), trace, client, report=lambda _: None) == 45
    rows = read_trace(trace)
    requests = requests_from_rows(rows)
    options = QualityOptions(min_probes=settings["min_probes"], probe_window=settings["window"],
                             warmup_probes=settings.get("warmup_probes"), warmup_answer=settings["warmup_answer"],
                             confidence_level=settings["confidence_level"])
    policy = quality_policy(BETA, 10000, settings["target"], options)
    prober = SimulatedProber(policy, settings["probe_rate"], settings["similarity"], seed=0)
    outcomes = asyncio.run(cascade(requests, policy, prober=prober))

    fresh = start_gateway(_policy(settings))
    expected = _chat_calls(tiers)
    live_paths = []
    with fresh.sdk() as client:
        for example, outcome in zip(examples_of(rows), outcomes, strict=True):
            live_paths.append(ask_live(client, example)["path"])
            for tier in [*outcome.visited, *outcome.probes]:
                expected[tier] += 1
            assert _wait_for(tiers, expected) == expected, f"request {example.index}: {live_paths[-1]}"
    assert live_paths == [o.path() for o in outcomes]
    time.sleep(0.3)
    assert _chat_calls(tiers) == expected  # no late probe beyond what the replay counts
    return outcomes


def test_quality_replay_matches_the_gateway(start_gateway: GatewayStarter, tiers: dict[str, ThreadedTier],
                                            tmp_path: Path) -> None:
    outcomes = _replayed_and_live(start_gateway, tiers, tmp_path, SETTINGS)
    paths = [o.path() for o in outcomes]
    assert {"device", "device>edge", "device~>edge"} <= set(paths)  # kept, floor-escalated, bypassed
    assert any(o.bypassed for o in outcomes[:30]) and paths[-1] == "device"  # bypass, then drift followed


def test_quality_replay_matches_the_gateway_during_and_after_the_warm_up(
        start_gateway: GatewayStarter, tiers: dict[str, ThreadedTier], tmp_path: Path) -> None:
    outcomes = _replayed_and_live(start_gateway, tiers, tmp_path, WARMUP_ONLY)
    probed = {tier: [i for i, o in enumerate(outcomes) if o.probes and o.served == tier] for tier in ("device", "edge")}
    kept = {tier: [i for i, o in enumerate(outcomes) if o.kept and o.served == tier] for tier in ("device", "edge")}
    # Each tier's first 6 kept answers were probed (its warm-up), and no other request was.
    assert {t: len(p) for t, p in probed.items()} == {"device": 6, "edge": 6}
    assert all(probed[t] == kept[t][:6] for t in probed)
    assert sum(bool(o.probes) for o in outcomes) == 12
    # Then the curves decide: 6 probes never vouch for 0.9 at level 0.9, so both lower tiers
    # are bypassed, and at probe rate 0 nothing probes them again.
    last = max(max(p) for p in probed.values())
    assert {o.path() for o in outcomes[last + 1:]} == {"device~>edge~>cloud"}



def _verified(outcomes: list[Outcome]) -> dict[str, list[int]]:
    return {tier: [i for i, o in enumerate(outcomes) if o.verified == tier] for tier in ("device", "edge")}


def test_quality_replay_matches_the_gateway_verifying_warm_up_answers(
        start_gateway: GatewayStarter, tiers: dict[str, ThreadedTier], tmp_path: Path) -> None:
    outcomes = _replayed_and_live(start_gateway, tiers, tmp_path, VERIFY)
    paths = [o.path() for o in outcomes]
    # Verified on the device, after a rule escalation on the edge, and on the edge once the device is bypassed.
    assert {"device?>cloud", "device>edge?>cloud", "device~>edge?>cloud"} <= set(paths)
    assert {t: len(v) for t, v in _verified(outcomes).items()} == {"device": 6, "edge": 6}  # each tier's warm-up
    # The cloud answered each verified request itself: no probe call to it (a bypassed device is still asked).
    assert all(o.served == "cloud" and "cloud" not in o.probes for o in outcomes if o.verified)
    assert paths[-1] == "device"  # bypassed, probed at rate 1.0, and back once right and sure again


def test_quality_replay_matches_the_gateway_verifying_warm_up_answers_then_none(
        start_gateway: GatewayStarter, tiers: dict[str, ThreadedTier], tmp_path: Path) -> None:
    outcomes = _replayed_and_live(start_gateway, tiers, tmp_path, VERIFY_WARMUP_ONLY)
    verified = _verified(outcomes)
    assert {t: len(v) for t, v in verified.items()} == {"device": 6, "edge": 6}
    # At probe rate 0 the verifications are the only probes: no probe call at all. Then the curves decide:
    # 6 pairs never vouch for 0.9, so both lower tiers are bypassed and nothing asks them again.
    assert not any(o.probes for o in outcomes)
    last = max(max(v) for v in verified.values())
    assert {o.path() for o in outcomes[last + 1:]} == {"device~>edge~>cloud"}
