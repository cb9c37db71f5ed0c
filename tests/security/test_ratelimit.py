"""Per-key rate limit: a token bucket per client key, 429 + retry-after in OpenAI's shape, keys kept
apart, off by default, and shared across replicas through Redis (one atomic script)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.config.loading import parse_config
from gateway.config.schema import GatewayConfig, RateLimitConfig
from gateway.server.ratelimit import MemoryBuckets, RateLimited, RateLimiter, client_bucket
from tests.conftest import TEST_KEYS_ENV, GatewayStarter
from tests.policies.stores.conftest import ServerFactory
from tests.support.processes import GatewayProcess
from tests.support.redis_procs import RedisServer
from tests.support.scripted_tier import ThreadedTier

KEY_A, KEY_B = "sk-rate-a", "sk-rate-b"
CHAT = {"model": "recserve/device", "messages": [{"role": "user", "content": "hi"}]}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_bucket_refills_at_the_configured_rate() -> None:
    clock = FakeClock()
    settings = RateLimitConfig(requests_per_minute=60, burst=3)
    limiter = RateLimiter(settings, ("memory", "", ""), MemoryBuckets(clock=clock))
    for _ in range(3):
        await limiter.check("key:a")
    with pytest.raises(RateLimited) as refused:
        await limiter.check("key:a")
    assert refused.value.status == 429 and refused.value.headers["retry-after"] == "1"
    await limiter.check("key:b")  # another key has its own bucket
    clock.now += 1.0  # one token back (60/min)
    await limiter.check("key:a")
    with pytest.raises(RateLimited):
        await limiter.check("key:a")
    clock.now += 3600  # never more than the burst
    for _ in range(3):
        await limiter.check("key:a")
    with pytest.raises(RateLimited):
        await limiter.check("key:a")


def test_off_by_default_and_validated() -> None:
    config = parse_config({"tiers": [{"name": "t", "base_url": "http://127.0.0.1:1/v1", "model": "m"}]})
    assert isinstance(config, GatewayConfig) and config.auth.rate_limit is None
    assert RateLimitConfig(requests_per_minute=30).capacity == 30
    assert RateLimitConfig(requests_per_minute=0.5).capacity == 1
    assert client_bucket("key:sk-secret") != "key:sk-secret" and "sk-secret" not in client_bucket("key:sk-secret")


def _post(http: httpx.Client, key: str) -> httpx.Response:
    return http.post("/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {key}"})


def test_429_with_retry_after_per_key(start_gateway: GatewayStarter, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TEST_KEYS_ENV, f"{KEY_A},{KEY_B}")
    gateway = start_gateway({"auth": {"rate_limit": {"requests_per_minute": 6, "burst": 3}}})
    with httpx.Client(base_url=gateway.root, timeout=10) as http:
        assert [_post(http, KEY_A).status_code for _ in range(3)] == [200, 200, 200]
        refused = _post(http, KEY_A)
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        error = refused.json()["error"]
        assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
        assert KEY_A not in refused.text
        assert _post(http, KEY_B).status_code == 200  # B's bucket is untouched
        assert _post(http, "sk-not-a-key").status_code == 401  # the key check comes first
    # The official SDK reads it as its RateLimitError.

    with openai.OpenAI(base_url=gateway.url, api_key=KEY_A, max_retries=0) as sdk, \
            pytest.raises(openai.RateLimitError):
        sdk.chat.completions.create(model="recserve/device", messages=[{"role": "user", "content": "hi"}])


@pytest.fixture
def two_replicas(tiers: dict[str, ThreadedTier], redis_factory: ServerFactory, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[GatewayProcess, GatewayProcess, RedisServer]]:
    redis = redis_factory()
    monkeypatch.setenv("RECSERVE_RATE_TEST_KEYS", f"{KEY_A},{KEY_B}")
    config: dict[str, Any] = {
        "auth": {"api_keys_env": "RECSERVE_RATE_TEST_KEYS", "admin_key_env": None,
                 "rate_limit": {"requests_per_minute": 2, "burst": 4}},
        "tiers": [{"name": n, "base_url": tiers[n].base_url, "model": tiers[n].model, "timeout_s": 5}
                  for n in ("device", "edge", "cloud")],
        "windows": {"store": "redis", "redis_url": redis.url, "namespace": "ratelimit-test"},
    }
    started: list[GatewayProcess] = []
    try:
        for name in ("rate-a", "rate-b"):
            started.append(GatewayProcess(name, config, tmp_path).start())
        yield started[0], started[1], redis
    finally:
        for gateway in started:
            gateway.stop()


def test_bucket_is_shared_across_replicas_via_redis(
        two_replicas: tuple[GatewayProcess, GatewayProcess, RedisServer]) -> None:
    *gateways, redis = two_replicas
    first, second = (httpx.Client(base_url=g.url.removesuffix("/v1"), timeout=10) for g in gateways)
    with first, second:
        statuses = [_post(client, KEY_A).status_code for client in (first, second, first, second)]
        assert statuses == [200, 200, 200, 200]  # burst 4, spent across both replicas
        assert _post(first, KEY_A).status_code == 429
        assert _post(second, KEY_A).status_code == 429
        assert _post(second, KEY_B).status_code == 200
        # Redis gone: each replica limits from its own buckets; requests are answered, not failed.
        redis.stop()
        assert [_post(first, KEY_B).status_code for _ in range(4)] == [200, 200, 200, 200]
        assert _post(first, KEY_B).status_code == 429
