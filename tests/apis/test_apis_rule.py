"""The Responses and Messages APIs decide exactly as chat does: 300 requests with seeded scripted
confidences each, served at the tiers a direct transcription of the rule picks."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import anthropic
import pytest

from tests.conftest import GatewayStarter, RunningGateway
from tests.policies.test_differential import BETA, TIERS, WINDOW, transcribed_rule

REQUESTS = 300


def _ask_responses(gateway: RunningGateway) -> Callable[[str, str], str]:
    sdk = gateway.sdk()

    def ask(prompt: str, task: str) -> str:
        raw = sdk.responses.with_raw_response.create(model="recserve", input=prompt,
                                                     extra_headers={"x-recserve-task": task})
        return raw.headers["x-recserve-tier"]

    return ask


def _ask_messages(gateway: RunningGateway) -> Callable[[str, str], str]:
    sdk = anthropic.Anthropic(base_url=gateway.root, api_key="unused", max_retries=0)

    def ask(prompt: str, task: str) -> str:
        raw = sdk.messages.with_raw_response.create(model="recserve", max_tokens=16,
                                                    messages=[{"role": "user", "content": prompt}],
                                                    extra_headers={"x-recserve-task": task})
        return raw.headers["x-recserve-tier"]

    return ask


@pytest.mark.parametrize("client", [_ask_responses, _ask_messages], ids=["responses", "messages"])
def test_served_tiers_equal_the_transcribed_rule(start_gateway: GatewayStarter,
                                                 client: Callable[[RunningGateway], Callable[[str, str], str]]) -> None:
    rng = random.Random(20250517)
    draws = [{t: rng.choice([rng.uniform(0.001, 1.0), round(rng.uniform(0.01, 1.0), 2)]) for t in TIERS[:-1]}
             for _ in range(REQUESTS)]
    tasks = [rng.choice(["generation", "classification"]) for _ in range(REQUESTS)]
    # The gateway's confidence for a one-token answer is exp(ln p): the rule sees the same number.
    expected = transcribed_rule([{t: math.exp(math.log(p)) for t, p in d.items()} for d in draws], tasks)
    ask = client(start_gateway({"policy": {"recserve": {"beta": BETA, "window": WINDOW}}}))
    served = [ask(f"q [device:{d['device']!r}][edge:{d['edge']!r}]", task)
              for d, task in zip(draws, tasks, strict=True)]
    assert served == expected
    assert served.count("edge") > 20 and served.count("cloud") > 3
