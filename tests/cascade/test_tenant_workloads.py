"""Workload poisoning, tried and refused: two gateway processes on one real redis-server, two tenants.
Bob floods the workload name team-a uses (by the extension and by the header), with sure and unsure
answers, through the RecServe rule and the quality floor, and sends unnamed requests too: team-a's
windows, probe windows and competence stay exactly as they were — the same bytes in Redis, the same
view in the admin API. A workload the operator declares `shared` is one set of windows for all, as
before tenants: Bob's answers move it. Savings are reported per tenant; rate limits stay per key."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis

from tests.ops.test_metrics import scrape, total
from tests.support.redis_procs import RedisServer
from tests.support.scripted_tier import ThreadedTier
from tests.support.tenancy import BOB_KEY, SECRETS, TEAM_A, TEAM_A_KEYS, Replicas, bob_tenant, replicas, tenancy_config

NAMESPACE = "tenant-poisoning"
WINDOW = 50
BOB = bob_tenant(NAMESPACE)
ALICE, ALEX = TEAM_A_KEYS
QUALITY = {"probe_rate": 1.0, "warmup_probes": 0, "min_probes": 4, "window": 50}


@pytest.fixture(scope="module")
def gateways(tiers: dict[str, ThreadedTier], redis_server: RedisServer,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    windows = {"store": "redis", "redis_url": redis_server.url, "namespace": NAMESPACE}
    config = tenancy_config(tiers, windows, {"policy": {
        "default": "recserve", "recserve": {"beta": 0.3, "window": WINDOW}, "quality": QUALITY,
        "shared_workloads": ["faq"]}})
    with replicas(config, tmp_path_factory.mktemp("tenant-poisoning"), 2) as running:
        yield running


def send(sdk: openai.OpenAI, confidence: float, *, workload: str | None = None, header: bool = False,
         model: str = "recserve") -> httpx.Headers:
    """One chat request whose device answer has `confidence` (the edge is sure), naming `workload` in
    the extension (or, with `header`, in x-recserve-workload)."""
    extra: dict[str, Any] = {}
    if workload is not None and header:
        extra["extra_headers"] = {"x-recserve-workload": workload}
    elif workload is not None:
        extra["extra_body"] = {"recserve": {"workload": workload}}
    raw = sdk.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": f"q [device:{confidence:.4f}][edge:0.9]"}],
        max_tokens=16, **extra)
    raw.parse()
    return raw.headers


def stored(client: redis.Redis, owner: str) -> dict[bytes, Any]:
    """Every Redis key of `owner`'s windows and probe windows, with its whole content."""
    found: dict[bytes, Any] = {}
    for key in client.scan_iter(match=f"{{{NAMESPACE}:*:{owner}~*", count=1000):
        kind = client.type(key)
        if kind == b"zset":
            found[key] = client.zrange(key, 0, -1, withscores=True)
        elif kind == b"list":
            found[key] = client.lrange(key, 0, -1)
        elif kind == b"hash":
            found[key] = client.hgetall(key)
        else:
            found[key] = client.get(key)
    return found


