"""Two tenants behind real gateway processes: `team-a`, a group of two keys, and Bob, a key of his own
(`auth.api_keys_env`), so both kinds of tenant are in every tenancy test. Keys are set in the
environment the gateway processes inherit, never written in their config files."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.config.tenants import key_tenant_name
from tests.support.processes import GatewayProcess
from tests.support.scripted_tier import ThreadedTier

KEYS_ENV = "RECSERVE_TENANCY_TEST_KEYS"  # bare keys: each a tenant of its own
TEAM_A_ENV = "RECSERVE_TENANCY_TEST_TEAM_A_KEYS"
ADMIN_ENV = "RECSERVE_TENANCY_TEST_ADMIN_KEY"
TEAM_A_KEYS = ("sk-team-a-first-key-7d1e0c", "sk-team-a-second-key-52b9aa")
BOB_KEY = "sk-bob-own-key-e3f08c41"
ADMIN_KEY = "sk-tenancy-admin-key-0aa1"
SECRETS = (*TEAM_A_KEYS, BOB_KEY, ADMIN_KEY)
TEAM_A = "team-a"


def bob_tenant(namespace: str) -> str:
    """Bob's tenant name: `key-` and a digest of his key (gateway/config/tenants.py)."""
    return key_tenant_name(BOB_KEY, namespace)


def tenancy_config(tiers: dict[str, ThreadedTier], windows: dict[str, Any],
                   overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "auth": {"api_keys_env": KEYS_ENV, "admin_key_env": ADMIN_ENV,
                 "tenants": {TEAM_A: {"keys_env": TEAM_A_ENV}}},
        "tiers": [{"name": name, "base_url": tiers[name].base_url, "model": tiers[name].model,
                   "provider": "openai", "timeout_s": 5} for name in ("device", "edge", "cloud")],
        "windows": windows,
    }
    for key, value in (overrides or {}).items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    return config


@contextlib.contextmanager
def tenant_keys() -> Iterator[None]:
    """The keys in the environment (for the gateways started meanwhile, which inherit it)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(KEYS_ENV, BOB_KEY)
        patch.setenv(TEAM_A_ENV, ",".join(TEAM_A_KEYS))
        patch.setenv(ADMIN_ENV, ADMIN_KEY)
        yield


@dataclass
class Replicas:
    """Gateway processes serving one config (sharing one Redis when the config says so)."""

    gateways: Sequence[GatewayProcess]

    def sdk(self, replica: int, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.gateways[replica].url, api_key=key, max_retries=0, timeout=30)

    def admin(self, replica: int) -> httpx.Client:
        return httpx.Client(base_url=self.gateways[replica].url.removesuffix("/v1"),
                            headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)

    def stop(self) -> None:
        for gateway in self.gateways:
            gateway.stop()

    def logs(self) -> str:
        return "\n".join(gateway.log() for gateway in self.gateways)


@contextlib.contextmanager
def replicas(config: dict[str, Any], workdir: Path, count: int) -> Iterator[Replicas]:
    """`count` gateway processes started with the tenants' keys in their environment."""
    started: list[GatewayProcess] = []
    running = Replicas(started)
    try:
        with tenant_keys():
            for i in range(count):
                started.append(GatewayProcess(f"replica-{i}", config, workdir).start())
        yield running
    finally:
        running.stop()
