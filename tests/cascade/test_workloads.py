"""Workloads: windows, probe windows and competence kept per (policy, tier, task, workload), named by
the request, its client key's default or derived; bounded in number whatever clients send."""

from __future__ import annotations

import asyncio
import random

import httpx
import openai
import pytest
import redis

from gateway.cascade.runtime import Runtime
from gateway.cascade.workloads import OVERFLOW, Workload, WorkloadRegistry, derived_workload
from gateway.config.loading import parse_config
from policies.base import Scope
from tests.conftest import TEST_KEYS_ENV, GatewayStarter, RunningGateway, ask, base_config, merge
from tests.support.redis_procs import RedisServer
from tests.support.scripted_tier import ThreadedTier

ADMIN_ENV = "RECSERVE_TEST_WORKLOAD_ADMIN_KEY"
ADMIN = {"authorization": "Bearer workload-admin"}


@pytest.fixture(autouse=True)
def admin_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ADMIN_ENV, "workload-admin")


def test_derived_workloads() -> None:
    assert derived_workload("generation", None) == "generation"
    assert derived_workload("generation", None, structured=True) == "structured"  # tools, a JSON format
    assert derived_workload("classification", None) == "classification"
    assert derived_workload("classification", ["Positive", " negative"]) == "labels:negative,positive"
    assert derived_workload("classification", ["negative", "positive"]) == derived_workload(
        "classification", ["POSITIVE", "Negative "])
    long = derived_workload("classification", [f"label number {i}" for i in range(40)])
    assert long.startswith("labels:") and len(long) <= 64
    assert Scope("generation", "generation").name == "generation"  # the paper's keys, unchanged
    assert Scope("classification", "sst2", 8).name == "classification/sst2@prefix8"


def test_registry_keeps_at_most_max_and_folds_the_rest_until_one_is_idle() -> None:
    now = [0.0]
    registry = WorkloadRegistry(3, idle_s=10.0, clock=lambda: now[0])
    a, b, c, d = (Workload(name) for name in "abcd")
    assert [registry.admit(w) for w in (a, b, c)] == [(a, None), (b, None), (c, None)]
    assert registry.admit(d) == (Workload(OVERFLOW), None)  # nobody idle long enough: the overflow
    # A tenant's name that finds no room goes to that tenant's own overflow, not to anyone else's.
    assert registry.admit(Workload("d", "team-b")) == (Workload(OVERFLOW, "team-b"), None)
    now[0] = 5.0
    assert registry.admit(a) == (a, None)  # a is used again: b is now the least recently used
    now[0] = 12.0
    assert registry.admit(d) == (d, b)  # b idle for 12 s: d takes its place
    assert registry.kept() == [d, a, c]
    assert registry.resize(2, 10.0) == [c]
    assert len(registry) == 2


def workload_prompt(device_confidence: float) -> str:
    return f"q [device:{device_confidence:.3f}][edge:0.9]"


def test_each_workload_decides_on_its_own_window(start_gateway: GatewayStarter) -> None:
    """Two applications behind one gateway: the tagger's device answers are all sure (0.9x), the
    bot's all unsure (0.2x). Keyed by task, the bot's answers pull the shared window down and the
    tagger's low-end answers are kept; keyed by workload each escalates its own bottom 30 %."""
    rng = random.Random(1)
    traffic = [("tagger", 0.9 + rng.random() * 0.09) if i % 2 else ("bot", 0.2 + rng.random() * 0.09)
               for i in range(120)]

    def escalated(gateway: RunningGateway) -> dict[str, int]:
        counts = {"tagger": 0, "bot": 0}
        with gateway.sdk() as sdk:
            for workload, confidence in traffic:
                _, headers = ask(sdk, workload_prompt(confidence), extra_body={"recserve": {"workload": workload}})
                assert headers["x-recserve-workload"] == workload
                counts[workload] += headers["x-recserve-tier"] != "device"
        return counts

    by_workload = escalated(start_gateway())
    by_task = escalated(start_gateway({"policy": {"key": "task"}}))
    # Each workload's window escalates about β = 30 % of its own traffic...
    assert all(12 <= n <= 24 for n in by_workload.values()), by_workload
    # ...while one shared window escalates the bot's answers and keeps nearly all of the tagger's.
    assert by_task["tagger"] <= 2 and by_task["bot"] >= 28, by_task


