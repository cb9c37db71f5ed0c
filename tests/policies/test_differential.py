"""Differential test of the rule: 1,000 requests with seeded random device/edge confidences; the
tier that served each must equal a direct transcription of the rule from DESIGN.md."""

from __future__ import annotations

import math
import random

import numpy as np

from tests.conftest import BOTH_BACKENDS, GatewayStarter

REQUESTS = 1000
BETA = {"device": 0.3, "edge": 0.2}
WINDOW = 64  # small enough that FIFO trimming happens many times
TIERS = ("device", "edge", "cloud")


# Both backends (plain HTTP and litellm) must pass every test here.
pytestmark = BOTH_BACKENDS


def transcribed_rule(confidences: list[dict[str, float]], tasks: list[str]) -> list[str]:
    """The rule exactly as DESIGN.md writes it, with numpy doing the percentile."""
    windows: dict[tuple[str, str], list[float]] = {}
    served: list[str] = []
    for conf, task in zip(confidences, tasks, strict=True):
        for i, tier in enumerate(TIERS):
            if i == len(TIERS) - 1:
                served.append(tier)
                break
            c = conf[tier]
            window = windows.setdefault((tier, task), [])
            window.append(c)
            while len(window) > WINDOW:
                window.pop(0)
            if len(window) > 1 and c < np.percentile(window, 100 * BETA[tier]):
                continue
            served.append(tier)
            break
    return served


def test_served_tiers_equal_the_transcribed_rule(start_gateway: GatewayStarter) -> None:
    rng = random.Random(20250516)
    # The gateway computes exp(mean logprob) of a one-token answer whose logprob is ln(p).
    # Some values are rounded so that ties (equal to the threshold: kept, strict <) occur too.
    draws = [{t: rng.choice([rng.uniform(0.001, 1.0), round(rng.uniform(0.01, 1.0), 2)]) for t in TIERS[:-1]}
             for _ in range(REQUESTS)]
    confidences = [{t: math.exp(math.log(p)) for t, p in d.items()} for d in draws]
    tasks = [rng.choice(["generation", "classification"]) for _ in range(REQUESTS)]
    expected = transcribed_rule(confidences, tasks)

    gateway = start_gateway({"policy": {"recserve": {"beta": BETA, "window": WINDOW}}})
    served: list[str] = []
    with gateway.sdk() as sdk:
        for draw, task in zip(draws, tasks, strict=True):
            raw = sdk.chat.completions.with_raw_response.create(
                model="recserve",
                messages=[{"role": "user", "content": f"q [device:{draw['device']!r}][edge:{draw['edge']!r}]"}],
                extra_headers={"x-recserve-task": task})
            served.append(raw.headers["x-recserve-tier"])

    matches = sum(a == b for a, b in zip(served, expected, strict=True))
    print(f"differential: {matches}/{REQUESTS} served tiers match the transcribed rule; "
          f"device {served.count('device')}, edge {served.count('edge')}, cloud {served.count('cloud')}")
    assert matches == REQUESTS
    # The rule's steady state: about beta_device of requests leave the device, and the cloud sees
    # about beta_device * beta_edge of them; make sure the test exercised every tier.
    assert served.count("edge") > 50 and served.count("cloud") > 10
