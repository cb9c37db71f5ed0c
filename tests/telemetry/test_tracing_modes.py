"""Tracing off (the default), on from the config file, flushed at shutdown, through streams and probes:
real `recserve serve` processes, scripted tiers, the openai SDK and a real OTLP/HTTP receiver."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan, otel_env, trace_ids
from tests.support.processes import GatewayProcess
from tests.support.scripted_tier import ThreadedTier

REPO = Path(__file__).resolve().parents[2]


def _config(tiers: dict[str, ThreadedTier], **extra: Any) -> dict[str, Any]:
    return {
        "auth": {"api_keys_env": "RECSERVE_TRACE_TEST_NO_KEYS", "admin_key_env": None},
        "tiers": [{"name": name, "base_url": tiers[name].base_url, "model": tiers[name].model}
                  for name in ("device", "cloud")],
        "policy": {"default": "casserve", "casserve": {"thresholds": {"device": 0.5}},
                   # quality: every kept answer is probed at once (no warm-up), so each request makes a probe
                   "quality": {"probe_rate": 1.0, "warmup_probes": 0, "min_probes": 1000}},
        **extra,
    }


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    started = OtlpReceiver().start()
    yield started
    started.stop()


def _headers(trace_id: str, span_id: str) -> dict[str, str]:
    return {"traceparent": f"00-{trace_id}-{span_id}-01", "tracestate": "vendor=opaque"}


def _chat(gateway: GatewayProcess, prompt: str, headers: dict[str, str], **kwargs: Any) -> Any:
    """The answer; a stream's chunks, read to the end."""
    with gateway.sdk() as client:
        answer = client.chat.completions.create(model=kwargs.pop("model", "recserve"), max_tokens=16,
                                                messages=[{"role": "user", "content": prompt}],
                                                extra_headers=headers, **kwargs)
        return list(answer) if kwargs.get("stream") else answer


def _of(spans: list[ReceivedSpan], trace_id: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.trace_id == trace_id]


