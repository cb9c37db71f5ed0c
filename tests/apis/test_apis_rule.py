"""The Responses and Messages APIs decide exactly as chat does: 300 requests with seeded scripted
confidences each, served at the tiers a direct transcription of the rule picks."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import anthropic
import pytest

from tests.conftest import GatewayStarter, RunningGateway
from tests.policies.test_differential import BETA, TIERS, WINDOW, transcribed_rule

REQUESTS = 300
Asker = Callable[[str, str], str]  # (prompt, task) -> the tier that served it


@contextmanager
def _ask_responses(gateway: RunningGateway) -> Iterator[Asker]:
    with gateway.sdk() as sdk:
        def ask(prompt: str, task: str) -> str:
            raw = sdk.responses.with_raw_response.create(model="recserve", input=prompt,
                                                         extra_headers={"x-recserve-task": task})
            return raw.headers["x-recserve-tier"]

        yield ask


@contextmanager
def _ask_messages(gateway: RunningGateway) -> Iterator[Asker]:
    with anthropic.Anthropic(base_url=gateway.root, api_key="unused", max_retries=0) as sdk:
        def ask(prompt: str, task: str) -> str:
            raw = sdk.messages.with_raw_response.create(model="recserve", max_tokens=16,
                                                        messages=[{"role": "user", "content": prompt}],
                                                        extra_headers={"x-recserve-task": task})
            return raw.headers["x-recserve-tier"]

        yield ask


@pytest.mark.parametrize("client", [_ask_responses, _ask_messages], ids=["responses", "messages"])
def test_served_tiers_equal_the_transcribed_rule(
        start_gateway: GatewayStarter, client: Callable[[RunningGateway], AbstractContextManager[Asker]]) -> None:
    rng = random.Random(20250517)
    draws = [{t: rng.choice([rng.uniform(0.001, 1.0), round(rng.uniform(0.01, 1.0), 2)]) for t in TIERS[:-1]}
             for _ in range(REQUESTS)]
    tasks = [rng.choice(["generation", "classification"]) for _ in range(REQUESTS)]
    # The gateway's confidence for a one-token answer is exp(ln p): the rule sees the same number.
    expected = transcribed_rule([{t: math.exp(math.log(p)) for t, p in d.items()} for d in draws], tasks)
    with client(start_gateway({"policy": {"recserve": {"beta": BETA, "window": WINDOW}}})) as ask:
        served = [ask(f"q [device:{d['device']!r}][edge:{d['edge']!r}]", task)
                  for d, task in zip(draws, tasks, strict=True)]
    assert served == expected
    assert served.count("edge") > 20 and served.count("cloud") > 3
