"""The quality policy in replay: seeded probes simulated from the recorded top-tier answers, probe traffic
counted in the communication, the floor learned on synthetic traces, and the mixed stream."""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gateway.evaluation.replay import Request, TierAnswer, cascade, requests_from_rows, summarise
from gateway.evaluation.replay_quality import QualityOptions, SimulatedProber, quality_policy, run_quality
from gateway.evaluation.report import write_report
from gateway.evaluation.report_envelope import envelope_points, envelope_verdict
from gateway.evaluation.sweeps import interleave, replay_mixed
from policies.base import Scope

TOKENS = {"device": 10, "edge": 12, "cloud": 14}
KEPT = QualityOptions(warmup_answer="kept")  # warm-up answers served and probed in the background


def _row(index: int, tier: str, answer: str, confidence: float, dataset: str = "toy",
         task: str = "classification") -> dict[str, Any]:
    return {"dataset": dataset, "index": index, "tier": tier, "task": task, "labels": ["yes", "no"],
            "gold": "yes", "answer": answer, "confidence": confidence, "prompt_tokens": TOKENS[tier],
            "prompt_bytes": 5 * TOKENS[tier], "latency_s": 0.1}


def _trace(count: int, device: Any, seed: int = 5, dataset: str = "toy") -> list[Request]:
    """`device(rng) -> (answer, confidence)`; the edge is right but unsure, the cloud right and sure."""
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for index in range(count):
        answer, confidence = device(rng)
        rows += [_row(index, "device", answer, confidence, dataset),
                 _row(index, "edge", "yes", round(rng.uniform(0.3, 0.99), 3), dataset),
                 _row(index, "cloud", "yes", 0.99, dataset)]
    return requests_from_rows(rows)


def _right_when_sure(rng: random.Random) -> tuple[str, float]:
    confidence = round(rng.uniform(0.3, 0.99), 3)
    return ("yes" if confidence > 0.8 else "no"), confidence


def test_same_seed_same_result_and_the_seed_matters() -> None:
    requests = _trace(300, _right_when_sure)
    runs = [asyncio.run(run_quality(requests, 0.3, 0.9, 0.1, QualityOptions(seed=seed))) for seed in (7, 7, 8)]
    assert runs[0] == runs[1]
    assert runs[0]["params"]["seed"] == 7 and runs[0]["probe_calls"] > 0
    assert (runs[0]["probe_calls"], runs[0]["accuracy"]) != (runs[2]["probe_calls"], runs[2]["accuracy"])


def test_probe_traffic_is_counted_and_probes_are_sampled_per_hop() -> None:
    # Every answer kept on the device (cold start, then confidences rising: never below the 1% quantile).
    rows = [_row(i, tier, "yes", 0.5 + i / 100) for i in range(4) for tier in ("device", "edge", "cloud")]
    requests = requests_from_rows(rows)
    policy = quality_policy(0.01, 10000, 0.9, KEPT)
    outcomes = asyncio.run(cascade(requests, policy, prober=SimulatedProber(policy, 1.0, 0.5, seed=0)))
    assert [(o.served, o.kept, o.probes) for o in outcomes] == [("device", True, ["cloud"])] * 4
    metrics = summarise(requests, outcomes, "quality", {})
    # The path shipped nothing (all kept on the device); each probe shipped the prompt to the cloud once.
    assert metrics["tokens_to"] == {"edge": 0, "cloud": 4 * 14} and metrics["probe_tokens"] == 56
    assert metrics["comm_vs_cloud"] == pytest.approx(1.0) and metrics["probe_calls"] == 4
    assert metrics["bytes_to"]["cloud"] == 4 * 70
    # Rate 0 without warm-up: no probe, no probe traffic; the rule alone decides.
    policy = quality_policy(0.01, 10000, 0.9, replace(KEPT, warmup_probes=0))
    silent = asyncio.run(cascade(requests, policy, prober=SimulatedProber(policy, 0.0, 0.5, seed=0)))
    assert all(not o.probes for o in silent)
    assert summarise(requests, silent, "quality", {})["uplink_tokens"] == 0


