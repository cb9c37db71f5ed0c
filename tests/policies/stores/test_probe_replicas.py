"""Gateway replicas on one Redis share the quality policy's probes, and a Redis outage while probing
fails no request (real uvicorn gateways, scripted tiers, real redis-server, the OpenAI SDK)."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
import redis

from tests.cascade.test_quality_policy import probes_settle, prompt
from tests.cascade.test_quality_probes import ADMIN, ADMIN_ENV, device_quality, probes_of, quality_config, scrape
from tests.cascade.test_streaming import stream, text_of
from tests.conftest import GatewayStarter, RunningGateway, ask
from tests.support.redis_procs import RedisServer
from tests.support.scripted_tier import ThreadedTier

from .conftest import ServerFactory


@pytest.fixture
def admin_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ADMIN_ENV, "probe-admin")


def _replica(start_gateway: GatewayStarter, server: RedisServer, namespace: str) -> RunningGateway:
    return start_gateway(quality_config(windows={"store": "redis", "redis_url": server.url,
                                                 "namespace": namespace}))


def test_probes_through_one_replica_change_the_other_replicas_decisions(
        start_gateway: GatewayStarter, redis_server: RedisServer, tiers: dict[str, ThreadedTier],
        admin_key: None) -> None:
    namespace = f"pr{uuid.uuid4().hex[:6]}"
    a, b = _replica(start_gateway, redis_server, namespace), _replica(start_gateway, redis_server, namespace)
    assert device_quality(b.root)["probes"] == 0
    with a.sdk() as sdk:
        for i in range(12):  # the device is always wrong; min_probes is 10
            ask(sdk, prompt(i, "no", 0.6))
            probes_settle(tiers)
    with redis.Redis.from_url(redis_server.url) as client:
        assert client.llen(f"{{{namespace}:quality:device:generation}}:probes") == 12
    assert probes_of(scrape(b.root), "disagreed") == 0  # B probed nothing itself...
    learned = device_quality(b.root)
    assert learned["probes"] == 12 and learned["bypassed"] is True  # ...yet knows what A learned
    with b.sdk() as sdk:
        _, headers = ask(sdk, prompt(20, "no", 0.6))
    assert headers["x-recserve-path"] == "device~>edge"


def test_a_replica_picks_up_shared_probes_on_its_own(start_gateway: GatewayStarter, redis_server: RedisServer,
                                                     tiers: dict[str, ThreadedTier], admin_key: None) -> None:
    """Without an admin read: B's decisions re-read the shared probes in the background (≤ 0.2 s old)."""
    namespace = f"pr{uuid.uuid4().hex[:6]}"
    a, b = _replica(start_gateway, redis_server, namespace), _replica(start_gateway, redis_server, namespace)
    with a.sdk() as sdk:
        for i in range(12):
            ask(sdk, prompt(i, "no", 0.6))
            probes_settle(tiers)
    paths = []
    with b.sdk() as sdk:
        for i in range(5):
            _, headers = ask(sdk, prompt(30 + i, "no", 0.6))
            paths.append(headers["x-recserve-path"])
            time.sleep(0.3)
    assert paths[-1] == "device~>edge" and paths.count("device") <= 1


@pytest.fixture
def outage_redis(redis_factory: ServerFactory) -> RedisServer:
    return redis_factory()  # the test stops it


def test_a_redis_outage_while_probing_fails_no_request(start_gateway: GatewayStarter, outage_redis: RedisServer,
                                                       tiers: dict[str, ThreadedTier], admin_key: None) -> None:
    gateway = _replica(start_gateway, outage_redis, "outage")
    windows: list[str | None] = []
    with gateway.sdk() as sdk:
        for i in range(4):
            _, headers = ask(sdk, prompt(i, "no", 0.6))
            windows.append(headers.get("x-recserve-window"))
            probes_settle(tiers)
        assert device_quality(gateway.root)["probes"] == 4
        outage_redis.stop()
        for i in range(4, 12):  # plain and streamed, each kept answer probed while Redis is gone
            if i % 2:
                chunks, headers = stream(sdk, prompt(i, "no", 0.6))
                assert text_of(chunks) in ("no", "yes")
            else:
                _, headers = ask(sdk, prompt(i, "no", 0.6))
            windows.append(headers.get("x-recserve-window"))
            probes_settle(tiers)
        # The probes went on being learned, in this replica's local probe windows: the device is bypassed.
        local = device_quality(gateway.root)
        _, headers = ask(sdk, prompt(20, "no", 0.6))
    assert windows[:4] == [None] * 4 and "local" in windows[4:]
    assert local["probes"] >= 10 and local["bypassed"] is True
    assert headers["x-recserve-path"] == "device~>edge"
    assert probes_of(scrape(gateway.root), "disagreed") >= 12
    assert httpx.get(gateway.root + "/admin/policy", headers=ADMIN).status_code == 200
