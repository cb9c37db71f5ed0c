"""Three real `recserve serve` processes on one Redis behave like one gateway, and survive its outage."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest

from tests.support.processes import GatewayProcess
from tests.support.redis_procs import RedisServer
from tests.support.scripted_tier import ThreadedTier

from .conftest import ServerFactory

WINDOW = 20  # small, so the 90-request runs fill it and slide
BETA = 0.3


def _config(tiers: dict[str, ThreadedTier], windows: dict[str, Any]) -> dict[str, Any]:
    return {
        "auth": {"api_keys_env": "RECSERVE_WINDOWS_TEST_KEYS_NEVER_SET", "admin_key_env": None},
        "tiers": [{"name": name, "base_url": tiers[name].base_url, "model": tiers[name].model,
                   "provider": "openai", "timeout_s": 5} for name in ("device", "edge", "cloud")],
        "policy": {"default": "recserve", "recserve": {"beta": BETA, "window": WINDOW}},
        "windows": windows,
    }


@dataclass(frozen=True)
class Seen:
    """What one response said about its journey."""

    replica: str
    tier: str
    path: str
    threshold: str
    window: str | None


@pytest.fixture(scope="module")
def shared_redis(redis_factory: ServerFactory) -> RedisServer:
    return redis_factory()  # this module's own: the outage test stops it


@pytest.fixture(scope="module")
def replicas(tiers: dict[str, ThreadedTier], shared_redis: RedisServer,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[GatewayProcess]]:
    workdir = tmp_path_factory.mktemp("replicas")
    config = _config(tiers, {"store": "redis", "redis_url": shared_redis.url, "namespace": "replicas"})
    started: list[GatewayProcess] = []
    try:
        for name in ("replica-a", "replica-b", "replica-c"):
            started.append(GatewayProcess(name, config, workdir).start())
        yield started
    finally:
        for gateway in started:
            gateway.stop()


@pytest.fixture(scope="module")
def single(tiers: dict[str, ThreadedTier],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """One gateway with in-process windows: the behaviour the replicas must reproduce together."""
    workdir = tmp_path_factory.mktemp("single")
    gateway = GatewayProcess("single", _config(tiers, {"store": "memory"}), workdir)
    gateway.start()
    yield gateway
    gateway.stop()


def _prompts(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"q{i} [device:{rng.uniform(0.05, 0.95):.3f}][edge:{rng.uniform(0.05, 0.95):.3f}][cloud:0.9]"
            for i in range(count)]


def _send(gateways: list[GatewayProcess], clients: list[openai.OpenAI], prompts: list[str],
          start: int = 0) -> list[Seen]:
    """Round-robin, one request at a time, so the global order of window appends is the prompt order."""
    seen = []
    for offset, prompt in enumerate(prompts):
        index = (start + offset) % len(gateways)
        raw = clients[index].chat.completions.with_raw_response.create(
            model="recserve", messages=[{"role": "user", "content": prompt}], max_tokens=16)
        assert raw.parse().choices[0].message.content  # a real answer, every time
        headers = raw.headers
        seen.append(Seen(gateways[index].name, headers["x-recserve-tier"], headers["x-recserve-path"],
                         headers["x-recserve-threshold"], headers.get("x-recserve-window")))
    return seen


def test_three_replicas_decide_like_one_gateway(replicas: list[GatewayProcess], single: GatewayProcess,
                                               shared_redis: RedisServer) -> None:
    import redis

    with redis.Redis.from_url(shared_redis.url) as admin:
        admin.flushall()
    prompts = _prompts(90, seed=4)
    clients = [gateway.sdk() for gateway in replicas]
    try:
        spread = _send(replicas, clients, prompts)
    finally:
        for client in clients:
            client.close()
    with single.sdk() as client:
        alone = _send([single], [client], prompts)

    assert {s.replica for s in spread} == {"replica-a", "replica-b", "replica-c"}
    assert all(s.window is None for s in spread + alone)  # shared windows throughout, no fallback
    # Request by request: same tier, same path, and the same threshold to the last bit.
    assert [(s.tier, s.path, s.threshold) for s in spread] == [(s.tier, s.path, s.threshold) for s in alone]
    # The run is not trivial: all three tiers answered, and the window slid.
    assert {s.tier for s in spread} == {"device", "edge", "cloud"}
    print("\nrequest  replica     tier    threshold (3 replicas)   threshold (1 gateway)")
    for i, (s, a) in enumerate(zip(spread, alone, strict=True)):
        if i >= len(spread) - 9:
            print(f"{i:7d}  {s.replica:10s}  {s.tier:6s}  {s.threshold:23s}  {a.threshold}")


def _recovered(seen: list[Seen], replicas: list[GatewayProcess]) -> bool:
    last = {s.replica: s.window for s in seen}
    return len(last) == len(replicas) and all(window is None for window in last.values())


def test_redis_outage_fails_no_request(replicas: list[GatewayProcess], shared_redis: RedisServer) -> None:
    clients = [gateway.sdk() for gateway in replicas]
    prompts = iter(_prompts(1000, seed=9))
    try:
        before = _send(replicas, clients, [next(prompts) for _ in range(9)])
        assert all(s.window is None for s in before)

        shared_redis.stop()
        during = _send(replicas, clients, [next(prompts) for _ in range(30)])
        assert all(s.window == "local" for s in during)  # every replica noticed, none failed

        shared_redis.start()
        after: list[Seen] = []
        for _ in range(100):  # bounded; the next probe is due within the backoff (≤ a few seconds here)
            after += _send(replicas, clients, [next(prompts) for _ in range(3)], start=len(after))
            if _recovered(after, replicas):
                break
            time.sleep(0.1)
        assert _recovered(after, replicas), after[-6:]
        settled = _send(replicas, clients, [next(prompts) for _ in range(9)])
        assert all(s.window is None for s in settled)  # shared mode resumed everywhere
    finally:
        for client in clients:
            client.close()
    for gateway in replicas:  # one warning per outage, one recovery line, no per-request noise
        log = gateway.log()
        assert log.count(" failing (") == 1, log[-3000:]
        assert log.count("answering again") == 1, log[-3000:]