def test_warm_up_probes_every_kept_answer_until_the_key_holds_enough_then_the_rate_applies() -> None:
    requests = _trace(60, lambda rng: ("yes", round(rng.uniform(0.3, 0.99), 3)))
    policy = quality_policy(0.01, 10000, 0.9, replace(KEPT, warmup_probes=7))
    outcomes = asyncio.run(cascade(requests, policy, prober=SimulatedProber(policy, 0.0, 0.5, seed=0)))
    kept = [i for i, o in enumerate(outcomes) if o.kept and o.served == "device"]
    probed = [i for i, o in enumerate(outcomes) if o.probes and o.served == "device"]
    assert len(kept) > 7 and probed == kept[:7]  # the first 7 answers the device kept, then none at rate 0
    assert policy.describe("device", Scope("classification")) | {"best_agreement": None} == {
        "probes": 7, "enough": False, "warming_up": False, "warmup_answer": "kept", "best_agreement": None,
        "target": 0.9, "confidence_level": 0.9, "bypassed": False}
    # The edge warms up on its own key: every answer it kept was probed (it kept fewer than 7 here).
    edge = [o for o in outcomes if o.kept and o.served == "edge"]
    assert edge and all(o.probes == ["cloud"] for o in edge)
    assert policy.describe("edge", Scope("classification"))["warming_up"] is True


def test_warm_up_never_shifts_the_rngs_draws() -> None:
    # One draw per lower hop whether warming up or not: after the warm-up, the same hops are sampled.
    requests = _trace(300, lambda rng: ("yes", 0.95))
    runs = []
    for warmup in (0, 5):  # min_probes 100: the curve never decides, so both runs take the same paths
        policy = quality_policy(0.01, 10000, 0.9, replace(KEPT, warmup_probes=warmup, min_probes=100))
        outcomes = asyncio.run(cascade(requests, policy, prober=SimulatedProber(policy, 0.1, 0.5, seed=3)))
        runs.append([i for i, o in enumerate(outcomes) if o.probes])
    cold, warm = runs
    assert warm[:5] == [0, 1, 2, 3, 4] and len(cold) > 10
    late = max(cold[4], warm[4]) + 1
    assert [i for i in warm if i >= late] == [i for i in cold if i >= late]


def test_warm_up_learns_a_wrong_device_in_about_min_probes_requests() -> None:
    requests = _trace(120, lambda rng: ("no", round(rng.uniform(0.3, 0.99), 3)))
    firsts = []
    for warmup in (0, 20):
        policy = quality_policy(0.3, 10000, 0.9, QualityOptions(warmup_probes=warmup))
        outcomes = asyncio.run(cascade(requests, policy, prober=SimulatedProber(policy, 0.05, 0.5, seed=0)))
        firsts.append(next((i for i, o in enumerate(outcomes) if o.bypassed), None))
    without, with_warmup = firsts
    assert without is None  # 120 requests at 5 %: a handful of probes, never min_probes (20)
    assert with_warmup is not None and with_warmup <= 40  # 20 probes of the ~70 % the device keeps


def test_learns_to_keep_only_the_answers_above_the_devices_competence() -> None:
    # The device is right exactly when its confidence is above 0.8; with β 0.01 the window rule keeps
    # nearly everything, so what the device keeps once learned is the floor's doing.
    requests = _trace(800, _right_when_sure)
    policy = quality_policy(0.01, 10000, 0.9)
    outcomes = asyncio.run(cascade(requests, policy, prober=SimulatedProber(policy, 0.2, 0.5, seed=1)))
    late = list(zip(requests[400:], outcomes[400:], strict=True))
    kept = [r.answers["device"].confidence or 0.0 for r, o in late if o.served == "device"]
    sure = [r for r, _ in late if (r.answers["device"].confidence or 0.0) > 0.8]
    assert kept and sum(c > 0.8 for c in kept) / len(kept) >= 0.95  # what it keeps is (almost) all right
    assert len(kept) >= 0.8 * len(sure)  # and it keeps most of what it could
    metrics = summarise([r for r, _ in late], [o for _, o in late], "quality", {})
    assert metrics["accuracy"] >= 0.97
    assert not policy.bypassed("device", Scope("classification"))


def test_a_device_that_is_always_wrong_is_bypassed_and_still_probed() -> None:
    requests = _trace(400, lambda rng: ("no", round(rng.uniform(0.3, 0.99), 3)))
    policy = quality_policy(0.3, 10000, 0.9, replace(KEPT, seed=2))
    outcomes = asyncio.run(cascade(requests, policy, prober=SimulatedProber(policy, 0.1, 0.5, seed=2)))
    assert policy.bypassed("device", Scope("classification"))
    first = next(i for i, o in enumerate(outcomes) if o.bypassed)
    assert first < 350  # min_probes (20) probes at 10% of the ~70% the device keeps
    after = outcomes[first:]
    assert all(o.bypassed == ["device"] and "device" not in o.visited for o in after)
    assert {o.path() for o in after} <= {"device~>edge", "device~>edge>cloud"}
    # Bypassed but sampled: its probes ask the device (free: no uplink) and, unless the cloud served, the cloud.
    probed = [o for o in after if "device" in o.probes]
    assert probed and all(o.probes == (["device"] if o.served == "cloud" else ["cloud", "device"]) for o in probed)


