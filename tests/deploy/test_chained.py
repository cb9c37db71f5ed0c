"""Gateways chained across network tiers: a device gateway whose last tier is an edge gateway whose
last tier is the cloud. Real `recserve serve` processes and scripted tiers on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.support.processes import GatewayProcess
from tests.support.scripted_tier import ThreadedTier

REQUEST_TIMEOUT_S = 10  # every gateway bounds its cascade: a misrouted chain ends, it never hangs


def _gateway_config(instance_id: str, tiers: list[tuple[str, str, str]]) -> dict[str, Any]:
    """tiers: (name, base_url, model), lowest first."""
    return {
        "server": {"instance_id": instance_id, "request_timeout_s": REQUEST_TIMEOUT_S, "max_hops": 4},
        "auth": {"api_keys_env": "RECSERVE_CHAIN_TEST_KEYS_NEVER_SET", "admin_key_env": None},
        # A tier whose model is `recserve` is another gateway: its path and uplink count are read.
        "tiers": [{"name": name, "base_url": url, "model": model, "provider": "openai", "timeout_s": 8,
                   "recserve_gateway": model == "recserve"} for name, url, model in tiers],
        "policy": {"default": "recserve", "recserve": {"beta": 0.3, "window": 1000}},
        "windows": {"store": "memory"},
    }


def _start(name: str, config: dict[str, Any], workdir: Any) -> GatewayProcess:
    return GatewayProcess(name, config, workdir).start()


@pytest.fixture(scope="module")
def chain(tiers: dict[str, ThreadedTier], tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    """device gateway (tiers: device, edge-gateway) → edge gateway (tiers: edge, cloud)."""
    workdir = tmp_path_factory.mktemp("chain")
    started: list[GatewayProcess] = []
    try:
        edge = _start("edge-gateway", _gateway_config("edge-site", [
            ("edge", tiers["edge"].base_url, tiers["edge"].model),
            ("cloud", tiers["cloud"].base_url, tiers["cloud"].model)]), workdir)
        started.append(edge)
        device = _start("device-gateway", _gateway_config("device-site", [
            ("device", tiers["device"].base_url, tiers["device"].model),
            ("edge", edge.url, "recserve")]), workdir)
        started.append(device)
        yield device, edge
    finally:
        for gateway in reversed(started):
            gateway.stop()


def _ask(gateway: GatewayProcess, prompt: str) -> tuple[str, httpx.Headers, dict[str, Any]]:
    with gateway.sdk() as client:
        raw = client.chat.completions.with_raw_response.create(
            model="recserve", messages=[{"role": "user", "content": prompt}], max_tokens=16)
        completion = raw.parse()
    return completion.choices[0].message.content or "", raw.headers, completion.model_dump()


def _access_record(gateway: GatewayProcess, request_id: str) -> dict[str, Any]:
    for line in gateway.log().splitlines():
        if line.startswith("{") and f'"request_id":"{request_id}"' in line:
            record: dict[str, Any] = json.loads(line)
            return record
    raise AssertionError(f"{gateway.name}: no access record for {request_id}")


def _edge_record(edge: GatewayProcess, tier: ThreadedTier) -> dict[str, Any]:
    # The edge gateway got the request from the device gateway; its x-request-id is the one forwarded.
    forwarded = tier.requests[-1].headers["x-request-id"]
    return _access_record(edge, forwarded)


def test_three_tiers_across_two_gateways(chain: tuple[GatewayProcess, GatewayProcess],
                                         tiers: dict[str, ThreadedTier]) -> None:
    device, edge = chain
    # Warm each gateway's windows past the cold start (a tier's first request is always answered there).
    for i in range(4):
        _ask(device, f"warm{i} [device:0.9][edge:0.9]")

    text, headers, body = _ask(device, "sure [device:0.95]")
    assert text == "device says"
    assert headers["x-recserve-path"] == "device"
    assert headers["x-recserve-uplink-tokens"] == "0"

    text, headers, body = _ask(device, "edge ok [device:0.05][edge:0.95]")
    edge_log = _edge_record(edge, tiers["edge"])
    assert text == "edge says"
    assert headers["x-recserve-tier"] == "edge"
    assert headers["x-recserve-path"] == "device>edge[edge]"
    assert edge_log["uplink_tokens"] == 0  # the edge gateway answered at its own first tier
    assert int(headers["x-recserve-uplink-tokens"]) == body["usage"]["prompt_tokens"] > 0
    edge_only = int(headers["x-recserve-uplink-tokens"])
    print(f"\nanswered at the edge: path {headers['x-recserve-path']}, uplink tokens {edge_only}")

    text, headers, body = _ask(device, "hard one [device:0.05][edge:0.05][cloud:0.9]")
    edge_log = _edge_record(edge, tiers["cloud"])
    assert text == "cloud says"
    assert headers["x-recserve-path"] == "device>edge[edge>cloud]"
    assert edge_log["tier_path"] == "edge>cloud"
    # device→edge hop (the edge gateway's answer's prompt tokens) + what the edge gateway shipped to the cloud.
    # The edge gateway shipped the prompt once to the cloud (the cloud's usage, relayed back to us).
    assert edge_log["uplink_tokens"] == body["usage"]["prompt_tokens"] > 0
    assert int(headers["x-recserve-uplink-tokens"]) == body["usage"]["prompt_tokens"] + edge_log["uplink_tokens"]
    print(f"answered in the cloud: path {headers['x-recserve-path']}, uplink tokens "
          f"{headers['x-recserve-uplink-tokens']} = {body['usage']['prompt_tokens']} (device→edge) + "
          f"{edge_log['uplink_tokens']} (edge→cloud, from the edge gateway)")
    device_log = _access_record(device, headers["x-request-id"])
    assert device_log["tier_path"] == "device>edge[edge>cloud]"
    assert device_log["uplink_tokens"] == int(headers["x-recserve-uplink-tokens"])


def test_hop_limit_at_the_edge_gateway_is_passed_back_as_508(chain: tuple[GatewayProcess, GatewayProcess]) -> None:
    device, edge = chain
    # The client claims 3 hops already; the device gateway forwards the 4th, which the edge gateway
    # (max_hops 4) refuses; the device gateway passes that 508 on instead of turning it into a 502.
    with httpx.Client(timeout=REQUEST_TIMEOUT_S * 3) as client:
        response = client.post(f"{device.url}/chat/completions", headers={"x-recserve-hops": "3"}, json={
            "model": "recserve", "max_tokens": 16,
            "messages": [{"role": "user", "content": "far [device:nologprobs]"}]})
    print(f"\nhop limit: HTTP {response.status_code}: {response.json()['error']['message']}")
    assert response.status_code == 508
    assert set(response.json()["error"]) >= {"message", "type", "param", "code"}
    assert "max_hops" in response.json()["error"]["message"]
    refused = [json.loads(line) for line in edge.log().splitlines() if line.startswith("{") and '"status":508' in line]
    assert len(refused) == 1  # it was the edge gateway that refused


@pytest.fixture(scope="module")
def loop(tiers: dict[str, ThreadedTier], tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    """A's last tier is B and B's last tier is A (a misconfiguration): each knows the other's port first."""
    workdir = tmp_path_factory.mktemp("loop")
    a = GatewayProcess("gateway-a", {}, workdir)
    b = GatewayProcess("gateway-b", {}, workdir)
    device = (tiers["device"].base_url, tiers["device"].model)
    for this, other, instance in ((a, b, "site-a"), (b, a, "site-b")):
        config = _gateway_config(instance, [("device", *device), ("upper", other.url, "recserve")])
        this.config_path.write_text(json.dumps(config))  # JSON is YAML
    started: list[GatewayProcess] = []
    try:
        for gateway in (a, b):
            started.append(gateway.start())
        yield a, b
    finally:
        for gateway in started:
            gateway.stop()


