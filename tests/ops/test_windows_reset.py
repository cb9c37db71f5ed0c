"""POST /admin/windows/reset empties the quality policy's windows too — its sliding windows and what it
learned from probes — in the scope asked for, with the in-process store and with Redis shared by two
replicas (real uvicorn gateways, scripted tiers, the OpenAI SDK, a real redis-server)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import openai
import pytest
import redis

from tests.cascade.test_quality_policy import probes_settle, prompt
from tests.conftest import ask
from tests.support.scripted_tier import ThreadedTier

from .conftest import FileGateway, FileGatewayStarter

# Every kept answer is probed (no warm-up phase): 4 probes that all disagree bypass the device.
QUALITY = {"policy": {"default": "quality", "recserve": {"beta": {"device": 0.01, "edge": 0.01}},
                      "quality": {"probe_rate": 1.0, "target": 0.9, "min_probes": 4, "window": 40,
                                  "warmup_probes": 0}}}


def _quality(gateway: FileGateway, tier: str, task: str) -> dict[str, Any]:
    with gateway.admin() as http:
        view = http.get("/admin/policy").json()
    entry: dict[str, Any] = next(t for t in view["tiers"] if t["name"] == tier)["quality"][task]
    return entry


def _ask(sdk: openai.OpenAI, i: int, task: str) -> httpx.Headers:
    # The device answers "no", the upper tiers "yes": every probe of the device disagrees.
    _, headers = ask(sdk, prompt(i, "no", 0.6), max_tokens=2 if task == "classification" else 16)
    assert headers["x-recserve-task"] == task
    return headers


def _teach(sdk: openai.OpenAI, tiers: dict[str, ThreadedTier], task: str, start: int) -> None:
    for i in range(start, start + 5):
        _ask(sdk, i, task)
        probes_settle(tiers)


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_reset_empties_the_quality_policys_windows_and_probes_in_scope(
        store: str, start_file_gateway: FileGatewayStarter, tiers: dict[str, ThreadedTier],
        request: pytest.FixtureRequest) -> None:
    overrides: dict[str, Any] = {**QUALITY, "windows": {"store": "memory"}}
    namespace = f"reset{uuid.uuid4().hex[:6]}"
    if store == "redis":
        server = request.getfixturevalue("redis_server")
        overrides["windows"] = {"store": "redis", "redis_url": server.url, "namespace": namespace}
    gateway = start_file_gateway(overrides)
    replica = start_file_gateway(overrides) if store == "redis" else gateway  # shares the Redis windows
    generation = f"{{{namespace}:quality:device:generation}}:probes"
    classification = f"{{{namespace}:quality:device:classification}}:probes"

    with gateway.sdk() as sdk:
        _teach(sdk, tiers, "generation", 0)
        _teach(sdk, tiers, "classification", 10)
        for task in ("generation", "classification"):
            learned = _quality(replica, "device", task)
            assert learned["probes"] == 5 and learned["bypassed"] is True, (task, learned)
        assert _ask(sdk, 20, "generation")["x-recserve-path"] == "device~>edge"
        probes_settle(tiers)  # a bypassed tier is still probed
        if store == "redis":
            with redis.Redis.from_url(server.url) as client:
                assert client.llen(generation) == 6 and client.llen(classification) == 5

        with gateway.admin() as http:
            one = http.post("/admin/windows/reset", params={"tier": "device", "task": "generation"})
        assert one.status_code == 200
        assert one.json() == {"status": "reset", "windows": ["device/generation"], "probes": ["device/generation"]}

        for seen_by in {id(g): g for g in (gateway, replica)}.values():
            forgot = _quality(seen_by, "device", "generation")
            assert forgot["probes"] == 0 and forgot["bypassed"] is False, forgot
            kept = _quality(seen_by, "device", "classification")  # out of scope: untouched
            assert kept["probes"] == 5 and kept["bypassed"] is True, kept
        if store == "redis":
            with redis.Redis.from_url(server.url) as client:
                # The pairs are gone; the version moved on (never restarted, see probes_redis).
                assert client.exists(generation) == 0 and client.llen(classification) == 5

        # The device is asked again, and the quality policy's own window starts cold: one value, no threshold.
        headers = _ask(sdk, 30, "generation")
        assert headers["x-recserve-path"] == "device"
        assert headers["x-recserve-threshold"] == "none"
        probes_settle(tiers)
        assert _ask(sdk, 31, "classification")["x-recserve-path"] == "device~>edge"
        probes_settle(tiers)

        with gateway.admin() as http:
            everything = http.post("/admin/windows/reset")
        assert everything.json() == {"status": "reset", "windows": "all", "probes": "all"}
        for seen_by in {id(g): g for g in (gateway, replica)}.values():
            for task in ("generation", "classification"):
                assert _quality(seen_by, "device", task)["probes"] == 0, (task, seen_by.root)
        if store == "redis":
            with redis.Redis.from_url(server.url) as client:
                assert client.exists(generation, classification) == 0
        assert _ask(sdk, 40, "classification")["x-recserve-path"] == "device"
