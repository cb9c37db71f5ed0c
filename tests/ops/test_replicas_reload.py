"""Two real `recserve serve` replicas on a real redis-server: a policy change and a reload taken by
one replica reach the other (pub/sub), a replica that missed the announcement catches up on its
next request, and every replica's version shows in GET /admin/config."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml

from tests.conftest import ask
from tests.support.processes import GatewayProcess
from tests.support.redis_procs import RedisServer
from tests.support.scripted_tier import ThreadedTier

from .conftest import ADMIN_KEY, ADMIN_KEY_ENV, admin_config

NAMESPACE = "ops"


@pytest.fixture(scope="module")
def shared_config(tiers: dict[str, ThreadedTier], redis_server: RedisServer,
                  tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    config = admin_config(tiers, {"windows": {"store": "redis", "redis_url": redis_server.url,
                                              "namespace": NAMESPACE}})
    path = tmp_path_factory.mktemp("ops-config") / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path, config


@pytest.fixture(scope="module")
def replicas(shared_config: tuple[Path, dict[str, Any]],
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[GatewayProcess]]:
    path, config = shared_config
    workdir = tmp_path_factory.mktemp("ops-replicas")
    started: list[GatewayProcess] = []
    with pytest.MonkeyPatch.context() as env:
        env.setenv(ADMIN_KEY_ENV, ADMIN_KEY)  # inherited by the child processes
        try:
            for name in ("replica-a", "replica-b"):
                replica = GatewayProcess(name, config, workdir)
                replica.config_path = path  # one file for both, as a mounted config would be
                started.append(replica.start())
            yield started
        finally:
            for replica in started:
                replica.stop()


def admin(replica: GatewayProcess) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{replica.port}",
                        headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)


def eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll until `check` returns something truthy; the last value otherwise (for the assert)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


def device_beta(replica: GatewayProcess) -> float:
    with admin(replica) as http:
        beta: float = http.get("/admin/policy").json()["tiers"][0]["recserve"]["beta"]
        return beta


def test_a_policy_change_reaches_every_replica(replicas: list[GatewayProcess]) -> None:
    a, b = replicas
    with admin(a) as http:
        response = http.patch("/admin/policy", json={"recserve": {"beta": {"device": 0.45}}})
    assert response.status_code == 200, response.text
    version = response.json()["version"]
    assert eventually(lambda: device_beta(b) == 0.45), a.log()[-2000:] + b.log()[-2000:]
    with admin(b) as http:
        assert http.get("/admin/config").json()["version"] == version


def test_a_reload_reaches_every_replica_and_config_shows_their_versions(
        replicas: list[GatewayProcess], shared_config: tuple[Path, dict[str, Any]]) -> None:
    a, b = replicas
    path, config = shared_config
    changed = copy.deepcopy(config)
    changed["tiers"][2]["model"] = "cloud-model-v2"
    path.write_text(yaml.safe_dump(changed, sort_keys=False))
    try:
        with admin(a) as http:
            response = http.post("/admin/reload")
        assert response.status_code == 200, response.text
        assert response.json()["announced"] is True
        version = response.json()["version"]

        def b_runs_it() -> bool:
            with admin(b) as http:
                shown = http.get("/admin/config").json()
            return bool(shown["version"] == version and shown["config"]["tiers"][2]["model"] == "cloud-model-v2")

        assert eventually(b_runs_it), b.log()[-3000:]
        with b.sdk() as sdk:
            answer, _ = ask(sdk, "hi", model="recserve/cloud")
        assert answer.model == "cloud-model-v2"
        # The reload cleared the β override everywhere: the file's value is back.
        assert device_beta(b) == 0.3

        def both_listed() -> list[dict[str, Any]]:
            with admin(a) as http:
                entries: list[dict[str, Any]] = http.get("/admin/config").json()["replicas"]
            return entries if len(entries) == 2 and all(e["version"] == version for e in entries) else []

        entries = eventually(both_listed)
        assert len(entries) == 2, entries
        assert len({e["config_digest"] for e in entries}) == 1
        assert not any(e["stale"] for e in entries)
    finally:
        path.write_text(yaml.safe_dump(config, sort_keys=False))


def test_a_replica_that_missed_the_announcement_catches_up_on_its_next_request(
        replicas: list[GatewayProcess], redis_server: RedisServer) -> None:
    _, b = replicas
    control = "{" + NAMESPACE + ":control}"
    # A change recorded without its pub/sub message: what a replica sees when it missed one.
    with redis.Redis.from_url(redis_server.url) as client:
        version = int(client.hincrby(control, "version", 1))
        client.hset(control, "overrides", json.dumps({"recserve": {"beta": {"device": 0.25}},
                                                      "casserve": {"thresholds": {}}}))
    time.sleep(0.5)  # past the per-replica check interval
    with b.sdk() as sdk:
        ask(sdk, "[device:0.9]", max_tokens=16)
    with admin(b) as http:
        assert http.get("/admin/config").json()["version"] == version
    assert device_beta(b) == 0.25


def test_an_invalid_reload_leaves_every_replica_on_its_config(
        replicas: list[GatewayProcess], shared_config: tuple[Path, dict[str, Any]]) -> None:
    a, b = replicas
    path, config = shared_config
    with admin(b) as http:
        before = http.get("/admin/config").json()["version"]
    path.write_text("tiers:\n  - name: device\n")
    try:
        with admin(a) as http:
            response = http.post("/admin/reload")
        assert response.status_code == 400
        assert any(line.startswith("tiers.0.base_url") for line in response.json()["error"]["errors"])
        time.sleep(0.3)
        with admin(b) as http:
            assert http.get("/admin/config").json()["version"] == before
        with a.sdk() as sdk:
            _, headers = ask(sdk, "[device:0.9]", max_tokens=16)
        assert headers["x-recserve-tier"] == "device"
    finally:
        path.write_text(yaml.safe_dump(config, sort_keys=False))


def test_replicas_log_json_access_lines(replicas: list[GatewayProcess]) -> None:
    a, _ = replicas
    with a.sdk() as sdk:
        ask(sdk, "[device:0.9]", max_tokens=16, extra_headers={"x-request-id": "replica-log-1"})
    lines = [json.loads(line) for line in a.log().splitlines() if line.startswith("{")]
    (line,) = [entry for entry in lines if entry.get("request_id") == "replica-log-1"]
    assert line["tier_path"] == "device" and line["status"] == 200
