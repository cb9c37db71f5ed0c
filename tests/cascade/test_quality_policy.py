"""The quality floor (`recserve/quality`): competence learned online from probes to the top tier."""

from __future__ import annotations

import random
import time

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.competence import fit_competence
from tests.conftest import GatewayStarter, RunningGateway, ask
from tests.support.scripted_tier import ThreadedTier

QUALITY = {"policy": {"default": "quality",
                      "recserve": {"beta": {"device": 0.01, "edge": 0.01}},
                      # A lower confidence level than the default: these tests are about how the floor
                      # learns, from a few dozen probes, not about how sure it is.
                      "quality": {"probe_rate": 1.0, "target": 0.9, "min_probes": 10, "window": 40,
                                  "confidence_level": 0.75}}}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1, allow_nan=False), st.booleans()), min_size=1, max_size=60))
def test_competence_curve_is_monotone_and_a_probability(pairs: list[tuple[float, bool]]) -> None:
    curve = fit_competence(pairs)
    assert curve is not None and curve.probes == len(pairs)
    for level in (0.5, 0.9, 0.99):
        levels = curve.levels(level)
        assert list(levels) == sorted(levels)
        # Above 0.5 a bound never reaches 1: no finite evidence makes agreement certain.
        assert all(0 <= value < 1 if level > 0.5 else 0 <= value <= 1 for value in levels)
    # A higher confidence level is never less conservative.
    assert all(a >= b - 1e-12 for a, b in zip(curve.levels(0.8), curve.levels(0.95), strict=True))
    assert list(curve.starts) == sorted(set(curve.starts))


def test_the_floor_is_a_lower_confidence_bound_not_a_point_estimate() -> None:
    agreeing = fit_competence([(0.8, True)] * 14)
    assert agreeing is not None and agreeing.best(0.9) < 0.9  # 14 of 14 is not yet 0.9 with 90 % confidence
    more = fit_competence([(0.8, True)] * 15)
    assert more is not None and more.best(0.9) >= 0.9
    assert more.best(0.97) < 0.9  # 97 % confidence asks for more evidence (32 probes)
    mostly = fit_competence([(0.8, True)] * 190 + [(0.8, False)] * 10)  # 95 % agreed
    assert mostly is not None and 0.9 < mostly.best(0.9) < 0.95


def test_one_lucky_probe_does_not_vouch_for_a_tier() -> None:
    curve = fit_competence([(0.5, False)] * 10 + [(0.9, True)])
    assert curve is not None and curve.best() < 0.9


@pytest.fixture
def quality(start_gateway: GatewayStarter) -> RunningGateway:
    return start_gateway(QUALITY)


def probes_settle(tiers: dict[str, ThreadedTier], timeout_s: float = 10) -> None:
    """Probes run in the background: wait (bounded) until no tier has received anything for 150 ms."""
    deadline = time.monotonic() + timeout_s
    seen = -1
    while time.monotonic() < deadline:
        count = sum(len(tier.requests) for tier in tiers.values())
        if count == seen:
            return
        seen = count
        time.sleep(0.15)


def prompt(i: int, device_answer: str, confidence: float) -> str:
    return (f"q{i} [device:answer={device_answer}][device:{confidence}][edge:answer=yes][edge:0.99]"
            f"[cloud:answer=yes][cloud:0.99]")


def test_learns_to_keep_only_the_confident_answers(quality: RunningGateway, tiers: dict[str, ThreadedTier]) -> None:
    rng = random.Random(3)
    with quality.sdk() as sdk:
        for i in range(40):  # the device is right exactly when its confidence is above 0.8
            confidence = round(rng.uniform(0.3, 0.99), 3)
            ask(sdk, prompt(i, "yes" if confidence > 0.8 else "no", confidence))
        probes_settle(tiers)
        _, sure = ask(sdk, prompt(100, "yes", 0.95))
        _, unsure = ask(sdk, prompt(101, "no", 0.7))
    assert sure["x-recserve-path"] == "device"
    assert float(sure["x-recserve-quality-estimate"]) >= 0.9
    # The window rule alone keeps 0.7 (beta 0.01); the learned floor sends it up.
    assert unsure["x-recserve-path"] == "device>edge"


def test_bypasses_a_device_that_is_always_wrong_and_follows_drift(quality: RunningGateway,
                                                                  tiers: dict[str, ThreadedTier]) -> None:
    with quality.sdk() as sdk:
        paths: list[str] = []
        for i in range(30):
            _, headers = ask(sdk, prompt(i, "no", 0.6))
            paths.append(headers["x-recserve-path"])
            probes_settle(tiers)
        # Warm-up (default warmup_answer "top"): the device's first answers are verified by the cloud,
        # which answers instead; once judged, the device is bypassed and the edge warms up likewise.
        assert paths[:10] == ["device?>cloud"] * 10
        assert paths[-1] == "device~>edge"  # bypassed: not even asked
        first_bypass = next(i for i, path in enumerate(paths) if path.startswith("device~"))
        assert first_bypass <= 12
        asked_before = len(tiers["device"].requests)
        ask(sdk, prompt(50, "no", 0.6))
        probes_settle(tiers)
        assert len(tiers["device"].requests) == asked_before + 1  # the probe still samples it
        # Drift: the device becomes good (and sure of itself); probes notice within a bounded count.
        recovered_after: int | None = None
        for i in range(40):
            _, headers = ask(sdk, prompt(200 + i, "yes", 0.95))
            probes_settle(tiers)
            if headers["x-recserve-path"] == "device":
                recovered_after = i
                break
        assert recovered_after is not None and recovered_after <= 15


def test_quality_is_a_listed_model_and_plain_rule_before_probes(start_gateway: GatewayStarter) -> None:
    gateway = start_gateway({"policy": {"quality": {"probe_rate": 0.0, "warmup_answer": "kept"}}})
    with gateway.sdk() as sdk:
        assert "recserve/quality" in [m.id for m in sdk.models.list()]
        _, headers = ask(sdk, "x [device:0.3]", model="recserve/quality")
    assert headers["x-recserve-path"] == "device" and headers["x-recserve-quality-estimate"] == "none"




def test_admin_policy_shows_the_quality_floor(start_gateway: GatewayStarter, tiers: dict[str, ThreadedTier],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSERVE_TEST_ADMIN_KEY", "admin-secret")
    gateway = start_gateway({**QUALITY, "auth": {"admin_key_env": "RECSERVE_TEST_ADMIN_KEY"}})
    with gateway.sdk() as sdk:
        for i in range(14):
            ask(sdk, prompt(i, "no", 0.6))
            probes_settle(tiers)
    with httpx.Client(base_url=gateway.root, headers={"authorization": "Bearer admin-secret"}) as admin:
        view = admin.get("/admin/policy").json()
    device = next(t for t in view["tiers"] if t["name"] == "device")
    generation = device["quality"]["generation"]
    assert generation["bypassed"] is True and generation["enough"] is True
    assert generation["probes"] >= 10 and generation["best_agreement"] < 0.9
