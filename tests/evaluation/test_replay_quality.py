"""The quality policy in replay: seeded probes simulated from the recorded top-tier answers, probe traffic
counted in the communication, the floor learned on synthetic traces, and the mixed stream."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import pytest

from gateway.evaluation.replay import Request, TierAnswer, cascade, requests_from_rows, summarise
from gateway.evaluation.replay_quality import QualityOptions, SimulatedProber, quality_policy, run_quality
from gateway.evaluation.report import write_report
from gateway.evaluation.report_quality import envelope_points, envelope_verdict
from gateway.evaluation.sweeps import interleave, replay_mixed

TOKENS = {"device": 10, "edge": 12, "cloud": 14}


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
    policy = quality_policy(0.01, 10000, 0.9)
    outcomes = asyncio.run(cascade(requests, policy, prober=SimulatedProber(policy, 1.0, 0.5, seed=0)))
    assert [(o.served, o.kept, o.probes) for o in outcomes] == [("device", True, ["cloud"])] * 4
    metrics = summarise(requests, outcomes, "quality", {})
    # The path shipped nothing (all kept on the device); each probe shipped the prompt to the cloud once.
    assert metrics["tokens_to"] == {"edge": 0, "cloud": 4 * 14} and metrics["probe_tokens"] == 56
    assert metrics["comm_vs_cloud"] == pytest.approx(1.0) and metrics["probe_calls"] == 4
    assert metrics["bytes_to"]["cloud"] == 4 * 70
    # Rate 0 without warm-up: no probe, no probe traffic; the rule alone decides.
    policy = quality_policy(0.01, 10000, 0.9, QualityOptions(warmup_probes=0))
    silent = asyncio.run(cascade(requests, policy, prober=SimulatedProber(policy, 0.0, 0.5, seed=0)))
    assert all(not o.probes for o in silent)
    assert summarise(requests, silent, "quality", {})["uplink_tokens"] == 0


def test_warm_up_probes_every_kept_answer_until_the_key_holds_enough_then_the_rate_applies() -> None:
    requests = _trace(60, lambda rng: ("yes", round(rng.uniform(0.3, 0.99), 3)))
    policy = quality_policy(0.01, 10000, 0.9, QualityOptions(warmup_probes=7))
    outcomes = asyncio.run(cascade(requests, policy, prober=SimulatedProber(policy, 0.0, 0.5, seed=0)))
    kept = [i for i, o in enumerate(outcomes) if o.kept and o.served == "device"]
    probed = [i for i, o in enumerate(outcomes) if o.probes and o.served == "device"]
    assert len(kept) > 7 and probed == kept[:7]  # the first 7 answers the device kept, then none at rate 0
    assert policy.describe("device", "classification") | {"best_agreement": None} == {
        "probes": 7, "enough": False, "warming_up": False, "best_agreement": None, "target": 0.9, "bypassed": False}
    # The edge warms up on its own key: every answer it kept was probed (it kept fewer than 7 here).
    edge = [o for o in outcomes if o.kept and o.served == "edge"]
    assert edge and all(o.probes == ["cloud"] for o in edge)
    assert policy.describe("edge", "classification")["warming_up"] is True


def test_warm_up_never_shifts_the_rngs_draws() -> None:
    # One draw per lower hop whether warming up or not: after the warm-up, the same hops are sampled.
    requests = _trace(300, lambda rng: ("yes", 0.95))
    runs = []
    for warmup in (0, 5):  # min_probes 100: the curve never decides, so both runs take the same paths
        policy = quality_policy(0.01, 10000, 0.9, QualityOptions(warmup_probes=warmup, min_probes=100))
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
    assert not policy.bypassed("device", "classification")


def test_a_device_that_is_always_wrong_is_bypassed_and_still_probed() -> None:
    requests = _trace(400, lambda rng: ("no", round(rng.uniform(0.3, 0.99), 3)))
    options = QualityOptions(seed=2)
    policy = quality_policy(0.3, 10000, 0.9, options)
    outcomes = asyncio.run(cascade(requests, policy, prober=SimulatedProber(policy, 0.1, 0.5, seed=2)))
    assert policy.bypassed("device", "classification")
    first = next(i for i, o in enumerate(outcomes) if o.bypassed)
    assert first < 350  # min_probes (20) probes at 10% of the ~70% the device keeps
    after = outcomes[first:]
    assert all(o.bypassed == ["device"] and "device" not in o.visited for o in after)
    assert {o.path() for o in after} <= {"device~>edge", "device~>edge>cloud"}
    # Bypassed but sampled: its probes ask the device (free: no uplink) and, unless the cloud served, the cloud.
    probed = [o for o in after if "device" in o.probes]
    assert probed and all(o.probes == (["device"] if o.served == "cloud" else ["cloud", "device"]) for o in probed)


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
    policy = quality_policy(0.3, 10000, 0.9, QualityOptions(min_probes=1))
    outcomes = asyncio.run(cascade([request], policy, prober=SimulatedProber(policy, 1.0, 0.5, seed=0)))
    assert outcomes[0].served == "device" and outcomes[0].probes == ["cloud"]
    assert policy.describe("device", "classification")["best_agreement"] == pytest.approx(1 / 3)


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
        betas=(0.3,), other_probe_rates=(0.1,), other_warmups=(0, 5)))
    text = md.read_text(encoding="utf-8")
    assert "## Quality floor" in text and "| mixed | 24 |" in text and "on or above on" in text
    assert "## Warm-up sensitivity" in text and "Goal 1 (mixed stream" in text
    assert warmups.name == "quality_warmup.png" and warmups.read_bytes()[:4] == b"\x89PNG"
    data = json.loads(js.read_text(encoding="utf-8"))
    assert [r["dataset"] for r in data["results"]] == ["bad", "good", "mixed"]
    assert [q["dataset"] for q in data["quality"]] == ["bad", "good", "mixed"]
    assert data["quality_options"]["seed"] == 0 and png.read_bytes()[:4] == b"\x89PNG"
    assert data["quality_options"]["warmup_probes"] == 20  # the config's default: min_probes
    mixed = data["results"][-1]
    assert {e["params"]["warmup_probes"] for e in mixed["policies"] if e["policy"] == "quality"} == {0, 5, 20}
