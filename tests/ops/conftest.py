"""Fixtures for the operations tests: gateways started from a config *file* (so /admin/reload has
something to re-read) in a real uvicorn thread, with an admin key set, and an admin HTTP client."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from gateway.config.loading import load_config
from gateway.server.app import create_app
from tests.conftest import base_config, merge
from tests.support.scripted_tier import ThreadedTier
from tests.support.servers import UvicornThread

ADMIN_KEY_ENV = "RECSERVE_ADMIN_TEST_KEY"
ADMIN_KEY = "admin-secret-for-tests"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


@dataclass
class FileGateway:
    """A gateway served from `config_path`; rewrite the file and POST /admin/reload to change it."""

    root: str
    config_path: Path
    config: dict[str, Any]

    @property
    def url(self) -> str:
        return self.root + "/v1"

    def sdk(self, **options: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url, api_key="unused", max_retries=0, **options)

    def admin(self, key: str | None = ADMIN_KEY) -> httpx.Client:
        headers = {"authorization": f"Bearer {key}"} if key is not None else {}
        return httpx.Client(base_url=self.root, headers=headers, timeout=30)

    def write(self, config: dict[str, Any] | str) -> None:
        text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
        self.config_path.write_text(text)


FileGatewayStarter = Callable[..., FileGateway]


def admin_config(tiers: dict[str, ThreadedTier], overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    base = merge(base_config(tiers), {"auth": {"admin_key_env": ADMIN_KEY_ENV}})
    return merge(base, overrides or {})


@pytest.fixture
def admin_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(ADMIN_KEY_ENV, ADMIN_KEY)
    return ADMIN_KEY


@pytest.fixture
def start_file_gateway(tiers: dict[str, ThreadedTier], tmp_path: Path,
                       admin_key: str) -> Iterator[FileGatewayStarter]:
    servers: list[UvicornThread] = []

    def start(overrides: dict[str, Any] | None = None) -> FileGateway:
        config = admin_config(tiers, overrides)
        path = tmp_path / f"gateway{len(servers)}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        server = UvicornThread(create_app(load_config(path), config_path=str(path))).start()
        servers.append(server)
        return FileGateway(server.base_url, path, config)

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def file_gateway(start_file_gateway: FileGatewayStarter) -> FileGateway:
    return start_file_gateway()


@pytest.fixture
def artifacts_dir() -> Path:
    """Where tests keep what a human should look at (screenshots); gitignored."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