def test_two_gateway_loop_is_refused_with_508(loop: tuple[GatewayProcess, GatewayProcess]) -> None:
    a, b = loop
    # No logprobs at the device tier → no confidence → every gateway escalates to its last tier, the other one.
    with httpx.Client(timeout=REQUEST_TIMEOUT_S * 3) as client:
        response = client.post(f"{a.url}/chat/completions", json={
            "model": "recserve", "max_tokens": 16,
            "messages": [{"role": "user", "content": "loop [device:nologprobs]"}]})
    print(f"\nloop A→B→A: HTTP {response.status_code}, path {response.headers.get('x-recserve-path')}: "
          f"{response.json()['error']['message']}")
    assert response.status_code == 508
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert "loop" in error["message"].lower()
    assert "site-a" in error["message"]  # refused by A itself when the request came back listing it
    # B saw it once (from A), A twice (the client's request, then B's forward that was refused).
    a_lines = [line for line in a.log().splitlines() if line.startswith("{") and "/v1/chat" in line]
    b_lines = [line for line in b.log().splitlines() if line.startswith("{") and "/v1/chat" in line]
    assert len(b_lines) == 1 and len(a_lines) == 2
    assert {json.loads(line)["status"] for line in a_lines + b_lines} == {508}


def test_openai_sdk_sees_the_loop_as_an_error(loop: tuple[GatewayProcess, GatewayProcess]) -> None:
    a, _ = loop
    with a.sdk() as client, pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="recserve", max_tokens=16,
                                       messages=[{"role": "user", "content": "again [device:nologprobs]"}])
    assert caught.value.status_code == 508