def _scripted(device: list[tuple[str, float]], cloud: str = "yes", edge: tuple[str, float] = ("yes", 0.9),
              failed_cloud: tuple[int, ...] = ()) -> list[Request]:
    """One request per (device answer, confidence); latencies device 0.1, edge 0.2, cloud 0.5."""
    rows = []
    for index, (answer, confidence) in enumerate(device):
        cloud_row = _row(index, "cloud", cloud, 0.99) | {"latency_s": 0.5}
        if index in failed_cloud:
            cloud_row = {k: v for k, v in cloud_row.items() if k not in {"answer", "confidence"}} | {"error": "500"}
        rows += [_row(index, "device", answer, confidence), _row(index, "edge", *edge) | {"latency_s": 0.2}, cloud_row]
    return requests_from_rows(rows)


def test_top_verifies_warm_up_answers_with_the_top_tier_which_answers_then_the_learned_tier_serves() -> None:
    # The device would keep every answer (β 0.01) and agrees with the cloud. While it warms up (15 probes),
    # each kept answer goes straight to the cloud, which answers; the edge is neither asked nor probed.
    requests = _scripted([("yes", 0.95)] * 19, cloud="yes")
    options = QualityOptions(min_probes=15)  # warmup_probes = min_probes; warmup_answer "top" by default
    assert options.warmup_answer == "top"
    policy = quality_policy(0.01, 10000, 0.9, options)
    outcomes = asyncio.run(cascade(requests, policy, prober=SimulatedProber(policy, 0.0, 0.5, seed=0)))
    assert [o.path() for o in outcomes] == ["device?>cloud"] * 15 + ["device"] * 4
    warm = outcomes[:15]
    assert all(o.served == "cloud" and o.verified == "device" and not o.kept and o.probes == [] for o in warm)
    assert all(o.visited == ["device", "cloud"] for o in warm)  # the edge in between is skipped
    # Learned from the 15 pairs, no probe call: 15 of 15 agreeing puts the agreement's lower bound at
    # level 0.9 just above 0.9, so the device then serves.
    assert policy.describe("device", Scope("classification"))["probes"] == 15
    assert all(o.served == "device" and o.kept and o.verified is None for o in outcomes[15:])
    metrics = summarise(requests[:15], warm, "quality", {})
    # The cloud call is the request's own: uplink like cloud-only, no probe traffic; both tiers' latency.
    assert metrics["tokens_to"] == {"edge": 0, "cloud": 15 * 14} and metrics["comm_vs_cloud"] == pytest.approx(1.0)
    assert "probe_calls" not in metrics and metrics["verified_requests"] == 15
    assert metrics["mean_latency_s"] == pytest.approx(0.6) and metrics["share"]["cloud"] == 1.0


def test_top_serves_the_top_answer_to_a_wrong_device_until_it_is_bypassed() -> None:
    requests = _scripted([("no", 0.95)] * 12, cloud="yes")
    policy = quality_policy(0.01, 10000, 0.9, QualityOptions(min_probes=10))
    outcomes = asyncio.run(cascade(requests, policy, prober=SimulatedProber(policy, 0.0, 0.5, seed=0)))
    # Ten verified (each answered right by the cloud), then the ten disagreements bypass the device and
    # the edge, still learning, is verified in turn.
    assert [o.path() for o in outcomes] == ["device?>cloud"] * 10 + ["device~>edge?>cloud"] * 2
    assert summarise(requests, outcomes, "quality", {})["accuracy"] == 1.0
    assert policy.bypassed("device", Scope("classification"))
    assert policy.describe("edge", Scope("classification"))["probes"] == 2
    assert all(o.probes == [] for o in outcomes)  # rate 0, no bypassed tier warming up: no probe call


