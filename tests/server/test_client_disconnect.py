"""A client that leaves before the answer starts cancels the cascade: the tier call is dropped and
no further tier is asked on its behalf."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.conftest import GatewayStarter
from tests.support.scripted_tier import ThreadedTier

# The device answers after 1.5 s with a 500, which would send the request on to the edge.
PROMPT = "x [device:sleep=1.5][device:status=500]"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_client_leaving_before_the_first_byte_cancels_the_cascade(
        start_gateway: GatewayStarter, tiers: dict[str, ThreadedTier], stream: bool) -> None:
    gateway = start_gateway()
    body = {"model": "recserve", "messages": [{"role": "user", "content": PROMPT}], "stream": stream}
    with httpx.Client(base_url=gateway.root, timeout=0.3) as http, pytest.raises(httpx.ReadTimeout):
        http.post("/v1/chat/completions", json=body)  # gives up and closes its connection
    time.sleep(2.5)  # past the device's answer: without cancellation the edge would be asked now
    assert len(tiers["device"].requests) == 1
    assert tiers["edge"].requests == [] and tiers["cloud"].requests == []
    # The gateway is unharmed: the next request is answered.
    with httpx.Client(base_url=gateway.root, timeout=10) as http:
        assert http.post("/v1/chat/completions", json={**body, "stream": False,
                                                       "messages": [{"role": "user", "content": "hi"}]}
                         ).status_code == 200


def test_a_client_that_stays_gets_the_escalated_answer(start_gateway: GatewayStarter,
                                                        tiers: dict[str, ThreadedTier]) -> None:
    gateway = start_gateway()
    body = {"model": "recserve", "messages": [{"role": "user", "content": "x [device:sleep=0.2][device:status=500]"}]}
    with httpx.Client(base_url=gateway.root, timeout=10) as http:
        response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    assert response.headers["x-recserve-path"] == "device!>edge"
