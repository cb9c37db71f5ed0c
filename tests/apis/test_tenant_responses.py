"""Stored responses belong to the tenant that stored them. Another tenant's GET, continuation
(`previous_response_id`) and DELETE of one get exactly the 404 of an id nobody stored — the same
status and the same bytes — with the in-process store (one gateway) and with Redis (two gateway
processes on one redis-server), driven by the official openai SDK; a tenant's own keys (a group) and
its own replicas share them."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import redis

from tests.support.redis_procs import RedisServer
from tests.support.scripted_tier import ThreadedTier
from tests.support.tenancy import BOB_KEY, SECRETS, TEAM_A, TEAM_A_KEYS, Replicas, bob_tenant, replicas, tenancy_config

NAMESPACE = "tenant-responses"
ALICE, ALEX = TEAM_A_KEYS  # two keys of one group: one tenant


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@pytest.fixture
def gateways(store: str, tiers: dict[str, ThreadedTier], redis_server: RedisServer,
             tmp_path: Path) -> Iterator[Replicas]:
    """memory: one gateway (its store is its own); redis: two gateway processes sharing one Redis."""
    windows = {"store": store, "redis_url": redis_server.url, "namespace": NAMESPACE}
    with replicas(tenancy_config(tiers, windows), tmp_path, 2 if store == "redis" else 1) as running:
        yield running


def refusal(call: Callable[[], Any]) -> tuple[int, bytes]:
    """The status and exact body of the 404 the SDK raises for `call`."""
    with pytest.raises(openai.NotFoundError) as caught:
        call()
    return caught.value.response.status_code, caught.value.response.content


def test_another_tenant_gets_the_404_of_an_id_nobody_stored(gateways: Replicas, store: str,
                                                             tiers: dict[str, ThreadedTier],
                                                             redis_server: RedisServer) -> None:
    first, last = 0, len(gateways.gateways) - 1
    with gateways.sdk(first, ALICE) as alice, gateways.sdk(last, ALEX) as alex, \
            gateways.sdk(last, BOB_KEY) as bob:
        stored = alice.responses.create(model="recserve", input="my number is 42")

        def bob_reads() -> tuple[int, bytes]:
            return refusal(lambda: bob.responses.retrieve(stored.id))

        def bob_continues() -> tuple[int, bytes]:
            return refusal(lambda: bob.responses.create(model="recserve", input="what is my number?",
                                                        previous_response_id=stored.id))

        def bob_deletes() -> tuple[int, bytes]:
            return refusal(lambda: bob.responses.delete(stored.id))

        # Bob, another tenant, on the other replica: 404 for each, and the record is untouched.
        asked = len(tiers["device"].requests)
        across = {"read": bob_reads(), "continue": bob_continues(), "delete": bob_deletes()}
        assert all(status == 404 for status, _ in across.values())
        assert b"previous_response_not_found" in across["continue"][1]
        assert len(tiers["device"].requests) == asked  # Bob's continuation reached no tier
        # Alex, Alice's teammate (same group, same tenant), reads and continues it on the other replica.
        assert alex.responses.retrieve(stored.id).output_text == stored.output_text
        continued = alex.responses.create(model="recserve", input="what is my number?",
                                          previous_response_id=stored.id)
        assert tiers["device"].requests[-1].json["messages"][0] == {"role": "user", "content": "my number is 42"}
        lookups = timed_lookups(bob, stored.id)
        # Now nobody has it: the answers Bob got are byte for byte those of an id that does not exist.
        assert alice.responses.with_raw_response.delete(stored.id).http_response.json()["deleted"] is True
        gone = {"read": bob_reads(), "continue": bob_continues(), "delete": bob_deletes()}
        assert gone == across
        assert refusal(lambda: alex.responses.retrieve(stored.id)) == across["read"]
        assert alex.responses.retrieve(continued.id).id == continued.id  # its own other record stays
    print(f"\n{store}: GET of another tenant's response {lookups[0] * 1e3:.2f} ms, of an id never stored "
          f"{lookups[1] * 1e3:.2f} ms (medians of {LOOKUPS}, interleaved; not asserted)")
    if store == "redis":
        records = [k.decode() for k in redis.Redis.from_url(redis_server.url).keys(f"{NAMESPACE}:response:*")]
        owners = {key.removeprefix(f"{NAMESPACE}:response:").split("~", 1)[0] for key in records}
        assert owners == {TEAM_A}, records  # kept under the tenant's name...
        assert not any(secret in key for key in records for secret in SECRETS)  # ...never under a key
    assert not any(secret in gateways.logs() for secret in SECRETS)
    assert bob_tenant(NAMESPACE).startswith("key-")


LOOKUPS = 60


def timed_lookups(sdk: openai.OpenAI, response_id: str) -> tuple[float, float]:
    """Median seconds of a refused GET of `response_id` and of an id of the same shape nobody stored,
    interleaved on one connection (printed; tests never assert timings)."""
    never_stored = response_id[:5] + "0" * (len(response_id) - 5)
    times: dict[str, list[float]] = {response_id: [], never_stored: []}
    for _ in range(LOOKUPS):
        for wanted, spent in times.items():
            started = time.perf_counter()
            with pytest.raises(openai.NotFoundError):
                sdk.responses.retrieve(wanted)
            spent.append(time.perf_counter() - started)
    return statistics.median(times[response_id]), statistics.median(times[never_stored])