def test_off_by_default_nothing_is_exported_and_the_client_trace_context_reaches_the_tiers(
        tiers: dict[str, ThreadedTier], receiver: OtlpReceiver, tmp_path: Path) -> None:
    # Everything but OTEL_TRACES_EXPORTER: an endpoint alone does not turn tracing on.
    env = otel_env(None, "", OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url, OTEL_SERVICE_NAME="not-tracing",
                   OTEL_BSP_SCHEDULE_DELAY="50")
    gateway = GatewayProcess("untraced", _config(tiers), tmp_path, env=env).start()
    try:
        trace_id, span_id = trace_ids()
        answer = _chat(gateway, "[device:0.1][cloud:0.9]", _headers(trace_id, span_id))
        assert answer.choices[0].message.content == "cloud says"
        for name in ("device", "cloud"):  # passed on unchanged: an instrumented tier joins the client's trace
            assert tiers[name].requests[-1].headers["traceparent"] == f"00-{trace_id}-{span_id}-01"
            assert tiers[name].requests[-1].headers["tracestate"] == "vendor=opaque"
        chunks = _chat(gateway, "[device:0.9]", _headers(trace_id, span_id), stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "device says"
        # A malformed traceparent is not passed on.
        assert _chat(gateway, "[device:0.9]", {"traceparent": "00-xyz-abc-01", "tracestate": "a=b"}).choices
        assert "traceparent" not in tiers["device"].requests[-1].headers
        assert "tracestate" not in tiers["device"].requests[-1].headers
        with httpx.Client(timeout=10) as client:
            refused = client.post(f"{gateway.url}/chat/completions", json={"model": "recserve", "messages": []},
                                  headers=_headers(trace_id, span_id))
        assert refused.status_code == 400
    finally:
        gateway.stop()
    assert receiver.requests == [] and receiver.spans == []


def test_with_tracing_off_the_trace_sdk_is_never_imported(tiers: dict[str, ThreadedTier], tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps(_config(tiers)))
    program = f"""
import sys
from starlette.testclient import TestClient
from gateway.config.loading import load_config
from gateway.server.app import create_app
with TestClient(create_app(load_config({str(config)!r}))) as client:
    answer = client.post("/v1/chat/completions", json={{"model": "recserve", "max_tokens": 4,
                         "messages": [{{"role": "user", "content": "[device:0.9]"}}]}})
    assert answer.status_code == 200, answer.text
print(sorted(name for name in sys.modules if name.startswith(("opentelemetry.sdk.trace", "opentelemetry.exporter",
                                                              "opentelemetry.proto", "gateway.telemetry.otel"))))
"""
    result = subprocess.run([sys.executable, "-c", program], cwd=REPO, env=otel_env(None, "", PYTHONPATH=str(REPO)),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_the_config_file_can_turn_tracing_on(tiers: dict[str, ThreadedTier], receiver: OtlpReceiver,
                                            tmp_path: Path) -> None:
    config = _config(tiers, tracing={"exporter": "otlp", "endpoint": receiver.url, "service_name": "from-config"})
    gateway = GatewayProcess("config-traced", config, tmp_path, env=otel_env(None, "")).start()
    try:
        trace_id, span_id = trace_ids()
        _chat(gateway, "[device:0.9]", _headers(trace_id, span_id))
        # The SDK's default delay between exports (5 s) applies: no OTEL_BSP_* variable here.
        spans = _of(receiver.wait_for(lambda got: len(_of(got, trace_id)) >= 2), trace_id)
    finally:
        gateway.stop()
    assert {(s.service, s.kind) for s in spans} == {("from-config", "SERVER"), ("from-config", "CLIENT")}


def test_spans_still_queued_are_exported_when_the_gateway_stops(tiers: dict[str, ThreadedTier],
                                                                receiver: OtlpReceiver, tmp_path: Path) -> None:
    env = otel_env(receiver, "flushed", OTEL_BSP_SCHEDULE_DELAY="600000")  # no export before shutdown
    gateway = GatewayProcess("flushed", _config(tiers), tmp_path, env=env).start()
    trace_id, span_id = trace_ids()
    try:
        _chat(gateway, "[device:0.1][cloud:0.9]", _headers(trace_id, span_id))
        assert _of(receiver.spans, trace_id) == []
    finally:
        gateway.stop()
    assert sorted(s.kind for s in _of(receiver.spans, trace_id)) == ["CLIENT", "CLIENT", "SERVER"]


@pytest.fixture
def streaming_gateway(tiers: dict[str, ThreadedTier], receiver: OtlpReceiver, tmp_path: Path
                      ) -> Iterator[GatewayProcess]:
    config = _config(tiers, streaming={"mode": "early", "decide_after_tokens": 2})
    gateway = GatewayProcess("streaming", config, tmp_path, env=otel_env(receiver, "streaming")).start()
    yield gateway
    gateway.stop()


def test_an_answer_streamed_live_ends_its_span_with_the_stream(
        streaming_gateway: GatewayProcess, tiers: dict[str, ThreadedTier], receiver: OtlpReceiver) -> None:
    kept, span_id = trace_ids()
    chunks = _chat(streaming_gateway, "[device:tokens=0.9,0.9,0.9,0.9,0.9]", _headers(kept, span_id),
                   stream=True, model="recserve/casserve")
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) == 5
    escalated, span_id = trace_ids()
    _chat(streaming_gateway, "[device:tokens=0.1,0.1,0.1,0.1][cloud:tokens=0.9,0.9,0.9]",
          _headers(escalated, span_id), stream=True)
    spans = receiver.wait_for(lambda got: len(_of(got, kept)) >= 2 and len(_of(got, escalated)) >= 3)

    device = next(s for s in _of(spans, kept) if s.kind == "CLIENT")
    # Judged on its first 2 tokens, kept, then streamed on: the span ends with the stream and its usage.
    assert device.attributes["recserve.verdict"] == "kept" and device.attributes["recserve.early_commit"] is True
    assert device.attributes["gen_ai.usage.output_tokens"] == 5
    attempts = {s.attributes["recserve.tier"]: s for s in _of(spans, escalated) if s.kind == "CLIENT"}
    assert attempts["device"].attributes["recserve.verdict"] == "escalated"
    assert attempts["device"].attributes["recserve.early_commit"] is True
    assert attempts["cloud"].attributes["recserve.verdict"] == "served"
    assert attempts["cloud"].attributes["gen_ai.usage.output_tokens"] == 3


def test_a_quality_probe_is_a_client_span_of_its_own(
        streaming_gateway: GatewayProcess, tiers: dict[str, ThreadedTier], receiver: OtlpReceiver) -> None:
    trace_id, span_id = trace_ids()
    _chat(streaming_gateway, "[device:0.9][cloud:0.9]", _headers(trace_id, span_id), model="recserve/quality")
    spans = _of(receiver.wait_for(lambda got: len(_of(got, trace_id)) >= 3), trace_id)
    server = next(s for s in spans if s.kind == "SERVER")
    probe = next(s for s in spans if s.kind == "CLIENT" and s.attributes["recserve.probe"])
    assert probe.attributes["recserve.tier"] == "cloud" and probe.attributes["recserve.verdict"] == "probed"
    assert probe.parent_span_id == server.span_id
    assert tiers["cloud"].requests[-1].headers["traceparent"] == f"00-{trace_id}-{probe.span_id}-01"