def test_top_verifies_the_first_tier_that_keeps_after_a_rule_escalation() -> None:
    # β 0.9 at the device: 0.2 after 0.9 is below the window's quantile, so the rule escalates it.
    requests = _scripted([("yes", 0.9), ("yes", 0.2)])
    policy = quality_policy({"device": 0.9, "edge": 0.01}, 10000, 0.9, QualityOptions(min_probes=10))
    outcomes = asyncio.run(cascade(requests, policy, prober=SimulatedProber(policy, 0.0, 0.5, seed=0)))
    assert [o.path() for o in outcomes] == ["device?>cloud", "device>edge?>cloud"]
    assert outcomes[1].visited == ["device", "edge", "cloud"] and outcomes[1].verified == "edge"
    assert summarise(requests[1:], outcomes[1:], "quality", {})["mean_latency_s"] == pytest.approx(0.8)
    assert [policy.describe(t, Scope("classification"))["probes"] for t in ("device", "edge")] == [1, 1]


def test_top_serves_the_verified_answer_when_the_top_tier_fails() -> None:
    requests = _scripted([("yes", 0.95)] * 2, failed_cloud=(0,))
    policy = quality_policy(0.01, 10000, 0.9, QualityOptions(min_probes=10))
    outcomes = asyncio.run(cascade(requests, policy, prober=SimulatedProber(policy, 0.0, 0.5, seed=0)))
    first = outcomes[0]
    assert (first.served, first.kept, first.path()) == ("device", False, "device?>cloud")  # degraded
    assert first.probes == ["cloud"]  # the prober asks the top tier again (fails again: nothing learned)
    assert outcomes[1].path() == "device?>cloud" and outcomes[1].probes == []
    assert policy.describe("device", Scope("classification"))["probes"] == 1  # the second request's pair only


def test_top_draws_the_rng_once_per_hop_as_kept_does() -> None:
    # Verify hops draw too: after the warm-up (the curve never decides: min_probes 100) both modes take
    # the same paths and sample the same requests.
    requests = _trace(300, lambda rng: ("yes", 0.95))
    runs = {}
    for answer in ("top", "kept"):
        options = QualityOptions(warmup_probes=5, min_probes=100, warmup_answer=answer)
        policy = quality_policy(0.01, 10000, 0.9, options)
        outcomes = asyncio.run(cascade(requests, policy, prober=SimulatedProber(policy, 0.1, 0.5, seed=3)))
        runs[answer] = outcomes
    assert [o.path() for o in runs["top"][:6]] == ["device?>cloud"] * 5 + ["device"]
    assert [o.path() for o in runs["kept"][:5]] == ["device"] * 5  # kept: served, probed in the background
    assert all(o.probes == ["cloud"] for o in runs["kept"][:5]) and all(not o.probes for o in runs["top"][:5])
    assert [(o.path(), o.probes) for o in runs["top"][5:]] == [(o.path(), o.probes) for o in runs["kept"][5:]]
    assert any(o.probes for o in runs["top"][5:])


def test_warm_up_starts_the_measured_pass_learned() -> None:
    requests = _trace(60, lambda rng: ("no", round(rng.uniform(0.3, 0.99), 3)))
    options = QualityOptions(warmup_probes=0)  # without warm-up probing: 60 requests at 10 % learn nothing
    cold = asyncio.run(run_quality(requests, 0.3, 0.9, 0.1, options))
    warm = asyncio.run(run_quality(requests, 0.3, 0.9, 0.1, options, warm=True))
    assert warm["params"]["warmup_requests"] == 400 and cold["params"]["warmup_requests"] == 0
    assert cold["share"]["device"] > 0.5 and warm["share"]["device"] == 0.0
    assert warm["learned"]["device/classification"]["bypassed"] is True