def test_workload_from_header_client_key_default_and_derivation(start_gateway: GatewayStarter,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TEST_KEYS_ENV, "key-a,key-b")
    monkeypatch.setenv("RECSERVE_TEST_BOT_KEY", "key-b")
    gateway = start_gateway({"auth": {"workloads_by_key_env": {"RECSERVE_TEST_BOT_KEY": "support-bot"}}})
    with gateway.sdk(api_key="key-a") as plain, gateway.sdk(api_key="key-b") as bot:
        assert ask(plain, "hi")[1]["x-recserve-workload"] == "generation"
        assert ask(plain, "hi", extra_headers={"x-recserve-workload": "faq"})[1]["x-recserve-workload"] == "faq"
        assert ask(bot, "hi")[1]["x-recserve-workload"] == "support-bot"
        # The request's own name wins over the key's default; the extension over the header.
        _, headers = ask(bot, "hi", extra_headers={"x-recserve-workload": "faq"},
                         extra_body={"recserve": {"workload": "tagger"}})
        assert headers["x-recserve-workload"] == "tagger"
        _, headers = ask(plain, "x [device:label=positive:0.7,negative:0.3]", max_tokens=1,
                         extra_body={"recserve": {"labels": ["positive", "negative"]}})
        assert headers["x-recserve-workload"] == "labels:negative,positive"
        weather = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
        _, headers = ask(plain, 'w [*:call=get_weather:{"city": "Oslo"}]', tools=[weather])
        assert headers["x-recserve-workload"] == "structured"  # its confidences in windows of their own
        with pytest.raises(openai.BadRequestError) as caught:
            ask(plain, "hi", extra_headers={"x-recserve-workload": "no spaces allowed"})
        assert caught.value.body["param"] == "x-recserve-workload"  # type: ignore[index]
        with pytest.raises(openai.BadRequestError):
            ask(plain, "hi", extra_body={"recserve": {"workload": "x" * 65}})


def test_admin_policy_and_reset_per_workload(start_gateway: GatewayStarter) -> None:
    gateway = start_gateway({"auth": {"admin_key_env": ADMIN_ENV}})
    with gateway.sdk() as sdk:
        for i in range(6):
            ask(sdk, workload_prompt(0.5 + i / 20), extra_body={"recserve": {"workload": "tagger"}})
            ask(sdk, workload_prompt(0.5 + i / 20))
    view = httpx.get(gateway.root + "/admin/policy", headers=ADMIN).json()
    device = next(t for t in view["tiers"] if t["name"] == "device")["recserve"]["tasks"]
    assert device["generation"]["window_length"] == 6 and device["generation/tagger"]["window_length"] == 6
    assert device["generation/tagger"]["workload"] == "tagger"
    reset = httpx.post(gateway.root + "/admin/windows/reset", params={"workload": "tagger"}, headers=ADMIN)
    assert reset.status_code == 200, reset.text
    view = httpx.get(gateway.root + "/admin/policy", headers=ADMIN).json()
    device = next(t for t in view["tiers"] if t["name"] == "device")["recserve"]["tasks"]
    assert "generation/tagger" not in device and device["generation"]["window_length"] == 6


@pytest.mark.parametrize(("names", "idle_s"), [(100_000, 600.0), (2_000, 0.0)], ids=["flood", "churn"])
def test_many_workload_names_leave_memory_and_redis_bounded(tiers: dict[str, ThreadedTier],
                                                            redis_server: RedisServer, names: int,
                                                            idle_s: float) -> None:
    """Distinct names from one client: at most max_workloads (+ the overflow) are kept apart, so the
    windows in the store (3 Redis keys each) stay bounded. `flood`: 100,000 names at once fold into the
    overflow; `churn`: every kept name is idle at once, so each new one evicts one, whose windows go."""
    max_workloads = 50
    namespace = f"cardinality-{names}"
    config = parse_config(merge(base_config(tiers), {
        "policy": {"max_workloads": max_workloads, "workload_idle_s": idle_s},
        "windows": {"store": "redis", "redis_url": redis_server.url, "namespace": namespace}}))

    async def flood() -> int:
        runtime = await Runtime.start(config)
        policy = runtime.policies["recserve"]
        try:
            for i in range(names):
                scope = runtime.scope("generation", runtime.workload("generation", f"client-made-{i}", None, None))
                await policy.decide("device", scope, (i % 97) / 97)
                await asyncio.sleep(0)  # lets evicted workloads' clean-up run, as between requests
            await runtime.settle(30.0)
            assert len(runtime.workloads) <= max_workloads
        finally:
            await runtime.aclose()
        return len(redis.Redis.from_url(redis_server.url).keys(f"{{{namespace}:recserve:device:*"))

    keys = asyncio.run(flood())
    bound = 3 * (max_workloads + 1)  # kept names + "other", three keys per window
    assert 3 * 2 <= keys <= bound, keys
    print(f"\n{names:,} workload names ({'idle' if idle_s == 0 else 'busy'}): {keys} Redis keys for the "
          f"device's windows (bound {bound})")


def test_many_workload_names_through_the_gateway_fold_into_other(start_gateway: GatewayStarter) -> None:
    gateway = start_gateway({"policy": {"max_workloads": 5, "workload_idle_s": 3600}})
    with gateway.sdk() as sdk:
        seen = [ask(sdk, "hi", extra_body={"recserve": {"workload": f"w{i}"}})[1]["x-recserve-workload"]
                for i in range(12)]
    assert seen == ["w0", "w1", "w2", "w3", "w4"] + [OVERFLOW] * 7
