"""One trace from the client through two chained gateways to the tiers: real `recserve serve`
processes with tracing turned on the standard way (OTEL_* variables), scripted tiers on loopback,
the official openai SDK sending a W3C `traceparent`, and a real OTLP/HTTP receiver decoding the
protobuf the SDK exports.

Gateway A: tiers device (scripted) and upper (gateway B); gateway B: tiers edge and cloud (scripted).
Both decide with fixed CasServe thresholds, so the path is known: device and edge escalate, cloud answers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from gateway.config.tenants import OPEN_TENANT, key_tenant_name
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan, otel_env, trace_ids
from tests.support.processes import GatewayProcess
from tests.support.scripted_tier import ThreadedTier

MARKER = "zebra-quartz-prompt"  # a word of the prompt: never in a span unless prompts are asked for
CLIENT_KEYS = "key-a,key-b"
THRESHOLD = 0.5
# The tenants spans name: a bare key's stable digest (never the key), and an open gateway's one tenant.
TENANT_A, TENANT_B = key_tenant_name("key-a", "recserve"), key_tenant_name("key-b", "recserve")


def _config(instance: str, tiers: list[dict[str, Any]], keys_env: str, **extra: Any) -> dict[str, Any]:
    return {
        "server": {"instance_id": instance, "request_timeout_s": 15},
        "auth": {"api_keys_env": keys_env, "admin_key_env": None},
        "tiers": tiers,
        "policy": {"default": "casserve",
                   "casserve": {"thresholds": {tiers[0]["name"]: THRESHOLD}, "default_threshold": THRESHOLD}},
        "windows": {"store": "memory"},
        **extra,
    }


def _tier(tier: ThreadedTier) -> dict[str, Any]:
    return {"name": tier.name, "base_url": tier.base_url, "model": tier.model, "timeout_s": 8}


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    started = OtlpReceiver().start()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def chain(tiers: dict[str, ThreadedTier], receiver: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    workdir = tmp_path_factory.mktemp("traced-chain")
    b = GatewayProcess("gateway-b", _config("site-b", [_tier(tiers["edge"]), _tier(tiers["cloud"])],
                                            "RECSERVE_TRACE_TEST_NO_KEYS"),
                       workdir, env=otel_env(receiver, "gateway-b"))
    upper = {"name": "upper", "base_url": b.url, "model": "recserve", "recserve_gateway": True, "timeout_s": 12}
    a = GatewayProcess("gateway-a", _config("site-a", [_tier(tiers["device"]), upper], "RECSERVE_TRACE_TEST_KEYS"),
                       workdir, env=otel_env(receiver, "gateway-a", RECSERVE_TRACE_TEST_KEYS=CLIENT_KEYS,
                                             OTEL_EXPORTER_OTLP_HEADERS="x-collector-token=collector-secret"))
    started: list[GatewayProcess] = []
    try:
        started.append(b.start())
        started.append(a.start())
        yield a, b
    finally:
        for gateway in reversed(started):
            gateway.stop()


def _one(spans: list[ReceivedSpan], kind: str, service: str | None = None, tier: str | None = None) -> ReceivedSpan:
    """The one span of this kind (and service, and tier attempted)."""
    found = [s for s in spans if s.kind == kind and service in (None, s.service)
             and tier in (None, s.attributes.get("recserve.tier"))]
    assert len(found) == 1, f"{kind} {service} {tier}: {len(found)} in {[(s.service, s.kind, s.name) for s in spans]}"
    return found[0]


def _ask(gateway: GatewayProcess, key: str, prompt: str, trace_id: str, span_id: str) -> Any:
    with openai.OpenAI(base_url=gateway.url, api_key=key, max_retries=0, timeout=30) as client:
        return client.chat.completions.with_raw_response.create(
            model="recserve", messages=[{"role": "user", "content": prompt}], max_tokens=16,
            extra_headers={"traceparent": f"00-{trace_id}-{span_id}-01", "tracestate": "vendor=opaque"})


def test_one_trace_from_the_client_through_two_gateways_to_the_tiers(
        chain: tuple[GatewayProcess, GatewayProcess], tiers: dict[str, ThreadedTier], receiver: OtlpReceiver) -> None:
    a, _ = chain
    trace_id, client_span = trace_ids()
    raw = _ask(a, "key-b", f"{MARKER} [device:0.1][edge:0.2][cloud:0.9]", trace_id, client_span)
    answer = raw.parse().choices[0].message.content
    assert raw.headers["x-recserve-path"] == "device>upper[edge>cloud]" and answer == "cloud says"

    spans = receiver.wait_for(lambda got: len([s for s in got if s.trace_id == trace_id]) >= 6)
    mine = [s for s in spans if s.trace_id == trace_id]
    print("\n" + "\n".join(f"{s.service} {s.kind} {s.name!r} {s.span_id} <- {s.parent_span_id}" for s in mine))
    assert len(mine) == 6

    a_server = _one(mine, service="gateway-a", kind="SERVER")
    a_device = _one(mine, service="gateway-a", kind="CLIENT", tier="device")
    a_upper = _one(mine, service="gateway-a", kind="CLIENT", tier="upper")
    b_server = _one(mine, service="gateway-b", kind="SERVER")
    b_edge = _one(mine, service="gateway-b", kind="CLIENT", tier="edge")
    b_cloud = _one(mine, service="gateway-b", kind="CLIENT", tier="cloud")

    # Parents: client -> A's server span -> A's tier attempts; A's attempt at B -> B's server span -> B's attempts.
    assert a_server.parent_span_id == client_span
    assert a_device.parent_span_id == a_upper.parent_span_id == a_server.span_id
    assert b_server.parent_span_id == a_upper.span_id
    assert b_edge.parent_span_id == b_cloud.parent_span_id == b_server.span_id
    # Each tier was asked with its own attempt's span as the parent, and the client's tracestate.
    for tier, span in ((tiers["device"], a_device), (tiers["edge"], b_edge), (tiers["cloud"], b_cloud)):
        headers = tier.requests[-1].headers
        assert headers["traceparent"] == f"00-{trace_id}-{span.span_id}-01", tier.name
        assert headers["tracestate"] == "vendor=opaque", tier.name

    assert a_server.name == "POST /v1/chat/completions"
    assert a_server.attributes["http.route"] == "/v1/chat/completions"
    assert a_server.attributes["http.response.status_code"] == 200
    assert a_server.attributes["recserve.path"] == "device>upper[edge>cloud]"
    assert a_server.attributes["recserve.tier"] == "upper"
    assert a_server.attributes["recserve.policy"] == "casserve"
    assert a_server.attributes["recserve.model"] == "recserve"
    assert a_server.attributes["recserve.tenant"] == TENANT_B
    assert a_server.attributes["recserve.workload"] == raw.headers["x-recserve-workload"]
    assert a_server.attributes["recserve.uplink_tokens"] == int(raw.headers["x-recserve-uplink-tokens"])
    assert b_server.attributes["recserve.path"] == "edge>cloud"
    assert b_server.attributes["recserve.tenant"] == OPEN_TENANT  # B has no keys: one open tenant

    device = a_device.attributes
    assert a_device.name == f"chat {tiers['device'].model}"
    assert device["gen_ai.operation.name"] == "chat"
    assert device["gen_ai.provider.name"] == "openai"
    assert device["gen_ai.request.model"] == device["gen_ai.response.model"] == tiers["device"].model
    assert device["gen_ai.request.max_tokens"] == 16
    assert device["gen_ai.response.finish_reasons"] == ["stop"]
    assert device["gen_ai.usage.input_tokens"] > 0 and device["gen_ai.usage.output_tokens"] == 1
    assert isinstance(device["gen_ai.response.id"], str)
    assert device["server.address"] == "127.0.0.1" and device["server.port"] == tiers["device"].port
    assert device["recserve.verdict"] == "escalated" and device["recserve.reason"] == "low_confidence"
    assert device["recserve.confidence"] == pytest.approx(0.1) and device["recserve.threshold"] == THRESHOLD
    assert device["recserve.task"] == "generation" and device["recserve.tenant"] == TENANT_B
    assert device["recserve.early_commit"] is False and device["recserve.probe"] is False
    assert a_device.status == "UNSET"  # an escalation is a decision, not an error

    assert a_upper.attributes["recserve.verdict"] == "served"
    assert a_upper.attributes["recserve.upstream_path"] == "edge>cloud"
    assert a_upper.attributes["gen_ai.request.model"] == "recserve"
    assert b_edge.attributes["recserve.verdict"] == "escalated"
    assert b_edge.attributes["recserve.confidence"] == pytest.approx(0.2)
    assert b_cloud.attributes["recserve.verdict"] == "served" and "recserve.threshold" not in b_cloud.attributes
    assert b_cloud.attributes["gen_ai.usage.output_tokens"] == 1

    # Privacy by default: neither the prompt, the answer nor the client's key in any attribute.
    for span in mine:
        for text in span.strings():
            assert MARKER not in text and "cloud says" not in text and "key-b" not in text, (span.name, text)
    # The exporter sent the collector headers given in OTEL_EXPORTER_OTLP_HEADERS.
    assert any(r.get("x-collector-token") == "collector-secret" for r in receiver.requests)


def test_a_failing_tier_attempt_is_an_error_span_and_the_cascade_goes_on(
        chain: tuple[GatewayProcess, GatewayProcess], receiver: OtlpReceiver) -> None:
    a, _ = chain
    trace_id, client_span = trace_ids()
    raw = _ask(a, "key-a", "[device:status=500][edge:0.9]", trace_id, client_span)
    assert raw.headers["x-recserve-path"] == "device!>upper[edge]"
    spans = receiver.wait_for(lambda got: len([s for s in got if s.trace_id == trace_id]) >= 5)
    mine = [s for s in spans if s.trace_id == trace_id]
    device = _one(mine, service="gateway-a", kind="CLIENT", tier="device")
    assert device.status == "ERROR"
    assert device.attributes["error.type"] == "status" and device.attributes["recserve.verdict"] == "error"
    edge = _one(mine, service="gateway-b", kind="CLIENT", tier="edge")
    assert edge.attributes["recserve.verdict"] == "kept" and edge.attributes["recserve.tenant"] == OPEN_TENANT
    assert _one(mine, service="gateway-a", kind="SERVER").attributes["recserve.tenant"] == TENANT_A


def test_prompts_and_answers_are_in_tier_spans_only_with_include_prompts(
        tiers: dict[str, ThreadedTier], receiver: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory) -> None:
    config = _config("site-prompts", [_tier(tiers["device"]), _tier(tiers["cloud"])], "RECSERVE_TRACE_TEST_NO_KEYS",
                     logging={"include_prompts": True})
    gateway = GatewayProcess("gateway-prompts", config, tmp_path_factory.mktemp("prompts"),
                             env=otel_env(receiver, "gateway-prompts")).start()
    try:
        trace_id, client_span = trace_ids()
        _ask(gateway, "unused", f"{MARKER} [device:0.1][cloud:0.9]", trace_id, client_span)
        spans = receiver.wait_for(lambda got: len([s for s in got if s.trace_id == trace_id]) >= 3)
    finally:
        gateway.stop()
    mine = [s for s in spans if s.trace_id == trace_id]
    device = _one(mine, kind="CLIENT", tier="device")
    cloud = _one(mine, kind="CLIENT", tier="cloud")
    prompt = json.loads(device.attributes["gen_ai.input.messages"])
    assert prompt[0]["role"] == "user" and MARKER in prompt[0]["parts"][0]["content"]
    assert json.loads(device.attributes["gen_ai.output.messages"])[0]["parts"][0]["content"] == "device says"
    assert json.loads(cloud.attributes["gen_ai.output.messages"])[0]["parts"][0]["content"] == "cloud says"
    assert all(MARKER not in text for text in _one(mine, kind="SERVER").strings())