def test_mixed_stream_interleaves_and_shares_the_task_windows() -> None:
    good = _trace(5, lambda rng: ("yes", 0.9), dataset="a")
    bad = _trace(3, lambda rng: ("no", 0.9), dataset="b")
    mixed = interleave([good, bad])
    assert [(r.dataset, r.index) for r in mixed] == [
        ("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2), ("b", 2), ("a", 3), ("a", 4)]
    result = replay_mixed({"a": good, "b": bad}, QualityOptions(targets=(0.9,), betas=(0.3,), other_probe_rates=()))
    assert result["n"] == 8 and result["datasets"] == {"a": 5, "b": 3}
    quality = [e for e in result["policies"] if e["policy"] == "quality"]
    # Both datasets' requests are "classification": one device window and one probe window for both.
    assert set(quality[0]["learned"]) == {"device/classification", "edge/classification"}
    assert set(quality[0]["accuracy_by_dataset"]) == {"a", "b"}


def test_without_answer_text_agreement_is_both_correct() -> None:
    answers = {t: TierAnswer(0.9, t != "device", TOKENS[t], 1, 0.0) for t in ("device", "edge", "cloud")}
    request = Request(0, "classification", answers)
    policy = quality_policy(0.3, 10000, 0.9, replace(KEPT, min_probes=1))
    outcomes = asyncio.run(cascade([request], policy, prober=SimulatedProber(policy, 1.0, 0.5, seed=0)))
    assert outcomes[0].served == "device" and outcomes[0].probes == ["cloud"]
    # One disagreeing probe: the agreement's lower bound is 0.
    assert policy.describe("device", Scope("classification"))["best_agreement"] == 0.0


def _entry(policy: str, comm: float, accuracy: float, **params: Any) -> dict[str, Any]:
    return {"policy": policy, "params": params, "comm_vs_cloud": comm, "accuracy": accuracy}


def test_envelope_is_the_interpolated_pareto_front_with_half_an_example_of_slack() -> None:
    result = {"dataset": "toy", "n": 10, "policies": [
        _entry("casserve", 0.0, 0.3, threshold=0.2), _entry("casserve", 1.0, 0.7, threshold=0.5),
        _entry("recserve", 0.5, 0.4, beta=0.3, window=10), _entry("recserve", 0.8, 0.2, beta=0.5, window=10),
        _entry("cloud-only", 1.0, 0.9)]}  # fixed tiers are not part of the envelope
    assert envelope_points(result) == [(0.0, 0.3), (0.5, 0.4), (1.0, 0.7)]
    curve = [_entry("quality", 0.75, 0.51, target=0.8), _entry("quality", 0.25, 0.35, target=0.9)]
    verdict = envelope_verdict(result, curve)
    # At 0.75 the envelope is 0.55: 0.51 is 0.4 of an example below (within the 0.5 slack); at 0.25 it is 0.35.
    assert verdict["verdict"] is True and verdict["on_or_above"] == 2
    assert verdict["worst_margin_examples"] == pytest.approx(-0.4)
    below = envelope_verdict(result, [_entry("quality", 2.0, 0.64, target=0.9)])  # flat beyond the end: 0.7
    assert below["verdict"] is False and below["worst_margin_examples"] == pytest.approx(-0.6)


def test_report_has_the_quality_tables_and_the_mixed_stream(tmp_path: Path) -> None:
    traces = tmp_path / "traces"
    traces.mkdir()
    for name, device in (("good", lambda rng: ("yes", 0.9)), ("bad", lambda rng: ("no", 0.6))):
        rng = random.Random(1)
        rows = []
        for index in range(12):
            answer, confidence = device(rng)
            rows += [_row(index, "device", answer, confidence, name), _row(index, "edge", "yes", 0.7, name),
                     _row(index, "cloud", "yes", 0.99, name)]
        (traces / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    md, js, png, warmups = write_report(traces, tmp_path / "out", QualityOptions(
        betas=(0.3,), other_probe_rates=(0.1,), other_warmups=(0, 5), other_warmup_answers=("kept",)))
    text = md.read_text(encoding="utf-8")
    assert "## Quality floor" in text and "| mixed | 24 |" in text and "on or above on" in text
    assert "## Warm-up sensitivity" in text and "Share of cloud-only accuracy on the mixed stream" in text
    assert "## Warm-up answer: top vs kept" in text and "warm-up answer top" in text
    assert warmups.name == "quality_warmup.png" and warmups.read_bytes()[:4] == b"\x89PNG"
    data = json.loads(js.read_text(encoding="utf-8"))
    assert [r["dataset"] for r in data["results"]] == ["bad", "good", "mixed"]
    assert [q["dataset"] for q in data["quality"]] == ["bad", "good", "mixed"]
    assert data["quality_options"]["seed"] == 0 and png.read_bytes()[:4] == b"\x89PNG"
    assert data["quality_options"]["warmup_probes"] == 20  # the config's default: min_probes
    mixed = data["results"][-1]
    assert {e["params"]["warmup_probes"] for e in mixed["policies"] if e["policy"] == "quality"} == {0, 5, 20}
    assert {e["params"]["warmup_answer"] for e in mixed["policies"] if e["policy"] == "quality"} == {"top", "kept"}
    comparison = data["warmup_answer"][-1]
    assert comparison["dataset"] == "mixed" and comparison["top"]["envelope"]["points"] == 6
    # Same answers learned from, but "top" serves the cloud's answer while the device warms up.
    assert comparison["top"]["accuracy"] >= comparison["kept"]["accuracy"]
    assert comparison["top"]["verified_requests"] > 0 and comparison["kept"]["verified_requests"] == 0