def settled(read: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    """`read()` once it gives the same answer twice, half a second apart (background probes done)."""
    deadline = time.monotonic() + timeout_s
    last = read()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = read()
        if now == last:
            return now
        last = now
    raise AssertionError("still changing after the flood")


def scopes_of(view: dict[str, Any], owner: str | None) -> dict[str, dict[str, Any]]:
    """The device's RecServe windows and quality-floor state of `owner` (None: shared) in /admin/policy."""
    device = next(t for t in view["tiers"] if t["name"] == "device")
    return {"recserve": {name: e for name, e in device["recserve"]["tasks"].items() if e["tenant"] == owner},
            "quality": {name: e for name, e in device["quality"].items() if e["tenant"] == owner}}


def test_a_flood_under_another_tenants_workload_leaves_its_windows_exactly_as_they_were(
        gateways: Replicas, redis_server: RedisServer) -> None:
    rng = random.Random(7)
    sent: dict[tuple[str, int], int] = {}  # (tenant, replica) -> requests
    store = redis.Redis.from_url(redis_server.url)
    with gateways.sdk(0, ALICE) as alice, gateways.sdk(1, ALEX) as alex:
        for i in range(24):
            sdk, replica = (alice, 0) if i % 2 else (alex, 1)  # one tenant, two keys, two replicas
            assert send(sdk, rng.uniform(0.2, 0.95), workload="tagger")["x-recserve-workload"] == "tagger"
            send(sdk, rng.uniform(0.2, 0.95))  # unnamed: its derived workload, `generation`
            send(sdk, rng.uniform(0.2, 0.95), workload="tagger", model="recserve/quality")
            sent[TEAM_A, replica] = sent.get((TEAM_A, replica), 0) + 3
    with gateways.admin(0) as admin:
        def team_a() -> tuple[dict[bytes, Any], dict[str, Any]]:
            return stored(store, TEAM_A), scopes_of(admin.get("/admin/policy").json(), TEAM_A)

        before_redis, before_view = settled(team_a)
        names = set(before_view["recserve"]) | set(before_view["quality"])
        assert {"team-a~generation/tagger", "team-a~generation"} <= names, names
        assert before_view["recserve"]["team-a~generation/tagger"]["window_length"] == 24
        assert before_view["quality"]["team-a~generation/tagger"]["probes"] > 0  # it has learned something

        with gateways.sdk(0, BOB_KEY) as bob_here, gateways.sdk(1, BOB_KEY) as bob_there:
            for i in range(60):
                sdk, replica = (bob_here, 0) if i % 2 else (bob_there, 1)
                sure_or_not = 0.99 if i % 4 < 2 else 0.01
                headers = send(sdk, sure_or_not, workload="tagger", header=i % 3 == 0)
                assert headers["x-recserve-workload"] == "tagger"  # served under the name it asked for...
                send(sdk, sure_or_not, workload="tagger", model="recserve/quality")
                send(sdk, sure_or_not)
                sent[BOB, replica] = sent.get((BOB, replica), 0) + 3
        bobs = settled(lambda: stored(store, BOB))
        # ...in Bob's own windows,
        assert any(b"~generation/tagger}:z" in key for key in bobs) and any(b"probes" in key for key in bobs)
        after_redis, after_view = settled(team_a)
        assert after_redis == before_redis  # ...and team-a's are the same bytes,
        assert after_view == before_view  # the same thresholds, windows, probes and competence.
        view = admin.get("/admin/policy").json()
    bob_view = scopes_of(view, BOB)["recserve"]
    assert bob_view[f"{BOB}~generation/tagger"]["window_length"] == WINDOW

    # Savings per tenant, on each replica, in the admin API and in /metrics; names, never keys.
    for replica, gateway in enumerate(gateways.gateways):
        with gateways.admin(replica) as admin:
            savings = admin.get("/admin/policy").json()["savings"]
            config_text = admin.get("/admin/config").text
        assert {tenant: figures["total"]["requests"] for tenant, figures in savings["tenants"].items()} == \
            {TEAM_A: sent[TEAM_A, replica], BOB: sent[BOB, replica]}
        assert set(savings["tenants"][BOB]["workloads"]) == {"tagger", "generation"}
        samples = scrape(gateway.url.removesuffix("/v1"))
        for tenant in (TEAM_A, BOB):
            assert total(samples, "recserve_workload_requests_total", tenant=tenant) == sent[tenant, replica]
        metrics_text = httpx.get(gateway.url.removesuffix("/v1") + "/metrics").text
        assert not any(secret in text for secret in SECRETS for text in (metrics_text, config_text, str(savings)))
    assert not any(secret in gateways.logs() for secret in SECRETS)


def test_a_shared_workload_is_one_window_for_every_tenant(gateways: Replicas) -> None:
    with gateways.sdk(0, ALICE) as alice, gateways.sdk(1, BOB_KEY) as bob, gateways.admin(0) as admin:
        for i in range(10):
            send(alice, 0.6 + i / 40, workload="faq")
        before = scopes_of(admin.get("/admin/policy").json(), None)["recserve"]["generation/faq"]
        assert before["window_length"] == 10 and before["workload"] == "faq"
        for _ in range(20):
            assert send(bob, 0.05, workload="faq")["x-recserve-workload"] == "faq"
        view = admin.get("/admin/policy").json()
        after = scopes_of(view, None)["recserve"]["generation/faq"]
        assert after["window_length"] == 30  # Bob's answers are in the one window team-a decides in
        assert after["threshold"] < before["threshold"]  # and moved its threshold, as before tenants
        assert not any(name.endswith("/faq") for name in scopes_of(view, TEAM_A)["recserve"])
        # team-a's next answer is judged by the moved window.
        assert float(send(alice, 0.06, workload="faq")["x-recserve-threshold"]) < before["threshold"]


def test_reset_of_one_tenant_leaves_the_others(gateways: Replicas, redis_server: RedisServer) -> None:
    store = redis.Redis.from_url(redis_server.url)
    with gateways.sdk(1, BOB_KEY) as bob, gateways.sdk(0, ALICE) as alice:
        send(bob, 0.5, workload="tagger")
        send(alice, 0.5, workload="tagger")
    team_a = settled(lambda: stored(store, TEAM_A))
    with gateways.admin(0) as admin:
        unknown = admin.post("/admin/windows/reset", params={"tenant": "nobody"})
        assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "tenant"
        reset = admin.post("/admin/windows/reset", params={"tenant": BOB})
        assert reset.status_code == 200, reset.text
        assert all(f"~{BOB}" not in w and BOB in w for w in reset.json()["windows"])
        view = admin.get("/admin/policy").json()
    assert not any(w["window_length"] for w in scopes_of(view, BOB)["recserve"].values())
    assert stored(store, TEAM_A) == team_a


def test_rate_limits_stay_per_key(tiers: dict[str, ThreadedTier], redis_server: RedisServer, tmp_path: Path) -> None:
    """Buckets are per key, shared by the replicas: a key that spent its burst does not hold back another
    tenant, nor another key of its own group."""
    windows = {"store": "redis", "redis_url": redis_server.url, "namespace": "tenant-ratelimit"}
    config = tenancy_config(tiers, windows, {"auth": {"rate_limit": {"requests_per_minute": 2, "burst": 2}}})
    with replicas(config, tmp_path, 2) as running:
        clients = {key: [running.sdk(r, key) for r in (0, 1)] for key in (ALICE, ALEX, BOB_KEY)}
        send(clients[ALICE][0], 0.9)
        send(clients[ALICE][1], 0.9)
        for replica in (0, 1):
            with pytest.raises(openai.RateLimitError):
                send(clients[ALICE][replica], 0.9)
        for key in (BOB_KEY, ALEX):  # another tenant; another key of team-a
            send(clients[key][1], 0.9)
            send(clients[key][0], 0.9)
        for sdks in clients.values():
            for sdk in sdks:
                sdk.close()
