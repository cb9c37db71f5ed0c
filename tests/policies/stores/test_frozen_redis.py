"""A frozen Redis (SIGSTOP: it accepts, never answers) delays no request by more than the configured
socket timeout: not the window step, not the cluster's control record, in any sync mode."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from tests.support.processes import GatewayProcess
from tests.support.redis_procs import RedisServer
from tests.support.scripted_tier import ThreadedTier

from .conftest import ServerFactory
from .test_replicas import _config, _prompts

SOCKET_TIMEOUT_S = 0.5
# Loopback tiers answer in milliseconds; the rest is room for a machine shared with other work.
MARGIN_S = 0.4
FROZEN_S = 4.0
CLIENTS = 3


@pytest.fixture
def frozen_redis(redis_factory: ServerFactory) -> Iterator[RedisServer]:
    server = redis_factory()
    yield server
    server.resume()  # whatever happened in the test, leave it answering


def _timed_requests(gateway: GatewayProcess, seconds: float, seed: int,
                    latencies: list[tuple[float, str | None]], errors: list[str]) -> None:
    prompts = iter(_prompts(10_000, seed=seed))
    deadline = time.monotonic() + seconds
    with gateway.sdk() as client:
        while time.monotonic() < deadline:
            started = time.monotonic()
            try:
                raw = client.chat.completions.with_raw_response.create(
                    model="recserve", messages=[{"role": "user", "content": next(prompts)}], max_tokens=16)
                raw.parse()
                latencies.append((time.monotonic() - started, raw.headers.get("x-recserve-window")))
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")


@pytest.mark.parametrize("sync", ["exact", "batched", "auto"])
def test_no_request_waits_longer_than_the_socket_timeout(
        sync: str, frozen_redis: RedisServer, tiers: dict[str, ThreadedTier],
        tmp_path_factory: pytest.TempPathFactory) -> None:
    url = f"{frozen_redis.url}?socket_timeout={SOCKET_TIMEOUT_S}&socket_connect_timeout={SOCKET_TIMEOUT_S}"
    config = _config(tiers, {"store": "redis", "redis_url": url, "namespace": f"frozen-{sync}", "sync": sync})
    gateway = GatewayProcess(f"frozen-{sync}", config, tmp_path_factory.mktemp("frozen"))
    gateway.start()
    latencies: list[tuple[float, str | None]] = []
    errors: list[str] = []
    try:
        _timed_requests(gateway, 1.0, 1, latencies, errors)  # warm: connections open, shared windows
        warm = len(latencies)
        frozen_redis.pause()
        try:
            threads = [threading.Thread(target=_timed_requests,
                                        args=(gateway, FROZEN_S, 10 + i, latencies, errors))
                       for i in range(CLIENTS)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=FROZEN_S + 30)
        finally:
            frozen_redis.resume()
        frozen = latencies[warm:]
        recovered: list[tuple[float, str | None]] = []
        for _ in range(60):  # bounded: the next probe of Redis is due within the backoff
            _timed_requests(gateway, 0.3, 99, recovered, errors)
            if recovered and recovered[-1][1] is None:
                break
    finally:
        gateway.stop()
    worst = max(seconds for seconds, _ in frozen)
    print(f"\n{sync}: {len(frozen)} requests while Redis was frozen for {FROZEN_S}s, worst {worst * 1000:.0f} ms, "
          f"{sum(w == 'local' for _, w in frozen)} answered from local windows; "
          f"shared again after {len(recovered)} more")
    assert not errors, errors[:3]
    assert all(window is None for _, window in latencies[:warm])
    assert frozen and worst <= SOCKET_TIMEOUT_S + MARGIN_S, sorted(s for s, _ in frozen)[-5:]
    assert any(window == "local" for _, window in frozen)
    assert recovered[-1][1] is None
